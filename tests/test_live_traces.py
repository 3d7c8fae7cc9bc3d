"""Live ROI traces (Qt-free): the model on the simulated camera's frames, a real run
manager, and a real RecordingSession — compared with NumPy and with the batch export."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mesofield_napari.data.batch import mean_trace
from mesofield_napari.data.batch.dff import moving_percentile
from mesofield_napari.data.manager.run_manager import RunManager
from mesofield_napari.data.reader.recording import open_recording
from mesofield_napari.live import DffSettings, LiveTraces, Roi
from mesofield_napari.live.saving import processed_dir
from mesofield_napari.models.recorder import RecorderSettings, RecordingSession

N = 60


def csv_rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


def expected_f0(f: np.ndarray, w: int, p: float) -> np.ndarray:
    """Live (trailing) F0 from the batch's centred moving_percentile: pad left by L."""
    lag = w - 1 - w // 2
    padded = np.concatenate([np.full(lag, f[0]), f])
    return moving_percentile(padded, w, p)[: len(f)]


def reference_dff(f: np.ndarray, computed: np.ndarray, w: int, p: float) -> np.ndarray:
    """The documented live rule, sample by sample: the computed frames among the
    last ``w``, padded with the first computed value up to ``w`` at the start."""
    out = []
    for j, t in enumerate(computed):
        inside = computed[: j + 1]
        vals = f[inside[inside > t - w]]
        pads = max(0, w - (t - computed[0] + 1))
        vals = np.concatenate([np.full(pads, f[computed[0]]), vals])
        rank = len(vals) - 1 if p >= 100 else int(len(vals) * p / 100)
        f0 = np.partition(vals, rank)[rank]
        out.append((f[t] - f0) / (f0 + 1.0))
    return np.array(out)


# ---------------------------------------------------------------- ROIs
def test_drawn_rectangle_maps_to_the_pixel_centres_inside():
    corners = [[10, 20], [10, 40], [30, 40], [30, 20]]
    assert Roi.from_shape("rectangle", corners).rect == (10, 31, 20, 41)
    frac = [[9.6, 19.2], [9.6, 40.7], [30.4, 40.7], [30.4, 19.2]]
    assert Roi.from_shape("rectangle", frac).rect == (10, 31, 20, 41)
    with pytest.raises(ValueError, match="a path has no area"):
        Roi.from_shape("path", corners, source="shape 0")


def test_roi_outside_the_frame_is_rejected_with_its_description(camera):
    live = LiveTraces()
    k = live.add_roi(Roi.rectangle(100, 120, 0, 10))
    live.process(1, camera.frame(0), 0.0)
    assert k not in live.rois()
    (err,) = live.errors
    assert err.startswith("ROI rectangle rows 100:120, cols 0:10 is outside the 48x64")
    assert live.events[-1]["event"] == "rejected"


# ---------------------------------------------------------------- means
def test_means_equal_numpy_over_the_same_pixels(camera):
    live = LiveTraces()
    rect = live.add_roi(Roi.rectangle(5, 30, 10, 50))
    whole = live.add_roi(Roi.whole_frame())
    ell = live.add_roi(
        Roi.from_shape("ellipse", [[10, 8], [10, 40], [40, 40], [40, 8]])
    )
    tri = live.add_roi(Roi.from_shape("polygon", [[0, 0], [0, 30], [30, 0]]))
    rows, cols = np.mgrid[0:48, 0:64]
    ell_mask = ((rows - 25) / 15.0) ** 2 + ((cols - 24) / 16.0) ** 2 <= 1.0
    tri_mask = (rows + cols <= 30) & (rows >= 0) & (cols >= 0)
    for i in range(N):
        live.process(i + 1, camera.frame(i), i / 100.0)
    views = {v.roi: v for v in live.traces()}
    frames = np.stack([camera.frame(i) for i in range(N)]).astype(np.float64)
    np.testing.assert_allclose(
        views[rect].mean, frames[:, 5:30, 10:50].mean(axis=(1, 2))
    )
    np.testing.assert_allclose(views[whole].mean, frames.mean(axis=(1, 2)))
    np.testing.assert_allclose(views[ell].mean, frames[:, ell_mask].mean(axis=1))
    np.testing.assert_allclose(views[tri].mean, frames[:, tri_mask].mean(axis=1))
    np.testing.assert_allclose(views[rect].time_s, np.arange(N) / 100.0)
    assert live.samples_computed == N and live.samples_skipped == 0


