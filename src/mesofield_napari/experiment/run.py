"""One experiment run: every camera and the encoder of a rig, on one clock (Qt-free).

Life of a run (a GUI drives the same object; nothing here blocks a caller for long)::

    run = ExperimentRun(load_experiment("rig/"), subject="M042")
    run.start()        # opens everything, then starts the devices, primary last
    run.status()       # per device: frames, fps, lost, queue fill, error
    run.wait(timeout)  # True once the run has ended and every file is final
    run.stop()         # or let it end by itself
    run.result()       # what the CLI prints

- :meth:`open` (called by :meth:`start`) opens the devices first — Micro-Manager
  cores, OpenCV captures, the serial port — so a rig that is not there fails with one
  line and leaves no run folder; then the run folder, every writer and the data queue.
- Devices start together, the primary last, so none misses the primary's first frame.
  Micro-Manager cameras record ``duration × fps`` frames each (their own core and MDA
  thread), direct-mode cameras the same count, encoders until the run stops.
- The run ends when the primary camera has its frames (a primary encoder: after
  ``duration`` seconds), when :meth:`stop` is called, or when any device fails. Then
  every other device is stopped and its file finalized; a failure is recorded in the
  manifest (``run.errors``, ``acquisition_complete: false``) and nothing already
  written is lost. A :meth:`stop` before the primary has its frames (or before the
  duration, for a primary encoder) is an interrupted run: the manifest says
  incomplete, with the reason (``RunManager.interrupt``).
- Deleting the run folder mid-run stops the run within a second, with the error
  (``RunManager``'s guard).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesokit_schema import DataqueuePayloadSchema

from ..acquisition.console_log import quiet_pymmcore_for_cli
from ..acquisition.core_release import release_core
from ..data.formats.payloads import DeviceFile, ExperimentPayload
from ..data.manager.manifest import Producer
from ..data.manager.run_manager import RunManager, describe_writer
from ..data.writer._pipeline import DEFAULT_MAX_QUEUE_BYTES
from ..data.writer.signals import connect_direct, disconnect_quietly
from ..devices import DeviceError
from ..devices.encoder import Encoder
from ..devices.opencv_camera import DirectCamera, OpenCVSource
from ..devices.sim_behavior import SimulatedPupilSource
from .config import (
    MAX_DURATION_S,
    CameraSpec,
    EncoderSpec,
    Experiment,
    ExperimentError,
)

if TYPE_CHECKING:
    import numpy as np
    from pymmcore_plus import CMMCorePlus

    from ..data import CustomWriter, CV2Writer

START_TIMEOUT_S = 30.0  # a camera's MDA must have started by then
STOP_TIMEOUT_S = 60.0  # per device: drain + finalize
STALL_GRACE_S = 30.0  # primary still short of its frames at 2x duration + this: stalled
DEFAULT_SIZE = (512, 512)


# ---------------------------------------------------------------- live display
class FrameTap:
    """The newest frame of one camera, for a live display.

    One slot and no copy: the acquisition thread only swaps a reference, so a
    display never slows the cameras down and never holds more than one frame each.
    A display that misses frames only misses *display* frames; the writer got them.
    """

    def __init__(self) -> None:
        self.count = 0
        self.latest: tuple[int, np.ndarray] | None = None

    def feed(self, frame: np.ndarray) -> None:
        self.count += 1
        self.latest = (self.count, frame)


class TappedSource:
    """A direct-mode frame source that also hands each frame to a :class:`FrameTap`."""

    def __init__(self, source: SimulatedPupilSource | OpenCVSource, tap: FrameTap):
        self.inner = source
        self.tap = tap

    @property
    def is_color(self) -> bool:
        return self.inner.is_color

    def open(self) -> tuple[int, int]:
        return self.inner.open()

    def read(self) -> np.ndarray | None:
        frame = self.inner.read()
        if frame is not None:
            self.tap.feed(frame)
        return frame

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()


# ---------------------------------------------------------------- Micro-Manager
def camera_core(spec: CameraSpec, seed: int = 0) -> CMMCorePlus:
    """The camera's own core: its configuration, else the built-in simulated camera.

    Raises :class:`DeviceError` (one line) when the configuration cannot be loaded.
    """
    exposure = spec.properties.get("exposure_ms")
    if exposure is None and spec.fps:
        exposure = 1000.0 / spec.fps
    if spec.configuration_path is None:
        from ..devices.sim_camera import create_sim_core

        shape = (spec.height or DEFAULT_SIZE[0], spec.width or DEFAULT_SIZE[1])
        return create_sim_core(
            shape, exposure_ms=10.0 if exposure is None else float(exposure), seed=seed
        )
    from pymmcore_plus import CMMCorePlus

    path = spec.configuration_path
    if not path.is_file():
        raise DeviceError(f"{spec.id}: Micro-Manager configuration not found: {path}")
    try:
        core = CMMCorePlus()
        if spec.micromanager_path is not None:
            core.setDeviceAdapterSearchPaths([str(spec.micromanager_path)])
        core.loadSystemConfiguration(str(path))
        for label, props in spec.properties.items():
            if isinstance(props, dict):  # {DeviceLabel: {Property: value}}
                for prop, value in props.items():
                    core.setProperty(label, prop, value)
        if exposure is not None:
            core.setExposure(float(exposure))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
        raise DeviceError(f"{spec.id}: cannot load {path}: {first}") from None
    return core


def lendable_cores(
    experiment: Experiment, core: CMMCorePlus | None
) -> dict[str, CMMCorePlus]:
    """``{primary id: core}`` when ``core`` (napari-micromanager's) drives the
    experiment's primary camera, else ``{}``.

    It does when it loaded the primary's ``configuration_path``, or — for a primary
    without one — when both are the built-in simulated camera. A core busy with live
    view or another acquisition is not lent (:class:`DeviceError`): recording on it
    would fight the user's own use.
    """
    from ..devices.sim_camera import sim_camera

    spec = experiment.primary
    if core is None or not isinstance(spec, CameraSpec):
        return {}
    if spec.backend != "micromanager":
        return {}
    if spec.configuration_path is not None:
        loaded = core.systemConfigurationFile() or ""
        same = (
            bool(loaded) and Path(loaded).resolve() == spec.configuration_path.resolve()
        )
    else:
        same = sim_camera(core) is not None  # type: ignore[arg-type]
    if not same:
        return {}
    if core.mda.is_running() or core.isSequenceRunning():
        raise DeviceError(
            f"{spec.id}: napari-micromanager's camera is busy (live view or an MDA); "
            "stop it, then Record"
        )
    return {spec.id: core}


class MMCamera:
    """A Micro-Manager camera: its own core, an MDA thread, one attached writer."""

    def __init__(
        self,
        spec: CameraSpec,
        core: CMMCorePlus,
        frames: int,
        on_error: Any,
        on_done: Any,
    ) -> None:
        self.device_id = spec.id
        self.spec = spec
        self.core = core
        self.frames = frames
        self.writer: CustomWriter | CV2Writer | None = None
        self.error: BaseException | None = None
        self._on_error = on_error
        self._on_done = on_done
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0: float | None = None
        self._t1: float | None = None
        self.tap = FrameTap()
        self.owns_core = True  # False: someone else's core (napari-micromanager's)

    @property
    def fps(self) -> float:
        """The nominal rate: the YAML's ``fps``; a lent core's own exposure decides."""
        exposure = float(self.core.getExposure())
        by_exposure = 1000.0 / exposure if exposure > 0 else 100.0
        if not self.owns_core:
            return by_exposure
        return self.spec.fps or by_exposure

    def _sequence_started(self, *args: Any) -> None:
        self._t0 = time.perf_counter()
        self._started.set()

    def _frame_ready(self, frame: np.ndarray, *args: Any) -> None:
        self.tap.feed(frame)  # a reference swap on the MDA thread, nothing more

    def _writer_failed(self, exc: BaseException) -> None:
        self.core.mda.cancel()  # never record on into a broken file
        self._on_error(self.device_id, exc, from_writer=True)

    def start(self) -> None:
        assert self.writer is not None
        self.writer.on_error = self._writer_failed
        connect_direct(self.core.mda.events.sequenceStarted, self._sequence_started)
        connect_direct(self.core.mda.events.frameReady, self._frame_ready)
        self._thread = threading.Thread(
            target=self._run, name=f"mda-{self.device_id}", daemon=True
        )
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise DeviceError(
                f"{self.device_id}: acquisition did not start within "
                f"{START_TIMEOUT_S:.0f} s"
            )

    def _run(self) -> None:
        from ..acquisition.sequencing import chunked_sequencing
        from ..acquisition.timelapse import timelapse

        assert self.writer is not None
        try:
            with self.writer.attached(self.core), chunked_sequencing(self.core):
                self.core.mda.run(timelapse(self.frames))
        except BaseException as exc:
            self.error = exc
            self._on_error(self.device_id, exc)
        finally:
            self._t1 = time.perf_counter()
            self._started.set()  # never leave start() waiting on a failed run
        if self.error is None and self.writer.error is None:
            self._on_done(self.device_id)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self._thread is not None:
            if self._thread.is_alive():
                self.core.mda.cancel()
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.error = self.error or DeviceError(
                    f"{self.device_id}: acquisition did not stop within {timeout:.0f} s"
                )
        disconnect_quietly(self.core.mda.events.sequenceStarted, self._sequence_started)
        disconnect_quietly(self.core.mda.events.frameReady, self._frame_ready)
        if self.writer is not None:
            self.writer.close()  # no-op unless the sequence never finished

    def shutdown(self) -> None:
        if not self.owns_core:  # still in use by whoever lent it
            return
        # unload and stop the core's native notification thread now: left running,
        # it aborts the interpreter at exit now and then (see core_release)
        release_core(self.core)

    def status(self) -> dict[str, Any]:
        stats = self.writer.stats if self.writer is not None else None
        frames = stats.frames_received if stats else 0
        elapsed = (self._t1 or time.perf_counter()) - self._t0 if self._t0 else 0.0
        return {
            "frames": frames,
            "fps": frames / elapsed if elapsed > 0 else 0.0,
            "lost": stats.frames_lost if stats else 0,
            "queue_fill": stats.queue_fill if stats else 0.0,
            "error": str(self.error) if self.error else None,
        }


# ---------------------------------------------------------------- the run
@dataclass
class _Plan:
    """What :meth:`ExperimentRun.open` prepared, device by device."""

    cameras: dict[str, MMCamera | DirectCamera] = field(default_factory=dict)
    encoder: Encoder | None = None


class ExperimentRun:
    """Record one session of an experiment (see the module docstring).

    Parameters
    ----------
    subject, session, task
        Default: the first subject in ``Subjects``, and its ``session``/``task``.
    duration
        Seconds (default: ``Configuration.duration``).
    out
        The experiment folder to write into (default: ``experiment_directory``;
        without one, ``ExperimentError``: never the folder of the config files).
    cores
        Cores already running for ``micromanager`` cameras, by camera id (in napari:
        the one napari-micromanager drives, when its camera is the primary). The run
        records on them as they are set up and leaves their devices loaded; every
        other ``micromanager`` camera gets a core of its own.
    """

    def __init__(
        self,
        experiment: Experiment,
        *,
        subject: str | None = None,
        session: str | int | None = None,
        task: str | None = None,
        duration: float | None = None,
        out: str | Path | None = None,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        cores: Mapping[str, CMMCorePlus] | None = None,
    ) -> None:
        self.experiment = experiment
        self._given_cores = dict(cores or {})
        sid, meta = experiment.subject(subject)
        self.subject = sid
        self.session = str(session if session is not None else meta.get("session", 1))
        self.task = str(task or meta.get("task") or "rec")
        if duration is None:
            duration = experiment.duration_s
        if duration is None:
            raise ExperimentError(
                f"{experiment.json_path}: no Configuration.duration; give a duration"
            )
        given: object = duration  # a caller's or experiment.json's: checked here
        if not (
            isinstance(given, (int, float))
            and not isinstance(given, bool)
            and math.isfinite(given)
            and 0 < given <= MAX_DURATION_S
        ):
            raise ExperimentError(
                f"duration must be positive seconds up to {MAX_DURATION_S:.0f} "
                f"(7 days), got {duration!r}"
            )
        self.duration_s = float(duration)
        root = Path(out) if out else experiment.experiment_directory
        if root is None:  # never the config's own folder (often a git checkout)
            raise ExperimentError(
                f"{experiment.json_path}: no experiment_directory; give the "
                "experiment (output) folder (out=..., --out DIR)"
            )
        self.root = root
        self.max_queue_bytes = max_queue_bytes
        self.run = RunManager(
            self.root, sid, self.session, self.task, experiment.parameters(sid)
        )
        self.devices: dict[str, MMCamera | DirectCamera | Encoder] = {}
        self._plan = _Plan()
        self._taps: dict[str, FrameTap] = {}  # direct-mode cameras' newest frames
        self._state = "new"  # new -> open -> running -> stopped
        self._lock = threading.Lock()
        self._stop_request = threading.Event()
        self._finished = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._failed: set[str] = set()
        self._t0: float | None = None
        self._primary_done = False
        self._user_stop = False  # stop() before the run ended by itself
        self.run.on_lost = lambda _problem: self._stop_request.set()

    # ------------------------------------------------------------ state
    @property
    def errors(self) -> list[str]:
        return self.run.errors

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def state(self) -> str:
        return self._state

    def latest_frame(self, device_id: str) -> tuple[int, np.ndarray] | None:
        """``(count, frame)``: the camera's newest frame (None before the first).

        For a live display: read it from any thread, at any rate; it costs the
        camera nothing (see :class:`FrameTap`).
        """
        cam = self._plan.cameras.get(device_id)
        if isinstance(cam, MMCamera):
            return cam.tap.latest
        tap = self._taps.get(device_id)
        return tap.latest if tap is not None else None

    def device_rows(self) -> list[dict[str, Any]]:
        """One row per device for a status table: ``id, kind, state, frames, fps,
        lost, missing, queue_fill, error`` (every device of the experiment, before it opens too).
        """
        st = self.status()["devices"]
        specs: list[CameraSpec | EncoderSpec] = list(self.experiment.cameras)
        if self.experiment.encoder is not None:
            specs.append(self.experiment.encoder)
        rows = []
        for spec in specs:
            kind = (
                f"encoder ({spec.type})"
                if isinstance(spec, EncoderSpec)
                else f"camera ({spec.backend})"
            )
            s = st.get(spec.id, {})
            error = s.get("error")
            if error or spec.id in self._failed:
                state = "failed"
            else:
                state = {
                    "new": "ready",
                    "open": "ready",
                    "running": "recording",
                    "stopped": "done",
                }[self._state]
            rows.append(
                {
                    "id": spec.id,
                    "kind": kind + (" primary" if spec.primary else ""),
                    "state": state,
                    "frames": int(s.get("frames", 0)),
                    "fps": float(s.get("fps", 0.0)),
                    "lost": int(s.get("lost", 0)),
                    "missing": int(s.get("missing", 0)),
                    "queue_fill": float(s.get("queue_fill", 0.0)),
                    "error": error,
                }
            )
        return rows

    def frames_for(self, fps: float) -> int:
        return max(1, math.ceil(self.duration_s * fps - 1e-9))

    # ------------------------------------------------------------ open
    def open(self) -> None:
        """Open the devices, then the run folder, writers and queue (no frame yet)."""
        if self._state != "new":
            raise RuntimeError("an ExperimentRun is opened once")
        try:
            self._open_devices()
        except BaseException:
            self._shutdown_devices()
            raise
        quiet_pymmcore_for_cli()  # the cores exist now: one-line console output
        try:
            self.run.start()
            self._open_files()
        except BaseException as exc:
            self.run.stop(error=exc, raise_errors=False)
            self._shutdown_devices()
            raise
        self._state = "open"

    def _open_devices(self) -> None:
        for i, spec in enumerate(self.experiment.cameras):
            if spec.backend == "micromanager":
                shared = self._given_cores.get(spec.id)
                core = shared if shared is not None else camera_core(spec, seed=i)
                cam = MMCamera(spec, core, 0, self._device_failed, self._device_done)
                cam.owns_core = shared is None
                cam.frames = self.frames_for(cam.fps)
                self._plan.cameras[spec.id] = cam
            else:
                fps = spec.fps or 30.0
                source: SimulatedPupilSource | OpenCVSource
                if spec.device == "sim":
                    source = SimulatedPupilSource(
                        spec.width or 640, spec.height or 480, seed=i
                    )
                else:
                    assert spec.device is not None
                    source = OpenCVSource(
                        spec.device, width=spec.width, height=spec.height, fps=fps
                    )
                tap = FrameTap()
                self._taps[spec.id] = tap
                direct = DirectCamera(
                    spec.id,
                    TappedSource(source, tap),
                    fps,
                    max_frames=self.frames_for(fps),
                    on_error=self._device_failed,
                    on_done=self._device_done,
                )
                self._plan.cameras[spec.id] = direct  # closed on failure below
                try:
                    direct.open()
                except DeviceError as exc:
                    raise DeviceError(f"cameras[{i}] ({spec.id}): {exc}") from None
        if (enc := self.experiment.encoder) is not None:
            run, enc_id = self.run, enc.id

            def push(payload: Any, device_ts: Any) -> None:
                run.push(enc_id, payload, device_ts)

            encoder = Encoder(enc, push, on_error=self._device_failed)
            self._plan.encoder = encoder
            encoder.open()

    def _open_files(self) -> None:
        run = self.run
        for spec in self.experiment.cameras:
            cam = self._plan.cameras[spec.id]
            out = spec.output
            kwargs: dict[str, Any] = {"max_queue_bytes": self.max_queue_bytes}
            if out.kind == "tiff" and out.compression:
                kwargs["compression"] = out.compression
            if out.kind != "tiff":
                kwargs["fourcc"] = out.fourcc
                if isinstance(cam, MMCamera):
                    from ..devices.sim_camera import sim_camera

                    sim = sim_camera(cam.core)  # type: ignore[arg-type]
                    kwargs["fps"] = cam.fps
                    kwargs["bit_depth"] = sim.bit_depth if sim is not None else None
                else:
                    kwargs["fps"] = cam.fps
                    kwargs["bit_depth"] = 8
            writer = run.writer_for(
                spec.id,
                out.kind,  # type: ignore[arg-type]
                suffix=out.suffix,
                bids_type=out.bids_type,
                sampling_rate_hz=cam.fps,
                **kwargs,
            )
            cam.writer = writer
            self.devices[spec.id] = cam
        if (encoder := self._plan.encoder) is not None:
            enc_spec = self.experiment.encoder
            assert enc_spec is not None  # the plan has an encoder for this block only
            encoder.csv_path = run.data_path(
                enc_spec.output.suffix, ".csv", enc_spec.output.bids_type
            )
            run.add_producer(_encoder_producer(encoder, enc_spec))
            self.devices[enc_spec.id] = encoder

    # ------------------------------------------------------------ start / stop
    def start(self) -> ExperimentRun:
        """Open (if needed) and start every device, the primary last."""
        if self._state == "new":
            self.open()
        if self._state != "open":
            raise RuntimeError(f"cannot start a run that is {self._state}")
        self._state = "running"
        primary = self.experiment.primary.id
        order = [d for d in self.devices if d != primary] + [primary]
        self._t0 = time.monotonic()
        self._supervisor = threading.Thread(
            target=self._supervise, name="experiment-run", daemon=True
        )
        self._supervisor.start()
        for device_id in order:
            if self._stop_request.is_set():
                break
            try:
                self.devices[device_id].start()
                if isinstance(self.devices[device_id], Encoder):
                    self.run.device_started(device_id)
            except Exception as exc:
                self._device_failed(device_id, exc)
                break
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """End the run now; True once every file is final (within ``timeout``,
        default: a minute per device to drain and finalize)."""
        if timeout is None:
            timeout = STOP_TIMEOUT_S * (len(self.devices) + 1)
        if self._state in ("new", "open"):
            self._state = "running"
            self._finish()
            return True
        if not self._stop_request.is_set():
            self._user_stop = True
        self._stop_request.set()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end by itself (or :meth:`stop`); False on timeout."""
        return self._finished.wait(timeout)

    def __enter__(self) -> ExperimentRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ callbacks
    def _device_failed(
        self, device_id: str, exc: BaseException, *, from_writer: bool = False
    ) -> None:
        """A device failed (any thread): record it once and end the run."""
        with self._lock:
            first = device_id not in self._failed
            self._failed.add(device_id)
        cam = self.devices.get(device_id)
        writer_error = getattr(getattr(cam, "writer", None), "error", None)
        # writer failures are recorded by RunManager.stop (raise_if_failed)
        if first and not from_writer and exc is not writer_error:
            text = str(exc)
            prefix = f"{device_id}: "
            self.run.errors.append(text if text.startswith(prefix) else prefix + text)
        self._stop_request.set()

    def _device_done(self, device_id: str) -> None:
        if device_id == self.experiment.primary.id:
            self._primary_done = True
            self._stop_request.set()

    # ------------------------------------------------------------ supervisor
    def _supervise(self) -> None:
        primary = self.experiment.primary
        if isinstance(primary, EncoderSpec):
            limit = self.duration_s
        else:
            limit = 2 * self.duration_s + STALL_GRACE_S
        self._stop_request.wait(limit)
        if not self._stop_request.is_set() and not isinstance(primary, EncoderSpec):
            status = self.devices[primary.id].status()
            self.run.errors.append(
                f"{primary.id}: primary camera stalled ({status['frames']} frame(s) "
                f"after {limit:.0f} s)"
            )
        self._finish()

    def _finish(self) -> None:
        # before the devices stop: a cancelled MDA also reports itself done
        early = self._user_stop and not self._primary_done
        elapsed = time.monotonic() - self._t0 if self._t0 is not None else 0.0
        primary = self.experiment.primary.id
        # the primary first: its last frame is the end of the run
        order = [primary] + [d for d in self.devices if d != primary]
        for device_id in order:
            device = self.devices.get(device_id)
            if device is None:
                continue
            try:
                device.stop()
            except Exception as exc:
                self.run.errors.append(f"{device_id}: {exc}")
            if isinstance(device, Encoder):
                self.run.device_stopped(device_id)
                if device.error is not None and device_id not in self._failed:
                    self.run.errors.append(f"{device_id}: {device.error}")
                elif (problem := device.stream_problem()) is not None:
                    self.run.errors.append(problem)  # an empty CSV is not a run
        if early and (reason := self._interruption(elapsed)) is not None:
            self.run.interrupt(reason)
        self.run.stop(raise_errors=False)
        self._shutdown_devices()
        self._state = "stopped"
        self._finished.set()

    def _interruption(self, elapsed: float) -> str | None:
        """Why a run stopped (by :meth:`stop`, ``elapsed`` s in) before its plan,
        when nothing failed (else None)."""
        if self._failed or self.errors or elapsed >= self.duration_s:
            return None
        reason = f"stopped by the user after {elapsed:.1f} of {self.duration_s:g} s"
        primary = self.devices.get(self.experiment.primary.id)
        planned = getattr(primary, "frames", None)  # MMCamera's plan
        if isinstance(primary, DirectCamera):
            planned = primary.max_frames
        if primary is not None and planned and not isinstance(primary, Encoder):
            got = primary.status()["frames"]
            reason += f" ({primary.device_id}: {got} of {planned} planned frames)"
        return reason

    def _shutdown_devices(self) -> None:
        for cam in self._plan.cameras.values():
            if isinstance(cam, MMCamera):
                cam.shutdown()
            else:
                cam.source.close()
        if self._plan.encoder is not None and self._plan.encoder.serial is not None:
            with contextlib.suppress(Exception):
                self._plan.encoder.serial.close()

    # ------------------------------------------------------------ reporting
    def status(self) -> dict[str, Any]:
        """Live state for a GUI or CLI: per device frames, fps, lost, queue fill."""
        elapsed = time.monotonic() - self._t0 if self._t0 is not None else 0.0
        return {
            "state": self._state,
            "elapsed_s": round(elapsed, 3),
            "duration_s": self.duration_s,
            "primary": self.experiment.primary.id,
            "devices": {k: self._device_status(k, d) for k, d in self.devices.items()},
            "errors": list(self.run.errors),
        }

    def _device_status(self, device_id: str, device: Any) -> dict[str, Any]:
        """A device's status; a camera's also has ``missing`` (ImageNumber gaps, as
        ``inspect`` counts them: see ``data.frame_timing``) beside ``lost``."""
        status = dict(device.status())
        if device_id in self._plan.cameras:
            status["missing"] = self.run.frames_missing(device_id)
        return status

    def result(self) -> ExperimentPayload:
        """The CLI's JSON object: ``ok``, ``files``, ``run_dir``, ``manifest``, ..."""
        files: list[DeviceFile] = []
        for device_id, device in self.devices.items():
            writer = getattr(device, "writer", None)
            if writer is not None:
                for entry in describe_writer(writer):
                    files.append({**entry, "device_id": device_id})
            elif isinstance(device, Encoder) and device.csv_path is not None:
                files.append(
                    {
                        "path": str(device.csv_path),
                        "kind": "csv",
                        "frames": device.samples,
                        "sidecar": None,
                        "device_id": device_id,
                    }
                )
        return {
            "ok": self._state == "stopped" and not self.run.errors,
            "files": files,
            "run_dir": str(self.run.run_dir),
            "manifest": str(self.run.manifest_path),
            "dataqueue": str(self.run.dataqueue_path),
            "subject": self.subject,
            "session": self.run.paths.session,
            "task": self.task,
            "duration_s": self.duration_s,
            "devices": {k: self._device_status(k, d) for k, d in self.devices.items()},
            "errors": list(self.run.errors),
            "interrupted": self.run.interrupted,
        }


def _encoder_producer(encoder: Encoder, spec: EncoderSpec) -> Producer:
    """``spec`` is ``encoder.spec`` as the experiment wrote it (with its output)."""
    if spec.type == "wheel":
        rows = DataqueuePayloadSchema(
            device_id=spec.id,
            payload_format="scalar",
            description="one row per wheel sample: payload = clicks since the "
            "previous sample, device_ts = seconds since the encoder started",
        )
    else:
        rows = DataqueuePayloadSchema(
            device_id=spec.id,
            payload_format="dict",
            payload_fields={"distance": "float", "speed": "float", "device_us": "int"},
            description="one row per treadmill sample, fanned out into distance, "
            "speed and device_us columns; device_us is the firmware clock",
        )
    assert encoder.csv_path is not None

    def calibration() -> dict[str, Any]:
        return {
            "samples": encoder.samples,
            "lines_received": encoder.lines,
            "unparsed_lines": encoder.unparsed,
            "cpr": spec.cpr,
            "diameter_mm": spec.diameter_mm,
            "sample_interval_ms": spec.sample_interval_ms,
            "port": spec.port,
            "development_mode": spec.development_mode,
            "columns": encoder.columns,
        }

    return Producer(
        device_id=spec.id,
        device_type="encoder",
        data_type=spec.type,
        file_type="csv",
        output_path=encoder.csv_path,
        bids_type=spec.output.bids_type,
        sampling_rate_hz=encoder.sampling_rate_hz,
        clock_source="monotonic_s",
        queue_rows=rows,
        calibration=calibration,
    )
