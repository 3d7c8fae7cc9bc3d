"""Benchmark CV2Writer's codecs on pupil-like 8-bit frames: H.264 vs mp4v vs lossless.

Usage::

    python benchmarks/bench_video.py [--sizes 640x480 1024x1024] [--frames N]
                                     [--reps 3] [--out-dir DIR] [--markdown]

Method
------
Frames are generated before any timing: a dark "pupil" disc moving slightly on a
smooth texture, plus Gaussian noise (sigma 2), uint8 gray -- what an IR pupil camera
gives. Each contender is ``CV2Writer`` in direct mode (``begin``/``add_frame``/
``finish``: the writer thread, the byte-bounded queue, the journal and the sidecar
included), timed from ``begin`` until the file is durable (fsync):

- ``h264``: PyAV libx264 with the defaults (CRF 23, ``ultrafast``, fragmented MP4);
- ``mp4v``: OpenCV's ``cv2.VideoWriter`` with fourcc ``mp4v`` (the old default);
- ``h264-lossless``: libx264 ``qp=0``.

Contenders are interleaved within each repetition (order rotating); ratios are taken
within a repetition and the median over repetitions is reported. Size is the file's;
PSNR is over all frames, decoded with PyAV, against the source frames.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import filesystem, fsync_path, markdown_table, plain_table

CODECS = ("h264", "mp4v", "h264-lossless")
RESULTS = Path(__file__).parent / "results" / "bench_video.md"


def pupil_frames(width: int, height: int, n: int, seed: int = 0) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng(seed)
    tex = cv2.resize(rng.normal(0, 1, (height // 16, width // 16)), (width, height))
    tex += 0.5 * cv2.resize(
        rng.normal(0, 1, (height // 4, width // 4)), (width, height)
    )
    base = np.clip(120 + 25 * tex, 0, 255).astype(np.float32)
    yy, xx = np.mgrid[:height, :width]
    radius = height / 8
    frames = []
    for i in range(n):
        cx = width / 2 + 10 * np.sin(i / 10)
        cy = height / 2 + 5 * np.cos(i / 13)
        f = base.copy()
        f[(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] = 30
        f += rng.normal(0, 2, (height, width)).astype(np.float32)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames


def run_once(codec: str, frames: list[np.ndarray], folder: Path) -> dict[str, float]:
    from mesofield_napari.data import CV2Writer

    fourcc, _, preset = codec.partition(" ")  # "h264 veryfast": another preset
    path = folder / f"bench_{fourcc}.mp4"
    kw = {"preset": preset} if preset else {}
    writer = CV2Writer(path, fps=30, fourcc=fourcc, **kw)
    height, width = frames[0].shape
    os.sync()
    gc.collect()
    t0 = time.perf_counter()
    writer.begin(width, height, is_color=False)
    for frame in frames:
        writer.add_frame(frame)
    writer.finish()
    fsync_path(path)
    wall = time.perf_counter() - t0
    writer.raise_if_failed()
    return {"fps": len(frames) / wall, "mb": path.stat().st_size / 1e6, "path": path}


def psnr_of(path: Path, frames: list[np.ndarray]) -> tuple[float, int]:
    import av

    se, n = 0.0, 0
    with av.open(str(path)) as container:
        for got, want in zip(container.decode(video=0), frames, strict=False):
            d = got.to_ndarray(format="gray").astype(np.float64) - want
            se += float(np.mean(d * d))
            n += 1
    mse = se / max(n, 1)
    return (float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1024x1024"])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument(
        "--presets", nargs="*", default=[], help="extra H.264 rows: x264 presets"
    )
    ap.add_argument("--markdown", action="store_true", help=f"also write {RESULTS}")
    args = ap.parse_args()

    codecs = CODECS + tuple(f"h264 {p}" for p in args.presets)
    rows, targets, ok = [], [], True
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.out_dir) as tmp:
        folder = Path(tmp)
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            n = (
                args.frames
                if width * height <= 640 * 480
                else max(args.frames * 2 // 3, 1)
            )
            frames = pupil_frames(width, height, n)
            per: dict[str, list[dict[str, float]]] = {c: [] for c in codecs}
            quality: dict[str, tuple[float, int]] = {}
            for rep in range(args.reps):
                k = rep % len(codecs)
                order = codecs[k:] + codecs[:k]
                for codec in order:
                    res = run_once(codec, frames, folder)
                    if rep == 0:
                        quality[codec] = psnr_of(res["path"], frames)
                    res["path"].unlink()
                    for extra in folder.iterdir():
                        extra.unlink()
                    per[codec].append(res)

            def med(codec: str, key: str, per: dict = per) -> float:
                return float(np.median([r[key] for r in per[codec]]))

            fps_ratio = np.median(
                [
                    h["fps"] / m["fps"]
                    for h, m in zip(per["h264"], per["mp4v"], strict=True)
                ]
            )
            size_ratio = med("h264", "mb") / med("mp4v", "mb")
            for codec in codecs:
                psnr, decoded = quality[codec]
                ok &= decoded == n
                rows.append(
                    [
                        f"{width}×{height}",
                        codec,
                        str(n),
                        f"{med(codec, 'fps'):.0f}",
                        f"{med(codec, 'fps') / med('mp4v', 'fps'):.2f}×",
                        f"{med(codec, 'mb'):.2f}",
                        f"{med(codec, 'mb') / med('mp4v', 'mb'):.2f}×",
                        "lossless" if psnr == float("inf") else f"{psnr:.2f}",
                        f"{decoded}/{n}",
                    ]
                )
            dpsnr = quality["h264"][0] - quality["mp4v"][0]
            targets.append(
                [
                    f"H.264 size ≤ 0.25× mp4v @ {size} (PSNR Δ {dpsnr:+.2f} dB)",
                    f"{size_ratio:.2f}×",
                    "PASS" if size_ratio <= 0.25 and dpsnr >= 0 else "FAIL",
                ]
            )
            targets.append(
                [
                    f"H.264 fps ≥ 1.0× mp4v @ {size}",
                    f"{fps_ratio:.2f}×",
                    "PASS" if fps_ratio >= 1.0 else "FAIL",
                ]
            )
            if (width, height) == (1024, 1024):
                fps = med("h264", "fps")
                targets.append(
                    [
                        "CV2Writer (H.264 default) ≥ 200 fps @ 1024²",
                        f"{fps:.0f} fps",
                        "PASS" if fps >= 200 else "FAIL",
                    ]
                )
        fs = filesystem(folder)

    header = ["size", "codec", "frames", "fps", "fps vs mp4v", "MB", "size vs mp4v"]
    header += ["PSNR dB", "decoded"]
    import av
    import cv2

    head = (
        f"{date.today()} · {os.cpu_count()} CPUs, {platform.machine()} · output on "
        f"{fs} · Python {platform.python_version()}, PyAV {av.__version__}, "
        f"OpenCV {cv2.__version__}\n\nMedian of {args.reps} repetitions; wall time "
        "from begin() until the file is durable (fsync); ratios within each "
        f"repetition. 1-min load average at start / end: {load0:.1f} / "
        f"{os.getloadavg()[0]:.1f}.\n"
    )
    print(head)
    print(plain_table(header, rows))
    print()
    print(plain_table(["target", "measured", "result"], targets))
    if args.markdown:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(
            head
            + "\n"
            + markdown_table(header, rows)
            + "\n\n"
            + markdown_table(["target", "measured", "result"], targets)
            + "\n",
            encoding="utf-8",
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
