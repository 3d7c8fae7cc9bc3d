"""The Live traces panel in the recorder, in a real napari viewer (Xvfb) with a real
napari-micromanager on the simulated camera: draw, record, read the files back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from _helpers import accept_console_pushes
from mesofield_napari._widgets import recorder as recorder_mod
from mesofield_napari._widgets._micromanager import open_main_window
from mesofield_napari._widgets.recorder import RecorderWidget
from mesofield_napari.devices.sim_camera import create_sim_core
from mesofield_napari.live.saving import processed_dir

SMALL = (48, 64)
FINISH_MS = 60_000


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv(recorder_mod.SETTINGS_ENV, str(tmp_path / "settings.ini"))


@pytest.fixture
def viewer(make_napari_viewer):
    return accept_console_pushes(make_napari_viewer())


@pytest.fixture
def mm(viewer):
    core = create_sim_core(SMALL, exposure_ms=2.0)
    win = open_main_window(viewer, core)
    yield core, win
    core.mda.cancel()
    win._cleanup()


def make_recorder(viewer, root, frames: int) -> RecorderWidget:
    rec = RecorderWidget(viewer)
    viewer.window.add_dock_widget(rec, name="Recorder", area="right")
    rec.root_edit.setText(str(root))
    rec.frames_spin.setValue(frames)
    return rec


def test_rectangle_traced_while_recording_and_saved(viewer, mm, qtbot, tmp_path):
    rec = make_recorder(viewer, tmp_path / "exp", frames=200)
    panel = rec.live_traces_panel
    viewer.add_shapes([[10, 20], [30, 40]], shape_type="rectangle", name="rois")
    assert panel.layer_combo.currentText() == "rois"  # a new ROI layer is followed
    panel.enable_check.setChecked(True)
    panel.dff_check.setChecked(True)
    panel.window_spin.setValue(0.2)
    with qtbot.waitSignal(rec.finished, timeout=FINISH_MS) as blocker:
        rec.record_button.click()
    outcome = blocker.args[0]
    assert outcome.ok and outcome.frames_written == 200  # writing never skipped

    model = panel.model
    assert model.frames_offered == 200
    assert model.samples_computed + model.samples_skipped == 200
    (k,) = model.rois()
    assert model.rois()[k].rect == (10, 31, 20, 41)
    line = panel.lines[k]
    assert len(line.get_xdata()) == model.samples_computed  # the plot has the samples
    assert panel.plot_updates >= 1
    assert f"{model.samples_computed} samples of 200 frames" in (
        panel.status_label.text()
    )

    (tiff,) = [p for p in outcome.data_files if p.name.endswith(".ome.tiff")]
    stem = tiff.name.removesuffix(".ome.tiff")
    out = processed_dir(outcome.run_dir)
    trace = pd.read_csv(out / f"{stem}_meso-live-roi{k}-trace.csv")
    with tifffile.TiffFile(tiff) as tf:
        stack = tf.series[0].asarray()
    slices = trace["Slice"].to_numpy()
    assert len(slices) == model.samples_computed and slices.max() <= 200
    expected = stack[slices - 1, 10:31, 20:41].mean(axis=(1, 2), dtype=np.float64)
    np.testing.assert_allclose(trace["Mean"], expected, rtol=1e-9)
    np.testing.assert_allclose(line.get_ydata(), model.traces()[0].dff)
    info = json.loads((out / f"{stem}_meso-live-rois.json").read_text())
    assert info["rois"][0]["geometry"]["source"] == "rois[0]"
    assert info["samples_computed"] == model.samples_computed


def test_labels_on_a_decimated_layer_map_to_full_resolution(viewer, qtbot):
    panel = RecorderWidget(viewer).live_traces_panel
    panel._frame_shape = lambda: (64, 80)
    labels = np.zeros((16, 20), dtype=np.uint8)
    labels[2:4, 3:5] = 1
    viewer.add_labels(labels, scale=(4, 4), name="cells")
    assert panel.layer_combo.currentText() == "cells"
    (roi,) = panel.current_rois()
    ys, xs = np.nonzero(roi.mask)
    # label pixel j covers full-resolution pixels [4j - 2, 4j + 2)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (6, 14, 10, 18)
    assert roi.mask.sum() == 8 * 8


def test_moving_a_shape_restarts_its_trace(viewer, qtbot):
    rec = RecorderWidget(viewer)
    panel = rec.live_traces_panel
    shapes = viewer.add_shapes(
        [[[0, 0], [10, 10]], [[20, 20], [30, 30]]], shape_type="rectangle"
    )
    panel.enable_check.setChecked(True)
    model = panel.model_for_run()
    first = dict(model.rois())
    assert len(first) == 2
    moved = np.asarray(shapes.data[1]) + 5
    shapes.data = [shapes.data[0], moved]
    qtbot.waitUntil(lambda: set(model.rois()) != set(first), timeout=5000)
    now = model.rois()
    kept = set(now) & set(first)
    assert len(kept) == 1 and now[kept.pop()].rect == (0, 11, 0, 11)
    (event,) = [e for e in model.events if e["event"] == "changed"]
    assert event["roi_description"] == "rectangle rows 25:36, cols 25:36"
    shapes.data = []  # no shapes: the whole frame
    qtbot.waitUntil(lambda: len(model.rois()) == 1, timeout=5000)
    assert next(iter(model.rois().values())).kind == "frame"
    panel.session_over()
