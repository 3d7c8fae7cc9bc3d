"""What the recording inspector shows, computed without Qt or napari.

An :class:`Inspection` is built from a layer's ``metadata["mesofield"]`` (what the
reader attaches, see ``_reader.layer_data``) or from a :class:`Recording`. It holds the
summary rows (frames, duration, fps, dropped frames, codec, sidecar state, notes,
warnings) and the frame timing: inter-frame intervals in ms, their median and which
intervals are gaps (longer than ``DROP_FACTOR`` x the median, i.e. frames were
dropped there).

Interval ``k`` (``k = 1 .. frames - 1``) is the time from frame ``k - 1`` to frame
``k``; it is plotted at x = ``k``, so a gap is marked at the first frame after it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.reader.summary import DROP_FACTOR

if TYPE_CHECKING:
    from ..data.reader.recording import Recording

__all__ = [
    "DROP_FACTOR",
    "Inspection",
    "inspect_layer",
    "inspect_metadata",
    "inspect_recording",
    "interval_gaps",
]


@dataclass(frozen=True)
class Inspection:
    """Summary and frame timing of one recording (one position)."""

    name: str
    source: str | None
    frames: int
    timestamps_s: np.ndarray = field(repr=False)
    fps: float | None
    dropped_frames: int  # missing frames: gaps in the camera's ImageNumber
    codec: str | None
    sidecar: str | None
    position: str | None = None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    late_frames: int = 0  # long intervals without a missing number (frame_timing)

    # ------------------------------------------------------------ timing
    @property
    def duration_s(self) -> float | None:
        """First to last frame on the frame clock (None without timestamps)."""
        t = self.timestamps_s
        if t.size < 2 or not np.isfinite(t[-1]) or not np.isfinite(t[0]):
            return None
        return float(t[-1] - t[0])

    @property
    def interval_frames(self) -> np.ndarray:
        """x of each interval: the index of the frame that ends it (1 .. n-1)."""
        return np.arange(1, max(self.timestamps_s.size, 1), dtype=int)

    @property
    def intervals_ms(self) -> np.ndarray:
        """Inter-frame intervals in ms (NaN where a timestamp is missing)."""
        return np.diff(self.timestamps_s) * 1000.0

    @property
    def median_interval_ms(self) -> float | None:
        med, _ = interval_gaps(self.intervals_ms)
        return med

    @property
    def gap_intervals(self) -> np.ndarray:
        """Indices into ``intervals_ms`` of the intervals where frames were dropped."""
        return interval_gaps(self.intervals_ms)[1]

    @property
    def gap_frames(self) -> np.ndarray:
        """Frame indices right after a gap (the x of the dropped-frame markers)."""
        return self.interval_frames[self.gap_intervals]

    # ------------------------------------------------------------ summary
    def rows(self) -> list[tuple[str, str]]:
        """(label, text) pairs for the summary, in display order."""
        med = self.median_interval_ms
        return [
            ("File", Path(self.source).name if self.source else "n/a"),
            ("Frames", str(self.frames)),
            ("Duration", _fmt(self.duration_s, "{:.3f} s")),
            ("Frame rate", _fmt(self.fps, "{:.2f} fps")),
            ("Median interval", _fmt(med, "{:.2f} ms")),
            ("Missing frames", str(self.dropped_frames)),
            ("Late frames", str(self.late_frames)),
            ("Codec", self.codec or "uncompressed"),
            ("Sidecar", self.sidecar or "unknown"),
            ("Notes", "\n".join(self.notes) or "none"),
            ("Warnings", "\n".join(self.warnings) or "none"),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "position": self.position,
            "frames": self.frames,
            "duration_s": self.duration_s,
            "fps": self.fps,
            "median_interval_ms": self.median_interval_ms,
            "dropped_frames": self.dropped_frames,
            "missing_frames": self.dropped_frames,
            "late_frames": self.late_frames,
            "gap_frames": [int(i) for i in self.gap_frames],
            "codec": self.codec,
            "sidecar": self.sidecar,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None or not np.isfinite(value) else pattern.format(value)


def interval_gaps(
    intervals_ms: np.ndarray, factor: float = DROP_FACTOR
) -> tuple[float | None, np.ndarray]:
    """(median, indices of intervals > ``factor`` x median); NaNs are ignored.

    The same rule as :func:`~mesofield_napari.data.reader.summary.dropped_frames` uses when
    a recording has no camera frame numbers.
    """
    dt = np.asarray(intervals_ms, dtype=float)
    finite = dt[np.isfinite(dt)]
    if finite.size == 0:
        return None, np.zeros(0, dtype=int)
    med = float(np.median(finite))
    if med <= 0:
        return med, np.zeros(0, dtype=int)
    with np.errstate(invalid="ignore"):
        gaps = np.flatnonzero(dt > factor * med)
    return med, gaps


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out if np.isfinite(out) else None


def _as_int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence):
        return tuple(str(v) for v in value)
    return ()


def inspect_metadata(meta: Mapping[str, Any], name: str = "") -> Inspection:
    """From a layer's ``metadata["mesofield"]`` (tolerates missing/odd fields)."""
    raw = meta.get("timestamps_s")
    if isinstance(raw, (Sequence, np.ndarray)) and not isinstance(raw, str):
        times = np.array([_as_float(t) for t in raw], dtype=float)  # None -> NaN
    else:
        times = np.zeros(0, dtype=float)
    frames = _as_int(meta.get("frames"), times.size)
    source = meta.get("source")
    source = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    codec = meta.get("codec")
    sidecar = meta.get("sidecar")
    position = meta.get("position")
    return Inspection(
        name=name or (Path(source).name if source else "recording"),
        source=source,
        frames=frames,
        timestamps_s=times,
        fps=_as_float(meta.get("fps")),
        dropped_frames=_as_int(meta.get("dropped_frames")),
        late_frames=_as_int(meta.get("late_frames")),
        codec=codec if isinstance(codec, str) and codec else None,
        sidecar=sidecar if isinstance(sidecar, str) else None,
        position=position if isinstance(position, str) else None,
        notes=_strings(meta.get("notes")),
        warnings=_strings(meta.get("warnings")),
    )


def inspect_recording(rec: Recording, position: str | None = None) -> Inspection:
    """From an opened :class:`Recording` (one position; default the first)."""
    key = position if position is not None else rec.positions[0]
    timing = rec.timing_for(key)
    return Inspection(
        name=rec.position_name(key),
        source=os.fspath(rec.files[key]),
        frames=rec.frames_for(key),
        timestamps_s=np.asarray(rec.timestamps_for(key), dtype=float),
        fps=timing.fps or rec.fps,
        dropped_frames=timing.missing,
        late_frames=timing.late,
        codec=rec.codec,
        sidecar=rec.sidecar_state,
        position=key,
        notes=tuple(rec.notes),
        warnings=tuple(rec.warnings),
    )


def inspect_layer(layer: Any) -> Inspection | None:
    """From a napari layer opened by this plugin; None for any other layer."""
    if layer is None:
        return None
    metadata = getattr(layer, "metadata", None)
    meta = metadata.get("mesofield") if isinstance(metadata, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    return inspect_metadata(meta, name=str(getattr(layer, "name", "") or ""))
