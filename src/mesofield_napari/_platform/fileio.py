"""File I/O that behaves the same on Linux, Windows and macOS.

The only place where ``os.open`` of a data file, positional writes and reads, data
sync, disk-space reservation, setting a file's size, and renames/removals that
another handle may block are done. What differs, and what each call does there:

========================  ==================  ======================  ==================
call                      Linux               macOS                   Windows
========================  ==================  ======================  ==================
:func:`open_binary`       ``os.open``         ``os.open``             ``os.open`` with
                                                                      ``O_BINARY`` (else
                                                                      the fd is text
                                                                      mode: 0x0A ->
                                                                      0x0D 0x0A)
:func:`pwrite_all`        ``os.pwrite``       ``os.pwrite``           ``lseek`` +
:func:`pread`             ``os.pread``        ``os.pread``            ``write``/``read``
                                                                      under the fd's
                                                                      lock
:func:`data_sync`         ``fdatasync``       ``fsync``               ``fsync``
(1 s timer)                                                           (FlushFileBuffers)
:func:`sync`              ``fsync``           ``fsync``               ``fsync``
:func:`full_sync`         ``fsync``           ``F_FULLFSYNC`` (the    ``fsync``
(ordering points)                             drive's cache too),
                                              ``fsync`` if refused
:func:`reserve`           ``posix_fallocate`` ``F_PREALLOCATE``       FileAllocationInfo
                                                                      (no admin rights)
:func:`set_size`          ``ftruncate``       ``ftruncate``           FileEndOfFileInfo
                                                                      (``os.ftruncate``
                                                                      writes zeros to
                                                                      extend)
:func:`replace`,          as is               as is                   refused while the
:func:`unlink`                                                        file is open or
                                                                      mapped: retried
                                                                      for ~1 s, then
                                                                      :class:`FileInUseError`
========================  ==================  ======================  ==================

A reservation makes a full disk an ``OSError`` with ``errno`` ENOSPC *before* the
frame that would not fit (the writer turns it into its one-line error, every earlier
frame kept); where a file system cannot reserve, it is a no-op and the write itself
reports ENOSPC.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

from . import system, win32

# errors that mean "this file system cannot do that", never "the disk is full"
_UNSUPPORTED = {
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.EINVAL,
    errno.ENOSYS,
    errno.ENOTTY,
}
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
RETRY_S = 1.0  # how long a refused replace/unlink is retried (another program closing)
_RETRY_STEP_S = 0.05

# macOS <sys/fcntl.h>: fstore_t {u32 flags; i32 posmode; off_t offset, length,
# bytesalloc}
_F_PREALLOCATE, _F_FULLFSYNC = 42, 51
_F_ALLOCATECONTIG, _F_ALLOCATEALL, _F_PEOFPOSMODE = 2, 4, 3
_FSTORE = struct.Struct("=Iiqqq")

_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


class FileInUseError(PermissionError):
    """Windows refused to replace or remove a file another handle holds open."""

    def __str__(self) -> str:
        return str(self.strerror)


def _fd_lock(fd: int) -> threading.Lock:
    lock = _locks.get(fd)
    if lock is None:
        with _locks_guard:
            lock = _locks.setdefault(fd, threading.Lock())
    return lock


# ---------------------------------------------------------------- open / close
def open_binary(path: str | os.PathLike[str], flags: int, mode: int = 0o666) -> int:
    """``os.open`` in binary mode everywhere (``O_BINARY`` where it exists).

    Create files with ``O_CREAT | O_EXCL`` and mode 0o666 (honouring the umask,
    unlike ``tempfile.mkstemp``'s 0600) so other users' analysis accounts can read
    them.
    """
    return os.open(path, flags | getattr(os, "O_BINARY", 0), mode)


def close(fd: int) -> None:
    """``os.close``, forgetting the fd's positional-I/O lock."""
    with _locks_guard:
        _locks.pop(fd, None)
    os.close(fd)


# Each OS's calls are chosen by system() (which the tests emulate), not sys.platform,
# so mypy sees POSIX/Linux/macOS-only names whatever --platform it checks for: their
# ignores also say unused-ignore, for the platform that has them (docs/design.md, Types)


# ---------------------------------------------------------------- positional I/O
def pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write all of ``data`` (bytes-like) at ``offset``; the fd's position is not
    used on POSIX, and is changed only under the fd's lock on Windows."""
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if system() != "windows":
        pwrite = os.pwrite  # type: ignore[attr-defined, unused-ignore]
        while view:
            n = pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
        return
    with _fd_lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        while view:
            view = view[os.write(fd, view) :]


def pread(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    if system() != "windows":
        data: bytes = os.pread(fd, size, offset)  # type: ignore[attr-defined, unused-ignore]
        return data
    parts, got = [], 0
    with _fd_lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        while got < size:
            chunk = os.read(fd, size - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    return b"".join(parts)


# ---------------------------------------------------------------- durability
def data_sync(fd: int) -> None:
    """Make the file's data durable (the writers' 1 s timer): ``fdatasync`` where it
    exists, ``fsync`` elsewhere."""
    if system() == "linux":
        os.fdatasync(fd)  # type: ignore[attr-defined, unused-ignore]
    else:
        os.fsync(fd)


def sync(fd: int) -> None:
    """Data and metadata to the device (``fsync``): journals, notes, trace files."""
    os.fsync(fd)


def full_sync(fd: int) -> None:
    """The crash-safety ordering points (before a header switch, a truncation, a
    rename): on macOS ``F_FULLFSYNC``, which also flushes the drive's cache (its
    ``fsync`` does not), falling back to ``fsync`` where the volume refuses it."""
    if system() == "macos":
        import fcntl

        try:
            fcntl.fcntl(fd, getattr(fcntl, "F_FULLFSYNC", _F_FULLFSYNC))  # type: ignore[attr-defined, unused-ignore]
            return
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
    os.fsync(fd)


def sync_dir(folder: str | os.PathLike[str]) -> None:
    """Persist a rename in ``folder`` (POSIX). Windows cannot open a folder as a
    file, and NTFS journals the rename itself: nothing to do there."""
    if system() == "windows":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - a file system without it
        return
    try:
        full_sync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- disk space
def reserve(fd: int, offset: int, length: int, *, keep_size: bool = False) -> None:
    """Allocate the file's disk space for ``[offset, offset + length)`` now, so the
    disk cannot fill up under those bytes.

    Raises ``OSError`` (``errno`` in :data:`NO_SPACE`) when the disk cannot hold
    them; a file system that cannot reserve is ignored. Linux's ``posix_fallocate``
    also extends the file to ``offset + length`` unless ``keep_size``
    (``fallocate(FALLOC_FL_KEEP_SIZE)``: space past the end of file, given back by
    :func:`set_size`); macOS and Windows always reserve without changing the size.
    """
    if length <= 0:
        return
    sys_name = system()
    try:
        if sys_name == "linux" and keep_size:
            _fallocate_keep_size(fd, offset, length)
        elif sys_name == "linux":
            os.posix_fallocate(fd, offset, length)  # type: ignore[attr-defined, unused-ignore]
        elif sys_name == "macos":
            _preallocate_macos(fd, offset + length)
        else:
            end = max(offset + length, os.fstat(fd).st_size)  # never below EOF
            win32().set_allocation(fd, end)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return
        raise


_FALLOC_FL_KEEP_SIZE = 1
_fallocate: Any = None


def _fallocate_keep_size(fd: int, offset: int, length: int) -> None:
    """Linux ``fallocate(2)`` with FALLOC_FL_KEEP_SIZE (glibc, through ctypes)."""
    global _fallocate
    if _fallocate is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = getattr(libc, "fallocate", None)
        if fn is None:  # pragma: no cover - a libc without it
            raise OSError(errno.ENOSYS, "fallocate is not available")
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        _fallocate = fn
    if _fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _preallocate_macos(fd: int, end: int) -> None:
    """``F_PREALLOCATE`` the bytes between what is allocated and ``end``, contiguous
    if it can, else wherever (as Mozilla's and others' posix_fallocate stand-ins)."""
    import fcntl

    allocated = os.fstat(fd).st_blocks * 512  # type: ignore[attr-defined, unused-ignore]
    need = end - allocated
    if need <= 0:
        return
    cmd = getattr(fcntl, "F_PREALLOCATE", _F_PREALLOCATE)
    for flags in (_F_ALLOCATECONTIG | _F_ALLOCATEALL, _F_ALLOCATEALL):
        store = _FSTORE.pack(flags, _F_PEOFPOSMODE, 0, need, 0)
        try:
            fcntl.fcntl(fd, cmd, store)  # type: ignore[attr-defined, unused-ignore]
            return
        except OSError as exc:
            if flags == _F_ALLOCATEALL or exc.errno not in NO_SPACE:
                raise


def set_size(fd: int, size: int) -> None:
    """Make the file ``size`` bytes long without writing any byte (never
    ``os.ftruncate`` on Windows: there it writes zeros to extend)."""
    if system() == "windows":
        win32().set_end_of_file(fd, size)
    else:
        os.ftruncate(fd, size)


# ---------------------------------------------------------------- names
def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """``os.replace``; on Windows, where a file another handle holds cannot be
    replaced, retried for :data:`RETRY_S`, then :class:`FileInUseError` naming it."""
    _retry(lambda: os.replace(src, dst), Path(dst), "replace")


def unlink(path: str | os.PathLike[str], *, missing_ok: bool = True) -> None:
    """Remove ``path`` (``missing_ok``: a file already gone is fine); on Windows
    retried like :func:`replace` while another handle holds it."""

    def remove() -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    _retry(remove, Path(path), "remove")


def _retry(action: Any, path: Path, verb: str) -> None:
    deadline = time.monotonic() + RETRY_S
    while True:
        try:
            action()
            return
        except PermissionError as exc:
            if system() != "windows":
                raise
            if time.monotonic() >= deadline:
                raise FileInUseError(
                    errno.EACCES,
                    f"cannot {verb} {path}: it is open in another program "
                    "(Windows refuses while a file is in use); close it and retry",
                    str(path),
                ) from exc
            time.sleep(_RETRY_STEP_S)


__all__ = [
    "NO_SPACE",
    "FileInUseError",
    "close",
    "data_sync",
    "full_sync",
    "open_binary",
    "pread",
    "pwrite_all",
    "replace",
    "reserve",
    "set_size",
    "sync",
    "sync_dir",
    "unlink",
]
