"""ΔF/F traces, as mesofield computes them, in bounded memory.

Two methods (``camera_offset`` is subtracted from every pixel first):

``collapse_first``
    ``F[t] = mean_xy(frame[t]) - camera_offset``;
    ``F0[t]`` = the ``percentile``-th percentile of ``F`` over a centred window of
    ``w = max(1, round(window_seconds * fs))`` frames (``F[t - w//2 : t - w//2 + w]``,
    edges padded with the nearest value; the percentile is the order statistic of
    rank ``int(w * percentile / 100)`` (``w - 1`` at 100 %), as
    ``scipy.ndimage.percentile_filter`` takes it);
    ``dff[t] = (F[t] - F0[t]) / (F0[t] + f0_floor)``.

``pixelwise``
    ``F0[y, x]`` = ``numpy.percentile`` (linear interpolation) over ``n_f0_samples``
    evenly spaced frames of ``frame - camera_offset``;
    ``dff[t] = mean_xy((frame[t] - camera_offset - F0) / (F0 + f0_floor))``,
    computed as ``mean_xy(frame[t] * W) - mean_xy((camera_offset + F0) * W)`` with
    ``W = 1 / (F0 + f0_floor)`` (the same number, one pass per frame).

With ``fix_first_frame`` the first value is replaced by the second (the first
exposure is often partial), as mesofield does.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

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
from .selection import trace_name
from .traces import TraceResult, block_means, roi_mask

if TYPE_CHECKING:
    from ..reader.recording import Recording

__all__ = ["DFF_METHODS", "dff_trace", "moving_percentile", "sampling_rate"]

DFF_METHODS = ("collapse_first", "pixelwise")
Method = Literal["collapse_first", "pixelwise"]
_ROW_BAND_BYTES = 32 * 2**20  # F0 samples gathered per band of rows


def sampling_rate(time_s: np.ndarray) -> float | None:
    """``1 / median(diff(t))`` over finite, positive intervals (None if unknown)."""
    dt = np.diff(np.asarray(time_s, dtype=float))
    dt = dt[np.isfinite(dt) & (dt > 0)]
    return float(1.0 / np.median(dt)) if dt.size else None


def moving_percentile(values: np.ndarray, window: int, percentile: float) -> np.ndarray:
    """Centred moving percentile, edges ``nearest`` (see the module docstring)."""
    values = np.asarray(values, dtype=np.float64)
    window = max(1, int(window))
    try:
        from scipy.ndimage import percentile_filter
    except ImportError:  # pragma: no cover - scipy is optional
        percentile_filter = None
    if percentile_filter is not None:
        return percentile_filter(values, percentile, size=window, mode="nearest")
    rank = window - 1 if percentile >= 100 else int(window * percentile / 100.0)
    left = window // 2
    padded = np.pad(values, (left, window - 1 - left), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)
    return np.partition(windows, rank, axis=-1)[:, rank]


def _check_params(
    method: str, percentile: float, window_seconds: float, f0_floor: float, n_f0: int
) -> None:
    if method not in DFF_METHODS:
        raise ValueError(f"method must be one of {', '.join(DFF_METHODS)}: {method!r}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be within 0..100, got {percentile}")
    if not window_seconds > 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    if not np.isfinite(f0_floor):
        raise ValueError(f"f0_floor must be a finite number, got {f0_floor}")
    if int(n_f0) < 1:
        raise ValueError(f"n_f0_samples must be at least 1, got {n_f0}")


DEFAULT_CAMERA_OFFSET = 100.0  # a typical sCMOS offset, in 16-bit counts


def default_offset(rec: Recording) -> tuple[float, list[str]]:
    """The camera offset to subtract when none is given, and a note why.

    An 8-bit source is a video (already contrast-mapped to 0..255): the 16-bit
    camera's offset means nothing there, so none is subtracted, and the note (the
    batch job's warning) says so. A note rather than ``warnings.warn``: batch jobs
    run on worker threads, where catching warnings is not thread-safe.
    """
    if np.dtype(rec.dtype).itemsize == 1:
        return 0.0, [
            f"{rec.path.name}: 8-bit source, camera offset not applied "
            f"(the default {DEFAULT_CAMERA_OFFSET:g} is in 16-bit camera counts; "
            "give camera_offset to subtract one)"
        ]
    return DEFAULT_CAMERA_OFFSET, []


def dff_trace(
    rec: RecordingLike,
    method: Method = "collapse_first",
    *,
    camera_offset: float | None = None,
    fs: float | None = None,
    percentile: float = 10.0,
    window_seconds: float = 30.0,
    f0_floor: float = 1.0,
    n_f0_samples: int = 200,
    chunk_frames: int = 256,
    fix_first_frame: bool = True,
    max_frames: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    position: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> TraceResult:
    """ΔF/F trace → ``<stem>_meso-<method>-trace.csv`` (``Slice,Mean,time_s``:
    0-based frame, ΔF/F, seconds — the columns mesofield's datakit reads); a video's
    is ``<stem>_<kind>-<method>-trace.csv``, which datakit's globs do not take.

    ``frame`` is 0-based, ``time_s`` the sidecar time. ``fs`` (Hz) defaults to
    ``1 / median(diff(time_s))``; without timestamps it must be given
    (``ValueError``). Frames are processed ``chunk_frames`` at a time (at most about
    32 MB per block), so memory does not grow with the file length. ``progress``
    counts frames: for ``pixelwise`` the F0 pass over the samples comes first, so
    ``total`` is ``frames + n_f0_samples``.
    """
    _check_params(method, percentile, window_seconds, f0_floor, n_f0_samples)
    if int(chunk_frames) < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    rec, key, n = open_job(rec, position, max_frames)
    t = times_for(rec, key, n)
    if fs is None:
        fs = sampling_rate(t)
        if fs is None:
            raise ValueError(
                f"{rec.path.name}: sampling rate unknown (no frame timestamps); give fs"
            )
    elif not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"fs must be a positive number, got {fs}")
    out = resolve_out_dir(rec, out_dir) / trace_name(output_stem(rec, key), rec, method)
    check_output(out, overwrite)
    offset, notes = (
        default_offset(rec) if camera_offset is None else (float(camera_offset), [])
    )
    params = {
        "method": method,
        "camera_offset": offset,
        "fs": float(fs),
        "percentile": float(percentile),
        "f0_floor": float(f0_floor),
    }
    if method == "collapse_first":
        steps = Steps(n, progress, cancel)
        whole = roi_mask(None, tuple(rec.shape[1:3]))
        f = np.empty(n, dtype=np.float64)
        for first, block in iter_blocks(rec, key, n, steps, chunk_frames):
            f[first : first + len(block)] = block_means(block, whole)
        f -= offset
        window = max(1, round(window_seconds * fs))
        f0 = moving_percentile(f, window, percentile)
        with np.errstate(divide="ignore", invalid="ignore"):
            dff = (f - f0) / (f0 + f0_floor)
        params.update(window_seconds=float(window_seconds), window_frames=window)
    else:
        samples = _sample_indices(n, int(n_f0_samples))
        steps = Steps(n + len(samples), progress, cancel)
        f0 = _pixel_f0(rec, key, samples, percentile, offset, steps)
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = (1.0 / (f0 + f0_floor)).astype(np.float32)
            const = float(np.mean((offset + f0) * weights, dtype=np.float64))
        dff = np.empty(n, dtype=np.float64)
        for first, block in iter_blocks(rec, key, n, steps, chunk_frames):
            dff[first : first + len(block)] = _weighted_means(block, weights) - const
        params.update(n_f0_samples=len(samples), chunk_frames=int(chunk_frames))
    if fix_first_frame and n > 1:
        dff[0] = dff[1]
    params["fix_first_frame"] = bool(fix_first_frame)
    with atomic_output(out, overwrite) as tmp:
        write_csv(
            tmp,
            ["Slice", "Mean", "time_s"],  # datakit reads trace CSVs as Slice,Mean
            [np.arange(n), dff, t],
            ["%d", "%.10g", "%.6f"],
        )
    return TraceResult(out, rec.path, key, n, dff, t, params, notes)


def _sample_indices(n: int, k: int) -> np.ndarray:
    """Up to ``k`` evenly spaced frame indices over ``0..n-1`` (first and last kept)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))


