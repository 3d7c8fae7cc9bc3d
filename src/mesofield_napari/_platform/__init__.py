"""The portable OS layer: the one place that knows which operating system we run on.

Everything that differs between Linux, Windows and macOS -- positional file I/O, data
sync, disk-space reservation, refusals on open or mapped files (``fileio``), the run
clock (``clock``), stopping a run from the console or another program (``console``),
path limits (``paths``) -- lives in this package, and decides by :func:`system`.
Windows-only calls that need ``kernel32`` are in ``_win32`` (loaded only there).

:func:`system` is also the seam the test-suite's platform emulation overrides (it
answers ``"windows"`` or ``"macos"`` on Linux and puts an NTFS stand-in in place of
``_win32``): see ``docs/design.md`` §8.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Literal

System = Literal["windows", "macos", "linux"]

_system: System = (
    "windows"
    if sys.platform == "win32"
    else "macos"
    if sys.platform == "darwin"
    else "linux"
)
_win32_module: ModuleType | None = None


def system() -> System:
    """``"windows"``, ``"macos"`` or ``"linux"`` (any other POSIX counts as Linux)."""
    return _system


def win32() -> ModuleType:
    """The ``kernel32`` calls (``_win32``), imported on first use on Windows."""
    global _win32_module
    if _win32_module is None:
        from . import _win32

        _win32_module = _win32
    return _win32_module


__all__ = ["System", "system", "win32"]
