"""Reading recordings back: lazily, with their per-frame metadata (no Qt).

``recording.py`` opens a TIFF or video (and a whole run folder) as a
:class:`Recording`; ``summary.py`` summarizes recordings and runs for ``inspect``.
"""

from __future__ import annotations

from .recording import Recording, open_recording, open_run

__all__ = ["Recording", "open_recording", "open_run"]
