"""Reopened runs in napari: one truth about time, the run in every name, the TIFF on
top, our reader chosen without a dialog (real viewer under Xvfb, real recordings)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mesofield_napari._reader_preference import PLUGIN, prefer_mesofield_reader
from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.data import CV2Writer, open_recording
from mesofield_napari.data.frame_timing import frame_timing
from mesofield_napari.data.manager import RunManager
from mesofield_napari.data.reader.summary import summarize_recording
from mesofield_napari.devices.sim_camera import create_sim_core
from mesofield_napari.models.inspector import inspect_layer, inspect_recording


def test_missing_and_late_frames_are_told_apart():
    t = np.arange(6) * 0.01
    # the clock is regular: only the camera's counter shows 2 missing frames
    timing = frame_timing([0, 1, 2, 5, 6, 7], t)
    assert (timing.missing, timing.late) == (2, 0)
    assert list(timing.missing_after) == [3]
    # a stall with every number there is a late frame, nothing missing
    stalled = np.array([0.0, 0.01, 0.02, 0.05, 0.06, 0.07])
    timing = frame_timing([0, 1, 2, 3, 4, 5], stalled)
    assert (timing.missing, timing.late) == (0, 1) and list(timing.late_frames) == [3]
    # a long interval over missing numbers is missing frames, not a late one
    timing = frame_timing([0, 1, 2, 5, 6, 7], stalled)
    assert (timing.missing, timing.late) == (2, 0)
    # no ImageNumber (direct mode): nothing counts as missing
    timing = frame_timing([], stalled)
    assert (timing.missing, timing.late) == (0, 1)
    assert timing.fps == pytest.approx(5 / 0.07)


def paced_direct_video(path: Path, n: int = 30, stall_at: int = 12) -> Path:
    """A direct-mode video whose frames come every ~10 ms, one after a 120 ms stall."""
    writer = CV2Writer(path, fps=100.0)
    writer.begin(32, 24, is_color=False)
    for i in range(n):
        time.sleep(0.12 if i == stall_at else 0.01)
        writer.add_frame(np.full((24, 32), 10 + i, np.uint8))
    writer.finish({"camera": "pupil"})
    return path


def test_direct_mode_video_has_no_missing_frames_and_one_story(tmp_path):
    path = paced_direct_video(tmp_path / "pupil.mp4")
    summary = summarize_recording(path)
    rec = open_recording(path)
    insp = inspect_recording(rec)
    assert summary["dropped_frames"] == summary["missing_frames"] == 0
    assert summary["late_frames"] >= 1  # the stall (more if the machine stalled)
    assert insp.dropped_frames == 0 and insp.late_frames == summary["late_frames"]
    assert rec.timing.late == summary["late_frames"]
    t = rec.timestamps_s
    measured = (t.size - 1) / (t[-1] - t[0])
    assert summary["fps"] == pytest.approx(measured, rel=1e-3)
    assert measured < 100.0  # the real rate, not the nominal 100 fps


@pytest.fixture
def two_rate_run(tmp_path) -> Path:
    """One run: a 50 Hz TIFF camera and a 25 Hz video of the same camera."""
    core = create_sim_core((24, 32), exposure_ms=20)
    with RunManager(tmp_path, "M042", 1, "widefield") as run:
        tiff = run.writer_for("mesoscope", "tiff", suffix="meso")
        mp4 = run.writer_for("mesoscope", "mp4", suffix="meso", fps=50.0)
        assert record(core, [tiff, mp4], timelapse(10)).ok
    return run.run_dir


def test_reopened_layers_carry_the_run_are_in_seconds_and_the_tiff_is_on_top(
    make_napari_viewer, two_rate_run, tmp_path
):
    viewer = make_napari_viewer()
    prefer_mesofield_reader()
    # the path napari takes for a dropped folder: no plugin given, preferences decide
    layers = viewer.open(two_rate_run, plugin=None)
    assert len(layers) == 2
    stamp = next(two_rate_run.glob("func/*.ome.tiff")).name[:15]
    names = [layer.name for layer in viewer.layers]
    assert names == [f"{stamp} meso (mp4)", f"{stamp} meso (tiff)"]
    top = viewer.layers[-1]
    assert top.name.endswith("(tiff)") and viewer.layers.selection.active is top
    for layer in viewer.layers:
        meta = layer.metadata["mesofield"]
        t = np.asarray(meta["timestamps_s"])
        assert layer.scale[0] == pytest.approx(np.median(np.diff(t)))
        assert meta["fps"] == pytest.approx((t.size - 1) / t[-1])
        insp = inspect_layer(layer)
        rec_insp = inspect_recording(open_recording(meta["source"]))
        assert (insp.dropped_frames, insp.late_frames) == (
            rec_insp.dropped_frames,
            rec_insp.late_frames,
        )


def test_our_reader_is_preferred_and_a_user_choice_kept(make_napari_viewer, tmp_path):
    from napari.plugins.utils import get_preferred_reader
    from napari.settings import get_settings

    make_napari_viewer()
    settings = get_settings()
    settings.plugins.extension2reader = {"*.mp4": "napari"}
    added = prefer_mesofield_reader()
    assert "*.mp4" not in added and "*/ses-*/" in added
    assert settings.plugins.extension2reader["*.mp4"] == "napari"
    session = tmp_path / "data" / "sub-M042" / "ses-01"
    (session / "func").mkdir(parents=True)
    assert get_preferred_reader(session) == PLUGIN
    assert get_preferred_reader(session / "func") == PLUGIN
    assert (
        get_preferred_reader("/x/a_task-w_meso.ome.tiff_frame_metadata.json") == PLUGIN
    )
    assert prefer_mesofield_reader() == []  # once is enough


def decoded_times(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        times = [float(f.time) for f in container.decode(video=0)]
    return np.asarray(times) - times[0]


def sidecar_times(path: Path) -> np.ndarray:
    t = open_recording(path).timestamps_s
    return t - t[0]


def test_direct_mode_mp4_timestamps_are_the_frames_real_times(tmp_path):
    path = paced_direct_video(tmp_path / "pupil.mp4")
    np.testing.assert_allclose(decoded_times(path), sidecar_times(path), atol=1e-4)


def test_mda_mode_mp4_timestamps_are_the_camera_clock_not_the_nominal_fps(tmp_path):
    core = create_sim_core((24, 32), exposure_ms=20)  # ~50 Hz
    with RunManager(tmp_path, "M042", 1, "widefield") as run:
        mp4 = run.writer_for("mesoscope", "mp4", suffix="meso", fps=100.0)
        assert record(core, [mp4], timelapse(12)).ok
    (path,) = run.run_dir.glob("beh/*.mp4")
    decoded, clock = decoded_times(path), sidecar_times(path)
    np.testing.assert_allclose(decoded, clock, atol=1e-4)
    assert decoded[-1] > 11 / 100.0 * 1.2  # not spaced by the nominal 100 fps


def test_manifest_inspect_and_reader_tell_one_story(two_rate_run):
    from mesokit_schema import AcquisitionManifest

    (manifest,) = two_rate_run.glob("*_manifest.json")
    model = AcquisitionManifest.read(manifest)
    producers = [
        p for p in model.producers if p.output_path.endswith((".tiff", ".mp4"))
    ]
    assert len(producers) == 2
    for producer in producers:
        cal = producer.calibration
        summary = summarize_recording(two_rate_run / producer.output_path)
        assert cal["frames_missing"] == summary["missing_frames"]
        assert cal["frames_late"] == summary["late_frames"]
        assert cal["fps_measured"] == pytest.approx(summary["fps"], rel=1e-3)


def test_experiment_device_table_and_inspect_count_the_same_frames(tmp_path):
    import shutil

    from mesofield_napari.experiment import ExperimentRun, load_experiment

    rig = tmp_path / "rig"
    shutil.copytree(
        Path(__file__).resolve().parents[1] / "examples" / "experiment", rig
    )
    hw = (rig / "hardware.yaml").read_text()
    (rig / "hardware.yaml").write_text(
        hw.replace("width: 512", "width: 32").replace("height: 512", "height: 32")
    )
    run = ExperimentRun(load_experiment(rig), out=tmp_path / "EXP", duration=0.5)
    run.start()
    assert run.wait(120)
    rows = {r["id"]: r for r in run.device_rows()}
    files = {f["device_id"]: f for f in run.result()["files"]}
    for cam in ("mesoscope", "thorcam"):
        summary = summarize_recording(files[cam]["path"])
        assert rows[cam]["missing"] == summary["missing_frames"], cam
        assert rows[cam]["lost"] == 0 and rows[cam]["frames"] == summary["frames"]
