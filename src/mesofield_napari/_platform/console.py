"""Ending a command-line run cleanly however it is asked to stop, on every system.

A run ends like Ctrl-C -- a ``KeyboardInterrupt`` in the main thread, which the
recorder turns into "cancel the acquisition, finish every file, write the manifest"
-- when:

- **Ctrl-C** (SIGINT, every system; Python's own handler);
- **SIGTERM** or **SIGHUP** on Linux/macOS (``kill``, a closed terminal);
- **Ctrl-Break** on Windows (SIGBREAK), or ``os.kill(pid, signal.CTRL_BREAK_EVENT)``
  from another program (the run must be started with
  ``creationflags=subprocess.CREATE_NEW_PROCESS_GROUP``);
- **the console window is closed** on Windows (CTRL_CLOSE_EVENT, also logoff and
  shutdown): Windows ends the process when the handler returns, at most ~5 s later,
  so the handler waits up to :data:`CLOSE_GRACE_S` for the run to be finished;
- **a stop file** appears (``--stop-file PATH``): the SIGTERM-free way for another
  program to stop a run on any system (on Windows, SIGTERM from another program is
  TerminateProcess: nothing can be finished). It is polled every
  :data:`STOP_FILE_POLL_S`.

Each source asks once; later requests are ignored (Ctrl-C still works as Python's).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from . import system, win32

CLOSE_GRACE_S = 4.5  # Windows kills a process ~5 s after CTRL_CLOSE_EVENT
STOP_FILE_POLL_S = 0.2
_CTRL_CLOSE_EVENT, _CTRL_LOGOFF_EVENT, _CTRL_SHUTDOWN_EVENT = 2, 5, 6


class StopRequests:
    """A ``with`` block during which the stop requests above end the run.

    A request raises ``KeyboardInterrupt`` in the main thread, or, given
    ``on_request``, calls it instead (from a signal handler or another thread: keep
    it to setting an event). Leaving the block (the run's files are final by then)
    restores the signal handlers and lets a pending console-close handler return.
    """

    def __init__(
        self,
        stop_file: str | os.PathLike[str] | None = None,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.stop_file = Path(stop_file) if stop_file is not None else None
        self.on_request = on_request
        self.reason: str | None = None
        self._active = False
        self._finished = threading.Event()
        self._previous: dict[int, Any] = {}
        self._poller: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ requests
    def ignore(self) -> None:
        """From now on requests are ignored (the run is finishing its files; the
        console-close handler still waits for the block to end)."""
        with self._lock:
            self._active = False

    def request(self, reason: str) -> bool:
        """Ask the main thread to stop (once). Returns True for the first request."""
        with self._lock:
            if not self._active or self.reason is not None:
                return False
            self.reason = reason
        if self.on_request is not None:
            self.on_request()
        else:
            _thread.interrupt_main()
        return True

    def _signal(self, signum: int, frame: Any) -> None:
        with self._lock:
            first = self._active and self.reason is None
            if first:
                self.reason = signal.Signals(signum).name
        if first and self.on_request is not None:
            self.on_request()
        elif first:
            raise KeyboardInterrupt

    def _console_event(self, event: int) -> bool:
        if event not in (_CTRL_CLOSE_EVENT, _CTRL_LOGOFF_EVENT, _CTRL_SHUTDOWN_EVENT):
            return False  # Ctrl-C / Ctrl-Break: Python's SIGINT / our SIGBREAK
        self.request("console closed")
        self._finished.wait(CLOSE_GRACE_S)  # the files are being finished
        return True

    def _poll_stop_file(self) -> None:
        assert self.stop_file is not None
        while not self._finished.wait(STOP_FILE_POLL_S):
            if self.stop_file.exists():
                self.request(f"stop file {self.stop_file}")
                return

    # ------------------------------------------------------------ block
    def __enter__(self) -> StopRequests:
        if self.stop_file is not None and self.stop_file.exists():
            raise FileExistsError(
                f"stop file {self.stop_file} already exists: remove it first "
                "(its appearance is what stops the run)"
            )
        self._active = True
        names = ("SIGBREAK",) if system() == "windows" else ("SIGTERM", "SIGHUP")
        if threading.current_thread() is threading.main_thread():
            for name in names:
                signum = getattr(signal, name, None)
                if signum is not None:
                    self._previous[signum] = signal.signal(signum, self._signal)
        if system() == "windows":
            with contextlib.suppress(OSError):  # no console (a service): nothing to do
                win32().set_console_ctrl_handler(self._console_event)
        if self.stop_file is not None:
            self._poller = threading.Thread(
                target=self._poll_stop_file, name="stop-file", daemon=True
            )
            self._poller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._active = False
        self._finished.set()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._poller is not None:
            self._poller.join(1.0)


def safe_text_streams() -> None:
    """Never crash on text the console cannot encode: Windows' consoles and pipes
    are often cp1252 (no "Δ"), so unencodable characters become ``\\u0394``."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        reconfigure = getattr(stream, "reconfigure", None)
        if encoding.startswith("utf") or reconfigure is None:
            continue
        with contextlib.suppress(Exception):  # a stream that cannot be reconfigured
            reconfigure(errors="backslashreplace")


__all__ = ["CLOSE_GRACE_S", "StopRequests", "safe_text_streams"]
