"""The recorder's experiment mode in a real napari viewer (Xvfb).

Real parts throughout: the example experiment (simulated widefield camera on its own
UniMMCore, simulated pupil camera to MP4, development-mode wheel), the real run, the
files read back with tifffile / OpenCV, and the run loaded by mesokit-schema.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
import tifffile
from mesokit_schema import iter_sessions

from _helpers import accept_console_pushes
from mesofield_napari._widgets import experiment as experiment_mod
from mesofield_napari._widgets.experiment import ExperimentPanel
from mesofield_napari._widgets.recorder import RecorderWidget
from mesofield_napari.data import open_recording

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "experiment"
FINISH_MS = 120_000


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    """Never touch the user's real settings."""
    monkeypatch.setenv(experiment_mod.SETTINGS_ENV, str(tmp_path / "settings.ini"))


@pytest.fixture
def rig(tmp_path) -> Path:
    """The example experiment, copied, with a short run and a small widefield camera."""
    target = tmp_path / "rig"
    shutil.copytree(EXAMPLE, target)
    hw = (target / "hardware.yaml").read_text()
    hw = hw.replace("width: 512", "width: 96").replace("height: 512", "height: 64")
    hw = hw.replace("fps: 50", "fps: 20")
    (target / "hardware.yaml").write_text(hw)
    cfg = json.loads((target / "experiment.json").read_text())
    cfg["Configuration"]["duration"] = 1.5
    cfg["Subjects"]["M043"] = {"session": "3", "task": "pupil"}
    (target / "experiment.json").write_text(json.dumps(cfg))
    return target


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def docked_panel(viewer) -> ExperimentPanel:
    """The panel docked in ``viewer`` (closing the viewer stops any run in it)."""
    p = ExperimentPanel(viewer)
    viewer.window.add_dock_widget(p, name="Experiment", area="right")
    return p


def rows_by_id(panel: ExperimentPanel) -> dict[str, dict[str, str]]:
    return {row["id"]: row for row in panel.table_rows()}


def test_record_experiment_through_the_panel(viewer, rig, tmp_path, qtbot):
    panel = docked_panel(viewer)
    out = tmp_path / "exp"
    assert panel.load(rig)
    assert panel.subject_combo.currentText() == "M042"
    # no experiment_directory in the JSON: the user chooses (never the files' folder)
    assert panel.output_edit.text() == ""
    panel.select_subject("M043")
    assert (panel.session_edit.text(), panel.task_edit.text()) == ("3", "pupil")
    panel.output_edit.setText(str(out))
    assert panel.duration_spin.value() == 1.5
    assert panel.record_button.isEnabled()
    with qtbot.waitSignal(panel.finished, timeout=FINISH_MS) as blocker:
        panel.record_button.click()
        assert not panel.record_button.isEnabled()
        assert panel.stop_button.isEnabled()
    result = blocker.args[0]
    assert result["ok"], result["errors"]
    assert result["subject"] == "M043" and result["task"] == "pupil"

    # every camera's file reopened through the reader, with its frame count
    assert not any(lyr.metadata.get("mesofield_live") for lyr in viewer.layers)
    sources = {
        Path(lyr.metadata["mesofield"]["source"]).name: lyr for lyr in viewer.layers
    }
    (tiff,) = out.rglob("*_meso.ome.tiff")
    (mp4,) = out.rglob("*_pupil.mp4")
    assert tifffile.imread(tiff).shape == (30, 64, 96)  # 1.5 s x 20 fps
    assert sources[tiff.name].data.shape[:3] == (30, 64, 96)
    cap = cv2.VideoCapture(str(mp4))
    n_mp4 = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert n_mp4 == 45  # 1.5 s x 30 fps
    assert sources[mp4.name].data.shape[0] == 45
    assert panel.live_updates >= 1

    # the device table: every device, frames > 0, none lost
    rows = rows_by_id(panel)
    assert set(rows) == {"mesoscope", "thorcam", "encoder"}
    assert rows["mesoscope"]["frames"] == "30" and rows["thorcam"]["frames"] == "45"
    for row in rows.values():
        assert int(row["frames"]) > 0 and row["lost"] == "0"
        assert row["state"] == "done"

    # the run loads in mesokit-schema, complete
    ((_, manifest),) = list(iter_sessions(out))
    assert manifest.acquisition_complete is True
    assert panel.record_button.isEnabled() and not panel.stop_button.isEnabled()


def test_bad_hardware_yaml_shows_one_line_and_disables_record(viewer, rig):
    panel = docked_panel(viewer)
    (rig / "hardware.yaml").write_text("cameras:\n  - id: cam\n    backend: nikon\n")
    assert not panel.load(rig)
    text = panel.error_label.text()
    assert len(text.splitlines()) == 1
    assert "hardware.yaml" in text and "backend must be one of" in text
    assert not panel.error_label.isHidden()
    assert not panel.record_button.isEnabled()
    assert panel.record() is False


def test_target_and_output_are_remembered(make_napari_viewer, rig, tmp_path, qtbot):
    viewer = make_napari_viewer()
    first = ExperimentPanel(viewer)
    first.load(rig)
    first.output_edit.setText(str(tmp_path / "elsewhere"))
    first._save_settings()
    again = ExperimentPanel(viewer)
    assert again.target_edit.text() == str(rig)
    assert again.output_edit.text() == str(tmp_path / "elsewhere")
    assert again.record_button.isEnabled()


