"""What the live-traces model hands on: samples, and the sink they go to.

The seam between :class:`~.traces.LiveTraces` (computes) and a run's files
(:class:`~.saving.RunTraceFiles`, stores): both import this module, neither the other's
back (data flows model -> sink).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Sample", "TraceSink"]


@dataclass(frozen=True)
class Sample:
    """One computed value: ``frame`` is the 1-based frame number in the run."""

    roi: int
    frame: int
    time_s: float
    mean: float
    dff: float | None
    device_ts: Any = None


class TraceSink(Protocol):
    """Where samples and ROI changes go (the run's files and data queue)."""

    def sample(self, s: Sample) -> None: ...

    def roi_event(self, event: dict[str, Any]) -> None: ...
