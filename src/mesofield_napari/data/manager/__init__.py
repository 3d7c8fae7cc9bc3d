"""A run's folder and files: paths, notes, timestamps, data queue, manifest.

``RunManager`` (``run_manager.py``) owns one run of a session; ``paths.py`` computes
every path of it from one place, ``dataqueue.py`` logs the run's one clock and
``manifest.py`` writes the ``mesokit_schema.AcquisitionManifest`` datakit reads.
"""

from __future__ import annotations

from .dataqueue import DataQueue
from .paths import RunPaths
from .run_manager import RunManager

__all__ = ["DataQueue", "RunManager", "RunPaths"]
