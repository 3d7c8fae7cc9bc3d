"""Frame-metadata sidecar: file names, JSON encoding and atomic writes.

The legacy contract (docs/design.md §5) is ``<data file>_frame_metadata.json`` holding
``{"p0": [FrameMetaV1, ...], ...}`` in MDA mode, or ``{"frame_metadatas": [...], ...}``
in direct mode. Downstream analysis code parses these files, so the layout is exact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

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


@contextlib.contextmanager
def atomic_text(
    path: str | os.PathLike[str], pause: str | None = None
) -> Iterator[IO[str]]:
    """A text file that appears under ``path`` only once complete and synced.

    Written to a temp file in the same folder, fully synced (``full_sync``), renamed
    over ``path``, then the folder synced: a reader (or a crash) sees the old state
    or the complete new file, never half of one. UTF-8 with ``\n`` line ends: the
    same bytes on every system. ``pause`` names a test hook point (``pause_point``)
    between the last byte and the sync.
    """
    path = Path(path)
    # not tempfile.mkstemp: its files are mode 0600, which would make the sidecar
    # unreadable to other users (analysis accounts); O_EXCL + 0666 honours the umask
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = fileio.open_binary(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            yield fh
            fh.flush()
            if pause is not None:
                from .tiff_layout import pause_point

                pause_point(pause)
            fileio.full_sync(fh.fileno())
        fileio.replace(tmp, path)
    except BaseException:
        fileio.unlink(tmp)
        raise
    fileio.sync_dir(path.parent)


def write_json_atomic(
    path: str | os.PathLike[str], payload: Any, indent: int | None = 2
) -> Path:
    """Write JSON atomically (:func:`atomic_text`): the old file or the whole new one."""
    with atomic_text(path) as fh:
        json.dump(payload, fh, indent=indent, allow_nan=True)
    return Path(path)
