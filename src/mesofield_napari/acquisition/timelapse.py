"""Headless recording: a time-lapse MDA on a core, streamed into our writers.

This is what ``mesofield-napari record`` runs; the recorder widget uses the same
pieces. No Qt here.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import useq
from useq._mda_event import ReadOnlyDict

from ..data import CustomWriter, CV2Writer, RecordingError
from ..data.formats.payloads import RecordResultPayload, WriterFile
from ..data.manager.run_manager import describe_writer, run_of
from .preflight import frame_geometry
from .run_watch import RunWatch
from .sequencing import chunked_sequencing

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from pymmcore_plus import CMMCorePlus

    from ..data.manager.run_manager import RunManager

Writer = CustomWriter | CV2Writer


@dataclass
class RecordResult:
    """What a recording produced (the CLI prints this as JSON)."""

    files: list[WriterFile] = field(default_factory=list)
    frames_requested: int = 0
    frames_written: int = 0  # by every writer: what is on disk
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)  # writers' and camera's
    camera_errors: list[str] = field(default_factory=list)  # not the writers'
    interrupted: str | None = None  # a planned run stopped early (Ctrl-C, SIGTERM)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> RecordResultPayload:
        return {
            "ok": self.ok,
            "files": self.files,
            "frames_requested": self.frames_requested,
            "frames_written": self.frames_written,
            "elapsed_s": round(self.elapsed_s, 3),
            "errors": self.errors,
            "interrupted": self.interrupted,
        }


def make_core(
    config: Path | None = None,
    *,
    size: tuple[int, int] = (512, 512),
    exposure_ms: float | None = None,
) -> CMMCorePlus:
    """A Micro-Manager configuration's core, or the built-in simulated camera.

    ``exposure_ms`` is applied when given (the simulated camera defaults to 10 ms).
    Raises ``FileNotFoundError`` for a missing configuration and whatever
    ``loadSystemConfiguration`` raises for a broken one.
    """
    if config is None:
        from ..devices.sim_camera import create_sim_core

        return create_sim_core(
            size, exposure_ms=10.0 if exposure_ms is None else exposure_ms
        )
    from pymmcore_plus import CMMCorePlus

    if not config.is_file():
        raise FileNotFoundError(f"Micro-Manager configuration not found: {config}")
    core = CMMCorePlus()
    core.loadSystemConfiguration(str(config))
    if exposure_ms is not None:
        core.setExposure(exposure_ms)
    return core


def add_writers(
    run: RunManager,
    core: CMMCorePlus,
    camera_id: str,
    kinds: str,
    *,
    suffix: str | None = None,
    interval_s: float = 0.0,
    fps: float | None = None,
    fourcc: str | None = None,
    contrast_limits: tuple[float, float] | None = None,
    max_queue_bytes: int,
    compression: str | None = None,
) -> list[Writer]:
    """The run's writers for one camera: ``kinds`` is ``tiff``, ``mp4`` or ``both``.

    ``camera_id`` names the camera in the data queue and the manifest (``mesoscope``
    is the id datakit takes as the timeline master); ``suffix`` ends its file names
    (mesofield's rule: the camera's name, ``…_meso.ome.tiff``; default: the id).
    Video defaults: fps = 1000 / exposure; contrast = the simulated camera's bit
    depth (UniMMCore reports 16 bits for it), else the writer reads the camera's bit
    depth from the sequence's summary metadata. ``compression``: the TIFF's lossless
    codec (``CustomWriter``; None: uncompressed).
    """
    from ..devices.sim_camera import sim_camera

    exposure = float(core.getExposure())
    period_s = max(interval_s, exposure / 1000.0)
    rate = 1.0 / period_s if period_s > 0 else None
    writers: list[Writer] = []
    if kinds in ("tiff", "both"):
        writers.append(
            run.writer_for(
                camera_id,
                "tiff",
                suffix=suffix,
                sampling_rate_hz=rate,
                max_queue_bytes=max_queue_bytes,
                **({"compression": compression} if compression else {}),
            )
        )
    if kinds in ("mp4", "both"):
        cam = sim_camera(core)  # type: ignore[arg-type]
        writers.append(
            run.writer_for(
                camera_id,
                "mp4",
                suffix=suffix,
                fps=fps or (1000.0 / exposure if exposure > 0 else 30.0),
                fourcc=fourcc,
                contrast_limits=contrast_limits,
                bit_depth=cam.bit_depth if cam is not None else None,
                max_queue_bytes=max_queue_bytes,
            )
        )
    return writers


class TimeLapse(useq.MDASequence):
    """A plain time-lapse whose events are made one at a time.

    useq's own iterator feeds every axis to ``itertools.product``, which turns the
    whole time axis into a tuple first, and ``MDASequence.sizes`` counts it by
    iterating: 10**9 time points hang for minutes and exhaust memory before the first
    frame. A time-lapse needs neither: its size is ``loops`` and event ``t`` is
    ``MDAEvent(index={"t": t}, min_start_time=t * interval)``, exactly what useq
    yields for it (same ``keep_shutter_open`` and ``reset_event_timer``).
    """

    @property
    def sizes(self) -> dict[str, int]:
        loops = int(getattr(self.time_plan, "loops", 0) or 0)
        return {str(k): (loops if k == "t" else 0) for k in self.axis_order}

    def iter_events(self) -> Iterator[useq.MDAEvent]:
        loops = self.sizes["t"]
        interval = self.time_plan.interval.total_seconds()  # type: ignore[union-attr]
        keep_open = "t" in self.keep_shutter_open_across
        for t in range(loops):
            kwargs: dict[str, Any] = {
                "index": ReadOnlyDict({"t": t}),
                "min_start_time": t * interval,
                "sequence": self,
            }
            if keep_open and t < loops - 1:
                kwargs["keep_shutter_open"] = True
            if t == 0:
                kwargs["reset_event_timer"] = True
            yield useq.MDAEvent.model_construct(**kwargs)


def timelapse(frames: int, interval_s: float = 0.0, **kwargs: Any) -> useq.MDASequence:
    """A plain time-lapse (the mesoscope's pattern), its events built lazily.

    ``kwargs`` go to :class:`useq.MDASequence` (``metadata``,
    ``keep_shutter_open_across``); only a time plan is allowed.
    """
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if not math.isfinite(interval_s) or interval_s < 0:
        raise ValueError(f"interval must be a finite number >= 0, got {interval_s}")
    return TimeLapse(
        time_plan=useq.TIntervalLoops(
            interval=timedelta(seconds=interval_s), loops=frames
        ),
        **kwargs,
    )


def min_frames_written(writers: list[Writer]) -> int:
    """Frames every writer has on disk (the one number a run reports)."""
    return min((sum(w.frames_written.values()) for w in writers), default=0)


def record(
    core: CMMCorePlus,
    writers: list[Writer],
    sequence: useq.MDASequence | Iterable[useq.MDAEvent],
    *,
    join_timeout_s: float = 120.0,
) -> RecordResult:
    """Run ``sequence`` on ``core`` with ``writers`` attached straight to its signals.

    ``sequence`` is a sized sequence, or an endless iterator of events
    (``endless_timelapse(core=core)``) that records until Stop: Ctrl-C
    (``KeyboardInterrupt``) in the calling thread cancels the acquisition cleanly in
    both cases — the MDA runs on its own thread, so the caller stays responsive.
    A failing writer cancels the acquisition (so nobody records for an hour into a
    broken file); every writer is finalized whatever happens. A camera that fails or
    delivers fewer frames than planned, or a buffer overflow (camera faster than the
    disk), is not raised: it is one line in ``result.camera_errors`` (also in
    ``errors``), and what was written is kept. A planned run that Ctrl-C stopped
    before its last frame is not complete: ``result.interrupted`` says so, and so
    does the manifest of the writers' run (:meth:`RunManager.interrupt`).
    """
    sized = isinstance(sequence, useq.MDASequence)
    planned = (  # 0: until Stop
        (sequence.sizes.get("t", 1) or 1)
        if isinstance(sequence, useq.MDASequence)
        else 0
    )
    result = RecordResult(frames_requested=planned)
    cancelled = False

    def cancel(exc: BaseException | None = None) -> None:
        nonlocal cancelled
        cancelled = True
        core.mda.cancel()

    for w in writers:
        w.on_error = cancel
    watch = RunWatch(core, planned)
    failure: list[Exception] = []

    def acquire() -> None:
        try:
            core.mda.run(sequence)
        except Exception as exc:  # the camera/engine failed: keep what we have
            failure.append(exc)

    t0 = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(watch)
            for w in writers:
                stack.enter_context(w.attached(core))
            if sized:  # an endless iterator is chunked by endless_timelapse itself
                stack.enter_context(chunked_sequencing(core))
            thread = threading.Thread(target=acquire, name="record-mda", daemon=True)
            thread.start()
            by_user = _join_or_cancel(thread, cancel, join_timeout_s)
    finally:
        for w in writers:
            w.close()  # no-op unless the run was interrupted before it finished
        result.elapsed_s = time.perf_counter() - t0
    for w in writers:
        result.files.extend(describe_writer(w))
        try:
            w.raise_if_failed()
        except RecordingError as exc:
            result.errors.append(str(exc))
    result.frames_written = min_frames_written(writers)
    frame_bytes = _frame_bytes(core)
    result.camera_errors = watch.problems(
        written=result.frames_written,
        frame_bytes=frame_bytes,
        elapsed_s=result.elapsed_s,
        stopped_on_purpose=cancelled,
        error=failure[0] if failure else None,
    )
    result.errors.extend(result.camera_errors)
    if by_user and planned and result.frames_written < planned:
        result.interrupted = (
            f"interrupted after {result.frames_written} of {planned} planned frames"
        )
        for run in {id(r): r for w in writers if (r := run_of(w)) is not None}.values():
            run.interrupt(result.interrupted)
    return result


def _join_or_cancel(
    thread: threading.Thread, cancel: Callable[[], None], timeout_s: float
) -> bool:
    """Wait for the acquisition; Ctrl-C cancels it, then waits a bounded time.

    True when Ctrl-C (or a signal raised as KeyboardInterrupt) ended it.
    """
    try:
        while thread.is_alive():
            thread.join(0.2)
        return False
    except KeyboardInterrupt:
        cancel()
        thread.join(timeout_s)
        if thread.is_alive():  # pragma: no cover - a wedged camera driver
            raise RecordingError(
                f"the acquisition did not stop within {timeout_s:.0f} s of Stop"
            ) from None
        return True


def _frame_bytes(core: CMMCorePlus) -> int:
    try:
        return frame_geometry(core)[2]
    except Exception:  # pragma: no cover - a camera that cannot say
        return 0
