"""Benchmark the frame writers against a raw append and pymmcore-plus's OMETiffWriter.

Usage::

    python benchmarks/bench_writers.py [--sizes 1024 2048] [--frames N] [--reps 3]
                                       [--out-dir DIR] [--markdown]
                                       [--cv2-frames N] [--writers custom ome raw cv2]

Method
------
For each frame size (uint16, square) one run times four contenders on the *same*
workload:

- ``CustomWriter`` (ours): BigTIFF OME-TIFF, queued ``pwrite``, fsync at the end;
- ``OMETiffWriter`` (pymmcore-plus upstream): memmap + ``flush()`` after every frame;
- ``raw append``: ``ndarray.tofile`` to one open file, then ``fsync`` -- the
  baseline of what a minimal single-threaded Python writer gets from this disk;
- ``CV2Writer`` (ours): uint16 -> uint8 (fixed contrast limits 0..4095) -> ``mp4v``
  ``.mp4`` through OpenCV (CPU-bound; may use fewer frames, see ``--cv2-frames``).

The workload is pre-generated before any timing: 16 distinct frames from the
simulated mesoscope camera (cycled), the ``useq.MDASequence`` time-lapse events and
one realistic ``FrameMetaV1`` dict per frame (built with
``pymmcore_plus.metadata.frame_metadata`` from the simulated core, with the MDA event,
stage position and camera metadata the MDA engine would attach). Frames are passed as
is (read-only); writers copy what they must keep. The MDA writers are driven directly
in a tight loop -- ``sequenceStarted(seq, summary)``, ``frameReady(frame, event, meta)``
per frame, ``sequenceFinished(seq)`` -- i.e. the acquisition is deliberately faster
than the disk, so the results are sustained throughputs.

Fairness
--------
- Wall time runs from ``sequenceStarted`` (or ``open`` for the raw append) until the
  data is *durable*: every contender ends with an ``fsync`` of its data file(s) and of
  the output folder. The raw append would otherwise only measure a copy into the page
  cache; upstream already flushes every frame, ours fdatasyncs when it finishes, so
  for them the extra ``fsync`` costs next to nothing. Writer construction (argument
  checks, OpenCV's one-time codec probe) is outside the timed region; file creation and
  space reservation are inside it. With plenty of RAM the page cache absorbs most of a
  3 GB append and the kernel only starts writing back at its dirty threshold, whereas
  a writer that fdatasyncs periodically keeps the disk busy from the start -- so a
  ratio above 1x against the raw append is possible and not an error.
- Before each timed run: ``os.sync()`` (no dirty pages from earlier runs or other
  programs are flushed on our clock) and ``gc.collect()``. Output files are deleted
  after each run, so every run writes into a fresh file on the same file system.
- The machines are shared and noisy: contenders are interleaved within each
  repetition (their order rotates between repetitions), ratios are computed between
  contenders of the *same* repetition and the median over repetitions is reported.
- "Handler time" is the duration of each ``frameReady`` call on the driving thread --
  what blocks the acquisition. In this saturating loop the byte-bounded queue fills up
  and some calls wait for the disk by design (back-pressure, never frame loss), so the
  table gives the p99 of all calls and, for the target, the p99 of calls that did not
  wait on back-pressure (the handler's own cost, measured while the writer thread is
  busy -- a worst case for GIL contention).
- Correctness is checked after the first repetition of each size (frames read back and
  compared, frame counts, sidecar); a contender whose output is wrong is reported as
  INVALID instead of with a speed, and the script exits with status 1.

MB/s are 10^6 bytes of uint16 input per second (for CV2Writer too: the video is tiny).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from _report import (  # benchmarks/_report.py
    filesystem,
    fsync_path,
    markdown_table,
    plain_table,
)

if TYPE_CHECKING:
    import useq

DISTINCT_FRAMES = 16
BIT_DEPTH = 12
CONTRAST_LIMITS = (0, 4095)
CV2_FOURCC = "mp4v"
# ~3 GB of uint16 per contender: several seconds each, a full run in a few minutes
DEFAULT_FRAMES = {1024: 1500, 2048: 400}
DEFAULT_CV2_FRAMES = {1024: 1500, 2048: 200}  # mp4v at 2048² is ~40 fps on 2 cores
TARGET_VS_RAW = 0.9
TARGET_VS_OME = 1.8
TARGET_HANDLER_P99_MS = 2.0
TARGET_CV2_FPS = 200.0
TARGET_SIZE = 1024

RAW, OME, CUSTOM, CV2 = "raw", "ome", "custom", "cv2"
LABELS = {
    CUSTOM: "CustomWriter",
    OME: "OMETiffWriter (upstream)",
    RAW: "raw append (tofile)",
    CV2: "CV2Writer (mp4v)",
}
ORDER = (CUSTOM, OME, RAW, CV2)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- workload
@dataclass
class Workload:
    """Everything a run needs, generated before any timing."""

    size: int
    frames: list[np.ndarray]
    summary: dict[str, Any]
    base_meta: dict[str, Any]
    _seqs: dict[int, tuple[useq.MDASequence, list[useq.MDAEvent], list[Any]]] = field(
        default_factory=dict
    )

    @property
    def frame_bytes(self) -> int:
        return self.frames[0].nbytes

    def frame(self, i: int) -> np.ndarray:
        return self.frames[i % len(self.frames)]

    def sequence(
        self, n: int
    ) -> tuple[useq.MDASequence, list[useq.MDAEvent], list[Any]]:
        """A ``t``-only time-lapse of ``n`` frames, its events and frame metadata."""
        if n not in self._seqs:
            import useq

            seq = useq.MDASequence(time_plan={"interval": 0, "loops": n})
            events = list(seq)
            metas = [
                {
                    **self.base_meta,
                    "runner_time_ms": 10.0 * i,
                    "mda_event": ev,
                    "camera_metadata": {"SimFrameIndex": str(i)},
                }
                for i, ev in enumerate(events)
            ]
            self._seqs[n] = (seq, events, metas)
        return self._seqs[n]


def make_workload(size: int) -> Workload:
    from pymmcore_plus.metadata import frame_metadata, summary_metadata

    from mesofield_napari.devices.sim_camera import (
        CAMERA_LABEL,
        SimulatedMesoscopeCamera,
        create_sim_core,
    )

    shape = (size, size)
    camera = SimulatedMesoscopeCamera(shape, 0, BIT_DEPTH)
    frames = [camera.frame(i) for i in range(DISTINCT_FRAMES)]
    for frame in frames:
        frame.flags.writeable = False  # sources: no writer may touch them
    core = create_sim_core(shape, 0)
    summary = dict(summary_metadata(core))
    base = dict(
        frame_metadata(
            core,
            runner_time_ms=0.0,
            camera_device=CAMERA_LABEL,
            property_values=(
                {"dev": CAMERA_LABEL, "prop": "bit_depth", "val": str(BIT_DEPTH)},
                {"dev": CAMERA_LABEL, "prop": "Exposure", "val": "0.0000"},
            ),
            include_position=True,
        )
    )
    return Workload(size, frames, summary, base)


# --------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One contender, one repetition."""

    key: str
    size: int
    frames: int
    nbytes: int
    wall_s: float
    handler_ms: np.ndarray  # per frameReady call
    waited: np.ndarray  # bool per call: hit back-pressure
    files: list[Path]
    problems: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def mbps(self) -> float:
        return self.nbytes / self.wall_s / 1e6


