"""Benchmark an experiment run: widefield + pupil + wheel together vs each camera alone.

Usage::

    python benchmarks/bench_experiment.py [--frames 800] [--reps 3] [--out-dir DIR]
                                          [--markdown]

Method
------
Three cases, each recorded headless through :class:`ExperimentRun` from a generated
``hardware.yaml`` + ``experiment.json`` (the real MDA runner, real writers, real data
queue):

- ``together`` — widefield: a ``micromanager`` simulated camera, 1024² uint16, exposure
  0 (its top rate), primary, ``--frames`` frames to a BigTIFF; pupil: the simulated
  pupil camera through an ``opencv`` direct-mode capture thread, 640×480 at 60 Hz to
  MP4 (mp4v); wheel: ``development_mode`` encoder at 50 Hz;
- ``widefield alone`` and ``pupil alone`` — the same camera as the only device.

Reported per camera: frames written, frames lost (writer), data-queue rows (must equal
the frames), achieved rate (frames / time between the first and last frame) and, for
the ``together`` case, that rate against the same camera alone in the same repetition
(median over repetitions; the order of the cases rotates between repetitions, since
the machine is shared and noisy). The pupil's rate is paced at 60 Hz, so its ratio
shows whether sharing the process with a saturating widefield camera slows it down.
Target: 0 frames lost, every camera's queue rows = its frames.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import filesystem, markdown_table, plain_table
from mesofield_napari.experiment import ExperimentRun, load_experiment

WIDEFIELD = """\
  - id: mesoscope
    name: meso
    backend: micromanager
    primary: true
    fps: {fps}
    properties: {{width: 1024, height: 1024, exposure_ms: 0}}
"""
PUPIL = """\
  - id: pupil
    name: pupil
    backend: opencv
    device: sim
    primary: {primary}
    fps: 60
    width: 640
    height: 480
    output: {{file_type: mp4, fourcc: mp4v}}
"""
WHEEL = "encoder: {type: wheel, development_mode: true, sample_interval_ms: 20}\n"
NOMINAL_WIDEFIELD_FPS = 100.0  # sets the run's duration: frames / this


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_case(folder: Path, case: str, frames: int) -> Path:
    folder.mkdir(parents=True)
    duration = frames / NOMINAL_WIDEFIELD_FPS
    cams = ""
    if case in ("together", "widefield alone"):
        cams += WIDEFIELD.format(fps=NOMINAL_WIDEFIELD_FPS)
    if case in ("together", "pupil alone"):
        cams += PUPIL.format(primary="true" if case == "pupil alone" else "false")
    hardware = (WHEEL if case == "together" else "") + "cameras:\n" + cams
    (folder / "hardware.yaml").write_text(hardware)
    config = {
        "Configuration": {"experimenter": "bench", "duration": duration},
        "Subjects": {"B1": {"session": "1", "task": case.replace(" ", "")}},
    }
    (folder / "experiment.json").write_text(json.dumps(config))
    return folder


def run_case(folder: Path, out: Path) -> dict[str, dict]:
    run = ExperimentRun(load_experiment(folder), out=out)
    run.start()
    if not run.wait(run.duration_s * 4 + 120):
        run.stop(300)
    return measure(run.result())


def measure(result: dict) -> dict[str, dict]:
    """Per device: frames, lost, data-queue rows, achieved Hz, from the run's files."""
    dq = pd.read_csv(result["dataqueue"], usecols=["device_id"])
    rows = dq["device_id"].value_counts().to_dict()
    measured = {}
    for f in result["files"]:
        device = f["device_id"]
        status = result["devices"][device]
        measured[device] = {
            "frames": f["frames"],
            "lost": f.get("frames_lost", 0) or 0,
            "rows": int(rows.get(device, 0)),
            "fps": _achieved_fps(f),
            "errors": result["errors"],
            "status_fps": status["fps"],
        }
    return measured


