"""TIFF → MP4/AVI with one contrast mapping for the whole video (no flicker), written
by the recorders' own ``CV2Writer`` (H.264 by default)."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..formats.sidecar import journal_path, sidecar_path, write_json_atomic
from ..writer.codecs import ContrastMapping
from .jobs import (
    CancelToken,
    ProgressCallback,
    RecordingLike,
    Steps,
    as_recording,
    check_output,
    commit,
    frame_count,
    iter_blocks,
    open_job,
    output_stem,
    resolve_out_dir,
    temp_name,
    times_for,
)
from .selection import DoesNotFit

if TYPE_CHECKING:
    from ..reader.recording import Recording

__all__ = ["VideoResult", "auto_contrast", "check_contrast_range", "export_video"]

DEFAULT_FPS = 30.0
CONTRAST_SAMPLES = 32
CONTRAST_PERCENTILES = (0.5, 99.5)
QUEUE_BYTES = 64 * 2**20


@dataclass
class VideoResult:
    """A video written to ``path`` (its sidecar at ``sidecar``)."""

    path: Path
    sidecar: Path
    recording: Path
    position: str
    frames: int
    fps: float
    fourcc: str
    contrast_limits: tuple[float, float]


def auto_contrast(
    rec: RecordingLike,
    position: str | None = None,
    percentiles: tuple[float, float] = CONTRAST_PERCENTILES,
    samples: int = CONTRAST_SAMPLES,
    max_frames: int | None = None,
) -> tuple[float, float]:
    """``(low, high)``: percentiles of up to ``samples`` evenly spaced frames."""
    rec = as_recording(rec)
    n = frame_count(rec, position, max_frames)
    idx = np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int))
    stack = np.stack([rec.frame_block(int(i), int(i) + 1, position)[0] for i in idx])
    lo, hi = (float(v) for v in np.percentile(stack, percentiles))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def check_contrast_range(rec: Recording, contrast: tuple[float, float]) -> None:
    """Refuse limits outside the source's integer range (not a clip).

    ``100 4000`` is right for a 12-bit camera and maps an 8-bit video (0..255) to
    an almost black one; clipping would hide the mistake, so this recording is
    refused (:class:`DoesNotFit`: a batch skips it with this message and exports
    the others) with the range the source really has.
    """
    dtype = np.dtype(rec.dtype)
    if dtype.kind not in "ui":
        return
    info = np.iinfo(dtype)
    lo, hi = contrast
    if lo < info.min or hi > info.max:
        raise DoesNotFit(
            f"{rec.path.name}: contrast {lo:g}..{hi:g} is outside its {dtype.name} "
            f"range ({info.min}..{info.max})"
        )


def export_video(
    rec: RecordingLike,
    out_ext: str = ".mp4",
    *,
    fps: float | None = None,
    fourcc: str | None = None,
    contrast: tuple[float, float] | None = None,
    max_frames: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    position: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> VideoResult:
    """Encode a recording as ``<stem><out_ext>`` (``.mp4`` or ``.avi``) + sidecar.

    Every frame goes through the same mapping ``(low, high) -> (0, 255)``: ``contrast``
    or, by default, the 0.5/99.5 percentiles of 32 evenly spaced frames, so brightness
    does not flicker. ``fps`` defaults to the recording's (sidecar clock), else 30.
    Encoding goes through :class:`~mesofield_napari.data.CV2Writer`, the writer
    recordings use, so ``fourcc`` follows its rules: default ``$MESOFIELD_FOURCC`` or
    H.264 (PyAV's libx264, fragmented ``.mp4``), ``"h264-lossless"`` for exact
    pixels, OpenCV for ``mp4v``/``MJPG``/``FFV1``; a codec that cannot be encoded
    falls back with a ``CodecUnavailableWarning``. The sidecar keeps the *source* frame clock
    (``runner_time_ms``) and names the source file.
    """
    from ..writer.codecs import video_extension
    from ..writer.video import CV2Writer

    ext = video_extension(f"x{out_ext}")
    rec, key, n = open_job(rec, position, max_frames)
    if fps is None:
        fps = rec.fps or DEFAULT_FPS
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    final = resolve_out_dir(rec, out_dir) / f"{output_stem(rec, key)}{ext}"
    check_output(final, overwrite)
    check_output(sidecar_path(final), overwrite)
    if contrast is not None:
        check_contrast_range(rec, contrast)
    limits = contrast if contrast is not None else auto_contrast(rec, key, max_frames=n)
    mapping = ContrastMapping(limits)  # validates low < high
    lo, hi = mapping.limits  # type: ignore[misc]
    tmp = temp_name(final)
    steps = Steps(n, progress, cancel)
    # uint8 in: passthrough. Reading outpaces the encoder, so a deep queue would only
    # hold memory: 64 MB keeps it bounded and small.
    writer = CV2Writer(tmp, fps=float(fps), fourcc=fourcc, max_queue_bytes=QUEUE_BYTES)
    height, width = rec.shape[1:3]
    is_color = len(rec.shape) == 4
    writer.begin(width, height, is_color=is_color)
    finished = False
    try:
        for _, block in iter_blocks(rec, key, n, steps):
            for frame in _to_uint8(block, mapping):
                writer.add_frame(frame)
        times = times_for(rec, key, n)
        writer.finish(_extra(rec, key, (lo, hi)))
        finished = True
        payload = _restamped(writer.sidecar_path, times)
        commit(tmp, final, overwrite)
        final_sidecar = sidecar_path(final)
        write_json_atomic(final_sidecar, payload, indent=None)
    finally:
        if not finished:
            # the job already failed: its own error is what matters
            with contextlib.suppress(Exception):
                writer.finish()
        for p in (tmp, sidecar_path(tmp), journal_path(tmp)):
            p.unlink(missing_ok=True)
    return VideoResult(
        final, final_sidecar, rec.path, key, n, float(fps), writer.fourcc, (lo, hi)
    )


def _to_uint8(block: np.ndarray, mapping: ContrastMapping) -> list[np.ndarray]:
    """Map a block with the fixed limits; one fresh C-contiguous frame each."""
    import cv2

    lo, hi = mapping.limits  # type: ignore[misc]
    if block.dtype in (np.uint8, np.uint16) and block.ndim == 3:
        t, h, w = block.shape
        flat = block.reshape(t * h, w) if block.flags.c_contiguous else None
        if flat is not None:
            # saturating; OpenCV's stubs lack the scalar second operand cv2 takes
            shifted = cv2.subtract(flat, lo) if lo > 0 else flat  # type: ignore[arg-type, unused-ignore]
            out = cv2.convertScaleAbs(shifted, alpha=255.0 / (hi - lo))
            return [np.array(f) for f in out.reshape(t, h, w)]
    return [np.array(mapping.to_uint8(f)) for f in block]


def _extra(rec: Recording, key: str, limits: tuple[float, float]) -> dict[str, Any]:
    return {
        "source": os.fspath(rec.files[key]),
        "contrast_limits": list(limits),
        "exported_by": "mesofield-napari export video",
    }


def _restamped(path: Path, times_s: np.ndarray) -> dict[str, Any]:
    """The sidecar with the source's frame times (the encoder's clock is meaningless)."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    for i, entry in enumerate(payload.get("frame_metadatas", [])):
        entry["encode_time_ms"] = entry.get("runner_time_ms")
        t = times_s[i] if i < len(times_s) else np.nan
        entry["runner_time_ms"] = float(t) * 1000.0 if np.isfinite(t) else None
        entry["source_frame"] = i
    return payload
