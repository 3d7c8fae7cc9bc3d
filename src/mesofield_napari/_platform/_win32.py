"""What only Windows can do, through ``kernel32`` (imported on Windows only).

- :func:`set_allocation`: reserve disk space for a file without writing it and
  without admin rights (``SetFileInformationByHandle(FileAllocationInfo)``; the end
  of file and NTFS's valid data length stay where they are);
- :func:`set_end_of_file`: move the end of file without writing zeros
  (``FileEndOfFileInfo``; CPython's ``os.ftruncate`` is the CRT's ``_chsize_s``, which
  *writes* zeros to extend a file);
- :func:`set_console_ctrl_handler`: be told when the console window is closed
  (``SetConsoleCtrlHandler``; Ctrl-C and Ctrl-Break already reach Python as SIGINT
  and SIGBREAK).

Errors are ``OSError`` with ``winerror`` set (``ctypes.WinError``), so a full disk
(ERROR_DISK_FULL) has ``errno == ENOSPC`` as on POSIX.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

# Windows only (``_platform.win32()`` imports it there); mypy checks the rest of the
# module under ``--platform win32`` (docs/design.md, Types)
assert sys.platform == "win32"

import msvcrt  # noqa: E402
from ctypes import wintypes  # noqa: E402

_kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
_kernel32.SetFileInformationByHandle.argtypes = [
    wintypes.HANDLE,
    ctypes.c_int,
    ctypes.c_void_p,
    wintypes.DWORD,
]
_kernel32.SetFileInformationByHandle.restype = wintypes.BOOL
_HandlerRoutine = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)
_kernel32.SetConsoleCtrlHandler.argtypes = [_HandlerRoutine, wintypes.BOOL]
_kernel32.SetConsoleCtrlHandler.restype = wintypes.BOOL

FILE_ALLOCATION_INFO, FILE_END_OF_FILE_INFO = 5, 6  # FILE_INFO_BY_HANDLE_CLASS
CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT = 0, 1, 2
CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT = 5, 6
_handlers: list[object] = []  # ctypes callbacks must outlive the registration


def _set_info(fd: int, info_class: int, value: int) -> None:
    handle = msvcrt.get_osfhandle(fd)
    size = ctypes.c_longlong(value)  # LARGE_INTEGER
    if not _kernel32.SetFileInformationByHandle(
        handle, info_class, ctypes.byref(size), ctypes.sizeof(size)
    ):
        raise ctypes.WinError(ctypes.get_last_error())


def set_allocation(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of disk for the file (never below its end of file)."""
    _set_info(fd, FILE_ALLOCATION_INFO, size)


def set_end_of_file(fd: int, size: int) -> None:
    """Set the file's size without writing any byte."""
    _set_info(fd, FILE_END_OF_FILE_INFO, size)


def set_console_ctrl_handler(handler: Callable[[int], bool]) -> None:
    """Call ``handler(event)`` on a console control event (on a new thread, as
    Windows does); it returns True when it handled the event."""
    callback = _HandlerRoutine(lambda event: bool(handler(int(event))))
    if not _kernel32.SetConsoleCtrlHandler(callback, True):
        raise ctypes.WinError(ctypes.get_last_error())
    _handlers.append(callback)
