"""Frames compressed on a pool of threads, handed back to the writer in order.

The writer thread submits each frame (:meth:`CompressorPool.submit`) and takes the
strips back in submission order (:meth:`pop`), appending them to the file itself: one
thread writes, so strips land in arrival order and the journal line of a frame always
follows its strip (docs/design.md §6). At most ``max_pending`` frames are in the pool
(memory bounded: each holds its frame and its strip); when it is full the writer
thread waits for the oldest, its queue fills, and the acquisition waits on the
writer's byte budget -- back-pressure, never loss (docs/design.md §4). imagecodecs'
encoders release the GIL, so the pool scales with the cores.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..formats.tiff_compressed import encode_frame

__all__ = ["CompressorPool", "Pending", "default_workers"]


def default_workers() -> int:
    """One compressor per core this process may use (at least one)."""
    try:
        # Linux only; the AttributeError elsewhere is the check (and the emulation's)
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined, unused-ignore]
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass
class Pending:
    """One frame in the pool: its strip to come and what its journal line needs."""

    future: Future[bytes]
    target: Any
    flat: int
    key: str = ""
    meta_json: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CompressorPool:
    """An ordered, bounded pool of compressor threads (see the module docstring)."""

    def __init__(self, codec: str, *, workers: int = 0, name: str = "tiff") -> None:
        self.codec = codec
        self.workers = workers or default_workers()
        self.max_pending = 2 * self.workers
        self._pool = ThreadPoolExecutor(
            self.workers, thread_name_prefix=f"{name}-compress"
        )
        self._pending: deque[Pending] = deque()
        self.encode: Callable[[np.ndarray, str], bytes] = encode_frame

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.max_pending

    @property
    def newest(self) -> Pending | None:
        return self._pending[-1] if self._pending else None

    def submit(self, frame: np.ndarray, target: Any, flat: int) -> Pending:
        future = self._pool.submit(self.encode, frame, self.codec)
        entry = Pending(future, target, flat)
        self._pending.append(entry)
        return entry

    def oldest(self) -> tuple[Pending, bytes]:
        """The oldest frame and its strip (waits for it; its error is raised). It
        stays pending until :meth:`done`: a failure after this still counts it."""
        entry = self._pending[0]
        return entry, entry.future.result()

    def done(self) -> None:
        """The oldest frame is written and journaled."""
        self._pending.popleft()

    def discard(self) -> int:
        """Drop every pending frame (after a failure); returns how many."""
        n = len(self._pending)
        for entry in self._pending:
            entry.future.cancel()
        self._pending.clear()
        return n

    def shutdown(self) -> None:
        self.discard()
        self._pool.shutdown(wait=True)
