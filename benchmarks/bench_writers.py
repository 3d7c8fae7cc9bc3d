"""Benchmark the frame writers against ome-writers, a raw append and OMETiffWriter.

Usage::

    python benchmarks/bench_writers.py [--sizes 256 1024 2048] [--frames N] [--reps 3]
                                       [--out-dir DIR] [--markdown] [--cv2-frames N]
                                       [--writers custom omew-tiff omew-zarr ... cv2]
                                       [--save results/bench_writers.md]

Method
------
For each frame size (uint16, square) one run times these contenders on the *same*
workload:

- ``CustomWriter`` (ours): BigTIFF OME-TIFF, queued ``pwrite``, journal, exact file,
  fsync at the end;
- ``ome-writers`` (what pymmcore-plus is moving to, ``pip install
  mesofield-napari[bench]``), driven the way pymmcore-plus's MDA runner drives it:
  its ``OmeWritersSink`` (``setup(seq, summary)``, ``append(frame, event, meta)`` per
  frame on the acquisition thread, ``close()``) over an ``AcquisitionSettings`` with
  the ``tifffile`` OME-TIFF backend, or the ``acquire-zarr`` OME-Zarr backend
  uncompressed, blosc-lz4 (level 5) or blosc-zstd (level 3), both with byte shuffle
  (ome-writers' own settings for those names). ome-types rejects a pixel size of 0
  (the simulated core's), so its summary says 1 µm. The sink turns each FrameMetaV1
  into OME ``Plane`` metadata (delta_t, exposure, position); "no frame metadata" is
  the same stream fed ``stream.append(frame)`` alone -- the fastest ome-writers gets,
  and what we must beat while still journaling every frame's metadata;
- ``OMETiffWriter`` (pymmcore-plus upstream): memmap + ``flush()`` after every frame;
- ``raw append``: ``ndarray.tofile`` to one open file, then ``fsync`` -- the
  baseline of what a minimal single-threaded Python writer gets from this disk;
- ``CV2Writer`` (ours): uint16 -> uint8 (fixed contrast limits 0..4095) -> ``mp4v``
  ``.mp4`` through OpenCV (CPU-bound; may use fewer frames, see ``--cv2-frames``).

Default frame counts (each timed run lasts >= ~1.5 s at the fastest contender; a
full run takes ~15 minutes): 10000 x 256² (1.3 GB), 1000 x 1024² (2.1 GB),
300 x 2048² (2.5 GB) (``DEFAULT_FRAMES``; CV2Writer 150 at 2048²).

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
  the output folder (ome-writers: every file and folder it created). The raw append would otherwise only measure a copy into the page
  cache; upstream already flushes every frame, ours fdatasyncs when it finishes, so
  for them the extra ``fsync`` costs next to nothing. Writer construction (argument
  checks, OpenCV's one-time codec probe) is outside the timed region; file creation and
  space reservation are inside it. With plenty of RAM the page cache absorbs most of a
  3 GB append and the kernel only starts writing back at its dirty threshold, whereas
  a writer that fdatasyncs periodically keeps the disk busy from the start -- so a
  ratio above 1x against the raw append is possible and not an error.
- Each contender first writes a few frames untimed (first imports, ome-types' pydantic
  schemas and OpenCV's codec probe cost ~1 s once per process, not per recording).
- Before each timed run: ``os.sync()`` (no dirty pages from earlier runs or other
  programs are flushed on our clock), ``gc.collect()``, and as much memory as the
  run will write (+256 MB) touched and freed (``_report.prime_memory``: on these
  virtual machines the balloon hands freed memory back to the host, and a run
  whose page cache faults it all in again took 3-4x as long, whichever writer). Output files are deleted
  after each run, so every run writes into a fresh file on the same file system.
- The machines are shared and noisy: contenders are interleaved within each
  repetition (their order rotates between repetitions), ratios are computed between
  contenders of the *same* repetition and the median over repetitions is reported.
- "CPU ms/frame" is the process's CPU time (user + system, every thread: writer
  threads, acquire-zarr's compression pool, the driving loop) over the timed region,
  divided by the frames.
- "Handler time" is the duration of each ``frameReady`` call on the driving thread --
  what blocks the acquisition. In this saturating loop the byte-bounded queue fills up
  and some calls wait for the disk by design (back-pressure, never frame loss), so the
  table gives the p99 of all calls and, for the target, the p99 of calls that did not
  wait on back-pressure (the handler's own cost, measured while the writer thread is
  busy -- a worst case for GIL contention).
- Correctness is checked after the first repetition of each size: *every* frame is
  read back (tifffile for TIFF, zarr-python for Zarr) and compared bit for bit, plus
  frame counts and the sidecar; a contender whose output is wrong is reported as
  INVALID instead of with a speed, and the script exits with status 1.

MB/s are 10^6 bytes of uint16 input per second (for CV2Writer too: the video is tiny);
"size" is the bytes on disk over the input bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import resource
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
    prime_memory,
)

if TYPE_CHECKING:
    import useq

DISTINCT_FRAMES = 16
BIT_DEPTH = 12
CONTRAST_LIMITS = (0, 4095)
CV2_FOURCC = "mp4v"
# >= ~1.5 s at the fastest contender each (see the module docstring)
DEFAULT_FRAMES = {256: 10000, 1024: 1000, 2048: 300}
DEFAULT_CV2_FRAMES = {256: 10000, 1024: 1000, 2048: 150}  # mp4v 2048²: ~40 fps
WARMUP_FRAMES = 8  # an untimed run of each contender first
PRIME_SLACK = 256 << 20  # memory touched before a run beyond its output (_report.py)
TARGET_VS_RAW = 0.9
TARGET_VS_OME = 1.8
TARGET_HANDLER_P99_MS = 2.0
TARGET_CV2_FPS = 200.0
TARGET_SIZE = 1024

RAW, OME, CUSTOM, CV2 = "raw", "ome", "custom", "cv2"
# CustomWriter(compression=...): lossless strips on a pool of one thread per core
CUSTOM_DEFLATE, CUSTOM_ZSTD = "custom-deflate", "custom-zstd"
CUSTOM_JXL = "custom-jpegxl"
COMPRESSED = {CUSTOM_DEFLATE: "deflate", CUSTOM_ZSTD: "zstd", CUSTOM_JXL: "jpegxl"}
CUSTOMS = (CUSTOM, *COMPRESSED)
OMEW_TIFF, OMEW_ZARR = "omew-tiff", "omew-zarr"
OMEW_BARE = "omew-tiff-bare"  # stream.append(frame) only: no per-frame metadata
OMEW_LZ4, OMEW_ZSTD = "omew-zarr-lz4", "omew-zarr-zstd"
LABELS = {
    CUSTOM: "CustomWriter",
    CUSTOM_DEFLATE: "CustomWriter deflate (level 1 + predictor)",
    CUSTOM_ZSTD: "CustomWriter zstd (level 3 + predictor)",
    CUSTOM_JXL: "CustomWriter jpegxl (lossless, effort 1)",
    OMEW_TIFF: "ome-writers tifffile",
    OMEW_BARE: "ome-writers tifffile, no frame metadata",
    OMEW_ZARR: "ome-writers acquire-zarr",
    OMEW_LZ4: "ome-writers acquire-zarr blosc-lz4",
    OMEW_ZSTD: "ome-writers acquire-zarr blosc-zstd",
    OME: "OMETiffWriter (upstream)",
    RAW: "raw append (tofile)",
    CV2: "CV2Writer (mp4v)",
}
ORDER = (
    CUSTOM,
    CUSTOM_DEFLATE,
    CUSTOM_ZSTD,
    CUSTOM_JXL,
    OMEW_TIFF,
    OMEW_BARE,
    OMEW_ZARR,
    OMEW_LZ4,
    OMEW_ZSTD,
    OME,
    RAW,
    CV2,
)
# key -> (format, backend, compression) of ome-writers' AcquisitionSettings
OMEW = {
    OMEW_TIFF: ("ome-tiff", "tifffile", None),
    OMEW_BARE: ("ome-tiff", "tifffile", None),
    OMEW_ZARR: ("ome-zarr", "acquire-zarr", None),
    OMEW_LZ4: ("ome-zarr", "acquire-zarr", "blosc-lz4"),
    OMEW_ZSTD: ("ome-zarr", "acquire-zarr", "blosc-zstd"),
}


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
    omew_summary: dict[str, Any] = field(default_factory=dict)
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
    # ome-types rejects a physical pixel size of 0 (the simulated core's)
    info = dict(summary["image_infos"][0])
    info["pixel_size_um"] = info.get("pixel_size_um") or 1.0
    omew_summary = {**summary, "image_infos": [info, *summary["image_infos"][1:]]}
    return Workload(size, frames, summary, base, omew_summary)


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
    cpu_s: float = float("nan")  # process CPU time over the timed region
    disk_bytes: int = 0  # what the contender left on disk
    user_s: float = float("nan")  # its user-mode part (the rest is kernel time)

    @property
    def user_ms(self) -> float:
        return 1e3 * self.user_s / self.frames

    @property
    def cpu_ms(self) -> float:
        return 1e3 * self.cpu_s / self.frames

    @property
    def size_ratio(self) -> float:
        return self.disk_bytes / self.nbytes if self.nbytes else float("nan")

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def mbps(self) -> float:
        return self.nbytes / self.wall_s / 1e6


_USER_CPU: list[float] = []  # user part of the last cpu_seconds() call


def cpu_seconds() -> float:
    """User + system CPU time of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _USER_CPU[:] = [usage.ru_utime]
    return usage.ru_utime + usage.ru_stime


