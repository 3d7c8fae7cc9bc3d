"""The recorder dock widget in a real napari viewer with a real napari-micromanager.

Everything is real: napari viewer (Xvfb), napari-micromanager's MainWindow on a
UniMMCore with the simulated camera, the MDA runner, files read back from disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import useq

from _helpers import accept_console_pushes, read_json, wait_until
from mesofield_napari._widgets import recorder as recorder_mod
from mesofield_napari._widgets._micromanager import find_main_window, open_main_window
from mesofield_napari._widgets.recorder import RecorderWidget
from mesofield_napari.devices.sim_camera import create_sim_core, sim_camera

SMALL = (48, 64)
FINISH_MS = 60_000


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    """Never touch the user's real recorder settings."""
    monkeypatch.setenv(recorder_mod.SETTINGS_ENV, str(tmp_path / "settings.ini"))


@pytest.fixture
def viewer(make_napari_viewer):
    return accept_console_pushes(make_napari_viewer())


@pytest.fixture
def mm(viewer):
    """napari-micromanager docked on a simulated core (created after the QApp)."""
    core = create_sim_core(SMALL, exposure_ms=1.0)
    win = open_main_window(viewer, core)
    yield core, win
    core.mda.cancel()
    # what napari-micromanager does when its window is destroyed (removes the
    # temporary folders behind its MDA layers), done now rather than at GC time
    win._cleanup()


def make_recorder(viewer, qtbot, root: Path, **fields) -> RecorderWidget:
    rec = RecorderWidget(viewer)
    viewer.window.add_dock_widget(rec, name="Recorder", area="right")
    rec.root_edit.setText(str(root))
    rec.frames_spin.setValue(fields.pop("frames", 30))
    if "writers" in fields:
        rec.writers_combo.setCurrentIndex(rec.writers_combo.findData(fields["writers"]))
    return rec


def run_files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern))


