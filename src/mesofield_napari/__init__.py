"""mesofield-napari: mesofield's acquisition-time data management inside napari.

The writers are importable from the package root because mesofield's own scripts do
``from mesofield.data import CustomWriter``; ``mesofield_napari.data`` works as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["CV2Writer", "CustomWriter", "__version__"]

if TYPE_CHECKING:
    from .data import CustomWriter, CV2Writer


def __getattr__(name: str) -> Any:
    # Lazy so that `import mesofield_napari` (done by napari for every plugin) stays
    # cheap and does not pull in pymmcore-plus or OpenCV until a writer is used.
    if name in ("CustomWriter", "CV2Writer"):
        from . import data

        return getattr(data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