def user_seconds() -> float:
    """The user part of the latest :func:`cpu_seconds` reading."""
    return _USER_CPU[0] if _USER_CPU else float("nan")


def _disk_bytes(paths: Sequence[Path]) -> int:
    total = 0
    for path in paths:
        if path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        elif path.exists():
            total += path.stat().st_size
    return total


def _result(
    key: str,
    work: Workload,
    wall_s: float,
    handler_ms: np.ndarray,
    waited: np.ndarray,
    files: list[Path],
    problems: list[str],
    cpu_s: float = float("nan"),
    user_s: float = float("nan"),
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
        cpu_s,
        _disk_bytes(files[:1]),
        user_s,
    )


def fsync_tree(path: Path) -> None:
    """fsync every file and folder under ``path`` (children before parents)."""
    if not path.is_dir():
        fsync_path(path)
        return
    for root, _dirs, names in os.walk(path, topdown=False):
        for name in names:
            fsync_path(Path(root, name))
        fsync_path(Path(root))


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


def run_custom(
    work: Workload, out: Path, n: int, compression: str | None = None
) -> Run:
    from mesofield_napari.data import CustomWriter

    key = CUSTOM if compression is None else f"custom-{compression}"
    path = out / f"{key}.ome.tif"
    writer = CustomWriter(path, compression=compression)
    c0, t0 = cpu_seconds(), time.perf_counter()
    u0 = user_seconds()
    handler, waited, problems = _drive(writer, work, n)
    fsync_path(path)
    fsync_path(out)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    user = user_seconds() - u0
    files = [path, writer.sidecar_path]
    return _result(key, work, wall, handler, waited, files, problems, cpu, user)


