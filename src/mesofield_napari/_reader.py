"""npe2 reader: recordings, their sidecars/journals and run folders -> image layers.

Returns ``None`` for anything that is not ours (a plain TIFF without a sidecar or
journal, a folder without recordings) so napari's builtin reader keeps those.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.recording import (
    DATA_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Recording,
    find_recording_paths,
    open_recording,
    open_run,
    split_position_file,
)
from .data.sidecar import JOURNAL_SUFFIX, SIDECAR_SUFFIX, journal_path, sidecar_path

LayerData = tuple[Any, dict[str, Any], str]
SAMPLE_FRAMES = 16  # contrast limits come from at most this many frames


def _owns_file(path: Path) -> bool:
    name = path.name
    if name.startswith("."):
        return False
    if name.endswith((SIDECAR_SUFFIX, JOURNAL_SUFFIX)):
        return True
    if not name.lower().endswith(DATA_EXTENSIONS):
        return False
    if name.lower().endswith(VIDEO_EXTENSIONS):
        return True  # napari has no builtin video reader
    if sidecar_path(path).exists() or journal_path(path).exists():
        return True
    return split_position_file(path) is not None


def _owns(path: Path) -> bool:
    if path.is_dir():
        return any(
            p.name.endswith((SIDECAR_SUFFIX, JOURNAL_SUFFIX))
            for p in find_recording_paths_with_metadata(path)
        )
    return _owns_file(path)


def find_recording_paths_with_metadata(folder: Path) -> list[Path]:
    """Sidecars/journals of the recordings in ``folder`` (ours have one)."""
    out = []
    for data in find_recording_paths(folder):
        for meta in (sidecar_path(data), journal_path(data)):
            if meta.exists():
                out.append(meta)
                break
    return out


def get_reader(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> Callable[[Any], list[LayerData]] | None:
    """npe2 ``get_reader``: a reader function if every path is ours, else ``None``."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_owns(Path(p)) for p in paths):
        return None
    return read_recordings


def read_recordings(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[LayerData]:
    """One image layer per recording and position."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in map(Path, paths):
        recs = open_run(p) if p.is_dir() else [open_recording(p)]
        for rec in recs:
            layers.extend(layer_data(rec))
    return layers


def layer_data(rec: Recording) -> list[LayerData]:
    """Layer data tuples for every position of ``rec``."""
    out: list[LayerData] = []
    for pos in rec.positions:
        data = rec.data_for(pos)
        meta = {
            "frames": rec.frames_for(pos),
            "timestamps_s": [float(t) for t in rec.timestamps_for(pos)],
            "fps": rec.fps,
            "dropped_frames": rec.dropped_frames,
            "sidecar": rec.sidecar_state,
            "source": os.fspath(rec.files[pos]),
            "codec": rec.codec,
            "notes": list(rec.notes),
            "position": pos,
            "warnings": list(rec.warnings),
        }
        rgb = rec.kind == "video" and data.ndim == 4
        kwargs: dict[str, Any] = {
            "name": rec.position_name(pos),
            "metadata": {"mesofield": meta},
            "rgb": rgb,
        }
        spatial = 2
        if (px := rec.pixel_size_um) is not None:
            kwargs["scale"] = (1.0,) * (data.ndim - spatial - rgb) + (px, px)
        if not rgb:
            kwargs["axis_labels"] = ("t", "y", "x")[-data.ndim :]
            if (limits := contrast_limits(data)) is not None:
                kwargs["contrast_limits"] = limits
        out.append((data, kwargs, "image"))
    return out


def contrast_limits(data: Any) -> tuple[float, float] | None:
    """Min/max over at most ``SAMPLE_FRAMES`` evenly spread frames (never the file)."""
    n = int(data.shape[0]) if data.ndim else 0
    if n == 0:
        return None
    idx = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_FRAMES)).astype(int))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sample = np.asarray(data[idx])
    lo, hi = float(np.nanmin(sample)), float(np.nanmax(sample))
    if not np.isfinite([lo, hi]).all():
        return None
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
