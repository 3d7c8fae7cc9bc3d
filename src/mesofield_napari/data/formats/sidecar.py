"""Frame-metadata sidecar: file names, JSON encoding and atomic writes.

The legacy contract (see DESIGN.md §3) is ``<data file>_frame_metadata.json`` holding
``{"p0": [FrameMetaV1, ...], ...}`` in MDA mode, or ``{"frame_metadatas": [...], ...}``
in direct mode. Downstream analysis code parses these files, so the layout is exact.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..._platform import fileio

SIDECAR_SUFFIX = "_frame_metadata.json"
JOURNAL_SUFFIX = "_frame_metadata.jsonl"


def sidecar_path(data_path: str | os.PathLike[str]) -> Path:
    """``x.ome.tiff`` -> ``x.ome.tiff_frame_metadata.json`` (full name kept)."""
    return Path(os.fspath(data_path) + SIDECAR_SUFFIX)


def journal_path(data_path: str | os.PathLike[str]) -> Path:
    """The crash-safe journal written while recording, beside the sidecar."""
    return Path(os.fspath(data_path) + JOURNAL_SUFFIX)


def data_path_for(metadata_path: str | os.PathLike[str]) -> Path:
    """Inverse of :func:`sidecar_path` / :func:`journal_path`."""
    name = os.fspath(metadata_path)
    for suffix in (JOURNAL_SUFFIX, SIDECAR_SUFFIX):
        if name.endswith(suffix):
            return Path(name[: -len(suffix)])
    raise ValueError(f"{name!r} is not a frame-metadata sidecar or journal")


def recording_path(path: str | os.PathLike[str]) -> Path:
    """The data file a path stands for: its own path, or the one a sidecar/journal
    belongs to (``x.ome.tiff_frame_metadata.json`` -> ``x.ome.tiff``)."""
    try:
        return data_path_for(path)
    except ValueError:
        return Path(path)


def utc_now_iso() -> str:
    """ISO-8601 timestamp with an explicit UTC offset (never naive)."""
    # fixed width: isoformat() drops ".ffffff" on a whole second, and pandas then
    # refuses the column (it infers one format from the first value)
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def to_jsonable(obj: Any) -> Any:
    """Convert frame metadata into plain JSON types.

    ``mda_event`` (a ``useq.MDAEvent``) becomes its index dict — mesofield wrote
    ``null`` there, which threw away which frame of the sequence this was.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    index = getattr(obj, "index", None)
    if index is not None and type(obj).__name__ == "MDAEvent":
        return {str(k): int(v) for k, v in dict(index).items()}
    if hasattr(obj, "model_dump"):  # pydantic models (useq objects)
        return to_jsonable(obj.model_dump(mode="json"))
    if hasattr(obj, "_asdict"):  # namedtuples such as PropertyValue
        return to_jsonable(obj._asdict())
    return str(obj)


def write_json_atomic(
    path: str | os.PathLike[str], payload: Any, indent: int | None = 2
) -> Path:
    """Write JSON to a temp file in the same folder, fsync it, then rename it in place.

    A reader (or a crash) never sees a half-written sidecar: either the old state or
    the complete new file. Byte for byte the same on every system (binary fd,
    ``\n`` line ends), and synced with ``full_sync`` before the rename.
    """
    path = Path(path)
    # not tempfile.mkstemp: its files are mode 0600, which would make the sidecar
    # unreadable to other users (analysis accounts); O_EXCL + 0666 honours the umask
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = fileio.open_binary(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            json.dump(payload, fh, indent=indent, allow_nan=True)
            fh.flush()
            fileio.full_sync(fh.fileno())
        fileio.replace(tmp, path)
    except BaseException:
        fileio.unlink(tmp)
        raise
    fileio.sync_dir(path.parent)
    return path