def _omew_runner(key: str) -> Callable[[Workload, Path, int], Run]:
    fmt, backend, compression = OMEW[key]
    suffix = ".ome.tiff" if fmt == "ome-tiff" else ".ome.zarr"

    def run(work: Workload, out: Path, n: int) -> Run:
        from ome_writers import AcquisitionSettings, OmeTiffFormat, OmeZarrFormat
        from pymmcore_plus.mda._sink import OmeWritersSink

        path = out / f"{key}{suffix}"
        kind = OmeTiffFormat if fmt == "ome-tiff" else OmeZarrFormat
        settings = AcquisitionSettings(
            root_path=os.fspath(path),
            format=kind(backend=backend),
            compression=compression,
        )
        sink = OmeWritersSink(settings)
        seq, events, metas = work.sequence(n)
        durations = np.empty(n, np.int64)
        clock = time.perf_counter_ns
        c0, t0 = cpu_seconds(), time.perf_counter()
        u0 = user_seconds()
        sink.setup(seq, work.omew_summary)  # type: ignore[arg-type]
        if key == OMEW_BARE:  # the stream under the sink, frames only
            stream = sink._stream
            assert stream is not None
            for i in range(n):
                t = clock()
                stream.append(work.frame(i))
                durations[i] = clock() - t
        else:
            append = sink.append
            for i in range(n):
                t = clock()
                append(work.frame(i), events[i], metas[i])
                durations[i] = clock() - t
        sink.close()
        fsync_tree(path)
        fsync_path(out)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        user = user_seconds() - u0
        return _result(
            key, work, wall, durations / 1e6, np.zeros(n, bool), [path], [], cpu, user
        )

    return run


