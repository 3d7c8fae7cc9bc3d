"""Benchmark recording through the napari GUI against the same recording headless.

Usage::

    python benchmarks/bench_gui_recording.py [--frames 2000] [--size 1024] [--reps 3]
                                             [--out-dir DIR] [--markdown]
                                             [--results FILE] [--live-rois N]

The GUI case needs an X display; without ``$DISPLAY`` each GUI child is started
under ``xvfb-run -a`` (or run the whole script under ``xvfb-run -a``).

Method
------
Each repetition runs two cases, each in a *fresh* Python process (clean RSS, no state
shared between cases), alternating which goes first:

- **GUI**: ``napari.Viewer()`` shown (1500x950), the simulated camera
  (``create_sim_core((size, size), exposure_ms=0)``: 0 ms exposure = the camera's top
  rate) created after the ``QApplication`` so its signals are Qt signals, then
  :func:`mesofield_napari.app.build_window` docks the real napari-micromanager on it
  and the recorder dock. The recorder's fields are filled as a user would (output
  folder, N frames, OME-TIFF) and its Record button is clicked; the run ends at the
  recorder's ``finished`` signal (files final, live layer swapped for the reopened
  recording). Its live layer is on, as always.
  GUI event-loop latency: a ``QTimer`` (PreciseTimer) fires every 10 ms on the main
  thread; lateness = actual interval - 10 ms, over the whole run (Record click to
  ``finished``). For context the same probe also runs for 2 s idle before Record.
  The probe also samples the recorder's ``live_updates`` counter, which gives the
  live layer's mean rate over the acquisition and its peak rate in any 1-s window.
- **Headless**: the same core and camera settings in a process that never imports
  Qt (plain psygnal signals): ``RecordingSession(core, RecorderSettings(...))``,
  ``start()``, ``wait()``.

Metrics, per run
----------------
- acquisition fps = (frames - 1) / (last - first frame time), from the frame clock
  written to the recording's sidecar (``runner_time_ms``, read back through
  ``open_recording``) -- the rate the camera was actually read out while recording;
- wall time = Record click (``start()`` headless) until the files are final;
- frames lost = frames the camera produced (its frame counter) - frames in the
  TIFF on disk (pages counted by tifffile); the sidecar's count and the writers'
  ``frames_lost`` / back-pressure counters from the run manifest are reported too;
- peak RSS = ``ru_maxrss`` of the child; RSS growth = max RSS sampled during the run
  (psutil, every 250 ms) - RSS just before it.

Output files are deleted after each run. ``os.sync()`` runs before each child so no
dirty pages from earlier runs are flushed on the next run's clock. The machine is
shared: the 1-min load average at start and end is printed; ratios are taken between
the GUI and headless runs of the same repetition and the median is reported.

Live traces (``--live-rois N``)
-------------------------------
The cost of the recorder's *Live traces* panel (issue 14). Each repetition then runs
the GUI case twice instead of GUI vs headless, each in a fresh process, alternating
which goes first: **GUI, no traces** (the panel switched off, as above) and **GUI +
N ROIs**: before Record a Shapes layer with N rectangles is added (a
``ceil(sqrt(N))`` grid of cells over the frame, one square of half the cell's side
centred in each cell, in the live layer's world coordinates = full-resolution camera
pixels), chosen as the panel's ROI source, and the panel switched on with ΔF/F (its
default 30 s trailing window, 10th percentile) -- the heavier of its two modes.
Reported besides the above: the traces model's frames offered, samples computed and
skipped (one sample = every ROI's mean and ΔF/F of one frame), the rows of the trace
CSVs read back from the run's processed folder (must equal the samples computed), the
plot refreshes, and the ratio of acquisition fps with traces / without within each
repetition (target >= 0.9x, median).
``--live-no-plot`` (diagnostic, attributes the cost): the same, but the panel's plot
timer is disconnected in the child, so traces are computed and saved but never
redrawn -- the difference to the normal run is the matplotlib plot's share.

napari-micromanager's widgets fetch icons from the internet (pyconify); here, like
in the test-suite, those requests fail at once (no DNS waits during set-up). Nothing
else in the widgets is changed. The recorder's QSettings go to a scratch .ini.
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
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _report import filesystem, markdown_table, plain_table  # benchmarks/_report.py

DEFAULT_FRAMES = 2000
DEFAULT_SIZE = 1024
PROBE_MS = 10
IDLE_PROBE_S = 2.0
RSS_EVERY_S = 0.25
CHILD_TIMEOUT_S = 900
TARGET_LATENCY_P99_MS = 100.0
TARGET_LIVE_HZ = 30.0
TARGET_RATIO = 0.9
MIN_FRAMES = 2000

GUI, HEADLESS, GUI_ROIS = "gui", "headless", "gui-rois"
LABELS = {
    GUI: "GUI (napari + napari-micromanager, live layer)",
    HEADLESS: "headless",
    GUI_ROIS: "GUI + live traces",
}
TARGET_TRACES_RATIO = 0.9


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


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


# --------------------------------------------------------------------------- checks
def _queue_fill(session: Any) -> float:
    """Fullest writer queue of the running run (fraction of its byte budget)."""
    if session is None or not session.recording:
        return 0.0
    with contextlib.suppress(Exception):
        return float(session.status().queue_fill)
    return 0.0


def inspect_run(outcome: Any, camera_frames: int) -> dict[str, Any]:
    """Frames on disk, the frame clock and the manifest's counters for one run."""
    import numpy as np
    import tifffile

    from mesofield_napari.data.reader.recording import open_recording

    res: dict[str, Any] = {
        "camera_frames": camera_frames,
        "frames_written": outcome.frames_written,
        "errors": list(outcome.errors),
    }
    tiffs = [p for p in outcome.data_files if p.suffix.lower() in (".tif", ".tiff")]
    if len(tiffs) != 1:
        res["errors"].append(f"expected one TIFF, got {outcome.data_files}")
        return res
    with tifffile.TiffFile(tiffs[0]) as tf:
        res["tiff_pages"] = len(tf.pages)
    rec = open_recording(tiffs[0])
    res["sidecar_frames"] = rec.frames
    t = np.asarray(rec.timestamps_s, dtype=float)
    if t.size > 1 and np.isfinite(t).all() and t[-1] > t[0]:
        res["acq_s"] = float(t[-1] - t[0])
        res["acq_fps"] = float((t.size - 1) / (t[-1] - t[0]))
        gaps = np.diff(t) * 1000
        res["frame_gap_ms"] = _percentiles(gaps.tolist())
    lost = bpe = 0
    for entry in _manifest_files(outcome.manifest):
        lost += int(entry.get("frames_lost") or 0)
        bpe += int(entry.get("backpressure_events") or 0)
    res["writer_frames_lost"] = lost
    res["backpressure_events"] = bpe
    res["frames_lost"] = camera_frames - min(res["tiff_pages"], res["sidecar_frames"])
    return res


