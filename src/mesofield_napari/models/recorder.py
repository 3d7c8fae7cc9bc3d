"""Recording on a live core: the model behind the recorder widget (no Qt here).

A :class:`RecordingSession` records either its own time-lapse on a core or, when
*armed*, every MDA somebody else (napari-micromanager's MDA widget) runs on that core,
each into a new run folder through :class:`~mesofield_napari.data.manager.RunManager`.

Threads: the MDA callbacks run on the acquisition thread (connected directly, see
``data/_signals.py``) and only hand frames to the writers' bounded queues; ``start``,
``stop``, ``status`` and ``add_note`` are called from the GUI thread. Run transitions
happen under ``_lock``; a frame arriving without a run is ignored (not ours).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import useq

from ..acquisition.run_watch import RunWatch
from ..acquisition.sequencing import chunked_sequencing, endless_timelapse
from ..acquisition.timelapse import add_writers, min_frames_written, timelapse
from ..data.formats.tiff_compressed import parse_compression
from ..data.manager.paths import normalize_session, validate_label
from ..data.manager.run_manager import RunManager
from ..data.writer import is_open_ended
from ..data.writer.signals import connect_direct, disconnect_quietly

if TYPE_CHECKING:
    import numpy as np
    from pymmcore_plus import CMMCorePlus

    from ..acquisition.timelapse import Writer
    from ..live import LiveTraces

WRITER_CHOICES: tuple[str, ...] = ("tiff", "mp4", "both")
LOW_DISK_BYTES = 2 * 2**30  # warn below this much free space...
LOW_DISK_SECONDS = 300.0  # ...or when the disk fills within this time


@dataclass
class RecorderSettings:
    """What the user chose in the recorder (also what ``gui --record-frames`` sets)."""

    root: str = ""
    subject: str = "sim"
    session: str = "1"
    task: str = "rec"
    experimenter: str = ""
    writers: str = "tiff"
    frames: int = 1000
    duration_s: float | None = None  # stop after this long instead of after `frames`
    until_stop: bool = False  # no planned length: record until Stop (files grow)
    interval_s: float = 0.0
    fps: float | None = None  # video frame rate (None: 1000 / exposure)
    fourcc: str = "H264"  # real H.264 through PyAV; "h264-lossless", "mp4v", ...
    contrast: tuple[float, float] | None = None  # video contrast (None: bit depth)
    camera_id: str = "mesoscope"  # data queue / manifest id (datakit's timeline master)
    camera_name: str = "meso"  # file suffix: …_meso.ome.tiff (mesofield's rule)
    max_queue_mb: int = 512
    compression: str = (
        ""  # the TIFF's lossless codec: "" none, "deflate", "zstd", "jpegxl"
    )

    def problems(self) -> list[str]:
        """Why these settings cannot record (empty when they can)."""
        out: list[str] = []
        if not self.root.strip():
            out.append("choose an output folder")
        elif (why := folder_problem(Path(self.root).expanduser())) is not None:
            out.append(why)
        for what, value in (
            ("subject", self.subject),
            ("task", self.task),
            ("camera id", self.camera_id),
            ("camera name", self.camera_name),
        ):
            try:
                validate_label(what, value)
            except ValueError as exc:
                out.append(str(exc))
        try:
            normalize_session(self.session)
        except ValueError as exc:
            out.append(str(exc))
        if self.writers not in WRITER_CHOICES:
            out.append(f"writers must be one of {', '.join(WRITER_CHOICES)}")
        if not self.until_stop and self.duration_s is None and self.frames < 1:
            out.append("record at least 1 frame")
        if self.duration_s is not None and not self.duration_s > 0:
            out.append("duration must be more than 0 s")
        if self.fps is not None and not self.fps > 0:
            out.append("video fps must be more than 0")
        if self.contrast is not None and not self.contrast[0] < self.contrast[1]:
            out.append("video contrast: low must be below high")
        if self.interval_s < 0:
            out.append("interval must not be negative")
        try:
            parse_compression(self.compression)
        except ValueError as exc:
            out.append(str(exc))
        return out

    def planned_frames(self, exposure_ms: float) -> int:
        """Frames to allocate: ``frames``, or enough for ``duration_s`` at full rate.

        For a duration the session stops itself when the time is up; the writers
        trim what was allocated but not recorded. 0 for a run until Stop.
        """
        if self.until_stop:
            return 0
        if self.duration_s is None:
            return self.frames
        period_s = max(self.interval_s, exposure_ms / 1000.0, 1e-3)
        return math.ceil(self.duration_s / period_s) + 1

    def parameters(self) -> dict[str, Any]:
        """What goes into the run's configuration CSV."""
        return {
            "experimenter": self.experimenter,
            "frames": self.frames
            if self.duration_s is None and not self.until_stop
            else "",
            "until_stop": self.until_stop,
            "duration_s": self.duration_s if self.duration_s is not None else "",
            "interval_s": self.interval_s,
            "writer": self.writers,
            "camera": self.camera_id,
            "camera_name": self.camera_name,
            # only when chosen: uncompressed runs keep their configuration as before
            **({"compression": self.compression} if self.compression else {}),
        }


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot hold runs, judged by it or its nearest existing parent."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return f"output folder {folder} cannot be created"
        probe = probe.parent
    if not probe.is_dir():
        return f"output folder {folder} is under a file ({probe})"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"output folder is not writable: {probe}"
    return None