def run_upstream(work: Workload, out: Path, n: int) -> Run:
    from mesofield_napari.data.writer._upstream import OMETiffWriter

    path = out / "upstream.ome.tif"
    writer = OMETiffWriter(path)
    c0, t0 = cpu_seconds(), time.perf_counter()
    u0 = user_seconds()
    handler, waited, problems = _drive(writer, work, n)
    fsync_path(path)
    fsync_path(out)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    user = user_seconds() - u0
    writer.position_arrays.clear()  # drop the memmap before the file is deleted
    return _result(OME, work, wall, handler, waited, [path], problems, cpu, user)


def run_raw(work: Workload, out: Path, n: int) -> Run:
    path = out / "raw.bin"
    durations = np.empty(n, np.int64)
    clock = time.perf_counter_ns
    c0, t0 = cpu_seconds(), time.perf_counter()
    u0 = user_seconds()
    with open(path, "xb") as fh:
        for i in range(n):
            t = clock()
            work.frame(i).tofile(fh)
            durations[i] = clock() - t
        fh.flush()
        os.fsync(fh.fileno())
    fsync_path(out)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    user = user_seconds() - u0
    waited = np.zeros(n, bool)
    return _result(RAW, work, wall, durations / 1e6, waited, [path], [], cpu, user)


def run_cv2(work: Workload, out: Path, n: int) -> Run:
    from mesofield_napari.data import CV2Writer

    path = out / "cv2.mp4"
    writer = CV2Writer(path, fps=30, fourcc=CV2_FOURCC, contrast_limits=CONTRAST_LIMITS)
    problems = []
    if writer.fourcc != CV2_FOURCC:
        problems.append(f"fourcc {writer.fourcc!r} instead of {CV2_FOURCC!r}")
    c0, t0 = cpu_seconds(), time.perf_counter()
    u0 = user_seconds()
    handler, waited, drive_problems = _drive(writer, work, n)
    fsync_path(path)
    fsync_path(out)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    user = user_seconds() - u0
    files = [path, writer.sidecar_path]
    problems += drive_problems
    return _result(CV2, work, wall, handler, waited, files, problems, cpu, user)


RUNNERS: dict[str, Callable[[Workload, Path, int], Run]] = {
    CUSTOM: run_custom,
    **{
        key: (lambda w, o, n, codec=codec: run_custom(w, o, n, codec))
        for key, codec in COMPRESSED.items()
    },
    OME: run_upstream,
    RAW: run_raw,
    CV2: run_cv2,
    **{key: _omew_runner(key) for key in OMEW},
}


# --------------------------------------------------------------------------- checks
def _compare(name: str, got: np.ndarray, want: np.ndarray) -> list[str]:
    if got.shape != want.shape or got.dtype != want.dtype:
        return [f"{name}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"]
    if not np.array_equal(got, want):
        return [f"{name}: pixels differ from the source frame"]
    return []


def _compare_all(frames: Any, work: Workload, n: int) -> list[str]:
    """Every frame of ``frames`` (indexable, ``len`` n) bit for bit against the source."""
    for i in range(n):
        if problems := _compare(f"frame {i}", np.asarray(frames[i]), work.frame(i)):
            return problems
    return []