def _manifest_files(manifest: Any) -> Iterator[dict[str, Any]]:
    """Every writer entry (dicts with a 'frames_lost' key) anywhere in the manifest."""
    if isinstance(manifest, dict):
        if "frames_lost" in manifest and "path" in manifest:
            yield manifest
            return
        for value in manifest.values():
            yield from _manifest_files(value)
    elif isinstance(manifest, list):
        for value in manifest:
            yield from _manifest_files(value)


class _RssSampler:
    """Max RSS and writer-queue fill every ``RSS_EVERY_S`` on a thread (headless)."""

    def __init__(self, session: Any) -> None:
        self.max = _rss()
        self.queue_max = 0.0
        self._session = session
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(RSS_EVERY_S):
            self.max = max(self.max, _rss())
            self.queue_max = max(self.queue_max, _queue_fill(self._session))

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.max = max(self.max, _rss())


# --------------------------------------------------------------------------- children
def child_headless(size: int, frames: int, out: Path) -> dict[str, Any]:
    from mesofield_napari.devices.sim_camera import create_sim_core, sim_camera
    from mesofield_napari.models.recorder import RecorderSettings, RecordingSession

    core = create_sim_core((size, size), exposure_ms=0)
    cam = sim_camera(core)
    assert cam is not None
    settings = RecorderSettings(root=os.fspath(out), frames=frames, writers="tiff")
    session = RecordingSession(core, settings)
    gc.collect()
    rss0 = _rss()
    with _RssSampler(session) as rss:
        t0 = time.perf_counter()
        session.start()
        if not session.wait(CHILD_TIMEOUT_S):
            session.shutdown()
            raise RuntimeError("headless run did not finish")
        wall = time.perf_counter() - t0
    res = inspect_run(session.outcomes[-1], cam._frame_index)
    res.update(
        wall_s=wall,
        rss_before=rss0,
        rss_growth=rss.max - rss0,
        queue_fill_max=rss.queue_max,
        peak_rss=_peak_rss(),
        qt_imported=any(
            m.split(".")[0] in ("PyQt6", "PyQt5", "PySide6") for m in sys.modules
        ),
        signals=type(core.mda.events).__module__,
    )
    session.shutdown()
    core.unloadAllDevices()
    return res


