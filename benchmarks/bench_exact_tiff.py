"""Benchmark exact BigTIFFs: a stopped run's finish, until-Stop throughput, memory.

Usage::

    python benchmarks/bench_exact_tiff.py [--reps 5] [--out-dir DIR] [--markdown]
                                          [--rss-baseline-src OLD/src]

Method
------
The writers are driven directly in a tight loop, as in ``bench_writers.py``:
``sequenceStarted``, ``frameReady(frame, event, meta)`` per frame (16 distinct
simulated-camera frames, cycled; one realistic ``FrameMetaV1`` each),
``sequenceFinished`` -- the acquisition is faster than the disk, so the numbers are
sustained throughputs. Every timed run ends with its data durable (fsync), starts
after ``os.sync()`` and writes a fresh file; contenders are interleaved and their
order rotates between repetitions; ratios are taken within a repetition and the
median over repetitions is reported.

1. **Stopped early**: a 20 000-frame plan at 512² (10.5 GB reserved) stopped after
   2 000 frames. Reported: file size / (frames x frame bytes), the time
   ``sequenceFinished`` takes (drain + header rewrite + sidecar), and
   ``tifffile.memmap(path).shape[0]``.
2. **Until Stop** at 1024², 1 500 frames: ``CustomWriter`` growing its file
   (an event iterable, no planned length) vs a raw ``ndarray.tofile`` append vs the
   preallocated ``CustomWriter`` (a 1 500-frame plan).
3. **Memory**: peak RSS growth (VmHWM - RSS before the run) of a fresh process
   writing 50 000 frames at 64² with ``CustomWriter`` (queue budget 4 MiB, so frames
   in flight do not hide what is kept per frame); with ``--rss-baseline-src`` the
   same in a process importing another checkout (e.g. the code before this change).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import filesystem, fsync_path, markdown_table, plain_table

STOP_PLAN, STOP_AT, STOP_SIDE = 20_000, 2_000, 512
GROW_FRAMES, GROW_SIDE = 1_500, 1024
RSS_FRAMES, RSS_SIDE = 50_000, 64


# ---------------------------------------------------------------- workload
def _workload(side: int, n_meta: int = 16) -> tuple[list[np.ndarray], list[dict]]:
    from pymmcore_plus.metadata import frame_metadata

    from mesofield_napari.devices.sim_camera import create_sim_core, sim_camera

    core = create_sim_core((side, side), exposure_ms=0)
    cam = sim_camera(core)
    assert cam is not None
    frames = [cam.frame(i) for i in range(16)]
    metas = []
    for i in range(n_meta):
        meta = dict(frame_metadata(core, runner_time_ms=float(i)))
        meta["camera_metadata"] = {"ImageNumber": str(i), "ElapsedTime-ms": float(i)}
        metas.append(meta)
    core.unloadAllDevices()
    return frames, metas


def _drive(writer: Any, seq: Any, events: Any, n: int, frames: list, metas: list):
    """sequenceStarted, n x frameReady, sequenceFinished; returns finish seconds."""
    writer.sequenceStarted(seq, {})
    for i, event in zip(range(n), events, strict=False):
        meta = dict(metas[i % len(metas)])
        meta["runner_time_ms"] = float(i)
        writer.frameReady(frames[i % len(frames)], event, meta)
    t0 = time.perf_counter()
    writer.sequenceFinished(seq)
    writer.raise_if_failed()
    return time.perf_counter() - t0


def _fresh(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()
    os.sync()
    gc.collect()


# ---------------------------------------------------------------- 1. stop early
def bench_stop(folder: Path) -> dict[str, float]:
    import tifffile
    import useq

    from mesofield_napari.data import CustomWriter

    frames, metas = _workload(STOP_SIDE)
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": STOP_PLAN})
    path = folder / "stopped.ome.tiff"
    _fresh(folder)
    writer = CustomWriter(path)
    t0 = time.perf_counter()
    finish = _drive(writer, seq, iter(seq), STOP_AT, frames, metas)
    total = time.perf_counter() - t0
    frame_bytes = STOP_SIDE * STOP_SIDE * 2
    size = path.stat().st_size
    shape0 = tifffile.memmap(path).shape[0]
    ok = np.array_equal(tifffile.memmap(path)[STOP_AT - 1], frames[(STOP_AT - 1) % 16])
    return {
        "size_ratio": size / (STOP_AT * frame_bytes),
        "finish_s": finish,
        "total_s": total,
        "memmap_frames": shape0,
        "valid": float(ok and shape0 == STOP_AT),
    }


# ---------------------------------------------------------------- 2. until Stop
def _run_grow(folder: Path, frames: list, metas: list, kind: str) -> float:
    import useq

    from mesofield_napari.acquisition import endless_timelapse
    from mesofield_napari.data import CustomWriter

    _fresh(folder)
    n = GROW_FRAMES
    if kind == "raw":
        path = folder / "raw.bin"
        t0 = time.perf_counter()
        with open(path, "wb") as fh:
            for i in range(n):
                frames[i % len(frames)].tofile(fh)
        fsync_path(path)
        fsync_path(folder)
        return n / (time.perf_counter() - t0)
    path = folder / f"{kind}.ome.tiff"
    writer = CustomWriter(path)
    if kind == "grow":
        from pymmcore_plus.mda._generator_sequence import GeneratorMDASequence

        seq, events = GeneratorMDASequence(), endless_timelapse()
    else:
        seq = useq.MDASequence(time_plan={"interval": 0, "loops": n})
        events = iter(seq)
    t0 = time.perf_counter()
    _drive(writer, seq, events, n, frames, metas)
    fsync_path(folder)
    fps = n / (time.perf_counter() - t0)
    import tifffile

    shape = tifffile.memmap(path).shape
    if shape != (n, GROW_SIDE, GROW_SIDE):
        raise SystemExit(f"{kind}: INVALID file shape {shape}")
    return fps


# ---------------------------------------------------------------- 3. memory
RSS_CHILD = """
import json, sys, useq
sys.path.insert(0, sys.argv[1])
import numpy as np
from mesofield_napari.data import CustomWriter
from pymmcore_plus.metadata import frame_metadata
from mesofield_napari.devices.sim_camera import create_sim_core
n, side, path = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
core = create_sim_core((side, side), exposure_ms=0)
base = dict(frame_metadata(core, runner_time_ms=0.0))
base["camera_metadata"] = {"ImageNumber": "0", "ElapsedTime-ms": 0.0}
frame = np.ones((side, side), np.uint16)
seq = useq.MDASequence(time_plan={"interval": 0, "loops": n})
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
w = CustomWriter(path, max_queue_bytes=4 * 2**20)  # in flight: ~500 frames
w.sequenceStarted(seq, {})
for i, ev in enumerate(seq):
    if i == 1000:
        rss0 = status("VmRSS:")  # after the first frames: file, threads, caches
    meta = dict(base); meta["runner_time_ms"] = float(i)
    w.frameReady(frame, ev, meta)
