"""Give this (Linux) process Windows' or macOS' Python ``os`` surface and file
semantics, so the suite proves here what the rigs' operating systems will do.

``pytest --emulate-os=windows`` (or ``MESOFIELD_EMULATE_OS=windows``; ``macos``
likewise) installs the emulation for the whole session, and child processes the tests
start inherit it (``_emulate_site/sitecustomize.py`` installs it at their start).
``sys.platform`` and ``os.name`` are left alone -- changing them globally breaks
numpy, Qt and napari -- the product's one seam, ``mesofield_napari._platform.system()``,
answers the emulated name instead, and its Windows-only calls (``_platform._win32``)
are replaced by :class:`_FakeWin32`, which behaves as NTFS does.

What is emulated, and where each behaviour is documented
--------------------------------------------------------
Windows (CPython on Windows 10/11, NTFS):

- **No positional I/O, no data sync, no fallocate**: ``os.pwrite``, ``os.pread``,
  ``os.pwritev``/``preadv``, ``os.fdatasync``, ``os.posix_fallocate``,
  ``os.posix_fadvise``, ``os.sync`` are absent, as are ``os.fork``/``forkpty``,
  ``os.mkfifo``/``mknod``, ``os.getuid``/``geteuid``/``getgid``/``getegid``,
  ``os.killpg``, ``os.setsid`` (the ``os`` module reference marks each "Availability:
  Unix"). ``import resource``, ``import fcntl`` and ``import termios`` fail.
- **Text-mode descriptors**: ``os.open`` without ``os.O_BINARY`` returns a CRT
  descriptor in text mode (CPython bpo-8306 / gh-52646 "Document os.open"; Microsoft,
  "Translation mode constants": LF -> CR-LF on output, CR-LF -> LF on input, CTRL+Z is
  end of file on input). ``os.write`` of such an fd turns every 0x0A into 0x0D 0x0A,
  ``os.read`` translates back and stops at 0x1A; a file object made from it
  (``os.fdopen``) goes through the same CRT translation. ``os.O_BINARY``,
  ``O_TEXT``, ``O_NOINHERIT``, ``O_TEMPORARY``, ``O_SHORT_LIVED``, ``O_SEQUENTIAL``,
  ``O_RANDOM`` exist (their values here are free bits, not Microsoft's: the real
  Linux ``open`` never sees them). Builtin ``open()`` always opens binary at the
  CRT level (CPython's FileIO adds O_BINARY) but its text layer writes ``os.linesep``
  = ``\\r\\n`` when ``newline`` is not given, and its default encoding is the ANSI
  code page (cp1252 here). Opening a directory with ``os.open`` is refused
  (EACCES), so ``shutil.rmtree`` takes its Windows path.
- **``os.ftruncate`` is the CRT's ``_chsize_s``** (CPython ``os_ftruncate_impl``:
  ``#ifdef MS_WINDOWS result = _chsize_s(fd, length)``), which *extends a file by
  writing zeros* (Microsoft, "_chsize": "Null characters ('\\0') are appended if the
  file is extended"): every byte it adds is counted (:meth:`Emulation.chsize_zeros`),
  so a test can prove nothing extends a file that way.
- **Valid data length** (Microsoft, SetEndOfFile and FILE_VALID_DATA_LENGTH_INFORMATION;
  Raymond Chen, "Why does my single-byte write take forever?" and "On the various ways
  of creating large files in NTFS"): NTFS tracks the highest byte written; a write
  that starts past it first zero-fills the gap on disk. Per file the emulation tracks
  that length and counts the bytes a write past it makes NTFS write
  (:meth:`Emulation.zero_filled`). Setting the end of file or the allocation size
  does not move it.
- **Refusals on mapped or open files**: ``os.ftruncate`` or SetEndOfFile of a file
  that has a mapped view raises ``PermissionError`` (ERROR_USER_MAPPED_FILE, 1224;
  SetEndOfFile: "you must first call UnmapViewOfFile to unmap all views");
  ``os.unlink``/``remove``/``rename``/``replace`` of a file that is open or mapped
  raises ``PermissionError`` (ERROR_SHARING_VIOLATION, 32: Python's open shares no
  delete access, cpython gh-121509; a mapped file likewise, dedupe #1114), replacing
  onto an open or mapped destination raises ERROR_ACCESS_DENIED (5), and
  ``os.rename`` onto an existing name raises ``FileExistsError`` (183). Open and
  mapped are read from ``/proc/self/fd`` and ``/proc/self/maps``: this process's own
  handles (another program's are not seen).
- **Coarse clocks**: ``time.monotonic()`` (GetTickCount64) and ``time.time()``
  (GetSystemTimeAsFileTime) tick every 15.625 ms in CPython <= 3.12 (cpython
  gh-88494, PR 116781: "GetTickCount64() clock which has a resolution of 15.6 ms");
  ``time.perf_counter()`` (QueryPerformanceCounter) stays fine.
- **Signals**: ``signal`` has only SIGABRT, SIGFPE, SIGILL, SIGINT, SIGSEGV, SIGTERM,
  SIGBREAK and CTRL_C_EVENT/CTRL_BREAK_EVENT (``signal`` module reference); installing
  a handler for anything else raises ValueError. ``os.kill(pid, CTRL_BREAK_EVENT)``
  delivers Ctrl-Break (the child's SIGBREAK handler runs; emulated as the real signal
  21), CTRL_C_EVENT delivers Ctrl-C, and every other value *terminates* the process
  (TerminateProcess: nothing is finished, as on Windows, where SIGTERM from another
  program cannot be caught). ``Popen.terminate()``/``kill()`` likewise.
  Closing the console window (Microsoft, "CTRL+CLOSE signal", HandlerRoutine) is
  emulated by the real SIGHUP: the handler registered through ``_win32`` runs on a
  new thread, and the process ends when it returns or after 5 s.
- **Full disk**: ``MESOFIELD_EMULATE_DISK_LIMIT=<bytes>`` (or
  :attr:`Emulation.disk_limit`) makes any write, allocation or end-of-file past that
  many bytes in one file fail with ENOSPC (ERROR_DISK_FULL, 112): Windows has no
  ``RLIMIT_FSIZE`` for tests to fill a disk with.
- Piped ``sys.stdout``/``stderr`` of a child are cp1252 with strict errors (the
  console code page Python uses for pipes).

macOS (CPython on macOS, APFS):

- ``os.fdatasync``, ``os.posix_fallocate``, ``os.posix_fadvise``, ``os.pipe2`` are
  absent ("Availability: Unix, not macOS"); ``os.pwrite``/``pread`` exist.
- ``fcntl.F_FULLFSYNC`` (51) and ``fcntl.F_PREALLOCATE`` (42, with ``fstore_t``
  ``{u32 fst_flags; i32 fst_posmode; off_t fst_offset, fst_length,
  fst_bytesalloc}``, F_ALLOCATECONTIG 2, F_ALLOCATEALL 4, F_PEOFPOSMODE 3,
  F_VOLPOSMODE 4) work as Apple's fcntl(2)/fsync(2) describe: F_FULLFSYNC flushes the
  file and is counted per file (:meth:`Emulation.full_fsyncs`; fsync(2): "fsync will
  flush all data from the host to the drive ... the drive itself may not physically
  write the data"), ``MESOFIELD_EMULATE_FULLFSYNC=refuse`` makes the volume refuse it
  (ENOTSUP, as network and some external volumes do); F_PREALLOCATE allocates
  ``fst_length`` bytes from the physical end of file without changing the file size
  (Linux ``fallocate(FALLOC_FL_KEEP_SIZE)``), fails with ENOSPC when the disk cannot,
  and reports ``fst_bytesalloc``.

The path-length limit (MAX_PATH, 259 characters) follows from the seam
(``_platform.paths`` asks ``system()``); the file system itself accepts longer paths.

Not emulated: other programs' handles (an Excel holding a CSV), NTFS permissions and
ACLs, case-insensitive names,
``\\\\?\\`` paths, Windows' own console and its code pages beyond cp1252, real
durability (F_FULLFSYNC vs fsync on real hardware), Gatekeeper/Qt on macOS.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import errno
import importlib
import importlib.abc
import io
import math
import multiprocessing
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV = "MESOFIELD_EMULATE_OS"
# set while pytest itself (its controller and its xdist workers) starts: those processes
# install the emulation in the session fixture, after pytest's own set-up (its capture
# opens a TemporaryFile through O_TMPFILE, which the emulated Windows lacks); the
# fixture clears it, so the processes the tests start are emulated from their first line
PYTEST_ENV = "MESOFIELD_EMULATE_OS_PYTEST"
DISK_LIMIT_ENV = "MESOFIELD_EMULATE_DISK_LIMIT"
FULLFSYNC_ENV = "MESOFIELD_EMULATE_FULLFSYNC"
SYSTEMS = ("windows", "macos")
SITE_DIR = Path(__file__).with_name("_emulate_site")

WINDOWS_TICK_S = 0.015625  # 64 Hz: GetTickCount64 / GetSystemTimeAsFileTime

# emulated Windows open flags: free bits, stripped before the real open()
_WIN_FLAGS = {
    "O_BINARY": 1 << 30,
    "O_TEXT": 1 << 29,
    "O_NOINHERIT": 1 << 28,
    "O_TEMPORARY": 1 << 27,
    "O_SHORT_LIVED": 1 << 26,
    "O_SEQUENTIAL": 1 << 25,
    "O_RANDOM": 1 << 24,
}
_WIN_FLAG_MASK = sum(_WIN_FLAGS.values())
_WIN_MISSING_OS = [
    "pwrite",
    "pread",
    "pwritev",
    "preadv",
    "fdatasync",
    "posix_fallocate",
    "posix_fadvise",
    "sync",
    "fork",
    "forkpty",
    "mkfifo",
    "mknod",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "killpg",
    "setsid",
    "O_DSYNC",
    "O_SYNC",
    "O_RSYNC",
    "O_DIRECT",
    "O_NOATIME",
    "O_PATH",
    "O_TMPFILE",
    "O_NOFOLLOW",
    "O_DIRECTORY",
]
_MAC_MISSING_OS = [
    "fdatasync",
    "posix_fallocate",
    "posix_fadvise",
    "pipe2",
    "O_DIRECT",
    "O_NOATIME",
    "O_PATH",
    "O_TMPFILE",
]
_WIN_SIGNALS = {"SIGABRT", "SIGFPE", "SIGILL", "SIGINT", "SIGSEGV", "SIGTERM"}
_WIN_SIGNAL_FUNCS = [
    "alarm",
    "pause",
    "setitimer",
    "getitimer",
    "siginterrupt",
    "pthread_kill",
    "pthread_sigmask",
    "sigpending",
    "sigwait",
    "sigwaitinfo",
    "sigtimedwait",
]
SIGBREAK = 21  # Windows' value; here it is the real SIGTTIN, which nothing else uses
CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT = 0, 1, 2
_BLOCKED_MODULES = {"windows": ("resource", "fcntl", "termios"), "macos": ()}
# Libraries that choose their own Windows implementation by ``sys.platform`` (which
# stays "linux"): imported before the emulation so their POSIX implementation keeps
# the names it imports, as their Windows one would have its own there.
PREIMPORT = ("platformdirs", "serial", "psutil")

# macOS fcntl
F_PREALLOCATE, F_FULLFSYNC, F_NOCACHE = 42, 51, 48
F_ALLOCATECONTIG, F_ALLOCATEALL, F_ALLOCATEPERSIST = 2, 4, 8
F_PEOFPOSMODE, F_VOLPOSMODE = 3, 4
FSTORE = struct.Struct("=Iiqqq")  # fst_flags, fst_posmode, offset, length, bytesalloc

# Windows error numbers, as ``OSError.winerror``
ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION, ERROR_ALREADY_EXISTS = 5, 32, 183
ERROR_DISK_FULL, ERROR_USER_MAPPED_FILE = 112, 1224
_WIN_MESSAGES = {
    ERROR_ACCESS_DENIED: "Access is denied",
    ERROR_SHARING_VIOLATION: "The process cannot access the file because it is "
    "being used by another process",
    ERROR_ALREADY_EXISTS: "Cannot create a file when that file already exists",
    ERROR_DISK_FULL: "There is not enough space on the disk",
    ERROR_USER_MAPPED_FILE: "The requested operation cannot be performed on a file "
    "with a user-mapped section open",
}
_WIN_ERRNO = {
    ERROR_ACCESS_DENIED: errno.EACCES,
    ERROR_SHARING_VIOLATION: errno.EACCES,
    ERROR_ALREADY_EXISTS: errno.EEXIST,
    ERROR_DISK_FULL: errno.ENOSPC,
    ERROR_USER_MAPPED_FILE: errno.EACCES,
}


def win_error(winerror: int, filename: Any = None, filename2: Any = None) -> OSError:
    """An OSError as CPython raises it on Windows (errno mapped, ``winerror`` set)."""
    code = _WIN_ERRNO[winerror]
    args: tuple[Any, ...] = (code, _WIN_MESSAGES[winerror])
    if filename is not None:
        args += (filename,)
        if filename2 is not None:
            args += (None, filename2)
    exc = OSError(*args)  # the subclass for the errno (PermissionError, ...)
    exc.winerror = winerror  # type: ignore[attr-defined]
    return exc


_MISSING = object()
_Key = tuple[int, int]  # (st_dev, st_ino)


@dataclass
class _Fd:
    key: _Key
    text: bool  # CRT text mode (os.open without O_BINARY)
    eof: bool = False  # text mode read a CTRL+Z


class _Real:
    """The functions the emulation wraps, captured before it does."""

    open = staticmethod(os.open)
    close = staticmethod(os.close)
    write = staticmethod(os.write)
    read = staticmethod(os.read)
    lseek = staticmethod(os.lseek)
    fstat = staticmethod(os.fstat)
    ftruncate = staticmethod(os.ftruncate)
    fsync = staticmethod(os.fsync)
    unlink = staticmethod(os.unlink)
    remove = staticmethod(os.remove)
    rename = staticmethod(os.rename)
    replace = staticmethod(os.replace)
    kill = staticmethod(os.kill)
    io_open = staticmethod(io.open)
    monotonic = staticmethod(time.monotonic)
    monotonic_ns = staticmethod(time.monotonic_ns)
    wall = staticmethod(time.time)
    wall_ns = staticmethod(time.time_ns)
    signal = staticmethod(signal.signal)
    popen_send_signal = subprocess.Popen.send_signal
    popen_terminate = subprocess.Popen.terminate
    popen_kill = subprocess.Popen.kill


FALLOC_FL_KEEP_SIZE = 1
_libc: Any = None


def _fallocate_keep_size(fd: int, offset: int, length: int) -> None:
    """Linux fallocate(FALLOC_FL_KEEP_SIZE): what NTFS's FileAllocationInfo and
    APFS's F_PREALLOCATE do (reserve without changing the size)."""
    global _libc
    if length <= 0:
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        i64 = ctypes.c_int64
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, i64, i64]
    if _libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class _BlockImports(importlib.abc.MetaPathFinder):
    """``import resource`` (and the like) fails, as on Windows."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = set(names)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


class Emulation:
    """One emulated operating system at a time; :meth:`install`, :meth:`uninstall`."""

    def __init__(self) -> None:
        self.system: str | None = None
        self.disk_limit: int | None = None
        self.refuse_full_fsync = False
        self._patches: list[tuple[Any, str, Any]] = []
        self._fds: dict[int, _Fd] = {}
        self._vdl: dict[_Key, int] = {}
        self._zero_filled: defaultdict[_Key, int] = defaultdict(int)
        self._chsize_zeros: defaultdict[_Key, int] = defaultdict(int)
        self._full_fsyncs: defaultdict[_Key, int] = defaultdict(int)
        self._lock = threading.RLock()
        self._blocker: _BlockImports | None = None
        self._saved_modules: dict[str, Any] = {}
        self._start_method: str | None = None
        self.win32 = _FakeWin32(self)

    # ------------------------------------------------------------ counters
    def zero_filled(self, path: str | os.PathLike[str]) -> int:
        """Bytes NTFS zero-filled in ``path`` because a write began past its valid
        data length."""
        return self._zero_filled.get(_key_of(path), 0)

    def chsize_zeros(self, path: str | os.PathLike[str]) -> int:
        """Bytes ``os.ftruncate`` (``_chsize_s``) wrote to extend ``path``."""
        return self._chsize_zeros.get(_key_of(path), 0)

    def full_fsyncs(self, path: str | os.PathLike[str]) -> int:
        """``F_FULLFSYNC`` calls that reached the drive for ``path`` (macOS)."""
        return self._full_fsyncs.get(_key_of(path), 0)

    def valid_data_length(self, path: str | os.PathLike[str]) -> int:
        key = _key_of(path)
        return self._vdl.get(key, os.stat(path).st_size)

    # ------------------------------------------------------------ install
    def install(self, system: str) -> None:
        if system not in SYSTEMS:
            raise ValueError(f"emulate-os must be one of {SYSTEMS}, got {system!r}")
        if not sys.platform.startswith("linux"):
            raise RuntimeError(
                "the platform emulation runs on Linux (it reads /proc and uses "
                f"fallocate); on {sys.platform} run the suite without --emulate-os"
            )
        if self.system == system:
            return
        if self.system is not None:
            self.uninstall()
        for name in PREIMPORT:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        self.system = system
        limit = os.environ.get(DISK_LIMIT_ENV)
        self.disk_limit = int(limit) if limit else None
        self.refuse_full_fsync = os.environ.get(FULLFSYNC_ENV) == "refuse"
        if system == "windows":
            self._install_windows()
        else:
            self._install_macos()
        self._install_seam()

    def uninstall(self) -> None:
        for obj, name, old in reversed(self._patches):
            if old is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(obj, name)
            else:
                setattr(obj, name, old)
        self._patches.clear()
        if self._blocker is not None:
            sys.meta_path.remove(self._blocker)
            self._blocker = None
        sys.modules.update(self._saved_modules)
        self._saved_modules.clear()
        if self._start_method is not None:
            multiprocessing.set_start_method(self._start_method, force=True)
            self._start_method = None
        self.system = None

    def _set(self, obj: Any, name: str, value: Any) -> None:
        self._patches.append((obj, name, getattr(obj, name, _MISSING)))
        setattr(obj, name, value)

    def _del(self, obj: Any, name: str) -> None:
        if hasattr(obj, name):
            self._patches.append((obj, name, getattr(obj, name)))
            delattr(obj, name)

    def _install_seam(self) -> None:
        try:
            import mesofield_napari._platform as platform_mod
        except ImportError:  # before the product has its seam: nothing to tell
            return
        self._set(platform_mod, "_system", self.system)
        if self.system == "windows":
            self._set(platform_mod, "_win32_module", self.win32)

    def _block_modules(self, names: tuple[str, ...]) -> None:
        if not names:
            return
        for name in names:
            if name in sys.modules:
                self._saved_modules[name] = sys.modules.pop(name)
        self._blocker = _BlockImports(names)
        sys.meta_path.insert(0, self._blocker)

    # ------------------------------------------------------------ Windows
    def _install_windows(self) -> None:
        if not any(os.environ.get(n) for n in ("LOGNAME", "USER", "LNAME", "USERNAME")):
            import getpass

            os.environ["USERNAME"] = getpass.getuser()  # Windows always sets it
        for name in _WIN_MISSING_OS:
            self._del(os, name)
        for name, value in _WIN_FLAGS.items():
            self._set(os, name, value)
        # tempfile adds O_BINARY/O_NOINHERIT where they exist (decided at import)
        for name in ("_bin_openflags", "_text_openflags"):
            flags = getattr(tempfile, name)
            self._set(tempfile, name, flags | os.O_BINARY | os.O_NOINHERIT)
        self._set(shutil, "_use_fd_functions", False)  # rmtree's Windows path
        wrappers: dict[str, Callable[..., Any]] = {
            "open": self._win_open,
            "close": self._win_close,
            "write": self._win_write,
            "read": self._win_read,
            "ftruncate": self._win_ftruncate,
            "unlink": self._win_unlink,
            "remove": self._win_unlink,
            "rename": self._win_rename,
            "replace": self._win_replace,
            "kill": self._win_kill,
        }
        for name, fn in wrappers.items():
            self._set(os, name, fn)
        self._set(io, "open", self._win_io_open)
        self._set(builtins, "open", self._win_io_open)
        self._set(time, "monotonic", _coarse(_Real.monotonic))
        self._set(time, "time", _coarse(_Real.wall))
        self._set(time, "monotonic_ns", _coarse_ns(_Real.monotonic_ns))
        self._set(time, "time_ns", _coarse_ns(_Real.wall_ns))
        for name in dir(signal):
            if (
                name.startswith("SIG")
                and not name.startswith("SIG_")
                and name not in _WIN_SIGNALS
                and name != "SIGBREAK"
            ) or name.startswith("ITIMER_"):
                self._del(signal, name)
        for name in _WIN_SIGNAL_FUNCS:
            self._del(signal, name)
        self._set(signal, "SIGBREAK", SIGBREAK)
        self._set(signal, "CTRL_C_EVENT", CTRL_C_EVENT)
        self._set(signal, "CTRL_BREAK_EVENT", CTRL_BREAK_EVENT)
        self._set(signal, "signal", _win_signal)
        self._set(subprocess.Popen, "send_signal", _win_popen_send_signal)
        self._set(subprocess.Popen, "terminate", _win_popen_terminate)
        self._set(subprocess.Popen, "kill", _win_popen_terminate)
        self._block_modules(_BLOCKED_MODULES["windows"])
        self._start_method = multiprocessing.get_start_method(allow_none=True)
        multiprocessing.set_start_method("spawn", force=True)

    # os.open / close / write / read -------------------------------------------
    def _win_open(
        self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None
    ) -> int:
        try:
            is_dir = stat.S_ISDIR(os.stat(path, dir_fd=dir_fd).st_mode)
        except OSError:
            is_dir = False
        if is_dir:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        fd = _Real.open(path, flags & ~_WIN_FLAG_MASK, mode, dir_fd=dir_fd)
        try:
            st = _Real.fstat(fd)
        except OSError:  # pragma: no cover
            return fd
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            with self._lock:
                self._fds[fd] = _Fd(key, text=not flags & os.O_BINARY)
                self._vdl.setdefault(key, st.st_size)
        return fd

    def _win_close(self, fd: int) -> None:
        with self._lock:
            self._fds.pop(fd, None)
        _Real.close(fd)

    def _fd(self, fd: int) -> _Fd | None:
        """The emulated state of ``fd`` (None: not a file we opened, or reused)."""
        info = self._fds.get(fd)
        if info is None:
            return None
        try:
            st = _Real.fstat(fd)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != info.key:
            with self._lock:
                self._fds.pop(fd, None)  # closed behind our back (a file object)
            return None
        return info

    def _note_write(self, key: _Key, fd: int, offset: int, length: int) -> None:
        """NTFS: a write past the valid data length zero-fills the gap first."""
        if self.disk_limit is not None and offset + length > self.disk_limit:
            raise win_error(ERROR_DISK_FULL)
        with self._lock:
            vdl = self._vdl.get(key)
            if vdl is None:
                vdl = _Real.fstat(fd).st_size
            if offset > vdl:
                self._zero_filled[key] += offset - vdl
            self._vdl[key] = max(vdl, offset + length)

    def _win_write(self, fd: int, data: Any) -> int:
        info = self._fd(fd)
        if info is None:
            return _Real.write(fd, data)
        raw = bytes(data)
        out = raw.replace(b"\n", b"\r\n") if info.text else raw
        pos = _Real.lseek(fd, 0, os.SEEK_CUR)
        self._note_write(info.key, fd, pos, len(out))
        if not info.text:
            return _Real.write(fd, out)
        view = memoryview(out)
        while view:  # the CRT writes the translated buffer whole
            view = view[_Real.write(fd, view) :]
        return len(raw)

    def _win_read(self, fd: int, n: int) -> bytes:
        info = self._fd(fd)
        if info is None or not info.text:
            return _Real.read(fd, n)
        if info.eof:
            return b""
        data = _Real.read(fd, n)
        if data.endswith(b"\r"):  # the CRT peeks at the next byte
            nxt = _Real.read(fd, 1)
            if nxt == b"\n":
                data += nxt
            elif nxt:
                _Real.lseek(fd, -1, os.SEEK_CUR)
        data = data.replace(b"\r\n", b"\n")
        if b"\x1a" in data:
            info.eof = True
            data = data[: data.index(b"\x1a")]
        return data

    # truncation, deletion, renames ---------------------------------------------
    def _win_ftruncate(self, fd: int, length: int) -> None:
        """``_chsize_s``: refused while mapped; extends by writing zeros."""
        st = _Real.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if _is_mapped(key):
            raise win_error(ERROR_USER_MAPPED_FILE)
        if length > st.st_size:
            if self.disk_limit is not None and length > self.disk_limit:
                raise win_error(ERROR_DISK_FULL)
            with self._lock:
                vdl = self._vdl.get(key, st.st_size)
                self._zero_filled[key] += max(0, st.st_size - vdl)
                self._chsize_zeros[key] += length - st.st_size
                self._vdl[key] = length
        else:
            with self._lock:
                self._vdl[key] = min(self._vdl.get(key, length), length)
        _Real.ftruncate(fd, length)

    def set_end_of_file(self, fd: int, length: int) -> None:
        """SetFileInformationByHandle(FileEndOfFileInfo): no zeros written, the
        valid data length stays; refused while the file is mapped."""
        st = _Real.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if _is_mapped(key):
            raise win_error(ERROR_USER_MAPPED_FILE)
        if self.disk_limit is not None and length > max(self.disk_limit, st.st_size):
            raise win_error(ERROR_DISK_FULL)
        with self._lock:
            vdl = self._vdl.get(key, st.st_size)
            self._vdl[key] = min(vdl, length)
        _Real.ftruncate(fd, length)

    def set_allocation(self, fd: int, size: int) -> None:
        """SetFileInformationByHandle(FileAllocationInfo): disk space reserved, end
        of file and valid data length unchanged (a smaller size would cut the end of
        file: never asked for here)."""
        st = _Real.fstat(fd)
        if size < st.st_size:
            raise AssertionError(
                f"FileAllocationInfo below the end of file ({size} < {st.st_size}) "
                "would truncate it"
            )
        if self.disk_limit is not None and size > self.disk_limit:
            raise win_error(ERROR_DISK_FULL)
        try:
            _fallocate_keep_size(fd, 0, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise win_error(ERROR_DISK_FULL) from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise

    def _check_not_in_use(self, path: Any, dir_fd: Any, winerror: int) -> None:
        try:
            st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return  # the real call reports a missing file
        if not stat.S_ISREG(st.st_mode):
            return
        key = (st.st_dev, st.st_ino)
        if _is_mapped(key) or _is_open(key):
            raise win_error(winerror, path)

    def _win_unlink(self, path: Any, *, dir_fd: Any = None) -> None:
        self._check_not_in_use(path, dir_fd, ERROR_SHARING_VIOLATION)
        _Real.unlink(path, dir_fd=dir_fd)

    def _win_rename(
        self, src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None
    ) -> None:
        self._check_not_in_use(src, src_dir_fd, ERROR_SHARING_VIOLATION)
        if os.path.lexists(dst) if dst_dir_fd is None else _exists(dst, dst_dir_fd):
            raise win_error(ERROR_ALREADY_EXISTS, src, dst)
        _Real.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    def _win_replace(
        self, src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None
    ) -> None:
        self._check_not_in_use(src, src_dir_fd, ERROR_SHARING_VIOLATION)
        self._check_not_in_use(dst, dst_dir_fd, ERROR_ACCESS_DENIED)
        _Real.replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    def _win_kill(self, pid: int, sig: int) -> None:
        _Real.kill(pid, _windows_signal_to_real(sig))

    # builtin open / io.open ----------------------------------------------------
    def _win_io_open(
        self,
        file: Any,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        closefd: bool = True,
        opener: Any = None,
    ) -> Any:
        text = "b" not in mode
        if text:
            if encoding is None or encoding == "locale":
                encoding = "cp1252"  # the ANSI code page, Python's default there
            if newline is None and "r" not in mode:
                newline = "\r\n"  # TextIOWrapper writes os.linesep on Windows
        if isinstance(file, int) and (info := self._fd(file)) is not None and info.text:
            return self._text_fd_stack(
                file, mode, buffering, encoding, errors, newline, closefd
            )
        f = _Real.io_open(
            file, mode, buffering, encoding, errors, newline, closefd, opener
        )
        if not isinstance(file, int):
            with self._lock:
                self._fds.pop(f.fileno(), None)  # FileIO opens binary (O_BINARY)
        return f

    def _text_fd_stack(
        self,
        fd: int,
        mode: str,
        buffering: int,
        encoding: str | None,
        errors: str | None,
        newline: str | None,
        closefd: bool,
    ) -> Any:
        """What io.open builds on a CRT text-mode fd: the translation happens below
        the buffer, in the CRT's write()/read()."""
        raw_mode = mode.replace("t", "").replace("b", "") + "b"
        raw = _CrtTextRaw(self, _Real.io_open(fd, raw_mode, 0, closefd=closefd))
        if buffering == 0:
            return raw
        size = buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE
        if "+" in mode:
            buffer: Any = io.BufferedRandom(raw, size)
        elif "r" in mode:
            buffer = io.BufferedReader(raw, size)
        else:
            buffer = io.BufferedWriter(raw, size)
        if "b" in mode:
            return buffer
        return io.TextIOWrapper(
            buffer, encoding, errors, newline, line_buffering=buffering == 1
        )

    # ------------------------------------------------------------ macOS
    def _install_macos(self) -> None:
        for name in _MAC_MISSING_OS:
            self._del(os, name)
        import fcntl

        constants = {
            "F_PREALLOCATE": F_PREALLOCATE,
            "F_FULLFSYNC": F_FULLFSYNC,
            "F_NOCACHE": F_NOCACHE,
            "F_ALLOCATECONTIG": F_ALLOCATECONTIG,
            "F_ALLOCATEALL": F_ALLOCATEALL,
            "F_ALLOCATEPERSIST": F_ALLOCATEPERSIST,
            "F_PEOFPOSMODE": F_PEOFPOSMODE,
            "F_VOLPOSMODE": F_VOLPOSMODE,
        }
        for name, value in constants.items():
            self._set(fcntl, name, value)
        real_fcntl = fcntl.fcntl

        def mac_fcntl(fd: Any, cmd: int, arg: Any = 0) -> Any:
            fd = fd if isinstance(fd, int) else fd.fileno()
            if cmd == F_FULLFSYNC:
                return self._full_fsync(fd)
            if cmd == F_PREALLOCATE:
                return self._preallocate(fd, arg)
            if cmd == F_NOCACHE:
                return 0
            return real_fcntl(fd, cmd, arg)

        self._set(fcntl, "fcntl", mac_fcntl)

    def _full_fsync(self, fd: int) -> int:
        if self.refuse_full_fsync:
            raise OSError(errno.ENOTSUP, "Operation not supported")
        _Real.fsync(fd)
        st = _Real.fstat(fd)
        with self._lock:
            self._full_fsyncs[(st.st_dev, st.st_ino)] += 1
        return 0

    def _preallocate(self, fd: int, arg: Any) -> bytes:
        if not isinstance(arg, (bytes, bytearray)) or len(arg) != FSTORE.size:
            raise TypeError("F_PREALLOCATE needs a packed fstore_t")
        flags, posmode, offset, length, _ = FSTORE.unpack(arg)
        st = _Real.fstat(fd)
        if posmode == F_PEOFPOSMODE:  # relative to the physical end of file
            start = st.st_blocks * 512 + offset
        elif posmode == F_VOLPOSMODE:
            start = offset
        else:
            raise OSError(errno.EINVAL, "Invalid argument")
        try:
            _fallocate_keep_size(fd, start, length)
        except OSError as exc:
            if exc.errno in (errno.EFBIG, errno.EDQUOT):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
            raise
        return FSTORE.pack(flags, posmode, offset, length, length)


