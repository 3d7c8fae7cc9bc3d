"""Run one export over many recordings: sequentially, on a local pool or with dask.

Each recording is one job; a job that fails is reported (its error string) and the
others go on. Recordings are opened first, in the calling thread (cheap: O(1) in file
size), so unreadable ones are reported at once and the frame total is known.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..formats.payloads import ExportPayload, JobPayload
from .dff import dff_trace
from .jobs import Cancelled, CancelToken, ProgressCallback, frame_count
from .montage import montage
from .selection import UNFINISHED_REASON, DoesNotFit, Skipped, select_recordings
from .traces import mean_trace
from .video_export import export_video

if TYPE_CHECKING:
    from ..reader.recording import Recording

__all__ = [
    "OPERATIONS",
    "BatchSummary",
    "JobResult",
    "Skipped",
    "expand_paths",
    "run_batch",
]

#: per-recording operations by name (``run_batch`` also accepts ``"montage"``)
OPERATIONS: dict[str, Callable[..., Any]] = {
    "mean-trace": mean_trace,
    "dff": dff_trace,
    "video": export_video,
}
_ALIASES = {
    "mean_trace": "mean-trace",
    "dff_trace": "dff",
    "export_video": "video",
}


@dataclass
class JobResult:
    """What became of one recording."""

    path: Path
    ok: bool
    outputs: list[Path] = field(default_factory=list)
    frames: int = 0
    elapsed_s: float = 0.0
    error: str | None = None
    cancelled: bool = False
    warnings: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list, repr=False)
    #: an option did not fit this recording (``error`` says which): not a failure
    skipped: bool = False

    def as_dict(self) -> JobPayload:
        return {
            "path": os.fspath(self.path),
            "ok": self.ok,
            "outputs": [os.fspath(p) for p in self.outputs],
            "frames": self.frames,
            "elapsed_s": round(self.elapsed_s, 3),
            "error": self.error,
            "cancelled": self.cancelled,
            "warnings": self.warnings,
        }


@dataclass
class BatchSummary:
    """All jobs of one :func:`run_batch` call, in input order.

    ``skipped`` lists the recordings not exported and why: videos a folder search
    passed over (without ``include_videos``) and recordings an option does not fit
    (an ROI outside the frame or drawn on another camera, a contrast range outside
    the dtype). Skipping is not failing: ``ok`` is true when something was exported
    and nothing failed -- except for a recording still being written (or crashed and
    not recovered), which makes ``ok`` false: what it holds is not final.
    """

    operation: str
    jobs: list[JobResult]
    elapsed_s: float
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            bool(self.jobs)
            and all(j.ok for j in self.jobs)
            and not any(s.unfinished for s in self.skipped)
        )

    @property
    def outputs(self) -> list[Path]:
        return list(dict.fromkeys(p for j in self.jobs for p in j.outputs))

    @property
    def failures(self) -> dict[Path, str]:
        return {
            j.path: j.error or "failed"
            for j in self.jobs
            if not j.ok and not j.cancelled
        }

    @property
    def cancelled(self) -> list[Path]:
        return [j.path for j in self.jobs if j.cancelled]

    def as_dict(self) -> ExportPayload:
        return {
            "operation": self.operation,
            "ok": self.ok,
            "elapsed_s": round(self.elapsed_s, 3),
            "outputs": [os.fspath(p) for p in self.outputs],
            "failures": {os.fspath(k): v for k, v in self.failures.items()},
            "cancelled": [os.fspath(p) for p in self.cancelled],
            "skipped": [s.as_dict() for s in self.skipped],
            "jobs": [j.as_dict() for j in self.jobs],
        }


# ---------------------------------------------------------------- inputs
def expand_paths(
    paths: Iterable[str | os.PathLike[str]],
    pattern: str | None = None,
    include_videos: bool = False,
) -> list[Path]:
    """Files as given; folders searched recursively for recordings.

    In a folder, every recording is found once (by its data file, see
    ``find_recording_paths``), except under ``processed/`` folders (our own
    outputs) and, unless ``include_videos``, videos (see
    :func:`~mesofield_napari.data.batch.selection.select_recordings`, which also
    says what was passed over); ``pattern`` (``fnmatch`` on the file name, e.g.
    ``"*.ome.tiff"``) narrows the search. A missing path is kept, so its job
    reports it.
    """
    return select_recordings(paths, pattern, include_videos).paths


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (OSError, ValueError)) and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _open(path: Path) -> tuple[Recording, list[str]]:
    from ..reader.recording import open_recording

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = open_recording(path)
    return rec, [str(w.message) for w in caught]


# ---------------------------------------------------------------- one job
def _run_job(
    fn: Callable[..., Any],
    rec: Recording,
    out_dir: str | os.PathLike[str] | None,
    overwrite: bool,
    params: dict[str, Any],
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
) -> JobResult:
    start = time.perf_counter()
    job = JobResult(rec.path, ok=False)
    offset = 0

    try:
        for pos in rec.positions:
            if progress is not None:
                base = offset

                def sub(done: int, total: int, base: int = base) -> None:
                    progress(base + done, base + total)
            else:
                sub = None  # type: ignore[assignment]
            res = fn(
                rec,
                position=pos,
                out_dir=out_dir,
                overwrite=overwrite,
                progress=sub,
                cancel=cancel,
                **params,
            )
            job.results.append(res)
            job.warnings.extend(getattr(res, "notes", ()))
            job.outputs.append(res.path)
            job.frames += res.frames
            offset += res.frames
        job.ok = True
    except DoesNotFit as exc:  # this recording is skipped, the batch goes on
        job.skipped, job.error = True, str(exc)
        job.outputs, job.results, job.frames = [], [], 0
    except Cancelled:
        job.cancelled, job.error = True, "cancelled"
    except Exception as exc:  # one bad recording must not stop the batch
        job.error = _describe(exc)
    job.elapsed_s = time.perf_counter() - start
    return job


def _remote_job(
    operation: str,
    path: Path,
    out_dir: str | None,
    overwrite: bool,
    params: dict[str, Any],
    event_name: str,
) -> JobResult:
    """A job on a dask worker: opens the recording there; cancel via a dask Event."""
    try:
        rec, notes = _open(path)
    except Exception as exc:
        return JobResult(path, ok=False, error=_describe(exc))
    job = _run_job(
        OPERATIONS[operation],
        rec,
        out_dir,
        overwrite,
        params,
        None,
        _DaskCancel(event_name),
    )
    job.warnings = notes + job.warnings
    job.results = []  # keep the reply small: the outputs are on disk
    return job


class _DaskCancel:
    """``is_set()`` of a ``distributed.Event``, asked at most every 0.2 s."""

    def __init__(self, name: str) -> None:
        self.name, self._next, self._set = name, 0.0, False

    def is_set(self) -> bool:
        now = time.monotonic()
        if not self._set and now >= self._next:
            from distributed import Event

            self._set = Event(self.name).is_set()
            self._next = now + 0.2
        return self._set


# ---------------------------------------------------------------- progress
class _Aggregate:
    """Sums per-job ``(done, total)`` into one batch-wide callback (thread-safe)."""

    def __init__(self, totals: dict[int, int], progress: ProgressCallback | None):
        self._done = dict.fromkeys(totals, 0)
        self._total = dict(totals)
        self._progress = progress
        self._lock = threading.Lock()

    def report(self) -> None:
        if self._progress is not None:
            self._progress(sum(self._done.values()), sum(self._total.values()))

    def for_job(self, i: int) -> ProgressCallback | None:
        if self._progress is None:
            return None

        def cb(done: int, total: int) -> None:
            with self._lock:
                self._done[i], self._total[i] = done, max(total, self._total[i])
                self.report()

        return cb

    def finish(self, i: int) -> None:
        with self._lock:
            self._done[i] = self._total[i]
            self.report()


# ---------------------------------------------------------------- the runner
def run_batch(
    operation: str,
    paths: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    workers: int = 1,
    scheduler: Any = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    pattern: str | None = None,
    include_videos: bool = False,
    **params: Any,
) -> BatchSummary:
    """Run ``operation`` on every recording in ``paths``; never raises for one job.

    ``operation``: ``"mean-trace"``, ``"dff"``, ``"video"`` (see :data:`OPERATIONS`;
    the function names work too) or ``"montage"`` (one PNG for all recordings).
    ``params`` go to the operation (e.g. ``method="pixelwise"``, ``roi=(...)``);
    unknown ones raise ``TypeError`` before anything runs. ``out_dir`` defaults to
    each recording's ``<run folder>/processed``.

    ``workers > 1`` runs that many jobs at once on threads (NumPy/OpenCV release the
    GIL), at most one per core. ``scheduler`` (a ``distributed.Client`` or a scheduler
    address) submits one task per recording to dask.distributed instead; progress then
    advances per finished recording and a set ``cancel`` stops the remaining tasks
    (running ones stop at their next block). ``progress(done, total)`` counts frames
    over the whole batch.

    Folders give their TIFF cameras; videos found there are listed in the summary's
    ``skipped`` unless ``include_videos`` (files named in ``paths`` are always taken).
    A recording an option does not fit (``DoesNotFit``: an ROI outside its frame or,
    with ``roi_camera``, of another camera; a contrast range outside its dtype) is
    skipped with the reason, and the others are exported.
    """
    start = time.perf_counter()
    name = _ALIASES.get(operation, operation)
    if name != "montage" and name not in OPERATIONS:
        choices = ", ".join([*OPERATIONS, "montage"])
        raise ValueError(f"unknown operation {operation!r} (choose from {choices})")
    fn = montage if name == "montage" else OPERATIONS[name]
    _check_params(fn, params)
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    selection = select_recordings(paths, pattern, include_videos)
    inputs = selection.paths
    if not inputs:
        why = "; ".join(f"{s.path}: {s.reason}" for s in selection.skipped[:3])
        raise FileNotFoundError(
            "no recordings found in the given paths"
            + (f" (skipped {why})" if why else "")
        )
    jobs: list[JobResult | None] = [None] * len(inputs)
    opened: dict[int, tuple[Recording, list[str]]] = {}
    unfinished: list[Skipped] = []
    for i, p in enumerate(inputs):
        try:
            rec, _ = opened[i] = _open(p)
        except Exception as exc:
            jobs[i] = JobResult(p, ok=False, error=_describe(exc))
            continue
        if rec.sidecar_state == "journal":  # recording, or crashed: never partial
            del opened[i]
            unfinished.append(Skipped(p, f"{p.name} {UNFINISHED_REASON}", True))
    batch = _Batch(jobs, opened, out_dir, overwrite, params, cancel)
    if not opened:
        pass  # nothing to export (every recording failed to open or is unfinished)
    elif name == "montage":
        _montage_jobs(batch, progress)
    else:
        totals = {}
        for i, (rec, _) in opened.items():
            try:
                totals[i] = sum(
                    frame_count(rec, pos, params.get("max_frames"))
                    for pos in rec.positions
                )
            except ValueError:
                totals[i] = 0
        agg = _Aggregate(totals, progress)
        if scheduler is not None:
            _run_dask(name, scheduler, batch, agg)
        else:
            _run_local(fn, int(workers), batch, agg)
    done = [j for j in jobs if j is not None and not j.skipped]
    skipped = (
        list(selection.skipped)
        + unfinished
        + [
            Skipped(j.path, j.error or "skipped")
            for j in jobs
            if j is not None and j.skipped
        ]
    )
    return BatchSummary(name, done, time.perf_counter() - start, skipped)


def _check_params(fn: Callable[..., Any], params: dict[str, Any]) -> None:
    sig = inspect.signature(fn)
    reserved = {"out_dir", "overwrite", "progress", "cancel", "position"}
    bad = sorted(set(params) & reserved)
    unknown = sorted(set(params) - set(sig.parameters))
    if bad or unknown:
        raise TypeError(
            f"{fn.__name__}() does not take {', '.join(bad + unknown)} here"
        )


@dataclass
class _Batch:
    """What every runner gets: the job slots to fill, the opened recordings (by slot,
    with their warnings) and the options common to all jobs."""

    jobs: list[JobResult | None]
    opened: dict[int, tuple[Recording, list[str]]]
    out_dir: Any
    overwrite: bool
    params: dict[str, Any]
    cancel: CancelToken | None


def _run_local(
    fn: Callable[..., Any], workers: int, batch: _Batch, agg: _Aggregate
) -> None:
    jobs, opened = batch.jobs, batch.opened

    def one(i: int) -> JobResult:
        rec, notes = opened[i]
        job = _run_job(
            fn,
            rec,
            batch.out_dir,
            batch.overwrite,
            batch.params,
            agg.for_job(i),
            batch.cancel,
        )
        job.warnings = notes + job.warnings
        agg.finish(i)
        return job

    n = min(workers, os.cpu_count() or 1, max(1, len(opened)))
    if n == 1:
        for i in opened:
            jobs[i] = one(i)
        return
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="mesofield-batch") as ex:
        futures = {ex.submit(one, i): i for i in opened}
        for fut, i in futures.items():
            jobs[i] = fut.result()


def _run_dask(operation: str, scheduler: Any, batch: _Batch, agg: _Aggregate) -> None:
    from distributed import Client, Event

    jobs, opened, cancel = batch.jobs, batch.opened, batch.cancel

    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    event_name = f"mesofield-cancel-{uuid.uuid4().hex}"
    event = Event(event_name, client=client)
    try:
        out = os.fspath(batch.out_dir) if batch.out_dir is not None else None
        futures = {
            client.submit(
                _remote_job,
                operation,
                opened[i][0].path,
                out,
                batch.overwrite,
                batch.params,
                event_name,
                pure=False,
                key=f"mesofield-{operation}-{i}-{uuid.uuid4().hex[:8]}",
            ): i
            for i in opened
        }
        pending = set(futures)
        while pending:
            if cancel is not None and cancel.is_set() and not event.is_set():
                event.set()  # running tasks stop at their next block
                client.cancel([f for f in pending if f.status == "pending"])
            finished = {f for f in pending if f.done()}
            if not finished:
                time.sleep(0.05)
                continue
            pending -= finished
            for fut in finished:
                i = futures[fut]
                rec, notes = opened[i]
                if fut.cancelled():
                    jobs[i] = JobResult(
                        rec.path, ok=False, error="cancelled", cancelled=True
                    )
                elif fut.status == "error":
                    jobs[i] = JobResult(
                        rec.path, ok=False, error=_describe(fut.exception())
                    )
                else:
                    job = fut.result()
                    job.warnings = notes + [w for w in job.warnings if w not in notes]
                    jobs[i] = job
                agg.finish(i)
    finally:
        if own:
            client.close()


def _montage_jobs(batch: _Batch, progress: ProgressCallback | None) -> None:
    """One montage over every readable recording; each gets its own JobResult."""
    jobs, opened = batch.jobs, batch.opened
    if not opened:
        return
    start = time.perf_counter()
    recs = {i: rec for i, (rec, _) in opened.items()}
    try:
        res = montage(
            list(recs.values()),
            out_dir=batch.out_dir,
            overwrite=batch.overwrite,
            progress=progress,
            cancel=batch.cancel,
            **batch.params,
        )
    except Cancelled:
        for i, rec in recs.items():
            jobs[i] = JobResult(rec.path, ok=False, error="cancelled", cancelled=True)
        return
    except Exception as exc:
        for i, rec in recs.items():
            jobs[i] = JobResult(rec.path, ok=False, error=_describe(exc))
        return
    elapsed = time.perf_counter() - start
    for i, rec in recs.items():
        err = res.skipped.get(rec.path)
        jobs[i] = JobResult(
            rec.path,
            ok=err is None,
            outputs=[res.path] if err is None else [],
            frames=0,
            elapsed_s=elapsed,
            error=err,
            warnings=opened[i][1],
            results=[res] if err is None else [],
        )
