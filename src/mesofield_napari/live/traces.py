"""Live ROI traces: each ROI's mean (and a running ΔF/F) as frames arrive. No Qt.

Threads. :meth:`LiveTraces.offer` runs on the acquisition thread and only puts the
frame into a one-slot mailbox (drop-oldest, like mesofield's FrameProcessor); a worker
thread computes the samples. Written frames are never affected: when the worker is
slower than the camera, the older frame in the slot is replaced and counted in
``samples_skipped`` — never silently. ROI changes (:meth:`add_roi`,
:meth:`replace_roi`, :meth:`remove_roi`) come from any thread; one lock orders them
with the samples, so a sample is always computed for the ROIs that existed then.

ΔF/F (``collapse_first`` of the batch export, ``data/batch/dff.py``):
``F = mean(ROI) - camera_offset``; ``F0`` = the order statistic of rank
``int(n * percentile / 100)`` (``n - 1`` at 100 %) of the last ``w`` frames' F,
``w = max(1, round(window_s * fs))``; ``dff = (F - F0) / (F0 + f0_floor)``.

Where live and post-hoc ΔF/F differ, and where they agree:

* live F0 uses a **trailing** window ``F[t-w+1 .. t]`` (the future is unknown); the
  batch a **centred** one ``F[t - w//2 .. t - w//2 + w - 1]``. Before the first
  ``w`` frames the trailing window is padded with the trace's first value, as the
  batch pads with the nearest value. So live ``F0[t]`` equals the batch
  ``moving_percentile`` of the series left-padded with ``L = w - 1 - w//2`` copies of
  ``F[0]``, at ``t`` — i.e. the batch F0 of frame ``t - L`` for ``t >= L``. F (the
  ROI mean) agrees exactly at every computed sample.
* ``fs``: the batch measures it over the whole run (median frame interval); live
  fixes it from the given ``fs`` or the first :data:`FS_PROBE_FRAMES` intervals.
  Pass the saved ``fs`` to the batch to make the windows the same length.
* the batch's ``fix_first_frame`` (first value := second) is not applied live.
* a skipped sample leaves its frame out of the window (fewer than ``w`` values).
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.batch.traces import block_means
from .rois import Roi
from .sink import Sample, TraceSink

if TYPE_CHECKING:
    from ..data.manager.run_manager import RunManager

__all__ = [
    "DffSettings",
    "LiveTraces",
    "Sample",
    "TraceSink",
    "TraceView",
]

FS_PROBE_FRAMES = 8  # frame intervals that fix the sampling rate when none is given
PLOT_SAMPLES = 10_000  # samples per ROI kept in memory for the plot (files keep all)
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DffSettings:
    """The batch ΔF/F's ``collapse_first`` parameters (same defaults)."""

    camera_offset: float = 100.0
    percentile: float = 10.0
    window_s: float = 30.0
    f0_floor: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.percentile <= 100:
            raise ValueError(f"percentile must be within 0..100, got {self.percentile}")
        if not self.window_s > 0:
            raise ValueError(f"window_s must be positive, got {self.window_s}")
        if not (math.isfinite(self.f0_floor) and math.isfinite(self.camera_offset)):
            raise ValueError("camera_offset and f0_floor must be finite numbers")

    def window_frames(self, fs: float) -> int:
        return max(1, round(self.window_s * fs))


@dataclass
class TraceView:
    """What the plot shows of one ROI: its newest samples (copies)."""

    roi: int
    label: str
    time_s: np.ndarray
    mean: np.ndarray
    dff: np.ndarray | None


class _Window:
    """The last ``w`` frames' F of one ROI, kept sorted, for the trailing percentile.

    A sample is O(log w) to find plus a C-level list insert/remove (no NumPy pass over
    the window per frame: at 200 fps and a 30 s window that would be 6000 values per
    ROI per frame, GIL time the acquisition shares). Frames not sampled (skipped) are
    simply absent; before ``w`` frames the window is padded with the trace's first
    value, as the batch pads with the nearest value.
    """

    def __init__(self, w: int) -> None:
        self.w = w
        self.recent: deque[tuple[int, float]] = deque()  # (frame, F) in frame order
        self.sorted: list[float] = []
        self.first_frame: int | None = None
        self.first_value = 0.0

    def f0(self, frame: int, value: float, percentile: float) -> float:
        if self.first_frame is None:
            self.first_frame, self.first_value = frame, value
        self.recent.append((frame, value))
        bisect.insort(self.sorted, value)
        while self.recent and self.recent[0][0] <= frame - self.w:
            _, old = self.recent.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        pads = max(0, self.w - (frame - self.first_frame + 1))
        n = len(self.sorted) + pads
        rank = n - 1 if percentile >= 100 else int(n * percentile / 100.0)
        if not pads:
            return self.sorted[rank]
        # the rank-th value of the window plus `pads` copies of the first value
        below = bisect.bisect_left(self.sorted, self.first_value)
        if rank < below:
            return self.sorted[rank]
        if rank < below + pads:
            return self.first_value
        return self.sorted[rank - pads]


