"""One definition of a recording's frame timing: rate, missing and late frames.

``inspect``, the reader's layer metadata, the Recording inspector and the manifest all
take their figures from :func:`frame_timing`, so one file tells one story:

missing
    Frames the camera numbered but the file does not hold: the gaps in the camera's
    ``ImageNumber`` (a number jumping from 7 to 10 is 2 missing frames). A camera
    without frame numbers (direct-mode cameras: OpenCV, the simulated pupil camera)
    has nothing that proves a frame missing, so it counts none.
late
    Frames that arrived more than :data:`LATE_FACTOR` x the median interval after the
    previous one *without* a missing number in between: the camera or the computer
    stalled, every frame is there. For a camera without numbers every long interval
    is a late frame.
lost
    Frames the writer received but could not save (``writer.stats.frames_lost``, a
    writer error): not a timing figure, reported beside these.

The rate is measured on the frames' own clock (``(frames - 1) / (last - first)``),
never the nominal one a writer was given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LATE_FACTOR", "FrameTiming", "MissingCounter", "frame_timing"]

LATE_FACTOR = 1.5  # an interval this much above the median is a late frame


@dataclass(frozen=True)
class FrameTiming:
    """The timing figures of one position (see the module docstring)."""

    frames: int
    numbered: bool  # the camera gave an ImageNumber for every frame
    missing: int
    late: int
    median_interval_s: float | None
    duration_s: float
    fps: float | None
    #: indices of frames right after a gap in ImageNumber
    missing_after: np.ndarray = field(repr=False, default_factory=lambda: _ints([]))
    #: indices of late frames (interval before them > LATE_FACTOR x median)
    late_frames: np.ndarray = field(repr=False, default_factory=lambda: _ints([]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "numbered": self.numbered,
            "missing_frames": self.missing,
            "late_frames": self.late,
            "median_interval_s": self.median_interval_s,
            "duration_s": round(self.duration_s, 6),
            "fps": round(self.fps, 3) if self.fps else None,
        }


def _ints(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=int)


def frame_timing(
    image_numbers: Any, times_s: Any, factor: float = LATE_FACTOR
) -> FrameTiming:
    """The figures of frames with these camera numbers and times (seconds).

    ``image_numbers`` holds ``NO_NUMBER`` (or is empty) where a camera gives none;
    ``times_s`` is the frame clock (NaN where unknown).
    """
    from .formats.frameindex import NO_NUMBER

    times = np.asarray(times_s, dtype=float)
    numbers = np.asarray(image_numbers, dtype=np.int64)
    n = int(max(times.size, numbers.size))
    numbered = numbers.size == n and n > 0 and not (numbers == NO_NUMBER).any()
    steps = np.diff(numbers) if numbered else np.ones(max(n - 1, 0), dtype=np.int64)
    gaps = np.clip(steps - 1, 0, None)
    missing_after = np.flatnonzero(gaps) + 1

    dt = np.diff(times) if times.size > 1 else np.zeros(0)
    finite = dt[np.isfinite(dt)]
    med = float(np.median(finite)) if finite.size else None
    late_frames = _ints([])
    if med is not None and med > 0 and dt.size:
        with np.errstate(invalid="ignore"):
            long = dt > factor * med
        if numbered and steps.size == dt.size:
            long &= steps == 1  # a long interval over missing numbers is not late
        late_frames = np.flatnonzero(long) + 1
    duration = 0.0
    if times.size > 1 and np.isfinite(times[0]) and np.isfinite(times[-1]):
        duration = float(times[-1] - times[0])
    fps = (times.size - 1) / duration if duration > 0 else None
    return FrameTiming(
        frames=n,
        numbered=bool(numbered),
        missing=int(gaps.sum()),
        late=int(late_frames.size),
        median_interval_s=med,
        duration_s=duration,
        fps=fps,
        missing_after=_ints(missing_after),
        late_frames=late_frames,
    )


class MissingCounter:
    """Missing frames counted as they arrive (the live form of ``missing``).

    Fed each frame's ``ImageNumber`` (a camera without one feeds its frame index,
    so it never counts a frame missing). A number at or below the last one is a
    camera restart (a new sequence), as :func:`frame_timing` treats it.
    """

    def __init__(self) -> None:
        self.missing = 0
        self._last: int | None = None

    def feed(self, number: Any) -> None:
        try:
            n = int(number)
        except (TypeError, ValueError):
            return
        if self._last is not None and n > self._last + 1:
            self.missing += n - self._last - 1
        self._last = n
