"""The one place that imports pymmcore-plus's deprecated ``mda.handlers`` module.

Upstream is moving its writers to ome-writers and warns (FutureWarning) on import of
``pymmcore_plus.mda.handlers``. Our writers keep mesofield's public relationship (they
*are* ``OMETiffWriter`` subclasses), so we import it here with that warning silenced, and
``tests/test_upstream_contract.py`` fails loudly the day upstream removes it.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", category=FutureWarning, message=r".*mda\.handlers.*deprecated"
    )
    try:
        from pymmcore_plus.mda.handlers import OMETiffWriter
    except ImportError as exc:  # pragma: no cover - only when upstream removes it
        raise ImportError(
            "pymmcore_plus.mda.handlers.OMETiffWriter is gone from the installed "
            "pymmcore-plus; mesofield-napari's writers subclass it. Install a "
            "pymmcore-plus version within the range declared in pyproject.toml."
        ) from exc

__all__ = ["OMETiffWriter"]
