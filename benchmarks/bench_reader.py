"""Benchmark opening a ≥ 4 GB recording: our reader against tifffile and napari's.

Usage::

    python benchmarks/bench_reader.py [--dir DIR] [--size 1024] [--frames 2100]
                                      [--reps 3] [--random 7] [--keep]
                                      [--readers ours ours-napari tifffile napari]
                                      [--cache hot cold] [--out FILE]

Method
------
1. One recording is written with ``CustomWriter`` itself (driven directly: the same
   ``sequenceStarted`` / ``frameReady`` / ``sequenceFinished`` calls the MDA engine
   makes), so it is a genuine mesofield BigTIFF OME-TIFF with its
   ``_frame_metadata.json`` sidecar: by default 1024x1024 uint16 x 2100 frames =
   4.40 GB (4.1 GiB). Frames are the simulated mesoscope camera's (16 distinct frames,
   cycled: frame ``i`` is ``camera.frame(i % 16)``), so every read can be checked.
2. Each measurement runs in a **fresh Python subprocess** (imports are done before any
   timing), so peak RSS (``ru_maxrss``) belongs to that reader alone:

   - ``ours``: ``open_recording(path)``; frames through ``rec.data`` (lazy dask
     over a memmap of the contiguous pixel block);
   - ``ours-napari``: our npe2 reader function ``_reader.read_recordings(path)``
     (what napari calls: adds the metadata and contrast limits from 16 sampled
     frames); frames through the returned dask array;
   - ``tifffile``: ``tifffile.imread(path)`` -- the whole file into RAM;
   - ``napari``: napari's builtin reader
     (``napari_builtins.io.napari_get_reader(path)(path)``, i.e. ``magic_imread`` ->
     ``imageio.v3.imread`` -> tifffile) -- also the whole file into RAM.

   Imports (including ``distributed``, which dask's scheduler lookup imports on
   the first compute) happen before any timing. Measured: *open* = the call above (for the whole-file readers this is the full
   load), *first frame* = ``np.asarray(data[0])``, *random frame* = median over
   ``--random`` distinct random frames (fixed seed) of ``np.asarray(data[i])``;
   every frame read is compared with the camera's frame (``ok`` column).
   Peak RSS is ``ru_maxrss`` at the end; "over imports" subtracts the RSS measured
   after the imports and before opening.
3. Cache states: **hot** -- the file is read once (4 MiB chunks) right before the
   subprocess starts, so it is in the page cache; **cold** -- the file's pages are
   evicted with ``posix_fadvise(POSIX_FADV_DONTNEED)`` (after an ``fsync``) right
   before the subprocess starts. That evicts only this file (no root, no
   ``drop_caches`` that would disturb other programs on a shared machine); the
   script checks the eviction with ``mincore`` and reports the resident share.
4. Median of ``--reps`` repetitions; readers are interleaved within a repetition and
   their order rotates between repetitions (shared, noisy machines).

The recording is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import datetime as dt
import json
import mmap
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _report import fsync_path  # benchmarks/_report.py

DISTINCT_FRAMES = 16
READERS = ("ours", "ours-napari", "tifffile", "napari")
LABELS = {
    "ours": "mesofield `open_recording` (lazy dask)",
    "ours-napari": "mesofield npe2 reader `read_recordings`",
    "tifffile": "`tifffile.imread` (whole file)",
    "napari": "napari builtin reader (`napari_builtins`)",
}
SEED = 1234


# --------------------------------------------------------------------------- write
def write_recording(folder: Path, size: int, frames: int) -> Path:
    """A real CustomWriter recording of ``frames`` simulated frames; its path."""
    import useq

    from mesofield_napari.data import CustomWriter
    from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

    camera = SimulatedMesoscopeCamera((size, size), exposure_ms=0)
    bank = [camera.frame(i) for i in range(DISTINCT_FRAMES)]
    path = folder / "bench_meso.ome.tiff"
    writer = CustomWriter(path)
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": frames})
    writer.sequenceStarted(seq, {})
    for i, event in enumerate(seq):
        meta = {
            "runner_time_ms": 10.0 * i,
            "camera_device": "MesoCam",
            "exposure_ms": 10.0,
            "camera_metadata": {"ImageNumber": str(i), "SimFrameIndex": str(i)},
        }
        writer.frameReady(bank[i % DISTINCT_FRAMES], event, meta)
    writer.sequenceFinished(seq)
    writer.raise_if_failed()
    return path


# --------------------------------------------------------------------------- cache


def evict(path: Path) -> None:
    """Drop this file's pages from the page cache (clean pages only: fsync first)."""
    fsync_path(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> None:
    """Read the whole file once so it is in the page cache."""
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(4 * 2**20)
        while fh.readinto(buf):
            pass


def resident_share(path: Path) -> float | None:
    """Share of the file's pages in the page cache (``mincore``), None if unknown."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or sys.platform != "linux":
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            rc = libc.mincore(addr, size, vec)
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    if rc != 0:
        return None
    return float((np.frombuffer(vec, np.uint8) & 1).mean())


# --------------------------------------------------------------------------- child
def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(reader: str, path: Path, size: int, n_random: int) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    # imports first: they are not what we measure
    import dask.array  # noqa: F401
    import tifffile

    with contextlib.suppress(ImportError):  # dask imports it on the first compute
        import distributed  # noqa: F401

    from mesofield_napari._reader import read_recordings
    from mesofield_napari.data import open_recording
    from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

    if reader == "napari":
        from napari_builtins.io import napari_get_reader
    camera = SimulatedMesoscopeCamera((size, size), exposure_ms=0)
    truth = [camera.frame(i) for i in range(DISTINCT_FRAMES)]
    base_rss = _rss_mib()

    clock = time.perf_counter
    t0 = clock()
    if reader == "ours":
        data = open_recording(path).data
    elif reader == "ours-napari":
        ((data, _kwargs, _kind),) = read_recordings(path)
    elif reader == "tifffile":
        data = tifffile.imread(path)
    elif reader == "napari":
        fn = napari_get_reader(os.fspath(path))
        (layer,) = fn(os.fspath(path))
        data = layer[0]
    else:
        raise ValueError(reader)
    open_s = clock() - t0
    n = int(data.shape[0])

    problems: list[str] = []

    def read(i: int) -> float:
        t = clock()
        frame = np.asarray(data[i])
        took = clock() - t
        if not np.array_equal(frame, truth[i % DISTINCT_FRAMES]):
            problems.append(f"frame {i} differs")
        return took

    first_s = read(0)
    rng = np.random.default_rng(SEED)
    picks = rng.choice(np.arange(1, n), size=min(n_random, n - 1), replace=False)
    random_s = statistics.median(read(int(i)) for i in picks)
    return {
        "reader": reader,
        "frames": n,
        "shape": [int(s) for s in data.shape],
        "type": type(data).__name__,
        "open_s": open_s,
        "first_s": first_s,
        "random_s": random_s,
        "peak_rss_mib": _rss_mib(),
        "base_rss_mib": base_rss,
        "problems": problems,
    }


def run_child(
    reader: str, path: Path, size: int, n_random: int, cache: str
) -> dict[str, Any]:
    if cache == "cold":
        evict(path)
    else:
        warm(path)
    share = resident_share(path)
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        reader,
        "--path",
        os.fspath(path),
        "--size",
        str(size),
        "--random",
        str(n_random),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{reader} ({cache}) failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(cache=cache, resident_before=share, process_wall_s=wall)
    return out


# --------------------------------------------------------------------------- report
def _fmt_s(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def _machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpus} CPUs, {mem:.1f} GiB RAM, {platform.machine()}"


def _versions() -> str:
    from importlib.metadata import version

    pkgs = ("numpy", "dask", "tifffile", "napari", "imageio")
    return ", ".join(f"{p} {version(p)}" for p in pkgs)


def report(results: list[dict[str, Any]], path: Path, args: argparse.Namespace) -> str:
    nbytes = path.stat().st_size
    lines = [
        f"{dt.date.today().isoformat()} · {_machine()} (shared) · "
        f"Python {platform.python_version()}, {_versions()}",
        "",
        f"Recording: `CustomWriter` BigTIFF OME-TIFF + `_frame_metadata.json` sidecar, "
        f"{args.frames} frames x {args.size}x{args.size} uint16 = "
        f"{nbytes / 1e9:.2f} GB ({nbytes / 2**30:.2f} GiB) on "
        f"{_fs(path)}. Median of {args.reps} repetitions, each in a fresh process; "
        f"random frame = median of {args.random} random frames; every frame read is "
        "compared with the simulated camera's (ok). Peak RSS = `ru_maxrss` of the "
        "process (imports included; the increase over the RSS after imports in "
        "parentheses).",
        "",
        "| cache | reader | open | first frame | random frame | peak RSS MiB "
        "(over imports) | frames | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cache in args.cache:
        for reader in args.readers:
            rows = [r for r in results if r["reader"] == reader and r["cache"] == cache]
            if not rows:
                continue
            med = {
                k: statistics.median(r[k] for r in rows)
                for k in ("open_s", "first_s", "random_s", "peak_rss_mib")
            }
            over = statistics.median(
                r["peak_rss_mib"] - r["base_rss_mib"] for r in rows
            )
            ok = "yes" if not any(r["problems"] for r in rows) else "NO"
            lines.append(
                f"| {cache} | {LABELS[reader]} | {_fmt_s(med['open_s'])} | "
                f"{_fmt_s(med['first_s'])} | {_fmt_s(med['random_s'])} | "
                f"{med['peak_rss_mib']:.0f} ({over:+.0f}) | {rows[0]['frames']} | {ok} |"
            )
    shares = {
        c: [r["resident_before"] for r in results if r["cache"] == c]
        for c in args.cache
    }
    notes = []
    for cache, vals in shares.items():
        vals = [v for v in vals if v is not None]
        if vals:
            notes.append(
                f"{cache}: {min(vals):.0%}-{max(vals):.0%} of the file resident in "
                "the page cache when the process started (mincore)"
            )
    if notes:
        lines += ["", "Page cache check: " + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


def _fs(path: Path) -> str:
    best, fstype = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            mnt, kind = parts[1], parts[2]
            if os.fspath(path).startswith(mnt) and len(mnt) > len(best):
                best, fstype = mnt, kind
    return f"{best or '?'} ({fstype})"


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=None, help="where to write the file")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--frames", type=int, default=2100)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--random", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the recording")
    p.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS))
    p.add_argument("--cache", nargs="+", choices=("hot", "cold"), default=["hot"])
    p.add_argument("--out", type=Path, default=None, help="write the table here")
    p.add_argument("--child", choices=READERS, help=argparse.SUPPRESS)
    p.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.path, args.size, args.random)))
        return 0

    need = args.size * args.size * 2 * args.frames
    parent = args.dir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if free < need * 1.2:
        print(
            f"not enough space in {parent}: {need / 1e9:.1f} GB needed", file=sys.stderr
        )
        return 1
    folder = Path(tempfile.mkdtemp(prefix="bench-reader-", dir=parent))
    try:
        t0 = time.perf_counter()
        path = write_recording(folder, args.size, args.frames)
        size = path.stat().st_size
        print(
            f"wrote {path} ({size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
        results = []
        for rep in range(args.reps):
            order = args.readers[rep % len(args.readers) :]
            order += args.readers[: rep % len(args.readers)]
            for reader in order:
                for cache in args.cache:
                    r = run_child(reader, path, args.size, args.random, cache)
                    results.append(r)
                    print(
                        f"rep {rep + 1} {cache:4} {reader:12} open "
                        f"{_fmt_s(r['open_s'])} first {_fmt_s(r['first_s'])} "
                        f"random {_fmt_s(r['random_s'])} peak "
                        f"{r['peak_rss_mib']:.0f} MiB {r['problems'] or ''}",
                        file=sys.stderr,
                    )
        table = report(results, path, args)
        print(table)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(table, encoding="utf-8")
        bad = [r for r in results if r["problems"]]
        return 1 if bad else 0
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
