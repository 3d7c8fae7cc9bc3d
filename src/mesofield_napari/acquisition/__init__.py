"""Recording on live cores: time-lapses into our writers, watched and checked.

``timelapse.py`` (a time-lapse MDA streamed into the writers, headless),
``sequencing.py`` (hardware sequencing in chunks; runs until Stop), ``run_watch.py``
(did the camera deliver what was planned?) and ``preflight.py`` (will it fit on the
disk, can the disk keep up?).
"""

from __future__ import annotations

from .sequencing import endless_timelapse
from .timelapse import RecordResult, add_writers, make_core, record, timelapse

__all__ = [
    "RecordResult",
    "add_writers",
    "endless_timelapse",
    "make_core",
    "record",
    "timelapse",
]
