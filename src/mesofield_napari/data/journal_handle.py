"""Release a writer's journal handle when its sidecar could not be written.

A sidecar that cannot be written (the run folder was deleted, the disk is full) leaves
the journal on disk for ``recover``; its open handle must still be closed, or every
failed run leaks a file descriptor until garbage collection.
"""

from __future__ import annotations

import contextlib
from typing import Any


def keep_journal(writer: Any) -> None:
    """After a failed sidecar write: close the journal's handle but keep the file
    (``recover`` finishes from it). Left open, the handle leaked until GC."""
    with writer._io_lock:
        journal, writer._journal = writer._journal, None
    if journal is not None:
        with contextlib.suppress(OSError):
            journal.close()
