"""Open what a run folder names — regular files only, read in bounded amounts.

Everything that reads a recording's metadata (sidecar, journal, notes, manifest,
experiment files) or hands a data file to tifffile/OpenCV goes through here, because a
folder is input like any other: a FIFO in place of a sidecar blocks ``open()`` forever,
a notes file symlinked to ``/dev/zero`` is endless, and a multi-gigabyte line is read
into memory whole by ``readline``.

- :func:`open_regular` opens with ``O_NONBLOCK`` (opening a FIFO then returns at once
  instead of waiting for a writer), checks the *opened* descriptor with ``fstat``
  (no race between a check and the open) and refuses anything but a regular file.
- :func:`read_bytes` / :func:`read_text` read a whole small file, refusing one larger
  than ``max_bytes`` (checked on what is read, so a file growing meanwhile is caught).
- :func:`bounded_lines` yields the lines of a file, replacing a line longer than
  ``max_line`` by ``None`` (skipped as it is read, never held).

Errors are :class:`OSError` subclasses with a one-line message naming the file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from ..._platform import fileio

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_LINE_BYTES",
    "MAX_SETTINGS_BYTES",
    "FileTooLargeError",
    "NotRegularFileError",
    "bounded_lines",
    "check_regular",
    "is_regular",
    "open_regular",
    "read_bytes",
    "read_text",
]

MAX_FILE_BYTES = 64 * 2**20  # notes, manifests: files read whole
MAX_SETTINGS_BYTES = 2**20  # hardware.yaml / experiment.json
MAX_LINE_BYTES = 16 * 2**20  # one journal line / one sidecar value (~1 KiB real)

_SKIP = 2**20  # the rest of an over-long line is skipped in pieces of this size
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)  # O_BINARY: fileio.open_binary
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


class NotRegularFileError(OSError):
    """The path is a FIFO, device, socket or folder: never read as a file."""


class FileTooLargeError(OSError):
    """A metadata file is larger than anything we write (or endless)."""


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def _refuse(path: str | os.PathLike[str], mode: int) -> NotRegularFileError:
    return NotRegularFileError(f"{os.fspath(path)}: not a regular file ({_kind(mode)})")


def is_regular(path: str | os.PathLike[str]) -> bool:
    """True for an existing regular file (symlinks followed); never blocks."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def check_regular(path: str | os.PathLike[str]) -> os.stat_result:
    """``os.stat(path)``, raising :class:`NotRegularFileError` for anything but a
    regular file (for libraries that open the path themselves: tifffile, OpenCV)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, st.st_mode)
    return st


def open_regular(
    path: str | os.PathLike[str], *, max_bytes: int | None = None
) -> BinaryIO:
    """A binary file object for a regular file, else :class:`NotRegularFileError`.

    With ``max_bytes``, a larger file raises :class:`FileTooLargeError` before
    anything is read.
    """
    if not _NONBLOCK:  # no O_NONBLOCK (Windows): check first; no FIFOs there anyway
        check_regular(path)

    def opener(name: str, flags: int) -> int:
        fd = fileio.open_binary(name, _FLAGS | _NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _refuse(path, st.st_mode)
            if max_bytes is not None and st.st_size > max_bytes:
                raise _too_large(path, st.st_size, max_bytes)
            if _NONBLOCK:
                # regular files ignore it; be plain anyway (POSIX: _NONBLOCK is 0 on
                # Windows, where mypy --platform win32 has no os.set_blocking)
                os.set_blocking(fd, True)  # type: ignore[attr-defined, unused-ignore]
        except BaseException:
            os.close(fd)
            raise
        return fd

    # (through open(): the file object keeps its name, which tifffile uses)
    return open(path, "rb", opener=opener)


def _too_large(
    path: str | os.PathLike[str], size: int | str, limit: int
) -> FileTooLargeError:
    return FileTooLargeError(
        f"{os.fspath(path)}: {size} bytes is too large for a metadata file "
        f"(at most {limit})"
    )


def read_bytes(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The whole content of a regular file of at most ``max_bytes``."""
    with open_regular(path, max_bytes=max_bytes) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew since fstat
        raise _too_large(path, f"more than {max_bytes}", max_bytes)
    return data


def read_text(
    path: str | os.PathLike[str],
    max_bytes: int = MAX_FILE_BYTES,
    *,
    errors: str = "strict",
) -> str:
    """:func:`read_bytes` decoded as UTF-8 (universal newlines, like ``read_text``)."""
    text = read_bytes(path, max_bytes).decode("utf-8", errors)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def bounded_lines(
    fh: BinaryIO, max_line: int = MAX_LINE_BYTES
) -> Iterator[bytes | None]:
    """The lines of ``fh`` (with their ``\\n``); ``None`` for each line longer than
    ``max_line``, which is skipped in ``max_line`` pieces (memory stays bounded)."""
    while True:
        line = fh.readline(max_line + 1)
        if not line:
            return
        if len(line) > max_line and not line.endswith(b"\n"):
            del line  # (drop it before reading on: one piece in memory at a time)
            while (piece := fh.readline(_SKIP)) and not piece.endswith(b"\n"):
                pass
            yield None
            continue
        yield line