def _icons_offline() -> None:
    """Icon downloads fail at once (as in tests/conftest.py): no DNS waits."""
    try:
        import pyconify.api as api
        import requests
    except ImportError:
        return

    class _Offline(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise requests.ConnectionError("benchmark: no icon downloads")

    api._session = _Offline


def roi_rectangles(size: int, n: int) -> list[list[list[float]]]:
    """``n`` squares spread over a ``size``² frame: a grid of cells, one centred
    square of half the cell's side in each (world = full-resolution pixels)."""
    import math

    g = math.ceil(math.sqrt(n))
    cell = size / g
    side = cell / 2
    rects = []
    for i in range(n):
        r, c = divmod(i, g)
        top, left = r * cell + cell / 4, c * cell + cell / 4
        rects.append([[top, left], [top + side - 1, left + side - 1]])
    return rects


def _trace_csv_rows(run_dir: Path) -> dict[str, int]:
    """Data rows of each ROI's mean-trace CSV in the run's processed folder."""
    from mesofield_napari.live.saving import processed_dir

    rows = {}
    for csv in sorted(processed_dir(run_dir).glob("*-trace.csv")):
        if csv.name.endswith("-dff-trace.csv"):
            continue
        with open(csv, encoding="utf-8") as fh:
            rows[csv.name] = sum(1 for _ in fh) - 1  # header
    return rows


def child_gui(
    size: int, frames: int, out: Path, rois: int = 0, plot: bool = True
) -> dict[str, Any]:
    import napari
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QApplication

    from mesofield_napari._widgets.recorder import SETTINGS_ENV
    from mesofield_napari.app import build_window
    from mesofield_napari.devices.sim_camera import create_sim_core, sim_camera

    os.environ[SETTINGS_ENV] = os.fspath(out / "recorder-settings.ini")
    _icons_offline()
    viewer = napari.Viewer(title="bench", show=True)
    viewer.window.resize(1500, 950)
    core = create_sim_core((size, size), exposure_ms=0)  # after the QApplication
    cam = sim_camera(core)
    assert cam is not None
    recorder, main_window = build_window(viewer, core)
    if main_window is None:
        raise RuntimeError("napari-micromanager is not installed")
    runs = out / "runs"
    recorder.root_edit.setText(os.fspath(runs))
    recorder.writers_combo.setCurrentIndex(recorder.writers_combo.findData("tiff"))
    recorder.stop_combo.setCurrentIndex(recorder.stop_combo.findData("frames"))
    recorder.frames_spin.setValue(frames)
    recorder.follow_check.setChecked(False)
    panel = recorder.live_traces_panel
    if rois:
        shapes = viewer.add_shapes(
            roi_rectangles(size, rois), shape_type="rectangle", name="bench-rois"
        )
        panel.layer_combo.setCurrentIndex(panel.layer_combo.findText(shapes.name))
        if panel.roi_layer() is not shapes:
            raise RuntimeError("the live traces panel did not take the ROI layer")
        panel.enable_check.setChecked(True)
        panel.dff_check.setChecked(True)
        if not plot:  # diagnostic: traces computed and saved, never redrawn
            panel._plot_timer.timeout.disconnect(panel.refresh)
    else:
        panel.enable_check.setChecked(False)

    app = QApplication.instance()
    assert app is not None
    state: dict[str, Any] = {
        "phase": "settle",
        "ticks_idle": [],
        "ticks_run": [],
        "live": [],  # (t, live_updates) samples during the run
        "rss_max": 0,
        "rss_last": 0.0,
        "queue_max": 0.0,
    }

    def tick() -> None:
        now = time.perf_counter()
        phase = state["phase"]
        if phase == "idle":
            state["ticks_idle"].append(now)
        elif phase == "run":
            state["ticks_run"].append(now)
            state["live"].append((now, recorder.live_updates))
            if now - state["rss_last"] >= RSS_EVERY_S:
                state["rss_last"] = now
                state["rss_max"] = max(state["rss_max"], _rss())
                state["queue_max"] = max(
                    state["queue_max"], _queue_fill(state.get("session"))
                )

    probe = QTimer()
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.setInterval(PROBE_MS)
    probe.timeout.connect(tick)

    def start_idle() -> None:
        state["phase"] = "idle"
        QTimer.singleShot(int(IDLE_PROBE_S * 1000), start_run)

    def start_run() -> None:
        problems = recorder.problems()
        if problems:
            state["error"] = "; ".join(problems)
            app.quit()
            return
        gc.collect()
        state["rss_before"] = state["rss_max"] = _rss()
        state["live_before"] = recorder.live_updates
        state["phase"] = "run"
        state["t_click"] = time.perf_counter()
        recorder.record_button.click()
        state["session"] = recorder.session
        if recorder.session is None:
            state["error"] = recorder.status_label.text()
            app.quit()

    def finished(outcome: Any) -> None:
        state["t_done"] = time.perf_counter()
        state["phase"] = "done"
        state["outcome"] = outcome
        QTimer.singleShot(0, app.quit)

    def give_up() -> None:
        state["error"] = f"no result after {CHILD_TIMEOUT_S} s"
        recorder.shutdown()
        app.quit()

    recorder.finished.connect(finished)
    probe.start()
    QTimer.singleShot(2000, start_idle)  # let the window and docks settle first
    QTimer.singleShot(CHILD_TIMEOUT_S * 1000, give_up)
    app.exec()
    probe.stop()
    if "error" in state:
        raise RuntimeError(state["error"])

    outcome = state["outcome"]
    res = inspect_run(outcome, cam._frame_index)
    wall = state["t_done"] - state["t_click"]
    late = [
        (b - a) * 1000 - PROBE_MS
        for a, b in zip(state["ticks_run"], state["ticks_run"][1:], strict=False)
    ]
    late_idle = [
        (b - a) * 1000 - PROBE_MS
        for a, b in zip(state["ticks_idle"], state["ticks_idle"][1:], strict=False)
    ]
    # live-layer rate: updates between the first and the last frame (the sidecar's
    # frame clock spans that time) and the most updates in any 1-s window
    samples = state["live"]
    updates = recorder.live_updates - state["live_before"]
    peak = 0
    j = 0
    for i in range(len(samples)):
        while samples[i][0] - samples[j][0] > 1.0:
            j += 1
        peak = max(peak, samples[i][1] - samples[j][1])
    res.update(
        wall_s=wall,
        latency_ms=_percentiles(late),
        latency_idle_ms=_percentiles(late_idle),
        probe_ticks=len(state["ticks_run"]),
        live_updates=updates,
        live_hz=updates / res["acq_s"] if res.get("acq_s") else float("nan"),
        live_peak_1s=peak,
        rss_before=state["rss_before"],
        rss_growth=state["rss_max"] - state["rss_before"],
        queue_fill_max=state["queue_max"],
        peak_rss=_peak_rss(),
        signals=type(core.mda.events).__module__,
    )
    model = panel.model
    if rois and model is not None:
        res["traces"] = {
            "rois": len(model.rois()),
            "frames_offered": model.frames_offered,
            "samples_computed": model.samples_computed,
            "samples_skipped": model.samples_skipped,
            "errors": list(model.errors),
            "plot_updates": panel.plot_updates,
            "csv_rows": _trace_csv_rows(outcome.run_dir),
        }
    elif rois:
        res["errors"].append("live traces were not running")
    with contextlib.suppress(Exception):
        viewer.close()
    return res


# --------------------------------------------------------------------------- parent
def _child_cmd(
    case: str, args: argparse.Namespace, out: Path, result: Path
) -> list[str]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        case,
        "--frames",
        str(args.frames),
        "--size",
        str(args.size),
        "--child-out",
        os.fspath(out),
        "--child-result",
        os.fspath(result),
    ]
    if case == GUI_ROIS:
        cmd[3] = GUI
        cmd += ["--child-rois", str(args.live_rois)]
        if args.live_no_plot:
            cmd.append("--live-no-plot")
    if case in (GUI, GUI_ROIS) and not os.environ.get("DISPLAY"):
        if shutil.which("xvfb-run") is None:
            raise SystemExit("no $DISPLAY and no xvfb-run: cannot run the GUI case")
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", *cmd]
    return cmd


