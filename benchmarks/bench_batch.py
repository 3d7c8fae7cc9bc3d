"""Batch-export benchmark: traces, ΔF/F and video export on a ≥ 2 GB recording.

    python benchmarks/bench_batch.py [--dir DIR] [--keep] [--frames 1100] [--size 1024]

Writes a contiguous BigTIFF (uint16, SIZExSIZE, FRAMES frames) + sidecar, warms the
page cache, then reports the median of 3 runs of: hot-cache memcpy, our mean trace vs
straightforward NumPy, both ΔF/F methods vs straightforward NumPy versions of the same
formulas, TIFF → MP4 (mp4v) / AVI (MJPG) frame rate, and peak RSS (each job in a fresh
subprocess) for half vs the full file length. The markdown table is printed and
written to ``benchmarks/results/bench_batch.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile

RESULTS = Path(__file__).parent / "results" / "bench_batch.md"
CHUNK = 64 * 2**20


def make_recording(folder: Path, frames: int, size: int) -> Path:
    path = folder / "func" / "bench_meso.ome.tiff"
    path.parent.mkdir(parents=True, exist_ok=True)
    mm = tifffile.memmap(
        path, shape=(frames, size, size), dtype=np.uint16, bigtiff=True
    )
    # mesoscope-like content (vessels, vignetting, calcium transients, shot noise)
    # from the simulated camera: encoders and traces see realistic frames, not noise
    from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

    cam = SimulatedMesoscopeCamera((size, size), exposure_ms=0.0)
    for i in range(frames):
        mm[i] = cam.frame(i)
    mm.flush()
    del mm
    entries = [{"runner_time_ms": 20.0 * i} for i in range(frames)]  # 50 Hz
    Path(f"{path}_frame_metadata.json").write_text(json.dumps({"p0": entries}))
    return path


def _tiff_memmap(path: Path) -> np.memmap:
    return tifffile.memmap(path, mode="r")


def memcpy_rate(path: Path) -> float:
    mm = _tiff_memmap(path)
    flat = mm.reshape(-1).view(np.uint8)
    buf = np.empty(CHUNK, dtype=np.uint8)
    t0 = time.perf_counter()
    for i in range(0, flat.size, CHUNK):
        part = flat[i : i + CHUNK]
        np.copyto(buf[: part.size], part)
    dt = time.perf_counter() - t0
    return flat.size / dt


def median_time(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_mean(path: Path) -> np.ndarray:
    data = tifffile.imread(path)  # the whole stack in memory
    return data.mean(axis=(1, 2))


def naive_collapse(path: Path, fs: float) -> np.ndarray:
    from scipy.ndimage import percentile_filter

    data = tifffile.imread(path)
    f = data.mean(axis=(1, 2)) - 100.0
    f0 = percentile_filter(f, 10.0, size=round(30.0 * fs), mode="nearest")
    dff = (f - f0) / (f0 + 1.0)
    dff[0] = dff[1]
    return dff


def naive_pixelwise(path: Path) -> np.ndarray:
    data = tifffile.imread(path)
    n = len(data)
    idx = np.unique(np.linspace(0, n - 1, min(200, n)).round().astype(int))
    f0 = np.percentile(data[idx].astype(np.float32) - 100.0, 10.0, axis=0)
    out = np.empty(n)
    for s in range(0, n, 64):  # slabs: the full float copy would need ~9 GB
        f = data[s : s + 64].astype(np.float32) - 100.0
        out[s : s + 64] = ((f - f0) / (f0 + 1.0)).mean(axis=(1, 2))
    out[0] = out[1]
    return out


_CHILD = """
import sys, warnings, tempfile
warnings.simplefilter("ignore")
from mesofield_napari.data.batch import mean_trace, dff_trace, export_video
import cv2, scipy.ndimage  # loaded before the baseline
base = int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1])
op, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = tempfile.mkdtemp()
if op == "mean":
    mean_trace(path, out_dir=out, max_frames=n)
elif op == "pixelwise":
    dff_trace(path, "pixelwise", out_dir=out, max_frames=n)
elif op == "video":
    export_video(path, ".avi", fourcc="MJPG", out_dir=out, max_frames=n)
# VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(int(hwm.split()[1]), base)
"""


def peak_rss_mb(op: str, path: Path, frames: int) -> tuple[float, float]:
    """(peak RSS, RSS after imports) of a fresh process running ``op``, in MB."""
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, op, os.fspath(path), str(frames)],
        capture_output=True,
        text=True,
        check=True,
    )
    peak, base = res.stdout.split()[-2:]
    return int(peak) / 1024.0, int(base) / 1024.0  # KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="where to put the test recording")
    ap.add_argument("--keep", action="store_true", help="keep the recording")
    ap.add_argument("--frames", type=int, default=1100)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--video-frames", type=int, default=300)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    from mesofield_napari.data.batch import dff_trace, export_video, mean_trace

    folder = Path(tempfile.mkdtemp(prefix="bench-batch-", dir=args.dir or "/tmp"))
    need = args.frames * args.size * args.size * 2
    free = shutil.disk_usage(folder).free
    frames = args.frames
    note = ""
    if free < need * 1.2 + 2**30:
        frames = max(64, int((free - 2**30) / 1.2 / (args.size * args.size * 2)))
        note = f"disk short: {frames} frames instead of {args.frames}"
        print(note, file=sys.stderr)
    try:
        t0 = time.perf_counter()
        path = make_recording(folder, frames, args.size)
        nbytes = frames * args.size * args.size * 2
        print(
            f"wrote {nbytes / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
        out = folder / "out"
        memcpy_rate(path)  # warm the page cache
        rows: list[tuple[str, str, str]] = []
        mc = statistics.median(memcpy_rate(path) for _ in range(3))
        rows.append(
            (
                "hot-cache memcpy (np.copyto, 64 MB chunks)",
                f"{mc / 1e9:.2f} GB/s",
                "1.00× memcpy",
            )
        )

        t_ours = median_time(lambda: mean_trace(path, out_dir=out, overwrite=True))
        t_naive = median_time(lambda: naive_mean(path))
        loaded = tifffile.imread(path)
        t_loaded = median_time(lambda a=loaded: a.mean(axis=(1, 2)))
        ours = mean_trace(path, out_dir=out, overwrite=True).values
        assert np.allclose(ours, loaded.mean(axis=(1, 2)))
        loaded = None
        rows.append(
            (
                "mean trace, ours (memmap blocks, cv2.mean)",
                f"{nbytes / t_ours / 1e9:.2f} GB/s ({t_ours:.2f} s)",
                f"{nbytes / t_ours / mc:.2f}× memcpy",
            )
        )
        rows.append(
            (
                "mean trace, NumPy: imread + mean(axis=(1,2))",
                f"{t_naive:.2f} s",
                f"ours {t_naive / t_ours:.1f}× faster",
            )
        )
        rows.append(
            (
                "mean trace, NumPy mean(axis=(1,2)) on the loaded array",
                f"{t_loaded:.2f} s",
                f"ours {t_loaded / t_ours:.1f}× faster",
            )
        )

        fs = 50.0
        t_c = median_time(
            lambda: dff_trace(path, "collapse_first", out_dir=out, overwrite=True)
        )
        t_cn = median_time(lambda: naive_collapse(path, fs))
        a = dff_trace(path, "collapse_first", out_dir=out, overwrite=True).values
        assert np.allclose(a, naive_collapse(path, fs), rtol=1e-6, atol=1e-9)
        rows.append(
            (
                "ΔF/F collapse_first, ours",
                f"{t_c:.2f} s ({nbytes / t_c / 1e9:.2f} GB/s)",
                f"{t_cn / t_c:.1f}× NumPy",
            )
        )
        rows.append(
            (
                "ΔF/F collapse_first, NumPy (imread, mean, percentile_filter)",
                f"{t_cn:.2f} s",
                "",
            )
        )
        t_p = median_time(
            lambda: dff_trace(path, "pixelwise", out_dir=out, overwrite=True)
        )
        t_pn = median_time(lambda: naive_pixelwise(path))
        b = dff_trace(path, "pixelwise", out_dir=out, overwrite=True).values
        err = float(np.max(np.abs(b - naive_pixelwise(path))))
        rows.append(
            (
                "ΔF/F pixelwise, ours (row-band F0, weighted means)",
                f"{t_p:.2f} s ({nbytes / t_p / 1e9:.2f} GB/s)",
                f"{t_pn / t_p:.1f}× NumPy (max |Δ| {err:.1e})",
            )
        )
        rows.append(
            (
                "ΔF/F pixelwise, NumPy (imread, percentile, float32 slabs)",
                f"{t_pn:.2f} s",
                "",
            )
        )

        nv = min(args.video_frames, frames)
        for ext, fourcc in ((".mp4", "mp4v"), (".avi", "MJPG")):
            t_v = median_time(
                lambda ext=ext, fourcc=fourcc: export_video(
                    path, ext, fourcc=fourcc, out_dir=out, overwrite=True, max_frames=nv
                )
            )
            rows.append(
                (
                    f"TIFF → {ext} ({fourcc}), {args.size}², {nv} frames",
                    f"{nv / t_v:.0f} frames/s",
                    "",
                )
            )

        half = frames // 2
        for op in ("mean", "pixelwise", "video"):
            n_full = frames if op != "video" else nv
            n_half = half if op != "video" else nv // 2
            (r1, b1), (r2, _) = (
                peak_rss_mb(op, path, n_half),
                peak_rss_mb(op, path, n_full),
            )
            rows.append(
                (
                    f"peak RSS {op}: {n_half} vs {n_full} frames",
                    f"{r1:.0f} MB vs {r2:.0f} MB (after imports: {b1:.0f} MB)",
                    f"{r2 / r1:.2f}× for 2× length",
                )
            )
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    cpu = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    lines = [
        f"Recording: {frames} frames × {args.size}×{args.size} uint16 = {nbytes / 1e9:.2f} GB "
        f"(contiguous BigTIFF, hot page cache); {cpu}; Python {platform.python_version()}; "
        "median of 3." + (f" Note: {note}." if note else ""),
        "",
        "| measurement | result | ratio |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
