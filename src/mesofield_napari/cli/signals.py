"""A second Ctrl-C while ``record`` finishes its files is acknowledged, not obeyed.

The first Ctrl-C (SIGINT) ends the run as it always did: a ``KeyboardInterrupt`` in
the main thread, which the recorder turns into "cancel the acquisition, finish every
file, write the manifest". Finishing a TIFF rewrites its headers and a sidecar is
streamed from its journal; a second ``KeyboardInterrupt`` in the middle of that used
to end the process with the files half-finished (``recover`` could repair them, but
nobody should have to). So from the first signal on, the handler -- switched in the
handler itself, because the second one can arrive inside any ``join`` -- only prints
one line and returns, for at most ``bound_s`` seconds; after that a further Ctrl-C
interrupts again, so a wedged driver can still be stopped. SIGTERM, SIGHUP and
Ctrl-Break are ``_platform.console.StopRequests``'s (each asks once, later ones are
ignored); handed :meth:`RepeatedInterrupts.request` as its ``on_request``, a Ctrl-C
after one of them is acknowledged as well. docs/design.md §6.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

FINISH_BOUND_S = 300.0  # experiment.record.FINALIZE_TIMEOUT_S: the longest finish


class RepeatedInterrupts:
    """The SIGINT handler: the first interrupts, repeats within the bound do not."""

    def __init__(self, bound_s: float = FINISH_BOUND_S) -> None:
        self.bound_s = float(bound_s)
        self.first_at: float | None = None  # monotonic time of the first signal
        self.ignored = 0
        self._forwarded = False  # a stop request handed on through interrupt_main

    def request(self) -> None:
        """``StopRequests``' ``on_request`` (SIGTERM, SIGHUP, Ctrl-Break, a closed
        console, the stop file): interrupt the main thread like the first Ctrl-C, so
        a Ctrl-C after it is acknowledged too."""
        if threading.current_thread() is threading.main_thread():
            self.finishing()
            raise KeyboardInterrupt
        self._forwarded = True
        _thread.interrupt_main()  # runs __call__ in the main thread

    def finishing(self) -> None:
        """The run is finishing its files (ended by a stop request, the stop file
        or its plan): from now on a Ctrl-C is acknowledged, not obeyed."""
        if self.first_at is None:
            self.first_at = time.monotonic()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.first_at is None or self._forwarded:
            self._forwarded = False
            self.finishing()
            raise KeyboardInterrupt
        left = self.bound_s - (now - self.first_at)
        if left <= 0:  # finishing takes too long: let the user interrupt it
            raise KeyboardInterrupt
        self.ignored += 1
        print(
            f"finishing the run's files, please wait (up to {left:.0f} s); further "
            "interrupts are ignored until then",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def acknowledged_interrupts(
    bound_s: float = FINISH_BOUND_S,
) -> Iterator[RepeatedInterrupts]:
    """Install :class:`RepeatedInterrupts` for SIGINT (main thread only; elsewhere
    a no-op) and restore the previous handler on leaving."""
    handler = RepeatedInterrupts(bound_s)
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = ["FINISH_BOUND_S", "RepeatedInterrupts", "acknowledged_interrupts"]
