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

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

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
