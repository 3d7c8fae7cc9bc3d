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

from .data.errors import short_reason
from .data.formats.sidecar import (
    JOURNAL_SUFFIX,
    SIDECAR_SUFFIX,
    journal_path,
    sidecar_path,
)
from .data.reader.recording import (
    DATA_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Recording,
    RecordingWarning,
    find_recording_paths,
    open_recording,
    open_run,
    split_position_file,
)

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
    """One image layer per recording and position.

    A path that cannot be opened is skipped with a :class:`RecordingWarning` (as a
    folder's bad files are by ``open_run``), so the others still load; when nothing
    at all can be opened, the first error is raised.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    skipped: list[str] = []
    first_error: Exception | None = None
    for p in map(Path, paths):
        try:
            recs = open_run(p) if p.is_dir() else [open_recording(p)]
        except (OSError, ValueError) as exc:
            first_error = first_error or exc
            if len(paths) > 1:
                warnings.warn(f"skipped {p.name}: {exc}", RecordingWarning, 2)
            continue
        for rec in recs:
            layers.extend(_layers(rec, skipped))
    if not layers and first_error is not None:
        raise first_error
    if not layers and skipped:  # napari would say "no data" without the reason
        raise ValueError(skipped[0])
    # napari stacks layers in order and selects the last: the scientific data (the
    # TIFF) on top and selected, the videos (lossy previews) under it
    return sorted(
        layers, key=lambda layer: layer[1]["metadata"]["mesofield"]["kind"] == "tiff"
    )


def run_stamp(path: Path) -> str | None:
    """The run's ``<stamp>`` (``YYYYmmdd_HHMMSS``) at the start of a data file name."""
    parts = path.name.split("_", 2)
    if (
        len(parts) >= 2
        and all(p.isdigit() for p in parts[:2])
        and (len(parts[0]), len(parts[1])) == (8, 6)
    ):
        return f"{parts[0]}_{parts[1]}"
    return None


def layer_name(rec: Recording, position: str) -> str:
    """``<stamp> <camera> (<kind>)``: the run and the camera (runs reopened together
    stay apart; ``position_name`` alone was ``meso (tiff)``, ``meso (tiff) [1]``...)."""
    stamp = run_stamp(rec.path)
    name = rec.position_name(position)
    return f"{stamp} {name}" if stamp else name


def layer_data(rec: Recording) -> list[LayerData]:
    """Layer data tuples for every position of ``rec``.

    A position whose pixels cannot be read at all is skipped with a
    :class:`RecordingWarning`; one whose sample frames fail gets no contrast limits.
    """
    return _layers(rec, [])


def _layers(rec: Recording, skipped: list[str]) -> list[LayerData]:
    out: list[LayerData] = []
    for pos in rec.positions:
        data = rec.data_for(pos)
        timing = rec.timing_for(pos)
        meta = {
            "frames": rec.frames_for(pos),
            "timestamps_s": [float(t) for t in rec.timestamps_for(pos)],
            "fps": timing.fps or rec.fps,  # measured on the frames' clock
            "dropped_frames": timing.missing,
            "missing_frames": timing.missing,
            "late_frames": timing.late,
            "kind": rec.kind,
            "sidecar": rec.sidecar_state,
            "source": os.fspath(rec.files[pos]),
            "codec": rec.codec,
            "notes": list(rec.notes),
            "position": pos,
            "warnings": list(rec.warnings),
        }
        rgb = rec.kind == "video" and data.ndim == 4
        kwargs: dict[str, Any] = {
            "name": layer_name(rec, pos),
            "metadata": {"mesofield": meta},
            "rgb": rgb,
        }
        spatial = 2
        px = rec.pixel_size_um or 1.0
        # the time axis in seconds (one frame = its camera's median interval), so
        # one slider position is one instant for cameras of different rates
        dt = timing.median_interval_s
        frame_s = dt if dt is not None and np.isfinite(dt) and dt > 0 else 1.0
        lead = data.ndim - spatial - rgb
        if lead >= 1 and (frame_s != 1.0 or px != 1.0):
            kwargs["scale"] = (frame_s,) + (1.0,) * (lead - 1) + (px, px)
        meta["frame_interval_s"] = frame_s if frame_s != 1.0 else None
        if not rgb:
            kwargs["axis_labels"] = ("t", "y", "x")[-data.ndim :]
        try:
            limits = contrast_limits(data) if not rgb else None
        except Exception as exc:  # a corrupt file fails here first: anything
            if not _first_frame_readable(data):
                why = (
                    f"cannot read the pixels of {rec.files[pos]} ({short_reason(exc)})"
                )
                skipped.append(why)
                warnings.warn(f"skipped: {why}", RecordingWarning, stacklevel=2)
                continue
            warnings.warn(
                f"{rec.files[pos].name}: no contrast limits, some frames cannot be "
                f"read ({short_reason(exc)})",
                RecordingWarning,
                stacklevel=2,
            )
            limits = None
        if limits is not None:
            kwargs["contrast_limits"] = limits
        out.append((data, kwargs, "image"))
    return out


def _first_frame_readable(data: Any) -> bool:
    """napari shows frame 0 first: a layer whose frame 0 fails is useless."""
    if not data.shape[0]:
        return True
    try:
        np.asarray(data[0])
    except Exception:
        return False
    return True


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
