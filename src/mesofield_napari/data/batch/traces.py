"""Per-frame spatial mean of a recording (whole frame, a rectangle or a mask)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .jobs import (
    CancelToken,
    ProgressCallback,
    RecordingLike,
    Steps,
    atomic_output,
    check_output,
    iter_blocks,
    open_job,
    output_stem,
    resolve_out_dir,
    times_for,
    write_csv,
)
from .selection import DoesNotFit, check_camera, trace_name

__all__ = ["ROI", "TraceResult", "mean_trace", "roi_mask"]

Rect = tuple[int, int, int, int]
# a rectangle as given: a tuple or a JSON list, its length checked (roi_mask)
ROI = tuple[int, ...] | list[int] | np.ndarray | None
MEAN_SUFFIX = "_meso-mean-trace.csv"  # a TIFF's whole-frame trace (datakit's glob)


@dataclass
class TraceResult:
    """A trace written to ``path``: one value per frame, with the sidecar clock.

    ``values[i]`` belongs to frame ``i`` (0-based) at ``time_s[i]`` seconds after the
    first frame (NaN where the sidecar has no time). ``params`` records how it was
    computed (method, ROI, ΔF/F settings...); ``notes`` what the user should know
    (e.g. a default that was not applied), shown as the batch job's warnings.
    """

    path: Path
    recording: Path
    position: str
    frames: int
    values: np.ndarray
    time_s: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # warnings the batch shows


class _Region:
    """Where to average: a crop ``(y0, y1, x0, x1)`` plus an optional uint8 mask.

    ``tag`` names the region in output files: empty for the whole frame, else
    ``roi-…`` (so an ROI trace never shares the whole-frame trace's name).
    """

    def __init__(
        self, crop: Rect, mask: np.ndarray | None, label: str, tag: str = ""
    ) -> None:
        self.crop, self.mask, self.label, self.tag = crop, mask, label, tag

    def view(self, block: np.ndarray) -> np.ndarray:
        y0, y1, x0, x1 = self.crop
        return block[:, y0:y1, x0:x1]


def roi_mask(roi: ROI, shape: tuple[int, ...], label: int | None = None) -> _Region:
    """Validate ``roi`` against the frame ``shape`` (height, width).

    ``roi`` is ``None`` (whole frame), a rectangle ``(y0, y1, x0, x1)`` (half-open,
    pixel indices) or a 2-D mask the size of a frame: boolean (``True`` pixels), or
    integer labels (nonzero pixels, or only ``label`` when given).
    """
    h, w = shape
    if roi is None:
        return _Region((0, h, 0, w), None, "frame")
    if isinstance(roi, (tuple, list)) and len(roi) == 4 and np.ndim(roi) == 1:
        y0, y1, x0, x1 = (int(v) for v in roi)
        if not (y0 < y1 and x0 < x1):
            raise ValueError(f"ROI (y0, y1, x0, x1)={tuple(roi)} is empty")
        if not (y0 >= 0 and y1 <= h and x0 >= 0 and x1 <= w):
            raise DoesNotFit(
                f"ROI (y0, y1, x0, x1)={tuple(roi)} is outside the {h}x{w} frame"
            )
        return _Region(
            (y0, y1, x0, x1),
            None,
            f"rect {y0}:{y1},{x0}:{x1}",
            f"roi-y{y0}-{y1}-x{x0}-{x1}",
        )
    mask = np.asarray(roi)
    if mask.shape != (h, w):
        raise DoesNotFit(
            f"ROI mask shape {mask.shape} does not match the frame shape {(h, w)}"
        )
    digest = hashlib.sha1(np.ascontiguousarray(mask).tobytes()).hexdigest()[:8]
    if label is not None:
        sel = mask == label
        text, tag = f"label {label}", f"roi-label{label}-{digest}"
    else:
        sel = mask.astype(bool)
        text, tag = "mask", f"roi-mask-{digest}"
    ys, xs = np.nonzero(sel)
    if ys.size == 0:
        raise ValueError(f"ROI {text} selects no pixel")
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    sub = sel[y0:y1, x0:x1]
    m = None if sub.all() else np.ascontiguousarray(sub, dtype=np.uint8)
    return _Region((y0, y1, x0, x1), m, f"{text} ({ys.size} px)", tag)


def block_means(block: np.ndarray, region: _Region) -> np.ndarray:
    """Spatial mean of each frame of ``block`` over ``region`` (float64)."""
    import cv2

    view = region.view(block)
    fast = view.ndim == 3 and view.dtype in (np.uint8, np.uint16, np.float32)
    if fast:  # cv2.mean: exact double accumulation, SIMD, no temporaries
        if region.mask is None:
            return np.array([cv2.mean(f)[0] for f in view])
        return np.array([cv2.mean(f, mask=region.mask)[0] for f in view])
    axes = tuple(range(1, view.ndim))
    if region.mask is None:
        return np.add.reduce(view, axis=axes, dtype=np.float64) / np.prod(
            view.shape[1:]
        )
    sel = region.mask.astype(bool)
    picked = view[:, sel]  # (t, n[, rgb])
    return picked.reshape(len(view), -1).mean(axis=1, dtype=np.float64)


def mean_trace(
    rec: RecordingLike,
    roi: ROI = None,
    *,
    label: int | None = None,
    roi_camera: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    position: str | None = None,
    max_frames: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> TraceResult:
    """Per-frame spatial mean → ``<stem>_meso-mean-trace.csv`` (``Slice,Mean,time_s``).

    ``Slice`` is 1-based (as ImageJ's *Plot Z-axis Profile*), ``Mean`` the mean pixel
    value over the ROI (see :func:`roi_mask`), ``time_s`` the sidecar time of the
    frame. Frames are read block by block straight from the memory map, so memory
    stays at a few blocks whatever the file length.

    An ROI trace is ``<stem>_meso-roi-y<y0>-<y1>-x<x0>-<x1>-mean-trace.csv`` (masks:
    ``roi-mask-<hash>``, ``roi-label<k>-<hash>``), never the whole-frame name; a
    video's traces are ``<stem>_<kind>-…-trace.csv`` (see
    :func:`~mesofield_napari.data.batch.selection.trace_name`). ``roi_camera`` is the
    camera the ROI was drawn on: a recording of another camera, or one whose frame
    the ROI does not fit, raises
    :class:`~mesofield_napari.data.batch.selection.DoesNotFit` (the batch skips it).
    """
    rec, key, n = open_job(rec, position, max_frames)
    if roi is not None:
        check_camera(rec, roi_camera)
    region = roi_mask(roi, tuple(rec.shape[1:3]), label)
    quantity = f"{region.tag}-mean" if region.tag else "mean"
    out = resolve_out_dir(rec, out_dir) / trace_name(
        output_stem(rec, key), rec, quantity
    )
    check_output(out, overwrite)
    steps = Steps(n, progress, cancel)
    values = np.empty(n, dtype=np.float64)
    for first, block in iter_blocks(rec, key, n, steps):
        values[first : first + len(block)] = block_means(block, region)
    t = times_for(rec, key, n)
    with atomic_output(out, overwrite) as tmp:
        slices = np.arange(1, n + 1)
        write_csv(tmp, ["Slice", "Mean", "time_s"], [slices, values, t], _FMTS)
    return TraceResult(
        out, rec.path, key, n, values, t, {"method": "mean", "roi": region.label}
    )


_FMTS = ["%d", "%.10g", "%.6f"]