def _result(
    key: str,
    work: Workload,
    wall_s: float,
    handler_ms: np.ndarray,
    waited: np.ndarray,
    files: list[Path],
    problems: list[str],
) -> Run:
    n = len(handler_ms)
    return Run(
        key,
        work.size,
        n,
        n * work.frame_bytes,
        wall_s,
        handler_ms,
        waited,
        files,
        problems,
    )


def _drive(
    writer: Any, work: Workload, n: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The acquisition loop: ``sequenceStarted``, ``frameReady`` x n, finished."""
    seq, events, metas = work.sequence(n)
    durations = np.empty(n, np.int64)
    waited = np.zeros(n, bool)
    stats = getattr(writer, "stats", None)
    frame_ready = writer.frameReady
    clock = time.perf_counter_ns
    writer.sequenceStarted(seq, work.summary)
    bp = stats.backpressure_events if stats is not None else 0
    for i in range(n):
        t0 = clock()
        frame_ready(work.frame(i), events[i], metas[i])
        durations[i] = clock() - t0
        if stats is not None and stats.backpressure_events != bp:
            bp = stats.backpressure_events
            waited[i] = True
    writer.sequenceFinished(seq)
    problems = []
    if (err := getattr(writer, "error", None)) is not None:
        problems.append(f"writer error: {err!r}")
    if stats is not None and (stats.frames_written != n or stats.frames_lost):
        problems.append(
            f"stats: {stats.frames_written}/{n} written, {stats.frames_lost} lost"
        )
    return durations / 1e6, waited, problems


def run_custom(work: Workload, out: Path, n: int) -> Run:
    from mesofield_napari.data import CustomWriter

    path = out / "custom.ome.tif"
    writer = CustomWriter(path)
    t0 = time.perf_counter()
    handler, waited, problems = _drive(writer, work, n)
    fsync_path(path)
    fsync_path(out)
    wall = time.perf_counter() - t0
    return _result(
        CUSTOM, work, wall, handler, waited, [path, writer.sidecar_path], problems
    )


def run_upstream(work: Workload, out: Path, n: int) -> Run:
    from mesofield_napari.data.writer._upstream import OMETiffWriter

    path = out / "upstream.ome.tif"
    writer = OMETiffWriter(path)
    t0 = time.perf_counter()
    handler, waited, problems = _drive(writer, work, n)
    fsync_path(path)
    fsync_path(out)
    wall = time.perf_counter() - t0
    writer.position_arrays.clear()  # drop the memmap before the file is deleted
    return _result(OME, work, wall, handler, waited, [path], problems)


def run_raw(work: Workload, out: Path, n: int) -> Run:
    path = out / "raw.bin"
    durations = np.empty(n, np.int64)
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    with open(path, "xb") as fh:
        for i in range(n):
            t = clock()
            work.frame(i).tofile(fh)
            durations[i] = clock() - t
        fh.flush()
        os.fsync(fh.fileno())
    fsync_path(out)
    wall = time.perf_counter() - t0
    return _result(RAW, work, wall, durations / 1e6, np.zeros(n, bool), [path], [])


def run_cv2(work: Workload, out: Path, n: int) -> Run:
    from mesofield_napari.data import CV2Writer

    path = out / "cv2.mp4"
    writer = CV2Writer(path, fps=30, fourcc=CV2_FOURCC, contrast_limits=CONTRAST_LIMITS)
    problems = []
    if writer.fourcc != CV2_FOURCC:
        problems.append(f"fourcc {writer.fourcc!r} instead of {CV2_FOURCC!r}")
    t0 = time.perf_counter()
    handler, waited, drive_problems = _drive(writer, work, n)
    fsync_path(path)
    fsync_path(out)
    wall = time.perf_counter() - t0
    files = [path, writer.sidecar_path]
    return _result(CV2, work, wall, handler, waited, files, problems + drive_problems)


RUNNERS: dict[str, Callable[[Workload, Path, int], Run]] = {
    CUSTOM: run_custom,
    OME: run_upstream,
    RAW: run_raw,
    CV2: run_cv2,
}


# --------------------------------------------------------------------------- checks
def _compare(name: str, got: np.ndarray, want: np.ndarray) -> list[str]:
    if got.shape != want.shape or got.dtype != want.dtype:
        return [f"{name}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"]
    if not np.array_equal(got, want):
        return [f"{name}: pixels differ from the source frame"]
    return []


def check_output(run: Run, work: Workload) -> list[str]:
    """Cheap read-back of what ``run`` wrote (first and last frame, counts)."""
    n, size = run.frames, work.size
    first, last = work.frame(0), work.frame(n - 1)
    path = run.files[0]
    problems: list[str] = []
    if run.key in (CUSTOM, OME):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if run.key == CUSTOM and not (tif.is_bigtiff and tif.is_ome):
                problems.append("not a BigTIFF OME-TIFF")
            series = tif.series[0]
            if series.shape != (n, size, size):
                problems.append(f"series shape {series.shape} != {(n, size, size)}")
            else:
                problems += _compare("frame 0", tif.pages[0].asarray(), first)
                problems += _compare(f"frame {n - 1}", tif.pages[n - 1].asarray(), last)
    if run.key == CUSTOM:
        sidecar = json.loads(run.files[1].read_text(encoding="utf-8"))
        entries = sidecar.get("p0", [])
        if len(entries) != n or entries[-1].get("mda_event") != {"t": n - 1}:
            problems.append(f"sidecar holds {len(entries)}/{n} entries")
    if run.key == RAW:
        if path.stat().st_size != n * work.frame_bytes:
            problems.append(
                f"file size {path.stat().st_size} != {n * work.frame_bytes}"
            )
        mm = np.memmap(path, np.uint16, "r", shape=(n, size, size))
        problems += _compare("frame 0", np.array(mm[0]), first)
        problems += _compare(f"frame {n - 1}", np.array(mm[n - 1]), last)
        del mm
    if run.key == CV2:
        problems += _check_video(path, n, first)
    return problems


def _check_video(path: Path, n: int, first: np.ndarray) -> list[str]:
    import cv2

    cap = cv2.VideoCapture(os.fspath(path))
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        ok, img = cap.read()
    finally:
        cap.release()
    if count != n:
        return [f"video holds {count}/{n} frames"]
    if not ok:
        return ["cannot decode the first video frame"]
    lo, hi = CONTRAST_LIMITS
    want = np.clip((first.astype(np.float32) - lo) * (255 / (hi - lo)) + 0.5, 0, 255)
    got = img[..., 0] if img.ndim == 3 else img
    mad = float(np.abs(got.astype(np.float32) - want).mean())
    if got.shape != first.shape or mad > 8.0:  # mp4v is lossy; a wrong mapping is not
        return [f"first video frame off by {mad:.1f} grey levels on average"]
    return []


# --------------------------------------------------------------------------- driver
@dataclass
class Summary:
    """Median over repetitions for one (size, contender)."""

    key: str
    size: int
    frames: int
    fps: float
    fps_reps: list[float]
    mbps: float
    vs_raw: float
    vs_ome: float
    vs_raw_reps: list[float]
    vs_ome_reps: list[float]
    p50_ms: float
    p99_ms: float
    p99_free_ms: float  # calls that did not wait on back-pressure
    max_ms: float
    waited_pct: float
    valid: bool
    problems: list[str]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs_by_rep: list[dict[str, Run]], key: str) -> Summary:
    runs = [rep[key] for rep in runs_by_rep if key in rep]
    vs_raw = [
        rep[key].fps / rep[RAW].fps for rep in runs_by_rep if key in rep and RAW in rep
    ]
    vs_ome = [
        rep[key].fps / rep[OME].fps for rep in runs_by_rep if key in rep and OME in rep
    ]
    free = [
        np.percentile(r.handler_ms[~r.waited], 99) for r in runs if (~r.waited).any()
    ]
    problems = sorted({p for r in runs for p in r.problems})
    return Summary(
        key=key,
        size=runs[0].size,
        frames=runs[0].frames,
        fps=_median([r.fps for r in runs]),
        fps_reps=[r.fps for r in runs],
        mbps=_median([r.mbps for r in runs]),
        vs_raw=_median(vs_raw),
        vs_ome=_median(vs_ome),
        vs_raw_reps=vs_raw,
        vs_ome_reps=vs_ome,
        p50_ms=_median([float(np.percentile(r.handler_ms, 50)) for r in runs]),
        p99_ms=_median([float(np.percentile(r.handler_ms, 99)) for r in runs]),
        p99_free_ms=_median([float(v) for v in free]),
        max_ms=max(float(r.handler_ms.max()) for r in runs),
        waited_pct=100 * _median([float(r.waited.mean()) for r in runs]),
        valid=not problems,
        problems=problems,
    )


def frames_for(size: int, frames: int | None, cv2_frames: int | None) -> dict[str, int]:
    pixels = size * size
    default = DEFAULT_FRAMES.get(size) or max(50, round(3e9 / (2 * pixels)))
    n = frames or default
    cv2_default = DEFAULT_CV2_FRAMES.get(size) or max(50, round(1.5e9 / pixels))
    n_cv2 = cv2_frames or min(n, cv2_default)
    return {CUSTOM: n, OME: n, RAW: n, CV2: n_cv2}


@contextlib.contextmanager
def output_dir(parent: str | None) -> Iterator[Path]:
    base = Path(parent) if parent else Path("/tmp")
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-writers-", dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _delete(run: Run) -> None:
    for path in run.files:
        path.unlink(missing_ok=True)
    for leftover in run.files[0].parent.iterdir():  # journals, temp files
        leftover.unlink()


def bench_size(
    size: int, counts: dict[str, int], keys: Sequence[str], reps: int, out: Path
) -> list[dict[str, Run]]:
    log(f"[{size}x{size}] generating workload ...")
    work = make_workload(size)
    for key in keys:
        work.sequence(counts[key])
    runs_by_rep: list[dict[str, Run]] = []
    for rep in range(reps):
        shift = rep % len(keys)
        order = list(keys[shift:]) + list(keys[:shift])
        results: dict[str, Run] = {}
        for key in order:
            os.sync()
            gc.collect()
            run = RUNNERS[key](work, out, counts[key])
            if rep == 0:
                try:
                    run.problems += check_output(run, work)
                except Exception as exc:  # unreadable output is wrong output
                    run.problems.append(f"read-back failed: {exc!r}")
            results[key] = run
            _delete(run)
            flag = "" if not run.problems else "  INVALID: " + "; ".join(run.problems)
            log(
                f"[{size}x{size}] rep {rep + 1}/{reps} {LABELS[key]:<26} "
                f"{run.frames:5d} frames {run.wall_s:6.2f} s {run.fps:8.1f} fps "
                f"{run.mbps:7.1f} MB/s  handler p99 "
                f"{np.percentile(run.handler_ms, 99):7.2f} ms{flag}"
            )
        runs_by_rep.append(results)
    return runs_by_rep


# --------------------------------------------------------------------------- report
def _ok(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _reps(values: Sequence[float], unit: str, digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}{unit}" for v in values)


def targets(summaries: list[Summary]) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/FAIL) rows."""
    by = {(s.size, s.key): s for s in summaries}
    rows: list[tuple[str, str, str]] = []
    size = TARGET_SIZE
    if (c := by.get((size, CUSTOM))) is not None:
        if RAW in {s.key for s in summaries if s.size == size}:
            rows.append(
                (
                    f"CustomWriter ≥ {TARGET_VS_RAW}× raw append @ {size}²",
                    f"{c.vs_raw:.2f}× (reps: {_reps(c.vs_raw_reps, '×')})",
                    _ok(c.valid and c.vs_raw >= TARGET_VS_RAW),
                )
            )
        if OME in {s.key for s in summaries if s.size == size}:
            rows.append(
                (
                    f"CustomWriter ≥ {TARGET_VS_OME}× OMETiffWriter @ {size}²",
                    f"{c.vs_ome:.2f}× (reps: {_reps(c.vs_ome_reps, '×')})",
                    _ok(c.valid and c.vs_ome >= TARGET_VS_OME),
                )
            )
    for s in summaries:
        if s.key in (CUSTOM, CV2):
            rows.append(
                (
                    f"{LABELS[s.key]} handler p99 < {TARGET_HANDLER_P99_MS:g} ms @ {s.size}²"
                    " (calls without back-pressure)",
                    f"{s.p99_free_ms:.2f} ms (all calls: {s.p99_ms:.2f} ms)",
                    _ok(s.p99_free_ms < TARGET_HANDLER_P99_MS),
                )
            )
    if (v := by.get((size, CV2))) is not None:
        rows.append(
            (
                f"CV2Writer ≥ {TARGET_CV2_FPS:g} fps @ {size}² uint16→{CV2_FOURCC}",
                f"{v.fps:.0f} fps (reps: {_reps(v.fps_reps, '', 0)})",
                _ok(v.valid and v.fps >= TARGET_CV2_FPS),
            )
        )
    return rows


def _fmt_ratio(value: float, key: str, ref: str) -> str:
    if key == ref or value != value:  # NaN: reference not run
        return "1.00×" if key == ref else "—"
    return f"{value:.2f}×"


def result_rows(summaries: list[Summary]) -> tuple[list[str], list[list[str]]]:
    header = [
        "size",
        "writer",
        "frames",
        "fps",
        "MB/s",
        "vs raw",
        "vs OMETiff",
        "handler p50 / p99 / max ms",
        "p99 w/o back-pressure ms",
        "back-pressured calls",
    ]
    rows = []
    for s in summaries:
        handler = f"{s.p50_ms:.2f} / {s.p99_ms:.2f} / {s.max_ms:.1f}"
        if not s.valid:
            speed = ["INVALID", "—", "—", "—"]
        else:
            speed = [
                f"{s.fps:.1f}",
                f"{s.mbps:.0f}",
                _fmt_ratio(s.vs_raw, s.key, RAW),
                _fmt_ratio(s.vs_ome, s.key, OME),
            ]
        free = f"{s.p99_free_ms:.2f}" if s.key in (CUSTOM, CV2) else "—"
        waited = f"{s.waited_pct:.0f} %" if s.key in (CUSTOM, CV2) else "—"
        rows.append(
            [f"{s.size}²", LABELS[s.key], str(s.frames), *speed, handler, free, waited]
        )
    return header, rows


def machine_line(out: Path) -> str:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    fs = filesystem(out)
    versions = ", ".join(
        f"{pkg} {version(pkg)}"
        for pkg in ("pymmcore-plus", "tifffile", "opencv-python-headless")
    )
    return (
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d} · {os.cpu_count()} CPUs, "
        f"{ram:.1f} GiB RAM, {platform.machine()} · output on {fs} · "
        f"Python {platform.python_version()}, numpy {np.__version__}, {versions}"
    )