class _CrtTextRaw(io.RawIOBase):
    """A raw file over a CRT text-mode descriptor (Windows' _write/_read)."""

    def __init__(self, emulation: Emulation, fileio: Any) -> None:
        self._em = emulation
        self._f = fileio

    def readable(self) -> bool:
        return self._f.readable()

    def writable(self) -> bool:
        return self._f.writable()

    def seekable(self) -> bool:
        return self._f.seekable()

    def fileno(self) -> int:
        return self._f.fileno()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def write(self, b: Any) -> int:
        return self._em._win_write(self._f.fileno(), b)

    def readinto(self, b: Any) -> int:
        data = self._em._win_read(self._f.fileno(), len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            fd = self._f.fileno()
            with self._em._lock:
                self._em._fds.pop(fd, None)
            self._f.close()
        super().close()


class _FakeWin32:
    """Stands in for ``mesofield_napari._platform._win32`` (what needs kernel32)."""

    CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT = 0, 1, 2

    def __init__(self, emulation: Emulation) -> None:
        self._em = emulation
        self.handlers: list[Callable[[int], bool]] = []

    def set_allocation(self, fd: int, size: int) -> None:
        self._em.set_allocation(fd, size)

    def set_end_of_file(self, fd: int, size: int) -> None:
        self._em.set_end_of_file(fd, size)

    def set_console_ctrl_handler(self, handler: Callable[[int], bool]) -> None:
        """Closing the console is the real SIGHUP here: the handler runs on a new
        thread; the process ends when it returns (or after 5 s), as on Windows."""
        self.handlers.append(handler)

        def closed(signum: int, frame: Any) -> None:
            def run() -> None:
                for h in reversed(self.handlers):
                    if h(CTRL_CLOSE_EVENT):
                        break
                os._exit(0xC000013A & 0xFF)  # STATUS_CONTROL_C_EXIT

            thread = threading.Thread(target=run, name="console-close", daemon=True)
            thread.start()
            threading.Timer(5.0, os._exit, (0xC000013A & 0xFF,)).start()

        _Real.signal(signal.Signals.SIGHUP, closed)


# ---------------------------------------------------------------- helpers
def _key_of(path: str | os.PathLike[str]) -> _Key:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _exists(path: Any, dir_fd: Any) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _is_mapped(key: _Key) -> bool:
    """A mapped view of the file in this process (``/proc/self/maps``)."""
    dev, ino = key
    needle = f" {os.major(dev):02x}:{os.minor(dev):02x} {ino} ".encode()
    with _Real.io_open("/proc/self/maps", "rb") as fh:
        return needle in fh.read()


def _is_open(key: _Key) -> bool:
    """An open handle to the file in this process (``/proc/self/fd``)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == key:
            return True
    return False


def _coarse(clock: Callable[[], float]) -> Callable[[], float]:
    def tick() -> float:
        return math.floor(clock() / WINDOWS_TICK_S) * WINDOWS_TICK_S

    return tick


def _coarse_ns(clock: Callable[[], int]) -> Callable[[], int]:
    step = 15_625_000

    def tick() -> int:
        return clock() // step * step

    return tick


def _windows_signal_to_real(sig: int) -> int:
    """os.kill on Windows: console events are delivered, anything else terminates."""
    if sig == CTRL_C_EVENT:
        return signal.Signals.SIGINT
    if sig == CTRL_BREAK_EVENT:
        return SIGBREAK
    return signal.Signals.SIGKILL  # TerminateProcess


def _win_signal(signum: int, handler: Any) -> Any:
    allowed = {int(getattr(signal.Signals, n)) for n in _WIN_SIGNALS} | {SIGBREAK}
    if int(signum) not in allowed:
        raise ValueError("signal number out of range")  # what Windows' CRT says
    return _Real.signal(signum, handler)


def _win_popen_send_signal(self: subprocess.Popen[Any], sig: int) -> None:
    if self.returncode is not None:
        return
    if sig == signal.SIGTERM:
        _win_popen_terminate(self)
    elif sig in (CTRL_C_EVENT, CTRL_BREAK_EVENT):
        _Real.kill(self.pid, _windows_signal_to_real(sig))
    else:
        raise ValueError(f"Unsupported signal: {sig}")


def _win_popen_terminate(self: subprocess.Popen[Any]) -> None:
    if self.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            _Real.kill(self.pid, signal.Signals.SIGKILL)  # TerminateProcess


emulation = Emulation()


def emulated_system() -> str | None:
    """The system this process emulates (None: the real one)."""
    return emulation.system


# ---------------------------------------------------------------- pytest plugin
def pytest_addoption(parser: Any) -> None:
    parser.addoption(
        "--emulate-os",
        choices=SYSTEMS,
        default=os.environ.get(ENV) or None,
        help="run the tests with Windows' or macOS' os surface and file semantics "
        f"(also ${ENV}); see tests/_emulate_os.py",
    )


def pytest_configure(config: Any) -> None:
    target = config.getoption("--emulate-os", default=None)
    if not target:
        return
    os.environ[ENV] = target
    os.environ[PYTEST_ENV] = "1"
    paths = [str(SITE_DIR), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


def pytest_report_header(config: Any) -> str | None:
    target = config.getoption("--emulate-os", default=None)
    return f"emulating {target}: see tests/_emulate_os.py" if target else None


def install_for_session(config: Any) -> Any:
    """The autouse session fixture's body (conftest): install, yield, uninstall."""
    target = config.getoption("--emulate-os", default=None)
    os.environ.pop(PYTEST_ENV, None)
    if target:
        emulation.install(target)
    try:
        yield emulation
    finally:
        if target:
            emulation.uninstall()