# ---------------------------------------------------------------- ΔF/F
@pytest.mark.parametrize(("window_s", "percentile"), [(0.2, 10.0), (0.15, 50.0)])
def test_running_dff_is_the_batch_definition_on_a_trailing_window(
    camera, window_s, percentile
):
    fs = 100.0
    settings = DffSettings(
        camera_offset=100.0, percentile=percentile, window_s=window_s
    )
    live = LiveTraces(dff=settings, fs=fs)
    k = live.add_roi(Roi.rectangle(0, 48, 0, 64))
    for i in range(N):
        live.process(i + 1, camera.frame(i), i / fs)
    (view,) = live.traces()
    assert view.roi == k
    f = np.array([camera.frame(i).mean(dtype=np.float64) for i in range(N)]) - 100.0
    w = settings.window_frames(fs)
    assert w == round(window_s * fs)
    f0 = expected_f0(f, w, percentile)
    np.testing.assert_allclose(view.dff, (f - f0) / (f0 + 1.0), rtol=1e-9, atol=1e-12)
    # where the windows coincide (lag L), live F0 is the batch's centred F0
    lag = w - 1 - w // 2
    centred = moving_percentile(f, w, percentile)
    live_f0 = f - view.dff * (f0 + 1.0)
    np.testing.assert_allclose(live_f0[lag:], centred[: N - lag], rtol=1e-9)


def test_sampling_rate_measured_from_the_first_frame_times(camera):
    live = LiveTraces(dff=DffSettings(window_s=0.1))
    live.add_roi(Roi.whole_frame())
    for i in range(30):
        live.offer(i + 1, camera.frame(i), i * 0.02)
        live.stop()  # one at a time: nothing skipped
    assert live.fs == pytest.approx(50.0)
    (view,) = live.traces()
    assert len(view.dff) == 30 and np.isfinite(view.dff).all()


# ---------------------------------------------------------------- dropping
class SlowSink:
    """A deliberately slow consumer: every sample takes 20 ms."""

    def __init__(self) -> None:
        self.samples: list = []
        self.events: list = []

    def sample(self, s) -> None:
        time.sleep(0.02)
        self.samples.append(s)

    def roi_event(self, event) -> None:
        self.events.append(event)


def test_slow_consumer_skips_samples_and_counts_them(camera):
    sink = SlowSink()
    live = LiveTraces(sink=sink)
    live.add_roi(Roi.rectangle(0, 20, 0, 20))
    frames = [camera.frame(i) for i in range(100)]
    t0 = time.perf_counter()
    for i, fr in enumerate(frames):
        live.offer(i + 1, fr, i / 1000.0)
    offer_s = time.perf_counter() - t0
    assert live.stop(timeout=30)
    assert live.frames_offered == 100
    assert live.samples_computed + live.samples_skipped == 100
    assert live.samples_skipped > 0 and len(sink.samples) == live.samples_computed
    assert offer_s < 100 * 0.02  # the caller never waited for the slow consumer
    assert sink.samples[-1].frame == 100  # the newest frame is the one kept
    for s in sink.samples:  # every computed sample is right for its frame
        expected = frames[s.frame - 1][0:20, 0:20].mean(dtype=np.float64)
        assert s.mean == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- runs
def feed_frames(live: LiveTraces, run: RunManager, camera, first: int, last: int):
    for n in range(first, last + 1):
        meta = {
            "runner_time_ms": 10.0 * (n - 1),
            "camera_metadata": {"TimeReceivedByCore": f"2026-01-01 00:00:{n:02d}"},
        }
        live.feed(run, n, camera.frame(n - 1), meta)
        assert live.stop(timeout=10)  # synchronous: every frame computed


def test_roi_change_mid_run_restarts_its_trace_and_notes_it(camera, tmp_path):
    live = LiveTraces()
    first = live.add_roi(Roi.rectangle(0, 10, 0, 10))
    other = live.add_roi(Roi.whole_frame())
    run = RunManager(tmp_path, "M1", 1, "live").start()
    run.writer_for("mesoscope", "tiff")
    feed_frames(live, run, camera, 1, 10)
    moved = live.replace_roi(first, Roi.rectangle(20, 30, 20, 40))
    feed_frames(live, run, camera, 11, 15)
    live.remove_roi(other)
    feed_frames(live, run, camera, 16, 20)
    live.finish(run)
    run.stop()

    assert moved not in (first, other)
    changed = [e for e in live.events if e["event"] == "changed"]
    assert changed == [
        {
            "event": "changed",
            "roi": moved,
            "after_frame": 10,
            "roi_description": "rectangle rows 20:30, cols 20:40",
            "replaces": first,
            "previous": "rectangle rows 0:10, cols 0:10",
        }
    ]
    notes = run.notes_path.read_text()
    assert (
        f"live traces: roi{moved} changed after frame 10 (replaces roi{first})" in notes
    )
    assert f"live traces: roi{other} removed after frame 15" in notes

    out = processed_dir(run.run_dir)
    assert out == tmp_path / "processed" / "sub-M1" / "ses-01"
    (tiff,) = run.writers[0].files or [None]
    stem = tiff.name.removesuffix(".ome.tiff") if tiff else None
    old = csv_rows(out / f"{stem}_meso-live-roi{first}-trace.csv")
    new = csv_rows(out / f"{stem}_meso-live-roi{moved}-trace.csv")
    whole = csv_rows(out / f"{stem}_meso-live-roi{other}-trace.csv")
    assert list(old.columns) == ["Slice", "Mean", "time_s"]
    assert old["Slice"].tolist() == list(range(1, 11))
    assert new["Slice"].tolist() == list(range(11, 21))
    assert whole["Slice"].tolist() == list(range(1, 16))
    np.testing.assert_allclose(
        new["Mean"], [camera.frame(n - 1)[20:30, 20:40].mean() for n in range(11, 21)]
    )
    np.testing.assert_allclose(new["time_s"], [0.01 * (n - 1) for n in range(11, 21)])
    info = json.loads((out / f"{stem}_meso-live-rois.json").read_text())
    by_id = {r["roi"]: r for r in info["rois"]}
    assert by_id[first]["last_frame"] == 10 and by_id[moved]["first_frame"] == 11
    assert by_id[moved]["geometry"]["rect_y0_y1_x0_x1"] == [20, 30, 20, 40]
    assert not list(out.glob(".*"))  # no temp file left behind


