"""Acquisition-time data: writers, sidecars and recovery (no Qt needed)."""

from __future__ import annotations

from .errors import RecordingError
from .journal import RecoveryReport, recover
from .recording import Recording, open_recording, open_run
from .sidecar import JOURNAL_SUFFIX, SIDECAR_SUFFIX, journal_path, sidecar_path
from .video import CV2Writer
from .writer import CustomWriter, WriterStats, endless_timelapse

__all__ = [
    "JOURNAL_SUFFIX",
    "SIDECAR_SUFFIX",
    "CV2Writer",
    "CustomWriter",
    "Recording",
    "RecordingError",
    "RecoveryReport",
    "WriterStats",
    "endless_timelapse",
    "journal_path",
    "open_recording",
    "open_run",
    "recover",
    "sidecar_path",
]