def _long_run(rig: Path) -> None:
    cfg = json.loads((rig / "experiment.json").read_text())
    cfg["Configuration"]["duration"] = 60
    (rig / "experiment.json").write_text(json.dumps(cfg))


def _assert_finalized(out: Path) -> None:
    (tiff,) = out.rglob("*_meso.ome.tiff")
    sidecar = json.loads(Path(f"{tiff}_frame_metadata.json").read_text())
    frames = len(sidecar["p0"])  # the TIFF is preallocated for the planned 1200
    assert 5 <= frames < 1200
    assert open_recording(tiff).frames == frames
    assert tifffile.imread(tiff, key=frames - 1).any()  # the last frame is data
    (mp4,) = out.rglob("*_pupil.mp4")
    cap = cv2.VideoCapture(str(mp4))
    ok, _ = cap.read()
    cap.release()
    assert ok
    ((_, manifest),) = list(iter_sessions(out))
    # stopped before the duration: finalized, but not a complete acquisition
    assert manifest.acquisition_complete is False
    reason = manifest.extra["mesofield_napari"]["interrupted"]
    assert reason.startswith("stopped by the user after ")


def test_stop_mid_run_finalizes(viewer, rig, tmp_path, qtbot):
    panel = docked_panel(viewer)
    _long_run(rig)
    out = tmp_path / "exp"
    panel.load(rig)
    panel.output_edit.setText(str(out))
    panel.record()
    qtbot.waitUntil(
        lambda: int(rows_by_id(panel)["mesoscope"]["frames"]) >= 5, timeout=FINISH_MS
    )
    assert panel.live_layers  # live layers while recording
    with qtbot.waitSignal(panel.finished, timeout=FINISH_MS) as blocker:
        panel.stop_button.click()
    assert blocker.args[0]["errors"] == []
    _assert_finalized(out)


def test_closing_the_dock_mid_run_finalizes(make_napari_viewer, rig, tmp_path, qtbot):
    _long_run(rig)
    out = tmp_path / "exp"
    viewer = make_napari_viewer()
    recorder = RecorderWidget(viewer)
    recorder.set_mode("experiment")
    dock = viewer.window.add_dock_widget(recorder, name="Recorder", area="right")
    panel = recorder.experiment_panel
    assert panel is not None and not panel.isHidden()
    assert recorder.single_panel.isHidden()
    panel.load(rig)
    panel.output_edit.setText(str(out))
    panel.record()
    qtbot.waitUntil(
        lambda: int(rows_by_id(panel)["mesoscope"]["frames"]) >= 5, timeout=FINISH_MS
    )
    viewer.window.remove_dock_widget(dock)
    assert not panel.busy  # the dock's close waited (bounded) for the files
    _assert_finalized(out)


def test_run_hands_newest_frames_and_device_rows_to_a_view(rig, tmp_path):
    """The Qt-free side the panel reads: one-slot newest frames and table rows."""
    from mesofield_napari.experiment import ExperimentRun, load_experiment

    run = ExperimentRun(load_experiment(rig), duration=0.5, out=tmp_path / "exp")
    assert run.latest_frame("mesoscope") is None
    assert [r["state"] for r in run.device_rows()] == ["ready"] * 3
    run.start()
    assert run.wait(60.0)
    count, frame = run.latest_frame("mesoscope")
    assert count == 10 and frame.shape == (64, 96)  # 0.5 s x 20 fps, the last one
    count, frame = run.latest_frame("thorcam")
    assert count == 15 and frame.shape == (240, 320)
    assert run.latest_frame("encoder") is None  # not a camera
    rows = {r["id"]: r for r in run.device_rows()}
    assert rows["mesoscope"]["kind"] == "camera (micromanager) primary"
    assert rows["thorcam"]["kind"] == "camera (opencv)"
    assert rows["encoder"]["kind"] == "encoder (wheel)"
    assert (rows["mesoscope"]["frames"], rows["thorcam"]["frames"]) == (10, 15)
    assert all(r["state"] == "done" and r["lost"] == 0 for r in rows.values())


def test_primary_records_on_napari_micromanagers_core(viewer, rig, tmp_path, qtbot):
    """napari-micromanager drives the simulated camera, the primary's camera: the
    widefield is recorded on that core (its size), whose MDA layer stays off."""
    from mesofield_napari._widgets._micromanager import open_main_window
    from mesofield_napari.devices.sim_camera import create_sim_core

    accept_console_pushes(viewer)
    core = create_sim_core((32, 40), exposure_ms=20.0)  # 50 fps
    win = open_main_window(viewer, core)
    try:
        panel = docked_panel(viewer)
        assert panel.load(rig)
        panel.output_edit.setText(str(tmp_path / "exp"))
        with qtbot.waitSignal(panel.finished, timeout=FINISH_MS) as blocker:
            panel.record_button.click()
        result = blocker.args[0]
        assert result["ok"], result["errors"]
        assert set(panel.lent_cores) == {"mesoscope"}
        (tiff,) = (tmp_path / "exp").rglob("*_meso.ome.tiff")
        # napari-micromanager's camera: 32x40, at its own 50 fps for 1.5 s
        assert tifffile.imread(tiff).shape == (75, 32, 40)
        assert not any(lyr.name.startswith("Exp") for lyr in viewer.layers)
        assert core.getCameraDevice() == "MesoCam"  # still napari-micromanager's
    finally:
        core.mda.cancel()
        win._cleanup()