def test_session_traces_agree_with_the_batch_export(sim_core, camera, tmp_path):
    sim_core.setExposure(5.0)  # a camera rate (0 ms would outrun any consumer)
    settings = RecorderSettings(root=str(tmp_path), frames=80, task="live")
    session = RecordingSession(sim_core, settings)
    dff = DffSettings(camera_offset=100.0, percentile=20.0, window_s=0.1)
    live = session.live_traces = LiveTraces(dff=dff, fs=100.0)
    k = live.add_roi(Roi.rectangle(4, 40, 8, 60))
    session.start()
    assert session.wait(60)
    (outcome,) = session.outcomes
    assert outcome.ok and outcome.frames_written == 80  # writing never skipped
    assert live.frames_offered == 80
    assert live.samples_computed + live.samples_skipped == 80

    (tiff,) = outcome.data_files
    batch = mean_trace(tiff, roi=(4, 40, 8, 60))
    out = processed_dir(outcome.run_dir)
    assert batch.path.parent == out  # next to the batch traces
    stem = tiff.name.removesuffix(".ome.tiff")
    mean = csv_rows(out / f"{stem}_meso-live-roi{k}-trace.csv")
    dffs = csv_rows(out / f"{stem}_meso-live-roi{k}-dff-trace.csv")
    rows = mean["Slice"].to_numpy() - 1
    assert len(rows) == live.samples_computed and (np.diff(rows) > 0).all()
    np.testing.assert_allclose(mean["Mean"], batch.values[rows], rtol=1e-9)
    np.testing.assert_allclose(mean["time_s"], batch.time_s[rows], atol=2e-6)
    f = batch.values - 100.0  # the batch's F of every frame
    np.testing.assert_allclose(
        dffs["Mean"], reference_dff(f, rows, 10, 20.0), rtol=1e-8, atol=1e-12
    )
    if live.samples_skipped == 0:  # then it is the batch's percentile, shifted
        f0 = expected_f0(f, 10, 20.0)
        np.testing.assert_allclose(dffs["Mean"], (f - f0) / (f0 + 1.0), rtol=1e-8)

    queue = pd.read_csv(next(outcome.run_dir.glob("beh/*_dataqueue.csv")))
    rows_q = queue[queue["device_id"] == "traces"]
    assert len(rows_q) == live.samples_computed
    assert rows_q["frame"].astype(int).tolist() == mean["Slice"].tolist()
    np.testing.assert_allclose(rows_q["mean"].astype(float), mean["Mean"], rtol=1e-9)
    manifest = json.loads(next(outcome.run_dir.glob("*_manifest.json")).read_text())
    producers = [p for p in manifest["producers"] if p["device_id"] == "traces"]
    assert sorted(Path(p["output_path"]).name for p in producers) == sorted(
        [f"{stem}_meso-live-roi{k}-trace.csv", f"{stem}_meso-live-roi{k}-dff-trace.csv"]
    )
    assert producers[0]["dataqueue_schema"]["payload_format"] == "dict"
    assert all((outcome.run_dir / p["output_path"]).exists() for p in producers)
    assert open_recording(tiff).frames == 80


def test_offer_from_many_threads_counts_every_frame(camera):
    live = LiveTraces()
    live.add_roi(Roi.whole_frame())
    frame = camera.frame(0)

    def pump(base: int) -> None:
        for i in range(50):
            live.offer(base + i, frame, 0.0)

    threads = [threading.Thread(target=pump, args=(b,)) for b in (1, 1001)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert live.stop(timeout=10)
    assert live.frames_offered == 100
    assert live.samples_computed + live.samples_skipped == 100