@dataclass
class _Trace:
    roi_id: int
    roi: Roi
    region: Any = None
    shape: tuple[int, int] | None = None
    window: _Window | None = None
    first_frame: int | None = None
    last_frame: int | None = None
    samples: int = 0
    pending: list[Sample] = field(default_factory=list)  # until fs is known
    t: deque[float] = field(default_factory=lambda: deque(maxlen=PLOT_SAMPLES))
    mean: deque[float] = field(default_factory=lambda: deque(maxlen=PLOT_SAMPLES))
    dff: deque[float] = field(default_factory=lambda: deque(maxlen=PLOT_SAMPLES))


class LiveTraces:
    """ROIs and their live traces (usable from a script or a RecordingSession).

    Parameters
    ----------
    dff
        Compute a running ΔF/F with these settings (None: means only).
    fs
        Sampling rate (Hz) for the ΔF/F window; None measures it from the first
        :data:`FS_PROBE_FRAMES` frame intervals.
    sink
        Receives every sample and ROI change (set by :meth:`feed` for a run).
    """

    def __init__(
        self,
        *,
        dff: DffSettings | None = None,
        fs: float | None = None,
        sink: TraceSink | None = None,
    ) -> None:
        if fs is not None and not (math.isfinite(fs) and fs > 0):
            raise ValueError(f"fs must be a positive number, got {fs}")
        self.dff = dff
        self.fs_given = fs
        self.fs: float | None = fs
        self.sink = sink
        self.frames_offered = 0
        self.samples_computed = 0  # frames the worker computed (all ROIs at once)
        self.samples_skipped = 0  # frames replaced in the slot before computing
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.run: RunManager | None = None
        self._lock = threading.RLock()  # ROIs, traces, samples
        self._traces: dict[int, _Trace] = {}
        self._ended: list[dict[str, Any]] = []  # traces of this run that ended
        self._next_id = 1
        self._last_frame = 0
        self._probe: list[float] = []  # frame times until fs is known
        self._cond = threading.Condition()  # the one-slot mailbox
        self._slot: tuple[int, np.ndarray, float, Any] | None = None
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._t0_ms: float | None = None
        self._files: Any = None

    # ------------------------------------------------------------ ROIs
    def add_roi(self, roi: Roi) -> int:
        """Start tracing ``roi`` from the next frame; returns its id (never reused)."""
        with self._lock:
            k = self._next_id
            self._next_id += 1
            self._traces[k] = _Trace(k, roi)
            self._event("added", k, roi)
            return k

    def replace_roi(self, k: int, roi: Roi) -> int:
        """A moved/reshaped ROI: trace ``k`` ends, a new one (new id) starts."""
        with self._lock:
            old = self._end(k)
            new = self._next_id
            self._next_id += 1
            self._traces[new] = _Trace(new, roi)
            self._event("changed", new, roi, replaces=k, previous=old.roi.describe())
            return new

    def remove_roi(self, k: int) -> None:
        with self._lock:
            old = self._end(k)
            self._event("removed", k, old.roi)

    def rois(self) -> dict[int, Roi]:
        with self._lock:
            return {k: t.roi for k, t in self._traces.items()}

    def _end(self, k: int) -> _Trace:
        if k not in self._traces:
            raise KeyError(f"no live ROI {k}")
        trace = self._traces.pop(k)
        self._flush_pending(trace, final=True)
        self._ended.append(self._trace_record(trace))
        return trace

    def _event(
        self, what: str, k: int, roi: Roi, *, notify: bool = True, **extra: Any
    ) -> None:
        event = {
            "event": what,
            "roi": k,
            "after_frame": self._last_frame,
            "roi_description": roi.describe(),
            **extra,
        }
        self.events.append(event)
        if notify and self.sink is not None:
            try:
                self.sink.roi_event(event)
            except Exception as exc:  # a note that could not be written
                self.errors.append(f"roi event not saved: {exc}")

    # ------------------------------------------------------------ feeding
    def offer(
        self, frame_number: int, frame: np.ndarray, time_s: float, device_ts: Any = None
    ) -> None:
        """Hand a frame to the worker (never blocks; drops the older waiting frame)."""
        if frame.base is not None or not frame.flags.c_contiguous:
            frame = frame.copy()  # a view may point into a reused camera buffer
        if self.fs is None and len(self._probe) <= FS_PROBE_FRAMES:
            self._probe.append(time_s)
        with self._cond:
            self.frames_offered += 1
            if self._slot is not None:
                self.samples_skipped += 1
            self._slot = (frame_number, frame, time_s, device_ts)
            self._cond.notify()
        if self._worker is None:
            self.start()

    def process(
        self, frame_number: int, frame: np.ndarray, time_s: float, device_ts: Any = None
    ) -> list[Sample]:
        """Compute every ROI's sample of this frame now (the worker calls this)."""
        out: list[Sample] = []
        with self._lock:
            self._last_frame = frame_number
            self._measure_fs()
            shape = (int(frame.shape[-2]), int(frame.shape[-1]))
            for trace in list(self._traces.values()):
                value = self._mean(trace, frame, shape)
                if value is None:
                    continue
                s = Sample(trace.roi_id, frame_number, time_s, value, None, device_ts)
                if trace.first_frame is None:
                    trace.first_frame = frame_number
                trace.last_frame = frame_number
                trace.samples += 1
                if self.dff is not None:
                    trace.pending.append(s)
                    out += self._flush_pending(trace)
                else:
                    self._emit(trace, s)
                    out.append(s)
            self.samples_computed += 1
        return out

    def _mean(self, trace: _Trace, frame: np.ndarray, shape: tuple[int, int]) -> Any:
        if trace.shape != shape:
            try:
                trace.region, trace.shape = trace.roi.region(shape), shape
            except ValueError as exc:
                self._traces.pop(trace.roi_id)
                self.errors.append(str(exc))
                self._event("rejected", trace.roi_id, trace.roi, reason=str(exc))
                return None
        return float(block_means(frame[None], trace.region)[0])

    def _measure_fs(self) -> None:
        if self.fs is not None or len(self._probe) <= FS_PROBE_FRAMES:
            return
        dt = np.diff(np.asarray(self._probe, dtype=np.float64))
        dt = dt[np.isfinite(dt) & (dt > 0)]
        if dt.size:
            self.fs = float(1.0 / np.median(dt))
        else:  # no usable clock: say so, and use one sample per frame
            self.fs = 1.0
            self.errors.append("frame times unknown: ΔF/F window counted as 1 Hz")

    def _flush_pending(self, trace: _Trace, final: bool = False) -> list[Sample]:
        """ΔF/F of the samples that waited for ``fs`` (all of them at the end)."""
        if self.dff is None or not trace.pending:
            return []
        if self.fs is None:
            if not final:
                return []
            self._probe.append(math.nan)  # force a decision with what we have
            self._measure_fs()
        assert self.fs is not None
        d = self.dff
        if trace.window is None:
            trace.window = _Window(d.window_frames(self.fs))
        done = []
        for s in trace.pending:
            f = s.mean - d.camera_offset
            f0 = trace.window.f0(s.frame, f, d.percentile)
            with np.errstate(divide="ignore", invalid="ignore"):
                dff = float(np.float64(f - f0) / np.float64(f0 + d.f0_floor))
            full = Sample(s.roi, s.frame, s.time_s, s.mean, dff, s.device_ts)
            self._emit(trace, full)
            done.append(full)
        trace.pending.clear()
        return done

    def _emit(self, trace: _Trace, s: Sample) -> None:
        trace.t.append(s.time_s)
        trace.mean.append(s.mean)
        if s.dff is not None:
            trace.dff.append(s.dff)
        if self.sink is not None:
            try:
                self.sink.sample(s)
            except Exception as exc:
                if not self.errors or self.errors[-1] != f"samples not saved: {exc}":
                    self.errors.append(f"samples not saved: {exc}")

    # ------------------------------------------------------------ worker
    def start(self) -> None:
        """Start the worker thread (done by the first :meth:`offer`)."""
        with self._cond:
            if self._worker is not None:
                return
            self._stopping = False
            self._worker = threading.Thread(
                target=self._run, name="live-traces", daemon=True
            )
            self._worker.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Compute the frame still waiting, then stop the worker; False on timeout."""
        with self._cond:
            worker = self._worker
            self._stopping = True
            self._cond.notify()
        if worker is None:
            return True
        worker.join(timeout)
        with self._cond:
            self._worker = None
        return not worker.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._stopping:
                    self._cond.wait()
                item, self._slot = self._slot, None
            if item is None:
                return
            try:
                self.process(*item)
            except Exception as exc:  # keep going: traces must never stop a run
                self.errors.append(f"trace sample failed: {exc}")

    # ------------------------------------------------------------ reading
    def traces(self) -> list[TraceView]:
        """The current ROIs' newest samples (copies, safe from any thread)."""
        with self._lock:
            return [
                TraceView(
                    t.roi_id,
                    f"roi{t.roi_id}",
                    np.fromiter(t.t, dtype=np.float64, count=len(t.t)),
                    np.fromiter(t.mean, dtype=np.float64, count=len(t.mean)),
                    np.fromiter(t.dff, dtype=np.float64, count=len(t.dff))
                    if self.dff is not None
                    else None,
                )
                for t in self._traces.values()
            ]

    def summary(self) -> dict[str, Any]:
        """Every trace of the run (current and ended), settings, counters, events."""
        with self._lock:
            return {
                "frames_offered": self.frames_offered,
                "samples_computed": self.samples_computed,
                "samples_skipped": self.samples_skipped,
                "fs": self.fs,
                "fs_measured": self.fs_given is None,
                "dff": None
                if self.dff is None
                else {
                    **self.dff.__dict__,
                    "window": "trailing",
                    "window_frames": self.dff.window_frames(self.fs)
                    if self.fs
                    else None,
                },
                "rois": self._ended
                + [self._trace_record(t) for t in self._traces.values()],
                "events": list(self.events),
                "errors": list(self.errors),
            }

    def _trace_record(self, t: _Trace) -> dict[str, Any]:
        return {
            "roi": t.roi_id,
            "geometry": t.roi.geometry(),
            "first_frame": t.first_frame,
            "last_frame": t.last_frame,
            "samples": t.samples,
        }

    # ------------------------------------------------------------ runs
    def feed(
        self, run: RunManager, frame_number: int, frame: np.ndarray, meta: Any
    ) -> None:
        """The :class:`~mesofield_napari.models.recorder.RecordingSession` hook (acquisition
        thread): bind to ``run`` on its first frame, then :meth:`offer`.

        Binding is cheap (no disk work): the run's trace files are opened by the
        worker on the first sample.
        """
        if run is not self.run:
            self._begin(run)
        runner_ms = meta.get("runner_time_ms") if isinstance(meta, dict) else None
        try:
            ms = float(runner_ms)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ms = time.perf_counter() * 1000.0
        if self._t0_ms is None:
            self._t0_ms = ms
        camera = meta.get("camera_metadata") if isinstance(meta, dict) else None
        received = (
            camera.get("TimeReceivedByCore") if isinstance(camera, dict) else None
        )
        # the run's clock (perf_counter + one wall anchor): time.time() ticks every
        # 15.6 ms on Windows; formatted off this thread
        device_ts = received or run.queue.clock.wall()
        self.offer(frame_number, frame, (ms - self._t0_ms) / 1000.0, device_ts)

    def _begin(self, run: RunManager) -> None:
        from .saving import RunTraceFiles

        self.stop()
        with self._lock:
            self.run = run
            self._files = RunTraceFiles(run)
            self.sink = self._files
            self.fs = self.fs_given
            self._probe = []
            self._t0_ms = None
            self._last_frame = 0
            self.frames_offered = self.samples_computed = self.samples_skipped = 0
            self.events = []
            self.errors = []
            self._ended = []
            # every ROI restarts with the run (same geometry, fresh trace)
            for k, t in list(self._traces.items()):
                self._traces[k] = _Trace(k, t.roi)
                # no run note from here (the acquisition thread); the JSON has them
                self._event("added", k, t.roi, notify=False)

    def finish(self, run: RunManager) -> None:
        """End of ``run``: last sample, then the trace files and their manifest
        entries (called before the run's data queue and manifest are closed)."""
        if run is not self.run:
            return
        if not self.stop():
            self.errors.append("live traces: the worker did not stop in time")
        with self._lock:
            for t in self._traces.values():
                self._flush_pending(t, final=True)
            files, self._files = self._files, None
            self.sink = None
            self.run = None
        if files is not None:
            try:
                self.errors.extend(files.close(self.summary()))
            except Exception as exc:  # never let traces break the run's ending
                self.errors.append(f"live traces not saved: {exc}")
