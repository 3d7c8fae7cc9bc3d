"""The run clock: one monotonic high-resolution source, wall time from one anchor.

``time.monotonic()`` and ``time.time()`` tick every 15.6 ms on Windows with CPython
<= 3.12 (GetTickCount64, GetSystemTimeAsFileTime): a 100 Hz camera's data-queue rows
would share instants and a 200 Hz wheel would compute speeds over zero-length
intervals. ``time.perf_counter()`` is monotonic and sub-microsecond everywhere
(QueryPerformanceCounter, CLOCK_MONOTONIC, mach_absolute_time), so every interval and
elapsed time of a run is read from it, and every wall-clock stamp is the wall time of
one anchor taken at the start plus the perf_counter time elapsed since.

The anchor is taken right after the wall clock ticks (a wait of at most one tick,
bounded to 50 ms; none where the wall clock is fine), so stamps are as close to the
true wall time as that clock allows, and they never run backwards when NTP adjusts
the wall clock mid-run.
"""

from __future__ import annotations

import time

_ANCHOR_WAIT_S = 0.05


class RunClock:
    """Elapsed seconds since creation (perf_counter) and wall time derived from it."""

    def __init__(self) -> None:
        wall = time.time()
        deadline = time.perf_counter() + _ANCHOR_WAIT_S
        # catch the wall clock's next tick, so the anchor is not up to a tick stale
        while (now := time.time()) == wall and time.perf_counter() < deadline:
            pass
        self._perf0 = time.perf_counter()
        self.wall0 = now  # time.time() at elapsed 0

    def elapsed(self) -> float:
        """Seconds since the clock started (monotonic, high resolution)."""
        return time.perf_counter() - self._perf0

    def elapsed_at(self, perf_counter_s: float) -> float:
        """The elapsed time of an earlier ``time.perf_counter()`` reading."""
        return perf_counter_s - self._perf0

    def wall(self, elapsed_s: float | None = None) -> float:
        """Epoch seconds at ``elapsed_s`` (default: now)."""
        return self.wall0 + (self.elapsed() if elapsed_s is None else elapsed_s)


__all__ = ["RunClock"]