def check_output(run: Run, work: Workload) -> list[str]:
    """Read back every frame ``run`` wrote and compare it bit for bit; counts."""
    n, size = run.frames, work.size
    path = run.files[0]
    problems: list[str] = []
    if run.key in (*CUSTOMS, OME, OMEW_TIFF, OMEW_BARE):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if run.key in CUSTOMS and not (tif.is_bigtiff and tif.is_ome):
                problems.append("not a BigTIFF OME-TIFF")
            if len(tif.pages) != n:
                problems.append(f"{len(tif.pages)} pages != {n}")
            series = tif.series[0]
            if series.shape != (n, size, size):
                problems.append(f"series shape {series.shape} != {(n, size, size)}")
            else:
                problems += _compare_all(series.asarray(out="memmap"), work, n)
    if run.key in (OMEW_ZARR, OMEW_LZ4, OMEW_ZSTD):
        import zarr

        array = zarr.open_array(os.fspath(path / "0"), mode="r")
        if array.shape != (n, size, size):
            problems.append(f"zarr shape {array.shape} != {(n, size, size)}")
        else:
            problems += _compare_all(array, work, n)
    if run.key in CUSTOMS:
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
        problems += _compare_all(mm, work, n)
        del mm
    if run.key == CV2:
        problems += _check_video(path, n, work.frame(0))
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
    vs_custom: float
    vs_omew: float  # fps over ome-writers tifffile's
    vs_omew_reps: list[float]
    cpu_ms: float
    user_ms: float
    cpu_vs_omew: float  # CPU per frame over ome-writers tifffile's
    size_ratio: float
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

    def ratios(ref: str, attr: str = "fps") -> list[float]:
        return [
            getattr(rep[key], attr) / getattr(rep[ref], attr)
            for rep in runs_by_rep
            if key in rep and ref in rep
        ]

    vs_raw, vs_ome, vs_omew = ratios(RAW), ratios(OME), ratios(OMEW_TIFF)
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
        vs_custom=_median(ratios(CUSTOM)),
        vs_omew=_median(vs_omew),
        vs_omew_reps=vs_omew,
        cpu_ms=_median([r.cpu_ms for r in runs]),
        user_ms=_median([r.user_ms for r in runs]),
        cpu_vs_omew=_median(ratios(OMEW_TIFF, "cpu_ms")),
        size_ratio=_median([r.size_ratio for r in runs]),
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
    return {**{key: n for key in ORDER}, CV2: n_cv2}


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
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for leftover in run.files[0].parent.iterdir():  # journals, temp files
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()


