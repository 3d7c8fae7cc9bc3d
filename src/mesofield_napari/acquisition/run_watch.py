"""Tell, after an acquisition, whether the camera delivered what was planned.

pymmcore-plus does not fail a run when the camera does. Measured with 0.18:

- a camera raising inside a hardware sequence kills only its acquisition thread (the
  exception goes to ``threading.excepthook``); the engine logs "Unexpected number of
  images returned from sequence" and the runner finishes as *completed*;
- a camera raising on a single snap (interval > 0) is logged ("Failed to snap image")
  and the runner goes on to the next event;
- a camera faster than the disk fills the circular buffer (our writers' back-pressure
  holds the acquisition thread): the engine drains what is buffered, then raises
  ``MemoryError("Buffer overflowed")`` out of ``core.mda.run``.

:class:`RunWatch` collects those signs while a run is going (camera-thread
exceptions, pymmcore-plus's warnings, the first and last camera timestamps) and
:meth:`RunWatch.problems` turns them, together with the writers' own counts (the one
source of truth for what is on disk), into one line per problem. No Qt here.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..data.writer.signals import connect_direct, disconnect_quietly

if TYPE_CHECKING:
    from types import TracebackType

    from pymmcore_plus import CMMCorePlus

PYMM_LOGGER = "pymmcore-plus"
_KEEP_MESSAGES = 5  # first few distinct warnings only: memory stays bounded


class _Collector(logging.Handler):
    """Keeps the first few distinct WARNING+ messages of pymmcore-plus's logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover - a malformed record
            return
        if msg.startswith("MDA Canceled"):
            return  # a cancel is reported by whoever cancelled
        if msg not in self.messages and len(self.messages) < _KEEP_MESSAGES:
            self.messages.append(msg)


class RunWatch:
    """Watch one acquisition on ``core`` (use as a context manager around it).

    Parameters
    ----------
    core
        The core the acquisition runs on.
    planned
        Frames the run asked for.
    """

    def __init__(self, core: CMMCorePlus, planned: int) -> None:
        self.core = core
        self.planned = int(planned)
        self.thread_errors: list[str] = []
        self.first_camera_ms: float | None = None
        self.last_camera_ms: float | None = None
        self.camera_frames = 0
        self.t0 = time.perf_counter()
        self._collector = _Collector()
        self._previous_hook: Any = None
        self._active = False

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> RunWatch:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Begin collecting (idempotent)."""
        if self._active:
            return
        self._active = True
        self.t0 = time.perf_counter()
        logging.getLogger(PYMM_LOGGER).addHandler(self._collector)
        self._previous_hook = threading.excepthook
        threading.excepthook = self._excepthook
        connect_direct(self.core.mda.events.frameReady, self._on_frame)

    def stop(self) -> None:
        """Stop collecting; the findings stay readable."""
        if not self._active:
            return
        self._active = False
        logging.getLogger(PYMM_LOGGER).removeHandler(self._collector)
        if threading.excepthook == self._excepthook:
            threading.excepthook = self._previous_hook
        disconnect_quietly(self.core.mda.events.frameReady, self._on_frame)

    def _excepthook(self, args: threading.ExceptHookArgs) -> None:
        # only the camera's sequence thread (UniMMCore's AcquisitionThread) is ours
        # to report; anything else goes to whoever handled it before
        if type(args.thread).__name__ == "AcquisitionThread" and args.exc_value:
            msg = str(args.exc_value)
            if msg not in self.thread_errors and len(self.thread_errors) < 5:
                self.thread_errors.append(msg)
            return
        if self._previous_hook is not None:
            self._previous_hook(args)

    def _on_frame(self, frame: Any, event: Any, meta: Any) -> None:
        # camera timestamps of the first and last frame: how fast the camera ran
        self.camera_frames += 1
        try:
            cam: Mapping[str, Any] = meta.get("camera_metadata") or {}
            ms = float(cam["ElapsedTime-ms"])
        except Exception:
            return
        if self.first_camera_ms is None:
            self.first_camera_ms = ms
        self.last_camera_ms = ms

    # ------------------------------------------------------------ verdict
    def buffer_overflowed(self) -> bool:
        try:
            return bool(self.core.isBufferOverflowed())
        except Exception:  # pragma: no cover - a core without a buffer
            return False

    def finish_reason(self) -> str | None:
        """How pymmcore-plus's runner says the last run ended (``completed``,
        ``canceled``, ``errored``), read before the next run starts."""
        try:
            reason = self.core.mda.status.finish_reason
        except Exception:  # pragma: no cover - an older runner
            return None
        return None if reason is None else str(reason)

    def camera_fps(self) -> float | None:
        """The rate the camera produced frames at, from its own timestamps."""
        first, last = self.first_camera_ms, self.last_camera_ms
        if first is None or last is None or last <= first or self.camera_frames < 2:
            return None
        return (self.camera_frames - 1) / ((last - first) / 1000.0)

    def problems(
        self,
        *,
        written: int,
        frame_bytes: int,
        elapsed_s: float,
        stopped_on_purpose: bool = False,
        error: BaseException | None = None,
    ) -> list[str]:
        """One line per problem (empty when the camera delivered every planned frame).

        ``written`` is the writers' count (frames on disk); ``stopped_on_purpose`` is
        true when somebody cancelled the run (the user, a duration limit, a failing
        writer, which reports itself).
        """
        if self.buffer_overflowed():
            return [self.overflow_message(written, frame_bytes, elapsed_s)]
        if error is not None:
            return [
                f"the acquisition failed after {written}{self._of_planned} frames "
                f"({type(error).__name__}: {error}); {written} frames written"
            ]
        reason = self.finish_reason()
        if reason == "errored":  # the runner raised; we may not have seen it
            return [
                f"the acquisition ended with an error after {self.camera_frames}"
                f"{self._of_planned} frames; {written} frames written"
            ]
        if stopped_on_purpose or reason == "canceled":
            return []
        if self.camera_frames >= self.planned:  # always true until Stop (0)
            return []
        if self.thread_errors:
            return [
                f"the camera failed after {self.camera_frames} of {self.planned} "
                f"frames ({'; '.join(self.thread_errors)}); {written} frames written"
            ]
        why = "; ".join(self._collector.messages) or "no error was reported"
        return [
            f"the camera delivered {self.camera_frames} of {self.planned} frames "
            f"({why}); {written} frames written"
        ]

    @property
    def _of_planned(self) -> str:
        """' of N' for a planned run; nothing for one recording until Stop."""
        return f" of {self.planned}" if self.planned else ""

    def overflow_message(self, written: int, frame_bytes: int, elapsed_s: float) -> str:
        """The disk could not keep up: say how fast each side went."""
        disk = written * frame_bytes / elapsed_s / 1e6 if elapsed_s > 0 else math.nan
        fps = self.camera_fps()
        camera = f"{fps * frame_bytes / 1e6:.0f} MB/s" if fps else "more"
        all_written = "all written" if written >= self.camera_frames else "written"
        return (
            f"the camera was faster than the disk: the disk sustained {disk:.0f} MB/s, "
            f"the camera produced {camera}; its buffer overflowed and the run "
            f"stopped after {written}{self._of_planned} frames, {all_written}"
        )


__all__ = ["RunWatch"]