w.sequenceFinished(seq)
w.raise_if_failed()
print(json.dumps({"rss0": rss0, "peak": status("VmHWM:"), "end": status("VmRSS:")}))
"""


def bench_rss(folder: Path, src: Path) -> dict[str, float]:
    _fresh(folder)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            RSS_CHILD,
            str(src),
            str(RSS_FRAMES),
            str(RSS_SIDE),
            str(folder / "rss.ome.tiff"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "peak_growth_mib": (res["peak"] - res["rss0"]) / 2**20,
        "end_growth_mib": (res["end"] - res["rss0"]) / 2**20,
    }


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--rss-baseline-src", type=Path, default=None)
    args = parser.parse_args(argv)
    here_src = Path(__file__).resolve().parent.parent / "src"
    load0 = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(dir=args.out_dir) as tmp:
        folder = Path(tmp)
        stops = [bench_stop(folder) for _ in range(args.reps)]
        frames, metas = _workload(GROW_SIDE)
        kinds = ["grow", "raw", "planned"]
        fps: dict[str, list[float]] = {k: [] for k in kinds}
        for rep in range(args.reps):
            order = kinds[rep % 3 :] + kinds[: rep % 3]
            for kind in order:
                fps[kind].append(_run_grow(folder, frames, metas, kind))
        del frames
        rss = {"this checkout": bench_rss(folder, here_src)}
        if args.rss_baseline_src is not None:
            rss["baseline"] = bench_rss(folder, args.rss_baseline_src.resolve())
        fs = filesystem(folder)

    med = statistics.median
    vs_raw = [g / r for g, r in zip(fps["grow"], fps["raw"], strict=True)]
    vs_pre = [g / p for g, p in zip(fps["grow"], fps["planned"], strict=True)]
    size_ratio = med(s["size_ratio"] for s in stops)
    shape0 = {int(s["memmap_frames"]) for s in stops}
    valid = all(s["valid"] for s in stops)

    rows_stop = [
        [
            f"{STOP_PLAN} planned, stopped at {STOP_AT}, {STOP_SIDE}²",
            f"{size_ratio:.4f}",
            f"{med(s['finish_s'] for s in stops):.2f} s",
            f"{med(s['total_s'] for s in stops):.2f} s",
            ", ".join(map(str, sorted(shape0))),
        ]
    ]
    rows_grow = [
        [
            name,
            f"{med(fps[k]):.1f}",
            f"{med(fps[k]) * GROW_SIDE * GROW_SIDE * 2 / 1e6:.0f}",
        ]
        for name, k in [
            ("CustomWriter until Stop (growing)", "grow"),
            ("raw append (tofile)", "raw"),
            ("CustomWriter preallocated", "planned"),
        ]
    ]
    rows_rss = [
        [
            name,
            f"{r['peak_growth_mib']:.1f}",
            f"{r['end_growth_mib']:.1f}",
        ]
        for name, r in rss.items()
    ]
    targets = [
        [
            "stopped file size / (frames x frame bytes) ≤ 1.01",
            f"{size_ratio:.4f}",
            "PASS" if size_ratio <= 1.01 and valid else "FAIL",
        ],
        [
            f"tifffile.memmap(...).shape[0] == {STOP_AT}",
            ", ".join(map(str, sorted(shape0))),
            "PASS" if shape0 == {STOP_AT} else "FAIL",
        ],
        [
            f"until Stop ≥ 0.9× raw append @ {GROW_SIDE}²",
            f"{med(vs_raw):.2f}× (reps: {', '.join(f'{v:.2f}×' for v in vs_raw)})",
            "PASS" if med(vs_raw) >= 0.9 else "FAIL",
        ],
        [
            f"until Stop ≥ 0.95× preallocated CustomWriter @ {GROW_SIDE}²",
            f"{med(vs_pre):.2f}× (reps: {', '.join(f'{v:.2f}×' for v in vs_pre)})",
            "PASS" if med(vs_pre) >= 0.95 else "FAIL",
        ],
    ]
    table = markdown_table if args.markdown else plain_table
    from importlib.metadata import version

    head = (
        f"{dt.date.today()} · {os.cpu_count()} CPUs, {platform.machine()} · output on "
        f"{fs} · Python {platform.python_version()}, numpy {np.__version__}, "
        f"tifffile {version('tifffile')}, pymmcore-plus {version('pymmcore-plus')}\n\n"
        f"Median of {args.reps} repetitions, contenders interleaved; wall time until "
        f"the data is durable. 1-min load average at start / end: {load0:.1f} / "
        f"{os.getloadavg()[0]:.1f}."
    )
    print(head + "\n")
    print(
        table(["run", "size ratio", "finish", "total", "memmap frames"], rows_stop)
        + "\n"
    )
    print(table([f"{GROW_FRAMES} frames @ {GROW_SIDE}²", "fps", "MB/s"], rows_grow))
    print()
    print(
        table(
            [
                f"RSS, {RSS_FRAMES} frames @ {RSS_SIDE}²",
                "peak growth MiB",
                "growth at end MiB",
            ],
            rows_rss,
        )
    )
    print()
    print(table(["target", "measured", "result"], targets))
    return 0 if all(t[2] == "PASS" for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