def tiff_stack(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tf:
        return tf.series[0].asarray()


# ---------------------------------------------------------------- record
def test_record_through_widget_on_micromanager_core(viewer, mm, qtbot, tmp_path):
    core, _ = mm
    cam = sim_camera(core)
    rec = make_recorder(viewer, qtbot, tmp_path / "data", frames=40, writers="both")
    assert rec.core is core  # found napari-micromanager's core in this viewer
    assert rec.record_button.isEnabled()
    with qtbot.waitSignal(rec.finished, timeout=FINISH_MS) as blocker:
        rec.record_button.click()
    outcome = blocker.args[0]
    assert outcome.ok and outcome.frames_written == 40

    (tiff,) = run_files(tmp_path / "data", "*.ome.tiff")
    stack = tiff_stack(tiff)
    assert stack.shape == (40, *SMALL)
    np.testing.assert_array_equal(stack[39], cam.frame(39))
    sidecar = read_json(f"{tiff}_frame_metadata.json")
    assert sum(len(v) for v in sidecar.values()) == 40
    (manifest,) = run_files(tmp_path / "data", "*_manifest.json")
    assert read_json(manifest)["acquisition_complete"] is True
    assert len(run_files(tmp_path / "data", "*.mp4")) == 1
    # the output folder is the experiment: mesofield's datakit loads the run as is
    from mesofield.datakit.core import Dataset

    frame, errors = Dataset.from_directory(
        tmp_path / "data", sources=["meso_metadata", "dataqueue", "notes", "timestamps"]
    ).materialize(strict=False, return_errors=True)
    assert (errors["status"] == "ok").all(), errors.to_string()
    row = frame.iloc[0]
    assert len(row[("meso_metadata", "ImageNumber")]) == 40
    (dataqueue,) = run_files(tmp_path / "data", "*_dataqueue.csv")
    ids = dataqueue.read_text().splitlines()[1:]
    assert [line.split(",")[3] for line in ids] == ["mesoscope"] * 40  # one clock

    # the live layer was replaced by the reopened recording (lazy, whole run)
    names = [layer.name for layer in viewer.layers]
    assert not any(n.startswith("Exp") for n in names)  # nmm did not copy our run
    assert not any(layer.metadata.get("mesofield_live") for layer in viewer.layers)
    tiff_layer = next(lyr for lyr in viewer.layers if lyr.name.endswith("(tiff)"))
    assert tiff_layer.metadata["mesofield"]["frames"] == 40
    assert tiff_layer.data.shape == (40, *SMALL)
    assert 1 <= rec.live_updates <= 40
    assert not rec.stop_button.isEnabled() and rec.record_button.isEnabled()


def test_live_layer_updates_in_place_while_recording(viewer, mm, qtbot, tmp_path):
    core, _ = mm
    core.setExposure(5.0)
    rec = make_recorder(viewer, qtbot, tmp_path, frames=4000)
    rec.record_button.click()
    qtbot.waitUntil(lambda: rec.live_updates >= 3, timeout=FINISH_MS)
    live = [lyr for lyr in viewer.layers if lyr.metadata.get("mesofield_live")]
    assert len(live) == 1  # one layer, updated in place
    limits = tuple(live[0].contrast_limits)
    qtbot.waitUntil(lambda: rec.live_updates >= 6, timeout=FINISH_MS)
    assert tuple(live[0].contrast_limits) == limits  # stable contrast
    assert rec.live_updates <= rec.session.status().frames_acquired
    assert "fps" in rec.status_label.text() and "free" in rec.status_label.text()
    with qtbot.waitSignal(rec.finished, timeout=FINISH_MS):
        rec.stop_button.click()
    assert not [lyr for lyr in viewer.layers if lyr.metadata.get("mesofield_live")]


def test_notes_and_stop_mid_run(viewer, mm, qtbot, tmp_path):
    core, _ = mm
    core.setExposure(2.0)
    rec = make_recorder(viewer, qtbot, tmp_path, frames=4000)
    assert not rec.note_button.isEnabled()
    rec.record_button.click()
    qtbot.waitUntil(
        lambda: rec.session.status().frames_acquired > 10, timeout=FINISH_MS
    )
    assert not rec.root_edit.isEnabled() and not rec.frames_spin.isEnabled()
    rec.note_edit.setPlainText("whisker stim, left")
    rec.note_button.click()
    assert rec.note_edit.toPlainText() == ""
    assert "whisker stim, left" in rec.notes_label.text()
    with qtbot.waitSignal(rec.finished, timeout=FINISH_MS) as blocker:
        rec.stop_button.click()
    outcome = blocker.args[0]
    assert 10 < outcome.frames_written < 4000
    assert rec.root_edit.isEnabled()  # editable again for the next run
    notes = next(tmp_path.rglob("*_notes.txt")).read_text()
    assert "whisker stim, left" in notes
    (tiff,) = tmp_path.rglob("*.ome.tiff")
    sidecar = read_json(f"{tiff}_frame_metadata.json")
    assert sum(len(v) for v in sidecar.values()) == outcome.frames_written
    layer = next(lyr for lyr in viewer.layers if lyr.name.endswith("(tiff)"))
    assert layer.data.shape[0] == outcome.frames_written  # trimmed, not allocated


def test_armed_recorder_writes_mdas_from_micromanager(viewer, mm, qtbot, tmp_path):
    core, win = mm
    rec = make_recorder(viewer, qtbot, tmp_path)
    rec.follow_check.setChecked(True)
    rec.record_button.click()
    assert rec.session is not None and rec.session.mode == "armed"
    assert not rec.record_button.isEnabled()

    # start an MDA from napari-micromanager's own MDA widget
    win._show_dock_widget("MDA")
    mda = win._dock_widgets["MDA"].widget()
    mda.setValue(useq.MDASequence(time_plan={"interval": 0, "loops": 12}))
    with qtbot.waitSignal(rec.finished, timeout=FINISH_MS) as blocker:
        mda.run_mda()
    assert blocker.args[0].frames_written == 12
    wait_until(lambda: not core.mda.is_running())
    qtbot.waitUntil(
        lambda: any(lyr.name.startswith("Exp") for lyr in viewer.layers),
        timeout=FINISH_MS,
    )  # napari-micromanager still shows its own MDA layer
    (tiff,) = tmp_path.rglob("*.ome.tiff")
    assert tiff_stack(tiff).shape == (12, *SMALL)
    assert rec.session.mode == "armed"  # stays armed for the next MDA

    rec.stop_button.click()  # disarm
    assert rec.session is None and rec.record_button.isEnabled()
    with qtbot.waitSignal(core.mda.events.sequenceFinished, timeout=FINISH_MS):
        core.run_mda(useq.MDASequence(time_plan={"interval": 0, "loops": 3}))
    assert len(list(tmp_path.rglob("*.ome.tiff"))) == 1  # not recorded


# ---------------------------------------------------------------- finalize
@pytest.mark.parametrize("closing", ["napari", "the dock"])
def test_closing_mid_run_finalizes_files(viewer, mm, qtbot, tmp_path, closing):
    core, _ = mm
    core.setExposure(2.0)
    rec = make_recorder(viewer, qtbot, tmp_path, frames=4000)
    rec.record_button.click()
    qtbot.waitUntil(lambda: rec.session.status().frames_acquired > 5, timeout=FINISH_MS)
    if closing == "napari":
        viewer.close()
    else:
        viewer.window.remove_dock_widget(rec)
    (tiff,) = tmp_path.rglob("*.ome.tiff")
    sidecar = Path(f"{tiff}_frame_metadata.json")
    assert sidecar.exists() and not Path(f"{sidecar}l").exists()
    frames = sum(len(v) for v in read_json(sidecar).values())
    assert frames > 5
    assert tiff_stack(tiff).shape[0] >= frames
    (manifest,) = tmp_path.rglob("*_manifest.json")
    manifest = read_json(manifest)
    assert manifest["acquisition_complete"] is False  # closed before its plan
    reason = manifest["extra"]["mesofield_napari"]["interrupted"]
    assert reason.startswith("the recorder was closed after ")
    assert not core.mda.is_running()


# the simulated camera's acquisition thread dies with the injected error, by design
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_camera_error_mid_run_finalizes_what_was_recorded(
    viewer, qtbot, tmp_path, monkeypatch
):
    core = create_sim_core(SMALL, exposure_ms=1.0)
    cam = sim_camera(core)
    snap = cam.snap

    def failing_snap(buffer):
        if cam._frame_index >= 20:
            raise RuntimeError("camera cable unplugged")
        return snap(buffer)

    monkeypatch.setattr(cam, "snap", failing_snap)
    rec = RecorderWidget(viewer, core=core)
    rec.root_edit.setText(str(tmp_path))
    rec.frames_spin.setValue(200)
    with qtbot.waitSignal(rec.finished, timeout=FINISH_MS) as blocker:
        rec.record_button.click()
    outcome = blocker.args[0]
    assert outcome.frames_written == 20
    (tiff,) = tmp_path.rglob("*.ome.tiff")
    np.testing.assert_array_equal(tiff_stack(tiff)[:20][19], cam.frame(19))
    (manifest,) = tmp_path.rglob("*_manifest.json")
    assert read_json(manifest)["ended_at"]
    assert rec.record_button.isEnabled()  # ready for the next run


# ---------------------------------------------------------------- core & inputs
def test_follows_a_core_swap(viewer, mm, qtbot, tmp_path):
    core, win = mm
    rec = make_recorder(viewer, qtbot, tmp_path, frames=5)
    assert rec.core is core
    other = create_sim_core((32, 40), exposure_ms=1.0)
    win.set_core(other)
    qtbot.waitUntil(lambda: rec._core is other, timeout=5000)
    assert "40×32" in rec.core_label.text()
    with qtbot.waitSignal(rec.finished, timeout=FINISH_MS):
        rec.record_button.click()
    (tiff,) = tmp_path.rglob("*.ome.tiff")
    assert tiff_stack(tiff).shape == (5, 32, 40)


def test_without_micromanager_records_on_its_own_sim_core(viewer, qtbot, tmp_path):
    rec = RecorderWidget(viewer)
    assert find_main_window(viewer.window._qt_window) is None
    assert "simulated camera" in rec.core_label.text()
    rec.root_edit.setText(str(tmp_path))
    rec.frames_spin.setValue(8)
    with qtbot.waitSignal(rec.finished, timeout=FINISH_MS) as blocker:
        rec.record_button.click()
    assert blocker.args[0].frames_written == 8
    (tiff,) = tmp_path.rglob("*.ome.tiff")
    assert tiff_stack(tiff).shape == (8, 512, 512)
    win = rec.open_micromanager()  # docks napari-micromanager on the same core
    assert win.core is rec.core


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("root_edit", "", "choose an output folder"),
        ("subject_edit", "M 42", "invalid subject"),
        ("session_edit", "", "session must not be empty"),
        ("task_edit", "a_b", "invalid task"),
        ("contrast_edit", "bright", "contrast"),
    ],
)
def test_invalid_input_disables_record_and_says_why(
    viewer, qtbot, tmp_path, field, value, reason
):
    rec = RecorderWidget(viewer)
    rec.root_edit.setText(str(tmp_path))
    rec.writers_combo.setCurrentIndex(rec.writers_combo.findData("both"))
    assert rec.record_button.isEnabled()
    getattr(rec, field).setText(value)
    assert not rec.record_button.isEnabled()
    assert reason in rec.problem_label.text()
    assert reason in rec.record_button.toolTip()


