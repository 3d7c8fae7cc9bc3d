"""Benchmark the whole rig recorded through the GUI (the recorder's experiment mode)
against the same rig headless and each camera alone.

Usage::

    python benchmarks/bench_experiment_gui.py [--frames 800] [--reps 3] [--out-dir DIR]
                                              [--markdown] [--results FILE]

The GUI case needs an X display; without ``$DISPLAY`` its child is started under
``xvfb-run -a``.

Method
------
The rig is the one of ``bench_experiment.py`` (its ``write_case`` writes the same
``hardware.yaml`` + ``experiment.json``): widefield, a ``micromanager`` simulated
camera, 1024² uint16 at exposure 0 (its top rate), primary, ``--frames`` frames to a
BigTIFF; pupil, the simulated pupil camera through an ``opencv`` capture thread,
640×480 at 60 Hz to MP4; wheel, a ``development_mode`` encoder at 50 Hz. The run lasts
``frames / 100`` s. Four cases per repetition, each in a *fresh* Python process, the
order rotating between repetitions:

- **GUI together**: ``napari.Viewer()`` shown (1500x950),
  :func:`mesofield_napari.app.build_experiment_window` docks the recorder in its
  experiment mode; its :class:`ExperimentPanel` loads the rig folder, the subject is
  chosen and Record is clicked as a user would; the run ends at the panel's
  ``finished`` signal (every camera's file reopened in the viewer). The panel's live
  layers are on, as always. A 10 ms ``QTimer`` on the GUI thread measures the event
  loop's lateness over the run (Record click to ``finished``).
- **headless together**: :class:`ExperimentRun` ``start()`` / ``wait()`` in a process
  that never imports Qt (psygnal signals), as in ``bench_experiment.py``;
- **widefield alone** and **pupil alone** (headless): that camera as the only device.

Per camera: frames written, frames lost (the writers' counters), data-queue rows (must
equal the frames) and the achieved rate = (frames - 1) / (last - first frame time),
from each file's sidecar (the wheel: its CSV's clock); the GUI's rate is compared with
headless-together and with the camera alone *within the same repetition*; medians of
the repetitions. Output files are deleted after each run; ``os.sync()`` runs before
each child.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import filesystem, markdown_table, plain_table  # benchmarks/_report.py

GUI_TOGETHER, TOGETHER = "gui together", "together"
WIDEFIELD_ALONE, PUPIL_ALONE = "widefield alone", "pupil alone"
CASES = [GUI_TOGETHER, TOGETHER, WIDEFIELD_ALONE, PUPIL_ALONE]
SUBJECT = "B1"  # bench_experiment.write_case's subject
PROBE_MS = 10
CHILD_TIMEOUT_S = 300
TARGET_RATIO = 0.9
LABELS = {
    "mesoscope": "widefield 1024² (TIFF)",
    "pupil": "pupil 640×480 (MP4)",
    "encoder": "wheel (CSV)",
}
ALONE = {"mesoscope": WIDEFIELD_ALONE, "pupil": PUPIL_ALONE}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    arr = np.asarray(values, dtype=float)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


# --------------------------------------------------------------------------- children
def child_headless(case: str, frames: int, out: Path) -> dict[str, Any]:
    os.environ.setdefault("PYMM_SIGNALS_BACKEND", "psygnal")
    from bench_experiment import run_case, write_case

    folder = write_case(out / "rig", case, frames)
    t0 = time.perf_counter()
    devices = run_case(folder, out / "exp")
    return {
        "devices": devices,
        "wall_s": time.perf_counter() - t0,
        "peak_rss": _peak_rss(),
        "qt_imported": any(
            m.split(".")[0] in ("PyQt6", "PyQt5", "PySide6") for m in sys.modules
        ),
    }


def child_gui(frames: int, out: Path) -> dict[str, Any]:
    import napari
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QApplication

    from bench_experiment import measure, write_case
    from mesofield_napari._widgets import experiment as experiment_mod
    from mesofield_napari._widgets import recorder as recorder_mod
    from mesofield_napari.app import build_experiment_window

    settings = os.fspath(out / "settings.ini")  # never the user's QSettings
    os.environ[experiment_mod.SETTINGS_ENV] = settings
    os.environ[recorder_mod.SETTINGS_ENV] = settings
    folder = write_case(out / "rig", TOGETHER, frames)
    viewer = napari.Viewer(title="bench", show=True)
    viewer.window.resize(1500, 950)
    recorder = build_experiment_window(viewer)
    panel = recorder.experiment_panel
    assert panel is not None
    if not panel.load(folder, output=os.fspath(out / "exp")):
        raise RuntimeError(f"could not load {folder}: {panel.error_label.text()}")
    panel.select_subject(SUBJECT)

    app = QApplication.instance()
    assert app is not None
    state: dict[str, Any] = {"phase": "settle", "ticks": []}

    def tick() -> None:
        if state["phase"] == "run":
            state["ticks"].append(time.perf_counter())

    probe = QTimer()
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.setInterval(PROBE_MS)
    probe.timeout.connect(tick)

    def start() -> None:
        if problems := panel.problems():
            state["error"] = "; ".join(problems)
            app.quit()
            return
        state["live_before"] = panel.live_updates
        state["phase"] = "run"
        state["t_click"] = time.perf_counter()
        panel.record_button.click()
        if not panel.busy:
            state["error"] = panel.error_label.text() or "Record did not start"
            app.quit()

    def finished(result: dict[str, Any]) -> None:
        state["t_done"] = time.perf_counter()
        state["phase"] = "done"
        state["result"] = result
        QTimer.singleShot(0, app.quit)

    def failed(message: str) -> None:
        state["error"] = message
        QTimer.singleShot(0, app.quit)

    def give_up() -> None:
        state["error"] = f"no result after {CHILD_TIMEOUT_S} s"
        panel.shutdown()
        app.quit()

    panel.finished.connect(finished)
    panel.failed.connect(failed)
    probe.start()
    QTimer.singleShot(2000, start)  # let the window and docks settle first
    QTimer.singleShot(CHILD_TIMEOUT_S * 1000, give_up)
    app.exec()
    probe.stop()
    if "error" in state:
        raise RuntimeError(state["error"])
    result = state["result"]
    ticks = state["ticks"]
    late = [(b - a) * 1000 - PROBE_MS for a, b in itertools.pairwise(ticks)]
    wall = state["t_done"] - state["t_click"]
    res = {
        "devices": measure(result),
        "wall_s": wall,
        "latency_ms": _percentiles(late),
        "live_updates": panel.live_updates - state["live_before"],
        "live_hz": (panel.live_updates - state["live_before"]) / wall,
        "layers": sorted(layer.name for layer in viewer.layers),
        "peak_rss": _peak_rss(),
    }
    panel.shutdown()
    return res


# --------------------------------------------------------------------------- parent
def run_child(case: str, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=case.replace(" ", "-") + "-", dir=scratch))
    result = out / "result.json"
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        case,
        "--frames",
        str(args.frames),
        "--child-out",
        os.fspath(out),
        "--child-result",
        os.fspath(result),
    ]
    if case == GUI_TOGETHER and not os.environ.get("DISPLAY"):
        if shutil.which("xvfb-run") is None:
            raise SystemExit("no $DISPLAY and no xvfb-run: cannot run the GUI case")
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", *cmd]
    os.sync()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S + 120
        )
        if proc.returncode != 0 or not result.exists():
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-25:])
            raise RuntimeError(f"{case} child failed ({proc.returncode}):\n{tail}")
        return json.loads(result.read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def _reps(values: Sequence[float], fmt: str = ".2f") -> str:
    return ", ".join(format(v, fmt) for v in values)


def machine_line(scratch: Path) -> str:
    import numpy as np

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = ", ".join(
        f"{pkg} {version(pkg)}"
        for pkg in ("napari", "pymmcore-plus", "PyQt6", "opencv-python-headless")
    )
    return (
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d} · {os.cpu_count()} CPUs, "
        f"{ram:.1f} GiB RAM, {platform.machine()} · output on {filesystem(scratch)} · "
        f"Xvfb · Python {platform.python_version()}, numpy {np.__version__}, {versions}"
    )


def report(
    reps: list[dict[str, dict[str, Any]]],
    args: argparse.Namespace,
    scratch: Path,
    load: tuple[float, float],
    elapsed: float,
) -> tuple[str, bool]:
    render = markdown_table if args.markdown else plain_table
    header = [
        "case",
        "device",
        "frames",
        "lost",
        "queue rows = frames",
        "achieved Hz (reps)",
        "vs headless together",
        "vs alone (headless)",
        "errors",
    ]
    rows = []
    lost_total, rows_ok_all, errors_all = 0, True, set()
    ratios: dict[str, list[float]] = {}
    for case, device in [
        (GUI_TOGETHER, "mesoscope"),
        (GUI_TOGETHER, "pupil"),
        (GUI_TOGETHER, "encoder"),
        (TOGETHER, "mesoscope"),
        (TOGETHER, "pupil"),
        (TOGETHER, "encoder"),
        (WIDEFIELD_ALONE, "mesoscope"),
        (PUPIL_ALONE, "pupil"),
    ]:
        ms = [r[case]["devices"][device] for r in reps]
        lost = sum(m["lost"] for m in ms)
        rows_ok = all(m["rows"] == m["frames"] for m in ms)
        errors = sorted({e for m in ms for e in m["errors"]})
        lost_total += lost
        rows_ok_all &= rows_ok
        errors_all.update(errors)
        fps = [m["fps"] for m in ms]
        vs_head = vs_alone = "—"
        if case == GUI_TOGETHER:
            rs = [
                r[case]["devices"][device]["fps"]
                / r[TOGETHER]["devices"][device]["fps"]
                for r in reps
            ]
            ratios[f"{device} gui/headless"] = rs
            vs_head = f"{_median(rs):.2f}× ({_reps(rs)})"
        if case in (GUI_TOGETHER, TOGETHER) and device in ALONE:
            rs = [
                r[case]["devices"][device]["fps"]
                / r[ALONE[device]]["devices"][device]["fps"]
                for r in reps
            ]
            ratios[f"{device} {case}/alone"] = rs
            vs_alone = f"{_median(rs):.2f}× ({_reps(rs)})"
        rows.append(
            [
                case if case != TOGETHER else "headless together",
                LABELS[device],
                f"{_median([m['frames'] for m in ms]):.0f}",
                str(lost),
                "yes" if rows_ok else "NO",
                f"{_median(fps):.1f} ({_reps(fps, '.1f')})",
                vs_head,
                vs_alone,
                "; ".join(errors) or "—",
            ]
        )
    gui = [r[GUI_TOGETHER] for r in reps]
    lat_p99 = _median([g["latency_ms"]["p99"] for g in gui])
    wf = _median(ratios["mesoscope gui/headless"])
    pupil = _median(ratios["pupil gui/headless"])
    checks = [
        (
            "0 frames lost, one queue row per frame, no device errors (GUI and "
            "headless, every repetition)",
            f"lost {lost_total}; rows = frames: {'yes' if rows_ok_all else 'NO'}; "
            f"errors: {len(errors_all)}",
            lost_total == 0 and rows_ok_all and not errors_all,
        ),
        (
            f"widefield in the GUI ≥ {TARGET_RATIO}× headless together",
            f"{wf:.2f}× (reps: {_reps(ratios['mesoscope gui/headless'])})",
            wf >= TARGET_RATIO,
        ),
        (
            f"pupil in the GUI ≥ {TARGET_RATIO}× headless together (paced 60 Hz)",
            f"{pupil:.2f}× (reps: {_reps(ratios['pupil gui/headless'])})",
            pupil >= TARGET_RATIO,
        ),
    ]
    extra = [
        "GUI event-loop lateness (10 ms timer, Record click to finished) p50 / p99 / "
        f"max: {_median([g['latency_ms']['p50'] for g in gui]):.1f} / {lat_p99:.1f} / "
        f"{max(g['latency_ms']['max'] for g in gui):.0f} ms; live-layer refreshes "
        f"{_median([g['live_hz'] for g in gui]):.1f} Hz (all cameras' layers at once); "
        f"wall (click to files reopened) {_median([g['wall_s'] for g in gui]):.1f} s; "
        f"peak RSS {_median([g['peak_rss'] for g in gui]) / 2**20:.0f} MiB",
        f"layers after the run: {', '.join(gui[-1]['layers'])}",
        "headless: Qt imported: "
        f"{any(r[c]['qt_imported'] for r in reps for c in CASES[1:])}; peak RSS "
        f"{_median([r[TOGETHER]['peak_rss'] for r in reps]) / 2**20:.0f} MiB (together)",
    ]
    parts = [
        machine_line(scratch),
        f"Median of {len(reps)} repetitions ({elapsed:.0f} s in all); widefield "
        f"{args.frames} frames at its top rate (exposure 0), nominal run length "
        f"{args.frames / 100:g} s (experiment.json duration; the primary widefield "
        "camera's frame count = duration × its nominal 100 Hz); every case in a fresh "
        "process, the order rotating; "
        "achieved Hz = (frames - 1) / first-to-last frame time from the sidecars (the "
        "wheel: its CSV); ratios within each repetition. 1-min load average at start "
        f"/ end: {load[0]:.1f} / {load[1]:.1f}.",
        render(header, rows),
        render(
            ["target", "measured", "result"],
            [[t, m, "PASS" if ok else "MISS"] for t, m, ok in checks],
        ),
        "\n".join(f"- {line}" for line in extra),
    ]
    return "\n\n".join(parts), all(ok for _, _, ok in checks)


# --------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=800, help="widefield frames")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out-dir", help="parent of the scratch folder (default /tmp)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--results", help="also write the report to this file")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reps < 1 or args.frames < 2:
        parser.error("--reps >= 1 and --frames >= 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        out = Path(args.child_out)
        if args.child == GUI_TOGETHER:
            res = child_gui(args.frames, out)
        else:
            res = child_headless(args.child, args.frames, out)
        Path(args.child_result).write_text(json.dumps(res))
        # measured and saved: skip interpreter teardown (C++ core teardown can abort
        # after every Python thread ended; it says nothing about the recording)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    base = Path(args.out_dir) if args.out_dir else Path("/tmp")
    base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-experiment-gui-", dir=base))
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    reps: list[dict[str, dict[str, Any]]] = []
    try:
        for rep in range(args.reps):
            order = CASES[rep % 4 :] + CASES[: rep % 4]
            results: dict[str, dict[str, Any]] = {}
            for case in order:
                r = run_child(case, args, scratch)
                results[case] = r
                cams = "  ".join(
                    f"{d} {m['frames']} fr {m['fps']:.1f} Hz lost {m['lost']}"
                    for d, m in r["devices"].items()
                )
                extra = (
                    f"  lateness p99 {r['latency_ms']['p99']:.0f} ms"
                    if "latency_ms" in r
                    else ""
                )
                log(f"rep {rep + 1}/{args.reps} {case:<15} {cams}{extra}")
            reps.append(results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    text, ok = report(reps, args, scratch, (load_start, os.getloadavg()[0]), elapsed)
    print(text)
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