def bench_size(
    size: int, counts: dict[str, int], keys: Sequence[str], reps: int, out: Path
) -> list[dict[str, Run]]:
    log(f"[{size}x{size}] generating workload ...")
    work = make_workload(size)
    for key in keys:
        work.sequence(counts[key])
    for key in keys:  # one-time costs (imports, pydantic schemas, codec probes)
        _delete(RUNNERS[key](work, out, WARMUP_FRAMES))
    runs_by_rep: list[dict[str, Run]] = []
    for rep in range(reps):
        shift = rep % len(keys)
        order = list(keys[shift:]) + list(keys[:shift])
        results: dict[str, Run] = {}
        for key in order:
            os.sync()
            gc.collect()
            prime_memory(counts[key] * work.frame_bytes + PRIME_SLACK)
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
                f"[{size}x{size}] rep {rep + 1}/{reps} {LABELS[key]:<36} "
                f"{run.frames:5d} frames {run.wall_s:6.2f} s {run.fps:8.1f} fps "
                f"{run.mbps:7.1f} MB/s {run.cpu_ms:6.2f} ms CPU/frame "
                f"size {run.size_ratio:.2f}  handler p99 "
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
    sizes = sorted({s.size for s in summaries})
    for size in sizes:  # issue 20: faster than ome-writers, at no more CPU
        c, o = by.get((size, CUSTOM)), by.get((size, OMEW_TIFF))
        if c is None or o is None:
            continue
        rows.append(
            (
                f"CustomWriter ≥ 1.0× ome-writers tifffile @ {size}², CPU/frame ≤ its",
                f"{c.vs_omew:.2f}× (reps: {_reps(c.vs_omew_reps, '×')}); "
                f"CPU {c.cpu_ms:.2f} vs {o.cpu_ms:.2f} ms/frame"
                + ("" if o.valid else "; ome-writers' output INVALID"),
                _ok(c.valid and o.valid and c.vs_omew >= 1.0 and c.cpu_vs_omew <= 1.0),
            )
        )
    for size in sizes:  # issue 20 part 2: compressed, vs acquire-zarr blosc-lz4
        lz4 = by.get((size, OMEW_LZ4))
        for key in COMPRESSED:
            c = by.get((size, key))
            if c is None or lz4 is None:
                continue
            speed = c.mbps / lz4.mbps
            rows.append(
                (
                    f"{LABELS[key]} ≥ 1.0× acquire-zarr blosc-lz4's MB/s @ {size}², "
                    "size on disk ≤ its, bit-exact",
                    f"{speed:.2f}× ({c.mbps:.0f} vs {lz4.mbps:.0f} MB/s); size "
                    f"{c.size_ratio:.3f} vs {lz4.size_ratio:.3f}",
                    _ok(
                        c.valid
                        and lz4.valid
                        and speed >= 1.0
                        and c.size_ratio <= lz4.size_ratio
                    ),
                )
            )
    size = TARGET_SIZE
    if (c := by.get((size, CUSTOM))) is not None:
        if (size, RAW) in by:
            rows.append(
                (
                    f"CustomWriter ≥ {TARGET_VS_RAW}× raw append @ {size}²",
                    f"{c.vs_raw:.2f}× (reps: {_reps(c.vs_raw_reps, '×')})",
                    _ok(c.valid and c.vs_raw >= TARGET_VS_RAW),
                )
            )
        if (size, OME) in by:
            rows.append(
                (
                    f"CustomWriter ≥ {TARGET_VS_OME}× OMETiffWriter @ {size}²",
                    f"{c.vs_ome:.2f}× (reps: {_reps(c.vs_ome_reps, '×')})",
                    _ok(c.valid and c.vs_ome >= TARGET_VS_OME),
                )
            )
    for s in summaries:
        if s.key in (*CUSTOMS, CV2):
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
        "CPU ms/frame (of it user)",
        "size on disk",
        "vs CustomWriter",
        "vs ome-writers tifffile",
        "vs raw",
        "vs OMETiff",
        "handler p50 / p99 / max ms",
        "p99 w/o back-pressure ms",
        "back-pressured calls",
    ]
    rows = []
    for s in summaries:
        handler = f"{s.p50_ms:.2f} / {s.p99_ms:.2f} / {s.max_ms:.1f}"
        if not s.valid:  # the speed of a wrong output, for the record only
            speed = [f"INVALID ({s.fps:.0f} fps)"] + ["—"] * 8
        else:
            speed = [
                f"{s.fps:.1f}",
                f"{s.mbps:.0f}",
                f"{s.cpu_ms:.2f} ({s.user_ms:.2f})",
                f"{s.size_ratio:.2f}" if s.key != CV2 else f"{s.size_ratio:.3f}",
                _fmt_ratio(s.vs_custom, s.key, CUSTOM),
                _fmt_ratio(s.vs_omew, s.key, OMEW_TIFF),
                _fmt_ratio(s.vs_raw, s.key, RAW),
                _fmt_ratio(s.vs_ome, s.key, OME),
            ]
        free = f"{s.p99_free_ms:.2f}" if s.key in (*CUSTOMS, CV2) else "—"
        waited = f"{s.waited_pct:.0f} %" if s.key in (*CUSTOMS, CV2) else "—"
        rows.append(
            [f"{s.size}²", LABELS[s.key], str(s.frames), *speed, handler, free, waited]
        )
    return header, rows


def _has(pkg: str) -> bool:
    try:
        version(pkg)
    except Exception:
        return False
    return True


def machine_line(out: Path) -> str:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    fs = filesystem(out)
    versions = ", ".join(
        f"{pkg} {version(pkg)}"
        for pkg in (
            "pymmcore-plus",
            "tifffile",
            "ome-writers",
            "acquire-zarr",
            "opencv-python-headless",
        )
        if _has(pkg)
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
        "(fsync); ratios by fps within each repetition; CPU = process CPU seconds "
        "(all threads) / frames; size on disk = bytes written / input bytes; "
        "handler = frameReady (ome-writers: sink.append) call on the acquisition "
        "thread (tight loop, so the bounded queue back-pressures). "
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
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument(
        "--frames", type=int, help="frames per run (default: DEFAULT_FRAMES)"
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
    parser.add_argument("--save", help="also write the (Markdown) report to this file")
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
        text = report(summaries, args, out, load)
        print(text)
        if args.save:
            args.markdown = True
            Path(args.save).write_text(
                report(summaries, args, out, load) + "\n", encoding="utf-8"
            )
    return 0 if all(s.valid for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
