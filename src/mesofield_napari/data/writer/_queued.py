"""Shared machinery: run ``_5DWriterBase``'s per-frame work on a writer thread.

``QueuedWriterMixin`` sits in front of ``OMETiffWriter`` in the MRO. Its
``frameReady`` only queues the frame; the writer thread then calls the upstream
``frameReady`` (position bookkeeping, ``new_array``, ``write_frame``,
``store_frame_metadata``), so the seed's methods keep their names and roles but never
run on the acquisition thread. Metadata is journaled frame by frame (a writer may
batch the lines: ``_journal_batch_s``, written whenever its queue runs empty) and the
legacy sidecar is streamed from the journal and written atomically at the end.

Memory does not grow with the run's length: upstream's ``frame_metadatas`` (a
``defaultdict(list)`` that upstream fills with every frame's metadata) stays empty --
the journal on disk holds that metadata -- and upstream's per-time-point
``_timestamps`` list is emptied as it goes. Use ``frames_written``, ``stats`` or the
sidecar instead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..clock import frame_clock, local_iso
from ..errors import RecordingError
from ..formats.frame_json import frame_meta_json
from ..formats.journal import (
    DIRECT_KEY,
    FrameJournal,
    JournalWriteError,
    Mode,
    write_direct_sidecar,
    write_sidecar_from_journal,
)
from ..formats.names import with_name_suffix
from ..formats.sidecar import (
    journal_path,
    sidecar_path,
    write_json_atomic,
)
from ..formats.tiff_layout import pause_point
from ._pipeline import (
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_MAX_QUEUE_BYTES,
    FramePipeline,
    WriterStats,
)
from .signals import connect_direct

if TYPE_CHECKING:
    import numpy as np
    import useq

logger = logging.getLogger(__name__)
_NULL = object()


class QueuedWriterMixin:
    """Queue frames to a writer thread; journal metadata; atomic sidecar at the end."""

    # provided by _5DWriterBase / the concrete writer
    _filename: str
    frame_metadatas: Any
    current_sequence: Any
    # > 0: journal lines are written in batches, at the latest this many seconds
    # after a batch's first line and whenever the queue runs empty (see journal.py)
    _journal_batch_s: float = 0.0

    def _init_queue(
        self,
        *,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL_S,
    ) -> None:
        self.sidecar_path = sidecar_path(self._filename)
        self.journal_path = journal_path(self._filename)
        self.on_error: Callable[[BaseException], None] | None = None
        # (image number, device time) of every frame handed to this writer, on the
        # acquisition thread: the run manager turns it into the run's clock rows
        self.frame_listener: Callable[[Any, Any], None] | None = None
        self._journal: FrameJournal | None = None
        self._io_lock = threading.Lock()  # guards file handles vs. the flusher thread
        self._frames_by_position: dict[str, int] = {}
        self.started_at: str | None = None  # local ISO-8601 with offset
        self.stopped_at: str | None = None
        self._pipeline = FramePipeline(
            Path(self._filename).name,
            self._handle,
            max_bytes=max_queue_bytes,
            flush=self._flush_all,
            flush_interval=flush_interval,
            on_error=self._notify_error,
            idle=self._flush_journal,
        )

    # ------------------------------------------------------------ public state
    @property
    def stats(self) -> WriterStats:
        """Live counters: frames received/written/lost, back-pressure, queue fill."""
        return self._pipeline.stats

    @property
    def error(self) -> BaseException | None:
        """The first error of the writer thread (None while all is well)."""
        return self._pipeline.error

    @property
    def frames_written(self) -> dict[str, int]:
        """Frames written per position key (kept after the sequence finished)."""
        return dict(self._frames_by_position)

    @property
    def files(self) -> list[Path]:
        """Data files this writer created."""
        return list(self._created_files())

    def raise_if_failed(self) -> None:
        """Raise :class:`RecordingError` if anything went wrong while writing."""
        if (err := self.error) is not None:
            lost = self.stats.frames_lost
            raise RecordingError(
                f"{Path(self._filename).name}: {err} "
                f"({sum(self._frames_by_position.values())} frame(s) written, "
                f"{lost} not saved)"
            ) from err

    def _notify_error(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(exc)

    # ------------------------------------------------------------ MDA callbacks
    def sequenceStarted(self, seq: useq.MDASequence, meta: Any = _NULL) -> None:
        if is_open_ended(seq):
            import useq

            # an endless run (until Stop): its ``sizes`` warns and is empty, so
            # upstream's bookkeeping gets a plain empty sequence instead
            seq = useq.MDASequence()
        super().sequenceStarted(seq, meta)  # type: ignore[misc, unused-ignore]
        self._frames_by_position = {}
        self.started_at, self.stopped_at = local_iso(), None
        self._pipeline.start()
        self._pipeline.put_command("open_journal", "mda")

    def frameReady(self, frame: np.ndarray, event: useq.MDAEvent, meta: Any) -> None:
        """Queue the frame for the writer thread; never does disk work itself."""
        if frame.base is not None or not frame.flags.c_contiguous:
            # a view may point into a camera buffer that is about to be reused
            frame = frame.copy()
        if (listener := self.frame_listener) is not None:
            listener(*frame_clock(meta, self.stats.frames_received))
        self._pipeline.put_frame(frame, event, meta, nbytes=frame.nbytes)

    def sequenceFinished(self, seq: useq.MDASequence) -> None:
        """Drain the queue, write the sidecar, stop the writer thread."""
        if not self._pipeline.running:
            return
        self._pipeline.put_command("finish", seq)
        self._pipeline.stop()
        self.stopped_at = local_iso()
        if self.error is not None:
            logger.error("%s", self.error)

    @contextlib.contextmanager
    def attached(self, mda_events: Any) -> Iterator[None]:
        """Connect straight to ``core.mda.events`` (or a core) for the block.

        Unlike ``core.mda.run(seq, output=writer)``, which relays through an unbounded
        deque, this runs ``frameReady`` on the emitting thread, so the writer's
        byte-bounded queue really bounds the memory in flight.
        """
        events = getattr(getattr(mda_events, "mda", None), "events", mda_events)
        pairs: list[tuple[Any, Callable[..., Any]]] = [
            (events.sequenceStarted, self.sequenceStarted),
            (events.frameReady, self.frameReady),
            (events.sequenceFinished, self.sequenceFinished),
        ]
        for sig, slot in pairs:
            connect_direct(sig, slot)  # on the acquisition thread, even for Qt signals
        try:
            yield
        finally:
            for sig, slot in pairs:
                sig.disconnect(slot)

    def close(self) -> None:
        """Finish an interrupted sequence (e.g. the app is closing mid-run)."""
        if self._pipeline.running:
            self.sequenceFinished(self.current_sequence)

    # ------------------------------------------------------------ writer thread
    def _handle(self, kind: str, args: tuple[Any, ...]) -> None:
        if kind == "frame":
            super().frameReady(*args)  # type: ignore[misc, unused-ignore]
        elif kind == "open_journal":
            self._open_journal(args[0])
        elif kind == "finish":
            try:
                super().sequenceFinished(args[0])  # type: ignore[misc, unused-ignore]
            finally:
                self._release_journal()
        else:  # pragma: no cover
            raise ValueError(kind)

    def _release_journal(self) -> None:
        """Close (and keep, for ``recover``) a journal that finishing left open
        because it failed: no handle outlives the run (Windows would refuse to
        remove the file while one does)."""
        with self._io_lock:
            if self._journal is not None:
                with contextlib.suppress(OSError):
                    self._journal.close()
                self._journal = None

    def _open_journal(self, mode: Mode, extra: dict[str, Any] | None = None) -> None:
        with self._io_lock:
            self._journal = FrameJournal(
                self.journal_path,
                mode=mode,
                data_file=self._filename,
                extra=extra,
                batch_s=self._journal_batch_s,
            )

    def _flush_journal(self) -> None:
        """Writer thread, queue empty: batched journal lines go to the OS now."""
        if self._journal is not None:
            try:
                self._journal.flush()
            except JournalWriteError as exc:
                self._unjournaled(exc.frames_lost)
                raise

    def _unjournaled(self, frames: int) -> None:
        """Frames on disk whose journal lines failed do not count as recorded: the
        journal decides what ``recover`` keeps (frames written == journal lines)."""
        stats = self.stats
        stats.frames_written -= frames
        stats.frames_lost += frames

    def store_frame_metadata(self, key: str, event: useq.MDAEvent, meta: Any) -> None:
        """Journal the frame's metadata (JSON-ready): one line, one frame.

        Not kept in ``frame_metadatas``: the journal is the store, so memory stays
        flat however long the run (a 2-hour 100 Hz run held > 1 GB before).
        """
        index = {k: int(v) for k, v in event.index.items()}
        text = frame_meta_json(meta, index, self._extra_frame_metadata())
        self._frames_by_position[key] = self._frames_by_position.get(key, 0) + 1
        if self._journal is not None:
            try:
                self._journal.append_json(text, key)
            except JournalWriteError as exc:
                # this frame is counted lost by the pipeline; the rest of its batch
                # had been counted written
                self._unjournaled(max(0, exc.frames_lost - 1))
                raise
        # upstream appends one runner time per time point and never reads them back
        timestamps = getattr(self, "_timestamps", None)
        if isinstance(timestamps, list):
            timestamps.clear()

    def _extra_frame_metadata(self) -> dict[str, Any]:
        return {}

    def _flush_all(self) -> None:
        """Flusher thread: make data and journal durable (bounded data at risk)."""
        with self._io_lock:
            self._flush_data()
            if self._journal is not None:
                self._journal.sync()

    def _flush_data(self) -> None:
        """Subclasses: fsync their data files (called with ``_io_lock`` held)."""

    def _multi_position(self) -> bool:
        return sequence_sizes(self.current_sequence).get("p", 1) > 1

    def _position_path(self, position_key: str) -> Path:
        """``<stem>_<poskey><ext>`` for multi-position sequences, as upstream does."""
        if self._multi_position():
            return with_name_suffix(self._filename, f"_{position_key}")
        return Path(self._filename)

    def _created_files(self) -> Iterator[Path]:
        if self._multi_position():
            for key in self._frames_by_position:
                yield self._position_path(key)
        else:
            yield Path(self._filename)

    def _write_sidecar(
        self,
        payload: dict[str, Any] | None = None,
        *,
        direct_frames: int | None = None,
    ) -> None:
        """Atomically write the legacy JSON, then drop the journal (never before).

        The sidecar is streamed from the journal, one frame in memory at a time: MDA
        mode ``{"p0": [...]}`` (``payload`` is ignored: subclasses pass upstream's
        ``frame_metadatas``, which stays empty); direct mode ``{"frame_metadatas":
        [the first direct_frames entries], **payload}``. Without a journal,
        ``payload`` is written as is. A writer that failed before writing any frame
        leaves no sidecar at all, so the name stays free for a retry and nothing
        claims to be a (0-frame) recording. When the sidecar cannot be written the
        journal is closed but kept, for ``recover``.
        """
        if self.error is not None and not self._frames_by_position:
            with self._io_lock:
                if self._journal is not None:
                    self._journal.close(remove=True)
                    self._journal = None
            return
        journal = self._journal
        try:
            if journal is not None:
                journal.flush()  # this (the writer) thread's batched lines
                with self._io_lock:
                    journal.sync()
            if journal is not None and journal.mode == "mda":
                write_sidecar_from_journal(
                    journal.path, self.sidecar_path, list(self._frames_by_position)
                )
            elif journal is not None and direct_frames is not None:
                write_direct_sidecar(
                    journal.path, self.sidecar_path, direct_frames, payload or {}
                )
            elif direct_frames is not None:  # direct mode without a journal
                write_json_atomic(
                    self.sidecar_path, {DIRECT_KEY: [], **(payload or {})}, indent=None
                )
            else:
                write_json_atomic(self.sidecar_path, payload or {}, indent=None)
        except OSError as exc:
            self._release_journal()  # the file stays for recover; the handle goes
            kept = journal.path if journal is not None else None
            raise RecordingError(
                f"could not write sidecar {self.sidecar_path.name}: {exc}; "
                f"frame metadata is kept in {kept} (run `mesofield-napari recover`)"
            ) from exc
        pause_point("sidecar_written")
        with self._io_lock:
            if self._journal is not None:
                self._journal.close(remove=True)
                self._journal = None


def is_open_ended(seq: Any) -> bool:
    """A sequence of unknown length: pymmcore-plus hands an iterable of events
    (e.g. ``acquisition.endless_timelapse``) to handlers as a
    ``GeneratorMDASequence`` (checked by name: upstream does not export it)."""
    return type(seq).__name__ == "GeneratorMDASequence"


def sequence_sizes(seq: Any) -> dict[str, int]:
    """``seq.sizes``, or ``{}`` for a sequence of unknown length.

    pymmcore-plus hands an iterable of events to handlers as a
    ``GeneratorMDASequence`` whose ``sizes`` warns and is empty.
    """
    if seq is None or is_open_ended(seq):
        return {}
    return dict(seq.sizes)
