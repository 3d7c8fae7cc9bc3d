"""What every export job shares: progress/cancel, output names, atomic writes, blocks.

Outputs are written to a hidden temp file in the output folder and renamed into place
only when complete, so a cancelled or failed job leaves no partial file behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Union

import numpy as np

from ..._platform import fileio
from ..formats.names import split_extension
from ..manager.paths import processed_folder, session_folder

if TYPE_CHECKING:
    from ..reader.recording import Recording

__all__ = [
    "BLOCK_BYTES",
    "CancelToken",
    "Cancelled",
    "ProgressCallback",
    "RecordingLike",
    "Steps",
    "as_recording",
    "atomic_output",
    "default_out_dir",
    "iter_blocks",
    "open_job",
    "output_stem",
    "position_key",
    "resolve_out_dir",
]

BLOCK_BYTES = 32 * 2**20  # frames handled at once
MAP_BYTES = 256 * 2**20  # frames mapped at once (file-backed pages, reclaimable)
ProgressCallback = Callable[[int, int], None]
RecordingLike = Union["Recording", str, os.PathLike]


class Cancelled(Exception):
    """The job's cancel token was set; nothing was written."""


class CancelToken(Protocol):
    """Anything with ``is_set()``, e.g. a :class:`threading.Event`."""

    def is_set(self) -> bool: ...


class Steps:
    """Reports ``progress(done, total)`` and raises :class:`Cancelled` when asked to."""

    def __init__(
        self,
        total: int,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.total, self.done = int(total), 0
        self._progress, self._cancel = progress, cancel

    def check(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled("cancelled")

    def advance(self, n: int) -> None:
        self.done += int(n)
        if self._progress is not None:
            self._progress(self.done, self.total)
        self.check()


def as_recording(rec: RecordingLike) -> Recording:
    """A :class:`Recording` as given, or opened from a path."""
    from ..reader.recording import Recording, open_recording

    return rec if isinstance(rec, Recording) else open_recording(rec)


def position_key(rec: Recording, position: str | None) -> str:
    """``position``, or the recording's first position when None."""
    return position if position is not None else rec.positions[0]


def open_job(
    rec: RecordingLike, position: str | None, max_frames: int | None
) -> tuple[Recording, str, int]:
    """A job's ``(recording, position, frames)``, checked (see :func:`frame_count`)."""
    rec = as_recording(rec)
    key = position_key(rec, position)
    return rec, key, frame_count(rec, key, max_frames)


def output_stem(rec: Recording, position: str | None = None) -> str:
    """The data file's name without its (compound) extension: ``x.ome.tiff`` -> ``x``.

    A video source keeps its type, ``x.mp4`` -> ``x_mp4``, so the outputs of a run's
    TIFF and video of one camera (same stem) do not collide.
    """
    key = position_key(rec, position)
    stem, ext = split_extension(rec.files[key].name)
    tag = "" if rec.kind == "tiff" else "_" + ext.lstrip(".").lower()
    return Path(stem).name + tag


def default_out_dir(rec: Recording) -> Path:
    """Where datakit looks for (and prefers) processed outputs
    (:func:`~..manager.paths.processed_folder` of the recording's session)."""
    return processed_folder(session_folder(rec.path))


def resolve_out_dir(rec: Recording, out_dir: str | os.PathLike[str] | None) -> Path:
    """The output folder (created if needed)."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(rec)
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_output(path: Path, overwrite: bool) -> None:
    if not overwrite and path.exists():
        raise FileExistsError(
            f"output already exists: {path} (pass overwrite=True / --overwrite)"
        )


def temp_name(final: Path) -> Path:
    """A hidden temp file beside ``final`` that keeps its extension."""
    stem, ext = split_extension(final.name)
    return final.with_name(f".{stem}.{secrets.token_hex(4)}.tmp{ext}")


def commit(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move a finished temp file into place (never clobbering unless ``overwrite``)."""
    if overwrite:
        fileio.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # fails atomically if ``final`` appeared meanwhile
    except FileExistsError:
        raise FileExistsError(
            f"output already exists: {final} (pass overwrite=True / --overwrite)"
        ) from None
    except OSError:  # no hard links here (some network/FAT file systems)
        check_output(final, overwrite)
        fileio.replace(tmp, final)
        return
    fileio.unlink(tmp, missing_ok=False)


@contextlib.contextmanager
def atomic_output(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp path to write; rename it to ``final`` on success, else delete it."""
    check_output(final, overwrite)
    tmp = temp_name(final)
    try:
        yield tmp
        commit(tmp, final, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def block_frames(rec: Recording, limit: int | None = None) -> int:
    """Frames per block: about :data:`BLOCK_BYTES`, at most ``limit``."""
    nbytes = int(np.prod(rec.shape[1:])) * rec.dtype.itemsize
    n = max(1, BLOCK_BYTES // max(nbytes, 1))
    return max(1, min(n, limit)) if limit else n


def iter_blocks(
    rec: Recording,
    position: str | None,
    stop: int,
    steps: Steps,
    chunk_frames: int | None = None,
    start: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first frame, block)`` over frames ``start:stop``; progress after each block.

    Blocks of a memory-mapped TIFF are views (no copy) of a map spanning about
    :data:`MAP_BYTES`, unmapped once its blocks are done: one map per span is much
    cheaper than one per block, and memory stays bounded whatever the file length.
    """
    size = block_frames(rec, chunk_frames)
    span = size * max(1, MAP_BYTES // BLOCK_BYTES)
    steps.check()
    for w0 in range(start, stop, span):
        w1 = min(w0 + span, stop)
        window = rec.frame_block(w0, w1, position)
        for first in range(w0, w1, size):
            last = min(first + size, w1)
            yield first, window[first - w0 : last - w0]
            steps.advance(last - first)
        del window


def frame_count(rec: Recording, position: str | None, max_frames: int | None) -> int:
    n = rec.frames_for(position)
    if max_frames is not None:
        if int(max_frames) < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        n = min(n, int(max_frames))
    if n < 1:
        raise ValueError(f"{rec.path.name} holds no frames")
    return n


def times_for(rec: Recording, position: str | None, n: int) -> np.ndarray:
    """Sidecar timestamps (s) of the first ``n`` frames; NaN where unknown."""
    t = np.asarray(rec.timestamps_for(position), dtype=float)[:n]
    if t.size < n:
        t = np.concatenate([t, np.full(n - t.size, np.nan)])
    return t


def write_csv(
    path: Path, header: list[str], columns: list[np.ndarray], fmts: list[str]
) -> None:
    """A small CSV (one row per frame), plain text, ``nan`` for unknown values."""
    data = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(",".join(header) + "\n")
        np.savetxt(fh, data, fmt=fmts, delimiter=",")
