"""One PNG tiling a frame (or the mean projection) of each of several recordings."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..reader.recording import Recording
from .jobs import (
    CancelToken,
    ProgressCallback,
    RecordingLike,
    Steps,
    as_recording,
    atomic_output,
    check_output,
    frame_count,
    iter_blocks,
    resolve_out_dir,
)

__all__ = ["MontageResult", "montage", "projection"]

LABEL_HEIGHT = 18
GAP = 4


@dataclass
class MontageResult:
    """The montage PNG; ``tiles`` in order, ``skipped`` maps path -> error."""

    path: Path
    tiles: list[Path]
    shape: tuple[int, ...]
    skipped: dict[Path, str] = field(default_factory=dict)


def projection(
    rec: RecordingLike,
    frame: int | str = "mean",  # "mean" or an index; anything else is refused
    *,
    position: str | None = None,
    max_frames: int | None = None,
    steps: Steps | None = None,
) -> np.ndarray:
    """One frame (negative counts from the end) or the mean over all frames (float64)."""
    rec = as_recording(rec)
    n = frame_count(rec, position, max_frames)
    steps = steps or Steps(n if frame == "mean" else 1)
    if frame == "mean":
        acc = np.zeros(rec.shape[1:], dtype=np.float64)
        for _, block in iter_blocks(rec, position, n, steps):
            acc += np.add.reduce(block, axis=0, dtype=np.float64)
        return acc / n
    if isinstance(frame, str) or not -n <= int(frame) < n:
        raise ValueError(f"frame must be 'mean' or an index within ±{n}, got {frame!r}")
    i = int(frame) % n
    out = rec.frame_block(i, i + 1, position)[0].astype(np.float64)
    steps.advance(1)
    return out


def _to_tile(img: np.ndarray) -> np.ndarray:
    """Gray uint8 with its own 0.5/99.5 percentile stretch."""
    if img.ndim == 3:
        img = img.mean(axis=2)
    lo, hi = np.percentile(img, (0.5, 99.5))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((img - lo) * scale + 0.5, 0, 255).astype(np.uint8)


def montage(
    recs: Sequence[RecordingLike],
    frame: int | Literal["mean"] = "mean",
    *,
    columns: int | None = None,
    name: str = "montage.png",
    label: bool = True,
    max_frames: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> MontageResult:
    """Tile one image per recording into ``<out_dir>/<name>`` (a grayscale PNG).

    Each tile is ``frame`` (an index) or the mean projection over the frames, stretched
    to its own 0.5/99.5 percentiles, in a grid of ``columns`` (default: about square)
    cells the size of the largest tile, each labelled with its file name. A recording
    that cannot be read is listed in ``skipped``; with none readable, ``ValueError``.
    ``out_dir`` defaults to the first recording's ``<run folder>/processed``.
    """
    if not name.lower().endswith(".png"):
        raise ValueError(f"montage name must end with .png, got {name!r}")
    if columns is not None and int(columns) < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    if not recs:
        raise ValueError("montage needs at least one recording")
    opened: list[Recording] = []
    skipped: dict[Path, str] = {}
    for r in recs:
        try:
            opened.append(as_recording(r))
        except (OSError, ValueError) as exc:
            skipped[r.path if isinstance(r, Recording) else Path(r)] = str(exc)
    if not opened:
        raise ValueError(_nothing(skipped))
    out = resolve_out_dir(opened[0], out_dir) / name
    check_output(out, overwrite)
    counts = []
    for r in opened:
        try:
            counts.append(frame_count(r, None, max_frames) if frame == "mean" else 1)
        except ValueError:
            counts.append(0)
    steps = Steps(sum(counts), progress, cancel)
    tiles: list[tuple[Path, np.ndarray]] = []
    for r, count in zip(opened, counts, strict=True):
        try:
            img = projection(r, frame, max_frames=max_frames, steps=steps)
        except (OSError, ValueError) as exc:
            skipped[r.path] = str(exc)
            steps.advance(count)  # keep the total reachable
            continue
        tiles.append((r.path, _to_tile(img)))
    if not tiles:
        raise ValueError(_nothing(skipped))
    canvas = _grid(tiles, columns, label)
    with atomic_output(out, overwrite) as tmp:
        import cv2

        if not cv2.imwrite(os.fspath(tmp), canvas):
            raise OSError(f"could not write {out}")
    return MontageResult(out, [p for p, _ in tiles], canvas.shape, skipped)


def _nothing(skipped: dict[Path, str]) -> str:
    return "no readable recording for the montage: " + "; ".join(skipped.values())


def _grid(
    tiles: list[tuple[Path, np.ndarray]], columns: int | None, label: bool
) -> np.ndarray:
    import cv2

    cols = int(columns) if columns else math.ceil(math.sqrt(len(tiles)))
    cols = min(cols, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    th = max(t.shape[0] for _, t in tiles)
    tw = max(t.shape[1] for _, t in tiles)
    lh = LABEL_HEIGHT if label else 0
    cell_h, cell_w = th + lh + GAP, tw + GAP
    canvas = np.zeros((rows * cell_h - GAP, cols * cell_w - GAP), dtype=np.uint8)
    for i, (path, tile) in enumerate(tiles):
        y, x = (i // cols) * cell_h, (i % cols) * cell_w
        canvas[y + lh : y + lh + tile.shape[0], x : x + tile.shape[1]] = tile
        if label:
            text = path.name
            scale = 0.4
            width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
            if width > tw:  # shorten from the left: the camera part is at the end
                keep = max(4, int(len(text) * tw / width) - 3)
                text = "..." + text[-keep:]
            cv2.putText(
                canvas,
                text,
                (x + 2, y + lh - 5),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                255,
                1,
                cv2.LINE_AA,
            )
    return canvas
