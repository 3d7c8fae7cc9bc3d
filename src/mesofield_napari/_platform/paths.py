"""How long a path the operating system accepts, checked before a run makes files.

Windows refuses paths of 260 characters or more (MAX_PATH, counting the drive and the
terminating NUL) unless long paths are enabled in the registry
(``HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem\\LongPathsEnabled = 1``) --
and then many programs (Fiji, Explorer) still cannot open the file. macOS and Linux
allow 1024 resp. 4096 bytes per path and 255 bytes per name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import system

WINDOWS_MAX_PATH = 259  # characters, MAX_PATH (260) minus the NUL
POSIX_MAX_PATH = {"macos": 1023, "linux": 4095}  # bytes, PATH_MAX minus the NUL
MAX_NAME = 255


def _long_paths_enabled() -> bool:
    if sys.platform != "win32":  # winreg exists on Windows only
        return False
    try:
        import winreg

        key = winreg.OpenKey(
            winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem"
        )
        with key:
            value, _ = winreg.QueryValueEx(key, "LongPathsEnabled")
        return bool(value)
    except (ImportError, OSError):
        return False


def max_path_length() -> int:
    """The longest absolute path (characters on Windows, UTF-8 bytes elsewhere)."""
    if system() == "windows":
        return 32766 if _long_paths_enabled() else WINDOWS_MAX_PATH
    return POSIX_MAX_PATH[system()]


def path_too_long(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be created here (one line), or None when it can."""
    full = os.path.abspath(os.fspath(path))
    limit = max_path_length()
    length = len(full) if system() == "windows" else len(full.encode("utf-8"))
    if length > limit:
        how = (
            " (Windows' MAX_PATH; shorten the labels or the output folder, or enable "
            "long paths)"
            if system() == "windows"
            else ""
        )
        return f"path would be {length} characters, longer than {limit}{how}: {full}"
    name = Path(full).name
    if len(name.encode("utf-8")) > MAX_NAME:
        return f"file name would be longer than {MAX_NAME} bytes: {name}"
    return None


__all__ = ["max_path_length", "path_too_long"]
