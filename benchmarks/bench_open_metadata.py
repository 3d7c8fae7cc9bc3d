"""Benchmark opening long recordings' frame metadata: time and peak RSS.

Usage::

    python benchmarks/bench_open_metadata.py [--dir DIR] [--sidecar 50000]
                                             [--journal 1000000] [--reps 3]

Generates (once, in ``--dir``) a tiny 2x2 TIFF per case plus either a final sidecar or
a crashed run's journal with realistic FrameMetaV1 entries (~500 bytes each, as the
simulated camera writes them). Each measurement runs ``open_recording`` followed by
what the napari reader reads from it (timestamps, fps, dropped frames) in a **fresh
subprocess**, imports done first; it prints the median wall time and the peak RSS
above the post-import baseline (``ru_maxrss``). Run it with the source tree to
measure first on ``PYTHONPATH``, e.g. once for the old and once for the new code.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ENTRY = {
    "format": "frame-dict",
    "version": "1.0",
    "runner_time_ms": 0.0,
    "camera_device": "MesoCam",
    "property_values": [],
    "exposure_ms": 0.0,
    "pixel_size_um": 0.0,
    "mda_event": {"t": 0},
    "hardware_triggered": True,
    "images_remaining_in_buffer": 0,
    "camera_metadata": {
        "Binning": "1",
        "Camera": "MesoCam",
        "ElapsedTime-ms": "0.00",
        "Height": "24",
        "ImageNumber": "0",
        "PixelType": "GRAY16",
        "ROI-X-start": "0",
        "ROI-Y-start": "0",
        "SimFrameIndex": "0",
        "TimeReceivedByCore": "2026-11-29 10:08:19.897533",
        "Width": "32",
    },
}

CHILD = r"""
import resource, sys, time, warnings
from mesofield_napari.data import open_recording
import dask.array, numpy
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    rec = open_recording(sys.argv[1])
    n, fps, dropped = rec.frames, rec.fps, rec.dropped_frames
    t = [float(x) for x in rec.timestamps_s]
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(dt, (peak - base) / 1024, n, dropped)
"""


def _entry(i: int) -> dict:
    e = dict(ENTRY, runner_time_ms=10.0 * i, mda_event={"t": i})
    cam = dict(ENTRY["camera_metadata"], ImageNumber=str(i))
    cam["ElapsedTime-ms"] = f"{10.0 * i:.2f}"
    e["camera_metadata"] = cam
    return e


def _tiff(path: Path, n: int) -> None:
    import numpy as np
    import tifffile

    tifffile.imwrite(path, np.ones((n, 2, 2), np.uint8), contiguous=True)


def make(folder: Path, sidecar: int, journal: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    s = folder / f"side{sidecar}.tif"
    if not s.exists():
        _tiff(s, sidecar)
        with open(f"{s}_frame_metadata.json", "w") as fh:
            fh.write('{"p0": [')
            for i in range(sidecar):
                fh.write((", " if i else "") + json.dumps(_entry(i)))
            fh.write("]}")
    out[f"sidecar {sidecar}"] = s
    j = folder / f"jour{journal}.tif"
    if not j.exists():
        _tiff(j, journal)
        with open(f"{j}_frame_metadata.jsonl", "w") as fh:
            head = {"format": "mesofield-frame-journal", "version": 1, "mode": "mda"}
            fh.write(json.dumps(head) + "\n")
            for i in range(journal):
                line = {"meta": _entry(i), "pos": "p0"}
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    out[f"journal {journal}"] = j
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=Path("/tmp/bench_open_metadata"))
    ap.add_argument("--sidecar", type=int, default=50_000)
    ap.add_argument("--journal", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    cases = make(args.dir, args.sidecar, args.journal)
    print(f"{'case':<18} {'time s':>8} {'peak MiB':>9}  frames")
    for name, path in cases.items():
        runs = []
        for _ in range(args.reps):
            res = subprocess.run(
                [sys.executable, "-c", CHILD, os.fspath(path)],
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
            )
            runs.append([float(x) for x in res.stdout.split()])
        t = statistics.median(r[0] for r in runs)
        mem = statistics.median(r[1] for r in runs)
        print(f"{name:<18} {t:8.2f} {mem:9.1f}  {int(runs[0][2])}")


if __name__ == "__main__":
    main()
