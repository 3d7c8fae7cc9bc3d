"""Summaries of recordings and run folders (``mesofield-napari inspect``).

Frame counts come from the sidecar (or the journal of a crashed run), never from the
preallocated data file, whose tail may be frames that were never written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .paths import split_extension
from .sidecar import JOURNAL_SUFFIX, SIDECAR_SUFFIX

DATA_EXTENSIONS = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".btf", ".mp4", ".avi")
DROP_FACTOR = 1.5  # an interval this much above the median counts as dropped frames


def load_frame_metadata(data: Path) -> tuple[dict[str, Any], str]:
    """The legacy sidecar payload and its state: final / journal / corrupt / missing."""
    from .recording import load_metadata

    payload, state, _ = load_metadata(data)
    return payload, state


def frame_entries(payload: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per-position lists of frame dicts (direct mode: one list, ``frame_metadatas``)."""
    frames = payload.get("frame_metadatas")
    if isinstance(frames, list):
        return {"frame_metadatas": [f for f in frames if isinstance(f, dict)]}
    return {
        k: [f for f in v if isinstance(f, dict)]
        for k, v in payload.items()
        if isinstance(v, list)
    }


def frame_times_s(entries: list[dict[str, Any]]) -> np.ndarray:
    """Frame clock in seconds from the first frame (runner_time_ms, else ElapsedTime-ms)."""
    times = []
    for e in entries:
        t = e.get("runner_time_ms")
        if t is None:
            t = (e.get("camera_metadata") or {}).get("ElapsedTime-ms")
        try:
            times.append(float(t))
        except (TypeError, ValueError, OverflowError):
            times.append(np.nan)
    arr = np.asarray(times, dtype=float) / 1000.0
    return arr - arr[0] if arr.size and np.isfinite(arr[0]) else arr


def dropped_frames(entries: list[dict[str, Any]], times_s: np.ndarray) -> int:
    """Gaps in the camera's ImageNumber, or else intervals far above the median."""
    numbers = []
    for e in entries:
        n = (e.get("camera_metadata") or {}).get("ImageNumber")
        try:
            numbers.append(int(n))
        except (TypeError, ValueError, OverflowError):
            numbers = []
            break
    if len(numbers) > 1:
        gaps = np.diff(np.asarray(numbers))
        return int(np.sum(np.clip(gaps - 1, 0, None)))
    if times_s.size < 3:
        return 0
    dt = np.diff(times_s)
    dt = dt[np.isfinite(dt)]
    med = float(np.median(dt)) if dt.size else 0.0
    if med <= 0:
        return 0
    return int(np.sum(np.maximum(np.round(dt[dt > DROP_FACTOR * med] / med) - 1, 1)))


def _file_shape(data: Path) -> tuple[tuple[int, ...] | None, str | None, str | None]:
    """(shape, dtype, codec) from the file's headers: O(1), however long the file.

    Shares the reader's opening logic (first TIFF page only, or the video's header),
    so a 100 GB recording is summarised without walking its pages.
    """
    from .recording import _open_source

    if not data.exists():
        return None, None, None
    try:
        source = _open_source(data, [])
    except Exception:
        return None, None, None
    return (source.frames, *source.frame_shape), str(source.dtype), source.codec


def summarize_recording(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Frames, shape, dtype, duration, fps, dropped frames and sidecar state."""
    data = Path(path)
    name = data.name
    for suffix in (JOURNAL_SUFFIX, SIDECAR_SUFFIX):
        if name.endswith(suffix):
            data = data.with_name(name[: -len(suffix)])
    payload, state = load_frame_metadata(data)
    per_position = frame_entries(payload)
    shape, dtype, codec = _file_shape(data)
    entries = next(iter(per_position.values()), [])
    times = frame_times_s(entries)
    duration = float(times[-1]) if times.size and np.isfinite(times[-1]) else 0.0
    frames = sum(len(v) for v in per_position.values())
    if state == "missing" and shape:
        frames = shape[0]
    fps = (len(entries) - 1) / duration if duration > 0 else None
    codec = (
        codec
        or payload.get("codec")
        or (entries[0].get("video_codec") if entries else None)
    )
    return {
        "path": str(data),
        "kind": "video"
        if split_extension(data)[1].lower() in (".mp4", ".avi")
        else "tiff",
        "exists": data.exists(),
        "frames": frames,
        "frames_by_position": {k: len(v) for k, v in per_position.items()},
        "shape": list(shape) if shape else None,
        "dtype": dtype,
        "codec": codec,
        "duration_s": round(duration, 6),
        "fps": round(fps, 3) if fps else None,
        "dropped_frames": dropped_frames(entries, times),
        "sidecar": state,
        "complete": state == "final" and data.exists(),
    }


def find_recordings(folder: Path) -> list[Path]:
    found = []
    for p in sorted(folder.rglob("*")):
        n = p.name.lower()
        if p.is_file() and n.endswith(DATA_EXTENSIONS) and not n.startswith("."):
            found.append(p)
    return found


def summarize_run(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A run folder: its recordings, notes and whether the manifest says complete."""
    folder = Path(folder)
    manifests = sorted(folder.glob("*_manifest.json"))
    manifest: dict[str, Any] = {}
    if manifests:
        try:
            manifest = json.loads(manifests[-1].read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            manifest = {"errors": [f"corrupt manifest {manifests[-1].name}"]}
    notes: list[str] = []
    for p in sorted(folder.glob("*_notes.txt")):
        notes.extend(
            line for line in p.read_text(encoding="utf-8").splitlines() if line
        )
    recordings = [summarize_recording(p) for p in find_recordings(folder)]
    return {
        "run_dir": str(folder),
        "complete": bool(manifest.get("complete"))
        and all(r["complete"] for r in recordings),
        "errors": manifest.get("errors", []),
        "notes": notes,
        "recordings": recordings,
        "frames": sum(r["frames"] for r in recordings),
    }