def _pixel_f0(
    rec: Recording,
    key: str,
    samples: np.ndarray,
    percentile: float,
    offset: float,
    steps: Steps,
) -> np.ndarray:
    """Per-pixel percentile over the sampled frames, one band of rows at a time."""
    h, w = rec.shape[1:3]
    itemsize = rec.dtype.itemsize
    rows = max(1, min(h, _ROW_BAND_BYTES // max(1, len(samples) * w * itemsize)))
    f0 = np.empty((h, w), dtype=np.float64)
    done = 0
    probe = rec.frame_block(0, 1, key)
    mapped = isinstance(probe, np.memmap) or isinstance(probe.base, np.memmap)
    for y0 in range(0, h, rows):
        steps.check()
        if mapped:  # one map per band; fancy indexing reads only these rows
            frames = rec.frame_block(0, int(samples[-1]) + 1, key)
            stack = frames[samples, y0 : y0 + rows]
            del frames
        else:  # decoded sources: frame by frame
            stack = np.stack(
                [
                    rec.frame_block(int(i), int(i) + 1, key)[0, y0 : y0 + rows]
                    for i in samples
                ]
            )
        f0[y0 : y0 + rows] = _percentile_axis0(stack, percentile) - offset
        # progress in sample frames: the share of rows done so far
        now = round(len(samples) * min(h, y0 + rows) / h)
        steps.advance(now - done)
        done = now
    return f0


def _percentile_axis0(stack: np.ndarray, percentile: float) -> np.ndarray:
    """``numpy.percentile(stack, percentile, axis=0)`` (linear), pixel-major: faster."""
    m = len(stack)
    pos = percentile / 100.0 * (m - 1)
    k = int(np.floor(pos))
    frac = pos - k
    flat = np.ascontiguousarray(stack.reshape(m, -1).T)  # (pixels, samples)
    kth = [k, k + 1] if frac > 0 and k + 1 < m else [k]
    part = np.partition(flat, kth, axis=-1)
    low = part[:, k].astype(np.float64)
    if len(kth) == 2:
        low += frac * (part[:, k + 1] - low)
    return low.reshape(stack.shape[1:])


def _weighted_means(block: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``mean_xy(frame * weights)`` per frame (double accumulation)."""
    import cv2

    if block.ndim == 3 and block.dtype in (np.uint8, np.uint16, np.float32):
        size = weights.size
        return np.array(
            [
                cv2.sumElems(cv2.multiply(f, weights, dtype=cv2.CV_32F))[0] / size
                for f in block
            ]
        )
    flat = block.reshape(len(block), weights.size, -1).mean(axis=2)
    return flat @ weights.ravel().astype(np.float64) / weights.size
