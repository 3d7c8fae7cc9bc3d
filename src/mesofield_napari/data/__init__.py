"""mesofield's data module, in napari: writers, the run manager, reading, recovery.

The face of ``mesofield_napari.data`` (no Qt needed): mesofield's own scripts do
``from mesofield.data import CustomWriter``, so ``from mesofield_napari.data import
CustomWriter, CV2Writer, RunManager`` works the same. The rooms behind it
(``docs/design.md``): ``writer/`` (frames to disk), ``formats/`` (what is on disk,
shared by writing, reading and recovery), ``manager/`` (a run's folder and files),
``reader/`` (open recordings lazily), ``batch/`` (post-hoc export), ``recovery.py`` and
``run_recovery.py``.
"""

from __future__ import annotations

from .errors import RecordingError
from .formats.sidecar import JOURNAL_SUFFIX, SIDECAR_SUFFIX, journal_path, sidecar_path
from .manager import RunManager
from .reader import Recording, open_recording, open_run
from .recovery import RecoveryReport
from .run_recovery import recover
from .writer import CustomWriter, CV2Writer, WriterStats

__all__ = [
    "JOURNAL_SUFFIX",
    "SIDECAR_SUFFIX",
    "CV2Writer",
    "CustomWriter",
    "Recording",
    "RecordingError",
    "RecoveryReport",
    "RunManager",
    "WriterStats",
    "journal_path",
    "open_recording",
    "open_run",
    "recover",
    "sidecar_path",
]
