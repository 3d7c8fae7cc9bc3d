"""Our file names: the recording extensions, and helpers that keep compound
extensions (``.ome.tiff``) whole."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

# the one table of recording extensions; longest first, so ".ome.tiff" wins
TIFF_EXTENSIONS = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".btf")
VIDEO_EXTENSIONS = (".mp4", ".avi")
DATA_EXTENSIONS = TIFF_EXTENSIONS + VIDEO_EXTENSIONS


def is_video(path: str | os.PathLike[str]) -> bool:
    """A video recording by its name (``.mp4``/``.avi``)."""
    return os.fspath(path).lower().endswith(VIDEO_EXTENSIONS)


def is_recording_name(path: str | os.PathLike[str]) -> bool:
    """A TIFF or video recording by its name."""
    return os.fspath(path).lower().endswith(DATA_EXTENSIONS)


def split_extension(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``/a/x.ome.tiff`` -> (``/a/x``, ``.ome.tiff``); unknown suffixes as Path does."""
    name = os.fspath(path)
    lower = name.lower()
    for ext in DATA_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)], name[-len(ext) :]
    p = Path(name)
    return name[: len(name) - len(p.suffix)], p.suffix


def with_name_suffix(path: str | os.PathLike[str], suffix: str) -> Path:
    """Insert ``suffix`` before the (compound) extension: ``x.ome.tiff`` -> ``x_p1.ome.tiff``."""
    stem, ext = split_extension(path)
    return Path(f"{stem}{suffix}{ext}")


def unique_path(path: str | os.PathLike[str], reserved: Collection[Path] = ()) -> Path:
    """``path`` if free, else ``<stem>_1<ext>``, ``<stem>_2<ext>``...; never overwrites.

    A name also counts as taken when its sidecar or journal exists, or when it is in
    ``reserved`` (handed out but not created yet).
    """
    from .sidecar import journal_path, sidecar_path

    def taken(p: Path) -> bool:
        return (
            p in reserved
            or p.exists()
            or sidecar_path(p).exists()
            or journal_path(p).exists()
        )

    candidate = Path(path)
    n = 0
    while taken(candidate):
        n += 1
        candidate = with_name_suffix(path, f"_{n}")
    return candidate


def check_new_file(path: str | os.PathLike[str], *extra: Path) -> Path:
    """Validate that ``path`` (and companions) can be created without overwriting.

    Raises ``FileNotFoundError`` for a missing folder, ``PermissionError`` for an
    unwritable one and ``FileExistsError`` when a file is already there.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder is not writable: {folder}")
    for p in (path, *extra):
        if p.exists():
            raise FileExistsError(f"refusing to overwrite existing file: {p}")
    return path