@dataclass
class RunOutcome:
    """A finished run, as the widget shows it and reopens it."""

    run_dir: Path
    name: str
    data_files: list[Path]
    frames_written: int
    manifest: dict[str, Any]
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class RecorderStatus:
    """Numbers the widget shows while recording."""

    state: str
    run_name: str = ""
    frames_planned: int = 0
    frames_acquired: int = 0
    frames_written: int = 0
    frames_lost: int = 0  # received, not saved (writer)
    frames_missing: int = 0  # numbered by the camera, never delivered (frame_timing)
    backpressure_events: int = 0
    queue_fill: float = 0.0
    acquisition_fps: float | None = None
    free_bytes: int | None = None
    run_time_left_s: float | None = None
    disk_time_left_s: float | None = None
    warnings: list[str] = field(default_factory=list)


class _ActiveRun:
    def __init__(
        self, run: RunManager, writers: list[Writer], planned: int, watch: RunWatch
    ) -> None:
        self.run = run
        self.writers = writers
        self.planned = planned
        self.watch = watch
        self.cancelled = False  # stopped on purpose: user, duration, failing writer
        self.stop_reason: str | None = None  # who stopped it ("stopped by the user")
        self.frames = 0
        self.frame_bytes = 0
        self.t0: float | None = None
        self.arrivals: deque[float] = deque(maxlen=64)