def report(
    summaries: list[Summary],
    args: argparse.Namespace,
    out: Path,
    load: tuple[float, float],
) -> str:
    header, rows = result_rows(summaries)
    target_rows = [list(row) for row in targets(summaries)]
    render = markdown_table if args.markdown else plain_table
    parts = [machine_line(out)]
    parts.append(
        f"Median of {args.reps} repetitions; wall time until the data is durable "
        "(fsync); ratios by fps within each repetition; handler = frameReady call "
        "on the acquisition thread (tight loop, so the bounded queue back-pressures). "
        f"1-min load average at start / end: {load[0]:.1f} / {load[1]:.1f}."
    )
    parts += [
        render(header, rows),
        render(["target", "measured", "result"], target_rows),
    ]
    for s in summaries:
        for problem in s.problems:
            parts.append(f"INVALID {LABELS[s.key]} @ {s.size}²: {problem}")
    return "\n\n".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument(
        "--frames", type=int, help="frames per run (default: ~3 GB per contender)"
    )
    parser.add_argument(
        "--cv2-frames", type=int, help="frames for CV2Writer (default: fewer at 2048²)"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--writers", nargs="+", choices=ORDER, default=list(ORDER), help="subset to run"
    )
    parser.add_argument("--out-dir", help="parent of the scratch folder (default /tmp)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    if args.reps < 1 or any(s < 8 for s in args.sizes):
        parser.error("--reps must be >= 1 and sizes >= 8")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keys = [k for k in ORDER if k in args.writers]
    summaries: list[Summary] = []
    load_start = os.getloadavg()[0]
    with output_dir(args.out_dir) as out:
        log(f"writing to {out}")
        for size in args.sizes:
            counts = frames_for(size, args.frames, args.cv2_frames)
            runs_by_rep = bench_size(size, counts, keys, args.reps, out)
            summaries += [summarize(runs_by_rep, key) for key in keys]
        load = (load_start, os.getloadavg()[0])
        print(report(summaries, args, out, load))
    return 0 if all(s.valid for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
