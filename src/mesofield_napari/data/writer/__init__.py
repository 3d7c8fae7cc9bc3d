"""Frames to disk: ``CustomWriter`` (BigTIFF) and ``CV2Writer`` (MP4/AVI).

Both are pymmcore-plus ``OMETiffWriter`` subclasses (the one upstream import lives in
``_upstream.py``) whose ``frameReady`` only queues the frame (``_queued.py``); one
writer thread per writer does the disk or encoder work (``_pipeline.py``).
"""

from __future__ import annotations

from ._pipeline import WriterStats
from ._queued import is_open_ended
from .tiff import CustomWriter
from .video import CV2Writer

__all__ = ["CV2Writer", "CustomWriter", "WriterStats", "is_open_ended"]
