"""Hand frames from the acquisition thread to one writer thread, bounded in memory.

The frameReady handler runs on the acquisition thread, the Qt main thread or
pymmcore-plus's relay thread (docs/design.md §4). It must stay cheap, so it only appends the
frame to a queue; one writer thread per writer does all disk and encoder work. The
queue is bounded in *bytes*: when it is full the producer waits (back-pressure, counted
in :class:`WriterStats`) instead of dropping a frame or letting memory grow without
limit. A separate flusher thread makes data durable on a fixed interval.

Lock ordering: only ``_cond`` is ever taken here; callbacks run without it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE_BYTES = 512 * 2**20
DEFAULT_FLUSH_INTERVAL_S = 1.0


@dataclass
class WriterStats:
    """Counters a GUI or CLI can show while recording (read them without locks)."""

    frames_received: int = 0  # handed to the writer by the acquisition
    frames_written: int = 0  # on disk (in the OS page cache at least)
    frames_lost: int = 0  # received but not written because the writer failed
    backpressure_events: int = 0  # times the acquisition had to wait for the disk
    backpressure_wait_s: float = 0.0
    queued_bytes: int = 0
    peak_queued_bytes: int = 0
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES

    @property
    def queue_fill(self) -> float:
        """Fraction of the memory budget in flight (0..1)."""
        return self.queued_bytes / self.max_queue_bytes if self.max_queue_bytes else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "queue_fill": self.queue_fill}


@dataclass
class _Item:
    kind: str  # "frame" or a control command
    args: tuple[Any, ...]
    nbytes: int = 0


class FramePipeline:
    """A bounded byte-budget queue drained by one writer thread.

    ``idle`` (optional) runs on the writer thread whenever the queue runs empty and
    before every command, so work a writer batches across frames (journal lines) is
    settled before the writer waits and before a command such as ``finish`` runs.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[str, tuple[Any, ...]], None],
        *,
        max_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        flush: Callable[[], None] | None = None,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL_S,
        on_error: Callable[[BaseException], None] | None = None,
        idle: Callable[[], None] | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.name = name
        self.stats = WriterStats(max_queue_bytes=max_bytes)
        self.error: BaseException | None = None
        self._handle = handle
        self._flush = flush
        self._flush_interval = flush_interval
        self._on_error = on_error
        self._idle = idle
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._flusher: threading.Thread | None = None
        self._stop_flusher = threading.Event()

    # -------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"{self.name}-writer", daemon=True
        )
        self._thread.start()
        if self._flush is not None:
            self._stop_flusher.clear()
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"{self.name}-flusher", daemon=True
            )
            self._flusher.start()

    def stop(self, timeout: float | None = None) -> None:
        """Drain everything queued, then stop the threads."""
        if self._thread is None:
            return
        self._put(_Item("__stop__", ()))
        self._thread.join(timeout)
        self._stop_flusher.set()
        if self._flusher is not None:
            self._flusher.join(timeout)
        self._thread = self._flusher = None

    # -------------------------------------------------------------- producer side
    def put_frame(self, *args: Any, nbytes: int) -> None:
        """Queue a frame; waits while the byte budget is used up (never drops)."""
        self.stats.frames_received += 1
        if self.error is not None:
            self.stats.frames_lost += 1
            return
        self._put(_Item("frame", args, nbytes))

    def put_command(self, kind: str, *args: Any) -> None:
        self._put(_Item(kind, args))

    def call(self, kind: str, *args: Any) -> None:
        """Run a command on the writer thread and wait for it (re-raising its error)."""
        done = threading.Event()
        box: list[BaseException] = []
        self._put(_Item("__call__", (kind, args, done, box)))
        done.wait()
        if box:
            raise box[0]

    def _put(self, item: _Item) -> None:
        if not self.running:
            raise RuntimeError(f"{self.name}: writer thread is not running")
        stats = self.stats
        with self._cond:
            if (
                item.nbytes
                and stats.queued_bytes
                and (stats.queued_bytes + item.nbytes > stats.max_queue_bytes)
            ):
                stats.backpressure_events += 1
                t0 = time.perf_counter()
                while stats.queued_bytes and (
                    stats.queued_bytes + item.nbytes > stats.max_queue_bytes
                ):
                    self._cond.wait()
                stats.backpressure_wait_s += time.perf_counter() - t0
            stats.queued_bytes += item.nbytes
            stats.peak_queued_bytes = max(stats.peak_queued_bytes, stats.queued_bytes)
            self._items.append(item)
            self._cond.notify_all()

    # -------------------------------------------------------------- consumer side
    def _run(self) -> None:
        while True:
            if not self._items and self._idle is not None:
                self._run_idle()  # out of work: before waiting for more
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._items.popleft()
            try:
                if item.kind != "frame" and self._idle is not None:
                    self._run_idle()  # a command sees every frame before it settled
                if item.kind == "__stop__":
                    return
                self._dispatch(item)
            finally:
                if item.nbytes:
                    with self._cond:
                        self.stats.queued_bytes -= item.nbytes
                        self._cond.notify_all()

    def _dispatch(self, item: _Item) -> None:
        if item.kind == "__call__":
            kind, args, done, box = item.args
            try:
                self._handle(kind, args)
            except BaseException as exc:
                box.append(exc)
            finally:
                done.set()
            return
        if item.kind == "frame" and self.error is not None:
            self.stats.frames_lost += 1
            return
        try:
            self._handle(item.kind, item.args)
        except BaseException as exc:
            if item.kind == "frame":
                self.stats.frames_lost += 1
            self._fail(exc)
            return
        if item.kind == "frame":
            self.stats.frames_written += 1

    def _run_idle(self) -> None:
        assert self._idle is not None
        try:
            self._idle()
        except BaseException as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            _release_locals(exc)
            self.error = exc
            logger.error(
                "%s: writing failed, later frames are NOT saved: %s", self.name, exc
            )
            if self._on_error is not None:
                try:
                    self._on_error(exc)
                except Exception:  # pragma: no cover - a callback must not kill us
                    logger.exception("%s: on_error callback failed", self.name)

    def _flush_loop(self) -> None:
        assert self._flush is not None
        while not self._stop_flusher.wait(self._flush_interval):
            try:
                self._flush()
            except Exception as exc:  # disk trouble shows up here first
                self._fail(exc)


def _release_locals(exc: BaseException) -> None:
    """Drop the local variables of the frames ``exc`` (and its causes) went through.

    The error is kept for the whole run; its traceback would keep the failed call's
    locals alive -- among them the writer's map of its file, which Windows then
    refuses to cut to size (ERROR_USER_MAPPED_FILE). The traceback itself (file,
    line, function) is kept for the report.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