class RecordingSession:
    """Records on ``core``: its own time-lapse (:meth:`start`) or its MDAs (:meth:`arm`).

    Parameters
    ----------
    on_run_finished
        Called with a :class:`RunOutcome` on the acquisition thread after a run's
        files are final (a GUI marshals it to its own thread).
    on_error
        Called with an exception when an armed run could not start.
    """

    def __init__(
        self,
        core: CMMCorePlus,
        settings: RecorderSettings,
        *,
        on_run_finished: Callable[[RunOutcome], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if problems := settings.problems():
            raise ValueError("; ".join(problems))
        self.core = core
        self.settings = settings
        self.on_run_finished = on_run_finished
        self.on_error = on_error
        self.mode: Literal["idle", "timelapse", "armed", "stopped"] = "idle"
        self.outcomes: list[RunOutcome] = []
        self.latest_frame: tuple[int, np.ndarray] | None = None
        self.last_error: BaseException | None = None  # what our MDA thread raised
        self.live_traces: LiveTraces | None = None  # live ROI traces (live/), optional
        self._lock = threading.RLock()
        self._active: _ActiveRun | None = None
        self._sequence: useq.MDASequence | None = None
        self._thread: threading.Thread | None = None
        self._connected = False
        self._stop_requested = False
        self._closing = False  # shutdown(): the app or the dock is closing
        self._idle = threading.Event()
        self._idle.set()
        self._engine_hook = contextlib.ExitStack()  # chunked sequencing, own runs
        self._last_status: RecorderStatus | None = None  # the last run's final numbers

    # ------------------------------------------------------------ public API
    @property
    def recording(self) -> bool:
        return self._active is not None

    @property
    def run(self) -> RunManager | None:
        active = self._active
        return active.run if active else None

    def start(self) -> RunManager:
        """Open a run and start a time-lapse on the core (returns at once).

        Errors creating the run folder or files are raised here, before anything is
        acquired.
        """
        if self.mode != "idle":
            raise RuntimeError(f"session already used ({self.mode})")
        if self.core.mda.is_running():
            raise RuntimeError("the microscope is busy with another acquisition")
        exposure = float(self.core.getExposure())
        planned = self.settings.planned_frames(exposure)
        if planned:
            self._sequence = timelapse(  # events made lazily, however long the run
                planned,
                self.settings.interval_s,
                # a continuous run keeps the shutter open instead of toggling it (and
                # signalling the GUI) around every frame
                keep_shutter_open_across=(
                    ("t",) if self.settings.interval_s == 0 else ()
                ),
                metadata={"mesofield": {"recorder": "timelapse"}},
            )
            run_events: Any = self._sequence
        else:  # until Stop: endless events, hardware-sequenced in chunks
            self._sequence = None
            run_events = endless_timelapse(self.settings.interval_s, core=self.core)
        active = self._open_run(planned)  # raises before anything is connected
        self.mode = "timelapse"
        self._connect()
        with self._lock:
            self._active = active
            self._idle.clear()
        try:
            if planned:  # endless events come chunked already
                self._engine_hook.enter_context(chunked_sequencing(self.core))
            active.watch.start()
            self._thread = threading.Thread(
                target=self._run_timelapse,
                args=(run_events,),
                name="recorder-mda",
                daemon=True,
            )
            self._thread.start()
        except BaseException as exc:
            self._finish(error=exc)
            raise
        return active.run

    def arm(self) -> None:
        """Record every MDA the core runs from now on, each into a new run."""
        if self.mode != "idle":
            raise RuntimeError(f"session already used ({self.mode})")
        self.mode = "armed"
        self._connect()

    def stop(self) -> None:
        """Stop recording: cancel the acquisition; files are finalized when it ends."""
        self._stop_requested = True
        self._mark_cancelled(
            "the recorder was closed" if self._closing else "stopped by the user"
        )
        if self.recording and self.core.mda.is_running():
            self.core.mda.cancel()
        if not self.recording:
            self._disconnect()
            self.mode = "stopped"

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop and wait until every file is final (closing the app or the dock)."""
        self._closing = True
        self.stop()
        if not self._idle.wait(timeout):
            # the acquisition never finished: finalize what was written anyway
            with self._lock:
                if self._active is not None:
                    self._finish(error=TimeoutError("did not stop"))
        if self._thread is not None:
            self._thread.join(timeout)
        self._disconnect()
        self.mode = "stopped"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no run is in progress; False on timeout."""
        return self._idle.wait(timeout)

    def add_note(self, text: str) -> str:
        """Timestamped note into the running run's notes file."""
        run = self.run
        if run is None:
            raise RuntimeError("no run in progress: notes go into a running run")
        return run.add_note(text)

    def status(self) -> RecorderStatus:
        """Live numbers while recording; after a run, that run's final numbers."""
        active = self._active
        if active is None:
            return self._last_status or RecorderStatus(state=self.mode)
        st = RecorderStatus(state="recording", run_name=active.run.paths.prefix)
        st.frames_planned = active.planned
        st.frames_acquired = active.frames
        stats = [w.stats for w in active.writers]
        st.frames_written = min(s.frames_written for s in stats) if stats else 0
        st.frames_lost = sum(s.frames_lost for s in stats)
        st.frames_missing = active.run.frames_missing(self.settings.camera_id)
        st.backpressure_events = sum(s.backpressure_events for s in stats)
        st.queue_fill = max((s.queue_fill for s in stats), default=0.0)
        times = list(active.arrivals)
        if len(times) >= 2 and times[-1] > times[0]:
            st.acquisition_fps = (len(times) - 1) / (times[-1] - times[0])
        with contextlib.suppress(OSError):
            st.free_bytes = shutil.disk_usage(active.run.run_dir).free
        if st.acquisition_fps:
            if active.planned:  # unknown for a run until Stop
                st.run_time_left_s = max(0, active.planned - active.frames) / (
                    st.acquisition_fps
                )
            if self.settings.duration_s is not None and active.t0 is not None:
                elapsed = time.perf_counter() - active.t0
                st.run_time_left_s = max(0.0, self.settings.duration_s - elapsed)
            rate = st.acquisition_fps * max(active.frame_bytes, 1)
            if st.free_bytes is not None:
                st.disk_time_left_s = st.free_bytes / rate
        if st.free_bytes is not None and (
            st.free_bytes < LOW_DISK_BYTES
            or (
                st.disk_time_left_s is not None
                and st.disk_time_left_s < LOW_DISK_SECONDS
            )
        ):
            st.warnings.append(
                f"disk nearly full: {st.free_bytes / 2**30:.1f} GiB free"
                + (
                    f" (~{st.disk_time_left_s / 60:.0f} min at this rate)"
                    if st.disk_time_left_s is not None
                    else ""
                )
            )
        if st.frames_lost:
            st.warnings.append(f"{st.frames_lost} frame(s) could not be saved")
        return st

    # ------------------------------------------------------------ runs
    def _open_run(self, planned: int) -> _ActiveRun:
        s = self.settings
        run = RunManager(
            Path(s.root).expanduser(), s.subject, s.session, s.task, s.parameters()
        )
        run.start()
        try:
            writers = self._make_writers(run)
        except BaseException as exc:
            run.stop(error=exc, raise_errors=False)
            raise
        return _ActiveRun(run, writers, planned, RunWatch(self.core, planned))

    def _make_writers(self, run: RunManager) -> list[Writer]:
        s = self.settings
        writers = add_writers(
            run,
            self.core,
            s.camera_id,
            s.writers,
            suffix=s.camera_name,
            interval_s=s.interval_s,
            fps=s.fps,
            fourcc=s.fourcc,
            contrast_limits=s.contrast,
            max_queue_bytes=s.max_queue_mb * 2**20,
            compression=parse_compression(s.compression) or None,
        )
        for w in writers:
            w.on_error = self._writer_failed
        return writers

    def _writer_failed(self, exc: BaseException) -> None:
        # nobody should record for an hour into a broken file (the writer reports it)
        self._mark_cancelled("a writer failed")
        self.core.mda.cancel()

    def _mark_cancelled(self, reason: str | None = None) -> None:
        if (active := self._active) is not None:
            active.cancelled = True
            if active.stop_reason is None:
                active.stop_reason = reason

    def _run_timelapse(
        self, sequence: useq.MDASequence | Iterable[useq.MDAEvent]
    ) -> None:
        """The acquisition thread of our own time-lapse.

        ``core.mda.run`` raises *after* ``sequenceFinished`` (the outcome is already
        built by then, from the runner's status and the buffer); catching it here
        keeps a traceback out of the console.
        """
        try:
            self.core.mda.run(sequence)
        except Exception as exc:
            self.last_error = exc

    def _finish(self, error: BaseException | None = None) -> None:
        with self._lock:
            active, self._active = self._active, None
        if active is None:
            return
        self._engine_hook.close()
        active.watch.stop()
        for w in active.writers:
            w.close()  # their counts are final from here on
        written = min_frames_written(active.writers)
        elapsed = time.perf_counter() - (active.t0 or active.watch.t0)
        # one source of truth: the camera's problems go into run.errors (manifest)
        active.run.errors.extend(
            active.watch.problems(
                written=written,
                frame_bytes=active.frame_bytes,
                elapsed_s=elapsed,
                stopped_on_purpose=active.cancelled or error is not None,
            )
        )
        if (reason := self._interruption(active, written, elapsed, error)) is not None:
            active.run.interrupt(reason)  # the manifest says incomplete, and why
        if (live := self.live_traces) is not None:  # rows/files before the run closes
            live.finish(active.run)
        # closes every writer (finishing its sequence), then the run's own files
        manifest = active.run.stop(error=error, raise_errors=False)
        outcome = RunOutcome(
            run_dir=active.run.run_dir,
            name=active.run.paths.prefix,
            data_files=[p for w in active.writers for p in w.files],
            frames_written=written,
            manifest=manifest,
            errors=list(dict.fromkeys(active.run.errors)),
        )
        self._last_status = self._final_status(active, outcome)
        self.outcomes.append(outcome)
        if self.mode == "timelapse" or self._stop_requested:
            self._disconnect()
            self.mode = "stopped"
        self._idle.set()
        if self.on_run_finished is not None:
            self.on_run_finished(outcome)

    def _interruption(
        self,
        active: _ActiveRun,
        written: int,
        elapsed: float,
        error: BaseException | None,
    ) -> str | None:
        """Why a planned run ended before its plan, when nothing failed (else None).

        A Stop (or closing the app) before the planned frames, or before the
        duration, is an interrupted run; so is an armed MDA cancelled in
        napari-micromanager. Reaching the duration or the planned frames is not.
        """
        reason = active.stop_reason
        if error is not None or active.run.errors or reason == "a writer failed":
            return None  # incomplete already; the errors say why
        duration = self.settings.duration_s
        if self.mode == "timelapse" and duration is not None:
            if reason in (None, "the duration ended") or elapsed >= duration:
                return None
            return f"{reason} after {elapsed:.1f} of {duration:g} s ({written} frames)"
        if not active.planned or written >= active.planned:
            return None
        if reason is None:
            if active.watch.finish_reason() != "canceled":
                return None
            reason = "cancelled in napari-micromanager"
        return f"{reason} after {written} of {active.planned} planned frames"

    def _final_status(self, active: _ActiveRun, outcome: RunOutcome) -> RecorderStatus:
        stats = [w.stats for w in active.writers]
        st = RecorderStatus(state="stopped", run_name=outcome.name)
        st.frames_planned = active.planned
        st.frames_acquired = active.frames
        st.frames_written = outcome.frames_written
        st.frames_lost = sum(s.frames_lost for s in stats)
        st.backpressure_events = sum(s.backpressure_events for s in stats)
        times = list(active.arrivals)
        if len(times) >= 2 and times[-1] > times[0]:
            st.acquisition_fps = (len(times) - 1) / (times[-1] - times[0])
        with contextlib.suppress(OSError):
            st.free_bytes = shutil.disk_usage(outcome.run_dir).free
        st.warnings = list(outcome.errors)
        return st

    # ------------------------------------------------------------ MDA callbacks
    def _signal_pairs(self) -> list[tuple[Any, Callable[..., None]]]:
        ev = self.core.mda.events
        return [
            (ev.sequenceStarted, self._on_started),
            (ev.frameReady, self._on_frame),
            (ev.sequenceFinished, self._on_finished),
        ]

    def _connect(self) -> None:
        if not self._connected:
            for signal, slot in self._signal_pairs():
                connect_direct(signal, slot)  # on the acquisition thread
            self._connected = True

    def _disconnect(self) -> None:
        if self._connected:
            for signal, slot in self._signal_pairs():
                disconnect_quietly(signal, slot)
            self._connected = False

    def _ours(self, seq: useq.MDASequence) -> bool:
        """Is ``seq`` our own time-lapse (sized, or the endless one until Stop)?"""
        if self._sequence is None:  # until Stop: the runner wraps our events
            return is_open_ended(seq)
        return bool(seq.uid == self._sequence.uid)

    def _on_started(self, seq: useq.MDASequence, meta: Any = None) -> None:
        if self.mode == "timelapse":
            if not self._ours(seq):
                return
        elif self.mode == "armed" and not self._stop_requested:
            try:
                planned = seq.sizes.get("t", 1) if seq.sizes else 1
                opened = self._open_run(max(1, planned))
            except Exception as exc:
                self.core.mda.cancel()
                if self.on_error is not None:
                    self.on_error(exc)
                return
            with self._lock:
                self._active = opened
                self._idle.clear()
            opened.watch.start()
        active = self._active
        if active is None:
            return
        for w in active.writers:
            if meta is None:
                w.sequenceStarted(seq)
            else:
                w.sequenceStarted(seq, meta)

    def _on_frame(self, frame: np.ndarray, event: useq.MDAEvent, meta: Any) -> None:
        active = self._active
        if active is None:
            return
        for w in active.writers:
            w.frameReady(frame, event, meta)
        now = time.perf_counter()
        if active.t0 is None:
            active.t0 = now
            active.frame_bytes = frame.nbytes
        active.frames += 1
        active.arrivals.append(now)
        self.latest_frame = (active.frames, frame)
        if (live := self.live_traces) is not None:  # a one-slot hand-off, no work
            live.feed(active.run, active.frames, frame, meta)
        duration = self.settings.duration_s
        if (
            self.mode == "timelapse"
            and duration is not None
            and now - active.t0 >= duration
        ):
            active.cancelled = True
            active.stop_reason = active.stop_reason or "the duration ended"
            self.core.mda.cancel()

    def _on_finished(self, seq: useq.MDASequence) -> None:
        if self.mode == "timelapse" and not self._ours(seq):
            return
        self._finish()


def describe_outcome(outcome: RunOutcome) -> str:
    """One line for a status bar."""
    text = f"{outcome.frames_written} frames -> {outcome.run_dir}"
    if outcome.errors:
        text += f" (errors: {'; '.join(outcome.errors)})"
    return text


__all__ = [
    "RecorderSettings",
    "RecorderStatus",
    "RecordingSession",
    "RunOutcome",
    "describe_outcome",
    "folder_problem",
]