def run_child(case: str, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=f"{case}-", dir=scratch))
    result = out / "result.json"
    os.sync()
    try:
        proc = subprocess.run(
            _child_cmd(case, args, out, result),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S + 120,
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


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


def _fmt_reps(values: Sequence[float], fmt: str) -> str:
    return ", ".join(format(v, fmt) for v in values)


def summarize(reps: list[dict[str, dict[str, Any]]], case: str) -> dict[str, Any]:
    runs = [r[case] for r in reps]
    s: dict[str, Any] = {
        "runs": runs,
        "acq_fps": _median([r.get("acq_fps", float("nan")) for r in runs]),
        "wall_s": _median([r["wall_s"] for r in runs]),
        "frames_lost_max": max(r["frames_lost"] for r in runs),
        "writer_lost_max": max(r["writer_frames_lost"] for r in runs),
        "bpe": _median([r["backpressure_events"] for r in runs]),
        "gap_p99": _median(
            [r["frame_gap_ms"]["p99"] for r in runs if "frame_gap_ms" in r]
        ),
        "gap_max": max(
            (r["frame_gap_ms"]["max"] for r in runs if "frame_gap_ms" in r),
            default=float("nan"),
        ),
        "peak_rss": _median([r["peak_rss"] for r in runs]),
        "rss_growth": _median([r["rss_growth"] for r in runs]),
        "queue_max": max(r["queue_fill_max"] for r in runs),
        "errors": sorted({e for r in runs for e in r["errors"]}),
    }
    if case in (GUI, GUI_ROIS):
        s["lat_p50"] = _median([r["latency_ms"]["p50"] for r in runs])
        s["lat_p99"] = _median([r["latency_ms"]["p99"] for r in runs])
        s["lat_p99_worst"] = max(r["latency_ms"]["p99"] for r in runs)
        s["lat_max"] = max(r["latency_ms"]["max"] for r in runs)
        s["idle_p99"] = _median([r["latency_idle_ms"]["p99"] for r in runs])
        s["live_hz"] = _median([r["live_hz"] for r in runs])
        s["live_peak"] = max(r["live_peak_1s"] for r in runs)
    return s


def _counts(r: dict[str, Any]) -> str:
    return f"{r['camera_frames']} / {r.get('sidecar_frames', '?')} / {r.get('tiff_pages', '?')}"


def machine_line(scratch: Path) -> str:
    import numpy as np

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = ", ".join(
        f"{pkg} {version(pkg)}"
        for pkg in (
            "napari",
            "napari-micromanager",
            "pymmcore-plus",
            "PyQt6",
            "tifffile",
        )
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
) -> tuple[str, bool]:
    render = markdown_table if args.markdown else plain_table
    gui, head = summarize(reps, GUI), summarize(reps, HEADLESS)
    ratios = [
        r[GUI].get("acq_fps", float("nan")) / r[HEADLESS].get("acq_fps", float("nan"))
        for r in reps
    ]
    ratio = _median(ratios)
    header = [
        "case",
        "acquisition fps",
        "wall s",
        "frames camera / sidecar / TIFF",
        "lost",
        "frame gap p99 / max ms",
        "event-loop lateness p50 / p99 / max ms",
        "live layer Hz (peak 1 s)",
        "peak RSS MiB (growth)",
    ]
    rows = []
    for case, s in ((GUI, gui), (HEADLESS, head)):
        rows.append(
            [
                LABELS[case],
                f"{s['acq_fps']:.1f} ({_fmt_reps([r.get('acq_fps', float('nan')) for r in s['runs']], '.1f')})",
                f"{s['wall_s']:.1f}",
                "; ".join(_counts(r) for r in s["runs"]),
                str(s["frames_lost_max"]),
                f"{s['gap_p99']:.1f} / {s['gap_max']:.0f}",
                (
                    f"{s['lat_p50']:.1f} / {s['lat_p99']:.1f} / {s['lat_max']:.0f}"
                    f" (idle p99 {s['idle_p99']:.1f})"
                    if case == GUI
                    else "—"
                ),
                f"{s['live_hz']:.1f} ({s['live_peak']})" if case == GUI else "—",
                f"{_mib(s['peak_rss'])} (+{_mib(s['rss_growth'])})",
            ]
        )
    lost_total = gui["frames_lost_max"] + head["frames_lost_max"]
    enough = all(
        r[c]["camera_frames"] >= MIN_FRAMES for r in reps for c in (GUI, HEADLESS)
    )
    no_errors = not gui["errors"] and not head["errors"]
    checks = [
        (
            "zero frames lost (GUI and headless, every repetition)",
            f"max lost GUI {gui['frames_lost_max']}, headless {head['frames_lost_max']}"
            f" (writer-reported: {gui['writer_lost_max']}, {head['writer_lost_max']})",
            lost_total == 0 and no_errors,
        ),
        (
            f"GUI event-loop latency p99 < {TARGET_LATENCY_P99_MS:g} ms",
            f"{gui['lat_p99']:.1f} ms (reps: "
            f"{_fmt_reps([r['latency_ms']['p99'] for r in gui['runs']], '.1f')}; "
            f"max single stall {gui['lat_max']:.0f} ms)",
            gui["lat_p99"] < TARGET_LATENCY_P99_MS,
        ),
        (
            f"live layer ≤ {TARGET_LIVE_HZ:g} Hz",
            f"{gui['live_hz']:.1f} Hz mean (reps: "
            f"{_fmt_reps([r['live_hz'] for r in gui['runs']], '.1f')}); "
            f"peak {gui['live_peak']} updates in 1 s",
            gui["live_hz"] <= TARGET_LIVE_HZ and gui["live_peak"] <= TARGET_LIVE_HZ + 1,
        ),
        (
            f"GUI acquisition ≥ {TARGET_RATIO}× headless",
            f"{ratio:.2f}× (reps: {_fmt_reps(ratios, '.2f')})",
            ratio >= TARGET_RATIO,
        ),
        (
            f"≥ {MIN_FRAMES} frames per run",
            f"{min(r[c]['camera_frames'] for r in reps for c in (GUI, HEADLESS))}",
            enough,
        ),
    ]
    parts = [
        machine_line(scratch),
        f"{args.size}² uint16 (12-bit) simulated camera at 0 ms exposure (its top rate), "
        f"{args.frames} frames per run, OME-TIFF writer; {len(reps)} repetitions, each "
        "case in a fresh process, GUI/headless order alternating; medians (per-rep "
        "values in brackets); ratio = GUI / headless acquisition fps within each "
        "repetition. acquisition fps from the sidecar frame clock (first to last "
        "frame); wall = Record click until files are final. Lateness = 10 ms Qt "
        "timer interval - 10 ms over the whole run; live layer Hz = updates / "
        "acquisition time, peak = most updates in any 1-s window. "
        f"1-min load average at start / end: {load[0]:.1f} / {load[1]:.1f}.",
        render(header, rows),
        render(
            ["target", "measured", "result"],
            [[t, m, "PASS" if ok else "MISS"] for t, m, ok in checks],
        ),
    ]
    extra = []
    for case, s in ((GUI, gui), (HEADLESS, head)):
        sig = {r["signals"] for r in s["runs"]}
        extra.append(
            f"{case}: signals {', '.join(sorted(sig))}; back-pressure events (median) "
            f"{s['bpe']:.0f}; fullest writer queue {s['queue_max']:.0%} of 512 MiB"
            + (
                f"; Qt imported: {any(r['qt_imported'] for r in s['runs'])}"
                if case == HEADLESS
                else ""
            )
        )
        extra += [f"{case} ERROR: {e}" for e in s["errors"]]
    parts.append("\n".join(f"- {line}" for line in extra))
    return "\n\n".join(parts), all(ok for _, _, ok in checks)


def _traces_cell(r: dict[str, Any]) -> str:
    t = r.get("traces")
    if t is None:
        return "—"
    return f"{t['samples_computed']}/{t['frames_offered']}"


def report_live(
    reps: list[dict[str, dict[str, Any]]],
    args: argparse.Namespace,
    scratch: Path,
    load: tuple[float, float],
) -> tuple[str, bool]:
    """The ``--live-rois`` report: GUI with live traces vs the same GUI without."""
    render = markdown_table if args.markdown else plain_table
    off, on = summarize(reps, GUI), summarize(reps, GUI_ROIS)
    ratios = [
        r[GUI_ROIS].get("acq_fps", float("nan")) / r[GUI].get("acq_fps", float("nan"))
        for r in reps
    ]
    ratio = _median(ratios)
    header = [
        "case",
        "acquisition fps",
        "wall s",
        "frames camera / sidecar / TIFF",
        "lost",
        "event-loop lateness p50 / p99 / max ms",
        "live layer Hz",
        "trace samples / frames offered",
        "skipped",
        "trace CSV rows per ROI",
        "plot refreshes",
        "peak RSS MiB (growth)",
    ]
    rows = []
    for case, s in ((GUI, off), (GUI_ROIS, on)):
        runs = s["runs"]
        has = case == GUI_ROIS
        rows.append(
            [
                LABELS[case]
                + (
                    f" ({args.live_rois} ROIs, ΔF/F"
                    + (", plot never redrawn" if args.live_no_plot else "")
                    + ")"
                    if has
                    else " (off)"
                ),
                f"{s['acq_fps']:.1f} ({_fmt_reps([r.get('acq_fps', float('nan')) for r in runs], '.1f')})",
                f"{s['wall_s']:.1f}",
                "; ".join(_counts(r) for r in runs),
                str(s["frames_lost_max"]),
                f"{s['lat_p50']:.1f} / {s['lat_p99']:.1f} / {s['lat_max']:.0f}",
                f"{s['live_hz']:.1f}",
                "; ".join(_traces_cell(r) for r in runs) if has else "—",
                "; ".join(
                    str(r["traces"]["samples_skipped"]) for r in runs if "traces" in r
                )
                if has
                else "—",
                "; ".join(
                    "/".join(str(n) for n in r["traces"]["csv_rows"].values())
                    for r in runs
                    if "traces" in r
                )
                if has
                else "—",
                "; ".join(
                    str(r["traces"]["plot_updates"]) for r in runs if "traces" in r
                )
                if has
                else "—",
                f"{_mib(s['peak_rss'])} (+{_mib(s['rss_growth'])})",
            ]
        )
    traced = [r[GUI_ROIS].get("traces") for r in reps]
    complete = all(
        t is not None
        and t["rois"] == args.live_rois
        and t["frames_offered"] == r[GUI_ROIS]["camera_frames"]
        and t["samples_computed"] + t["samples_skipped"] == t["frames_offered"]
        and len(t["csv_rows"]) == args.live_rois
        and all(n == t["samples_computed"] for n in t["csv_rows"].values())
        and not t["errors"]
        for t, r in zip(traced, reps, strict=True)
    )
    fractions = [
        t["samples_computed"] / t["frames_offered"]
        for t in traced
        if t is not None and t["frames_offered"]
    ]
    no_errors = not off["errors"] and not on["errors"]
    checks = [
        (
            "zero frames lost (with and without traces, every repetition)",
            f"max lost without {off['frames_lost_max']}, with {on['frames_lost_max']}"
            f" (writer-reported: {off['writer_lost_max']}, {on['writer_lost_max']})",
            off["frames_lost_max"] + on["frames_lost_max"] == 0 and no_errors,
        ),
        (
            f"acquisition fps with traces ≥ {TARGET_TRACES_RATIO}× without",
            f"{ratio:.2f}× (reps: {_fmt_reps(ratios, '.2f')})",
            ratio >= TARGET_TRACES_RATIO,
        ),
        (
            "every frame offered to the traces; computed + skipped = offered; "
            "CSV rows = samples computed; no trace errors",
            f"samples computed / frames: {_median(fractions):.1%} median (reps: "
            f"{_fmt_reps([100 * f for f in fractions], '.1f')} %)",
            complete,
        ),
    ]
    parts = [
        machine_line(scratch),
        f"{args.size}² uint16 (12-bit) simulated camera at 0 ms exposure (its top rate), "
        f"{args.frames} frames per run, OME-TIFF writer; {len(reps)} repetitions, both "
        "cases in the GUI (napari + napari-micromanager, live layer on), each in a fresh "
        "process, order alternating; medians (per-rep values in brackets); ratio = "
        "acquisition fps with traces / without within each repetition. With traces: "
        f"{args.live_rois} rectangles on a Shapes layer as the Live traces panel's ROIs, "
        "ΔF/F on (30 s trailing window, 10th percentile); a sample = every ROI's mean "
        "(+ ΔF/F) of one frame, computed on the traces' worker thread from a one-slot "
        "drop-oldest mailbox, so skipped samples never cost written frames. "
        f"1-min load average at start / end: {load[0]:.1f} / {load[1]:.1f}.",
        render(header, rows),
        render(
            ["target", "measured", "result"],
            [[t, m, "PASS" if ok else "MISS"] for t, m, ok in checks],
        ),
    ]
    extra = []
    for case, s in ((GUI, off), (GUI_ROIS, on)):
        extra.append(
            f"{case}: back-pressure events (median) {s['bpe']:.0f}; fullest writer "
            f"queue {s['queue_max']:.0%} of 512 MiB; frame gap p99 / max "
            f"{s['gap_p99']:.1f} / {s['gap_max']:.0f} ms"
        )
        extra += [f"{case} ERROR: {e}" for e in s["errors"]]
    for t in traced:
        if t is not None:
            extra += [f"{GUI_ROIS} trace error: {e}" for e in t["errors"]]
    parts.append("\n".join(f"- {line}" for line in extra))
    return "\n\n".join(parts), all(ok for _, _, ok in checks)


# --------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out-dir", help="parent of the scratch folder (default /tmp)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--results", help="also write the report to this file")
    parser.add_argument(
        "--live-rois",
        type=int,
        default=0,
        metavar="N",
        help="compare the GUI with N live-trace ROIs against the GUI without",
    )
    parser.add_argument(
        "--live-no-plot",
        action="store_true",
        help="diagnostic: with --live-rois, never redraw the traces plot",
    )
    parser.add_argument("--child-rois", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=(GUI, HEADLESS), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reps < 1 or args.frames < 2 or args.size < 8 or args.live_rois < 0:
        parser.error("--reps >= 1, --frames >= 2, --size >= 8 and --live-rois >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        if args.child == GUI:
            res = child_gui(
                args.size,
                args.frames,
                Path(args.child_out),
                args.child_rois,
                plot=not args.live_no_plot,
            )
        else:
            res = child_headless(args.size, args.frames, Path(args.child_out))
        Path(args.child_result).write_text(json.dumps(res))
        # The measurement is done and saved. Skip interpreter teardown: the headless
        # child aborts there now and then ("FATAL: exception not rethrown", after
        # every Python thread has ended -- C++ teardown of the core), which says
        # nothing about the recording.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    base = Path(args.out_dir) if args.out_dir else Path("/tmp")
    base.mkdir(parents=True, exist_ok=True)
    need = args.frames * args.size * args.size * 2
    free = shutil.disk_usage(base).free
    if free < 1.5 * need:
        raise SystemExit(
            f"{base}: {free / 2**30:.1f} GiB free, a run needs {need / 2**30:.1f}"
        )
    scratch = Path(tempfile.mkdtemp(prefix="bench-gui-rec-", dir=base))
    load_start = os.getloadavg()[0]
    reps: list[dict[str, dict[str, Any]]] = []
    other = GUI_ROIS if args.live_rois else HEADLESS
    try:
        for rep in range(args.reps):
            order = (GUI, other) if rep % 2 == 0 else (other, GUI)
            results: dict[str, dict[str, Any]] = {}
            for case in order:
                r = run_child(case, args, scratch)
                results[case] = r
                extra = ""
                if "traces" in r:
                    t = r["traces"]
                    extra += (
                        f"  traces {t['samples_computed']}/{t['frames_offered']}"
                        f" skipped {t['samples_skipped']}"
                    )
                if case in (GUI, GUI_ROIS):
                    extra += (
                        f"  lateness p99 {r['latency_ms']['p99']:.1f} ms max "
                        f"{r['latency_ms']['max']:.0f} ms  live {r['live_hz']:.1f} Hz"
                    )
                log(
                    f"rep {rep + 1}/{args.reps} {case:<8} {r.get('acq_fps', float('nan')):6.1f} fps"
                    f"  wall {r['wall_s']:5.1f} s  frames {_counts(r)}  lost "
                    f"{r['frames_lost']}  peak RSS {_mib(r['peak_rss'])} MiB{extra}"
                )
            reps.append(results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    make = report_live if args.live_rois else report
    text, ok = make(reps, args, scratch, (load_start, os.getloadavg()[0]))
    print(text)
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
