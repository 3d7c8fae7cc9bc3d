"""Headless recording: a time-lapse MDA on a core, streamed into our writers.

This is what ``mesofield-napari record`` runs; the recorder widget uses the same
pieces. No Qt here.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import useq

from .data import CustomWriter, CV2Writer, RecordingError
from .data.manager import describe_writer
from .sequencing import chunked_sequencing

if TYPE_CHECKING:
    from pathlib import Path

    from pymmcore_plus import CMMCorePlus

    from .data.manager import RunManager

Writer = CustomWriter | CV2Writer


@dataclass
class RecordResult:
    """What a recording produced (the CLI prints this as JSON)."""

    files: list[dict[str, Any]] = field(default_factory=list)
    frames_requested: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "files": self.files,
            "frames_requested": self.frames_requested,
            "elapsed_s": round(self.elapsed_s, 3),
            "errors": self.errors,
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
        from .sim import create_sim_core

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
    camera_name: str,
    kinds: str,
    *,
    fps: float | None = None,
    fourcc: str | None = None,
    contrast_limits: tuple[float, float] | None = None,
    max_queue_bytes: int,
) -> list[Writer]:
    """The run's writers for one camera: ``kinds`` is ``tiff``, ``mp4`` or ``both``.

    Video defaults: fps = 1000 / exposure; contrast = the simulated camera's bit
    depth (UniMMCore reports 16 bits for it), else the writer reads the camera's bit
    depth from the sequence's summary metadata.
    """
    from .sim import sim_camera

    writers: list[Writer] = []
    if kinds in ("tiff", "both"):
        writers.append(
            run.writer_for(camera_name, "tiff", max_queue_bytes=max_queue_bytes)
        )
    if kinds in ("mp4", "both"):
        exposure = float(core.getExposure())
        cam = sim_camera(core)  # type: ignore[arg-type]
        writers.append(
            run.writer_for(
                camera_name,
                "mp4",
                fps=fps or (1000.0 / exposure if exposure > 0 else 30.0),
                fourcc=fourcc,
                contrast_limits=contrast_limits,
                bit_depth=cam.bit_depth if cam is not None else None,
                max_queue_bytes=max_queue_bytes,
            )
        )
    return writers


def timelapse(frames: int, interval_s: float = 0.0) -> useq.MDASequence:
    """A plain time-lapse: the mesoscope's acquisition pattern."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    return useq.MDASequence(time_plan={"interval": interval_s, "loops": frames})


def record(
    core: CMMCorePlus, writers: list[Writer], sequence: useq.MDASequence
) -> RecordResult:
    """Run ``sequence`` on ``core`` with ``writers`` attached straight to its signals.

    A failing writer cancels the acquisition (so nobody records for an hour into a
    broken file); every writer is finalized whatever happens.
    """
    result = RecordResult(frames_requested=sequence.sizes.get("t", 1))

    def cancel(exc: BaseException) -> None:
        core.mda.cancel()

    for w in writers:
        w.on_error = cancel
    t0 = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            for w in writers:
                stack.enter_context(w.attached(core))
            stack.enter_context(chunked_sequencing(core))
            core.mda.run(sequence)
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
    return result