def test_output_under_a_file_disables_record(viewer, qtbot, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    rec = RecorderWidget(viewer)
    rec.root_edit.setText(str(blocker / "runs"))
    assert not rec.record_button.isEnabled()
    assert "under a file" in rec.problem_label.text()
    rec.record()  # even if called directly, nothing is created
    assert blocker.read_text() == "keep me"
    assert "cannot record" in rec.status_label.text()


def test_output_root_is_remembered(viewer, qtbot, tmp_path):
    core = create_sim_core(SMALL, exposure_ms=0)
    rec = RecorderWidget(viewer, core=core)
    rec.root_edit.setText(str(tmp_path / "remember-me"))
    rec.subject_edit.setText("M42")
    rec.frames_spin.setValue(2)
    with qtbot.waitSignal(rec.finished, timeout=FINISH_MS):
        rec.record_button.click()
    again = RecorderWidget(viewer, core=core)
    assert again.root_edit.text() == str(tmp_path / "remember-me")
    assert again.subject_edit.text() == "M42"


# ---------------------------------------------------------------- screenshot
def test_screenshot_of_a_recording_is_not_blank(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)  # a hidden viewer's canvas renders black
    viewer.window._qt_viewer.console.push = lambda *a, **k: None
    open_main_window(viewer, create_sim_core(SMALL, exposure_ms=1.0))
    rec = make_recorder(viewer, qtbot, tmp_path / "data", frames=10)
    with qtbot.waitSignal(rec.finished, timeout=FINISH_MS):
        rec.record_button.click()
    layer = next(lyr for lyr in viewer.layers if lyr.name.endswith("(tiff)"))
    viewer.dims.set_current_step(0, 5)
    qtbot.waitUntil(lambda: layer.loaded, timeout=10_000)
    qtbot.wait(200)  # let the canvas draw the reopened frame
    path = tmp_path / "shot.png"
    viewer.screenshot(str(path), canvas_only=True, flash=False)
    img = tifffile.imread(path) if path.suffix == ".tif" else _read_png(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    gray = img[..., :3].astype(float).mean(axis=-1)
    assert gray.std() > 5  # the frame is drawn, not an empty canvas
    assert len(np.unique(gray)) > 20


def _read_png(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_recorder_is_a_plugin_widget_in_file_acquire(viewer, mm, qtbot, tmp_path):
    core, _ = mm
    _, widget = viewer.window.add_plugin_dock_widget("mesofield-napari", "Recorder")
    assert isinstance(widget, RecorderWidget)
    assert widget.core is core
    from napari._app_model import get_app_model

    menu = get_app_model().menus.get_menu("napari/file/acquire")
    commands = {getattr(item, "command", None) for item in menu}
    ids = {getattr(c, "id", "") for c in commands if c is not None}
    assert any(i.startswith("mesofield-napari") for i in ids)


def test_writers_run_on_the_acquisition_thread_with_qt_signals(viewer, qtbot):
    """A core made after the QApplication emits Qt signals; writers must not run
    on the GUI thread (unbounded event queue), so they connect directly."""
    import threading

    from mesofield_napari.data.writer.signals import connect_direct, is_qt_signal

    core = create_sim_core(SMALL, exposure_ms=0)
    assert is_qt_signal(core.mda.events.frameReady)
    threads: list[str] = []
    connect_direct(
        core.mda.events.frameReady,
        lambda *a: threads.append(threading.current_thread().name),
    )
    core.run_mda(useq.MDASequence(time_plan={"interval": 0, "loops": 4})).join(30)
    assert len(threads) == 4
    assert threading.main_thread().name not in threads