def _achieved_fps(entry: dict) -> float:
    """Frames over the time between the first and the last frame (from the sidecar)."""
    if entry["kind"] == "csv":
        t = pd.read_csv(entry["path"])["Time"].to_numpy()
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else 0.0
    side = json.loads(Path(entry["sidecar"]).read_text())
    frames = side.get("p0") or side.get("frame_metadatas") or []
    t = np.array([f["runner_time_ms"] for f in frames], dtype=float) / 1000.0
    return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else 0.0


@contextlib.contextmanager
def output_dir(parent: str | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-experiment-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def machine_line(out: Path) -> str:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = ", ".join(
        f"{pkg} {version(pkg)}" for pkg in ("pymmcore-plus", "opencv-python-headless")
    )
    return (
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d} · {os.cpu_count()} CPUs, "
        f"{ram:.1f} GiB RAM, {platform.machine()} · output on {filesystem(out)} · "
        f"Python {platform.python_version()}, numpy {np.__version__}, {versions}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=800, help="widefield frames")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out-dir", help="parent of the scratch folder (default /tmp)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYMM_SIGNALS_BACKEND", "psygnal")
    cases = ["together", "widefield alone", "pupil alone"]
    reps: list[dict[str, dict[str, dict]]] = []
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    with output_dir(args.out_dir) as out:
        for rep in range(args.reps):
            order = cases[rep % 3 :] + cases[: rep % 3]
            measured = {}
            for case in order:
                folder = write_case(
                    out / f"rep{rep}" / case.replace(" ", "_"), case, args.frames
                )
                measured[case] = run_case(folder, out / f"rep{rep}" / "exp")
                log(f"rep {rep + 1} {case}: {measured[case]}")
            reps.append(measured)
        fs_line = machine_line(out)
    elapsed = time.perf_counter() - t_start
    rows, ok = [], True
    for case, device in [
        ("together", "mesoscope"),
        ("together", "pupil"),
        ("together", "encoder"),
        ("widefield alone", "mesoscope"),
        ("pupil alone", "pupil"),
    ]:
        ms = [r[case][device] for r in reps]
        lost = sum(m["lost"] for m in ms)
        rows_ok = all(m["rows"] == m["frames"] for m in ms)
        errors = sorted({e for m in ms for e in m["errors"]})
        ok &= lost == 0 and rows_ok and not errors
        fps = statistics.median(m["fps"] for m in ms)
        if case == "together" and device != "encoder":
            alone = "widefield alone" if device == "mesoscope" else "pupil alone"
            ratios = [r[case][device]["fps"] / r[alone][device]["fps"] for r in reps]
            vs = f"{statistics.median(ratios):.2f}× ({', '.join(f'{x:.2f}' for x in ratios)})"
        else:
            vs = "—"
        label = {
            "mesoscope": "widefield 1024² (TIFF)",
            "pupil": "pupil 640×480 (MP4)",
            "encoder": "wheel (CSV)",
        }[device]
        rows.append(
            [
                case,
                label,
                f"{statistics.median(m['frames'] for m in ms):.0f}",
                str(lost),
                "yes" if rows_ok else "NO",
                f"{fps:.1f}",
                vs,
                "; ".join(errors) or "—",
            ]
        )
    render = markdown_table if args.markdown else plain_table
    header = [
        "case",
        "device",
        "frames",
        "lost",
        "queue rows = frames",
        "achieved Hz",
        "vs alone",
        "errors",
    ]
    verdict = "PASS" if ok else "FAIL"
    print(
        "\n\n".join(
            [
                fs_line,
                f"Median of {args.reps} repetitions ({elapsed:.0f} s in all); widefield "
                f"{args.frames} frames at its top rate (exposure 0); achieved Hz = frames "
                "over first-to-last frame time from the sidecars. 1-min load average at "
                f"start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f}.",
                render(header, rows),
                render(
                    ["target", "result"],
                    [
                        [
                            "0 frames lost, one queue row per frame, no device errors",
                            verdict,
                        ]
                    ],
                ),
            ]
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
