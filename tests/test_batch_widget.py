"""The batch-export dock widget in a real viewer, on real files.

Recordings are synthetic BigTIFFs with sidecars (``_synthetic``: known pixels, fast)
and, for the open-layer input, a real recording of the simulated camera written by
``CustomWriter`` and opened through the plugin's reader. Runs go through the real
library in napari's worker thread; the tests wait for the worker with
``qtbot.waitUntil``. To stop a run at a known point, ``run_batch`` is wrapped so the
worker holds after its first progress report until the test has clicked Cancel
(the library itself then raises ``Cancelled`` at its next check).
"""

from __future__ import annotations

import csv
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from _synthetic import SHAPE, traced_stack, write_recording
from mesofield_napari._widgets.batch_export import BatchExportWidget
from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.data import CustomWriter
from mesofield_napari.data.batch import mean_trace
from mesofield_napari.models import batch_export as batch_requests

PLUGIN = "mesofield-napari"
N = 24
WAIT_MS = 20_000


def _recordings(root: Path, n: int = 2, frames: int = N) -> list[Path]:
    return [
        write_recording(
            root / f"sub-{i}" / "func" / f"sub-{i}_meso.ome.tiff",
            traced_stack(frames, seed=i),
        )
        for i in range(1, n + 1)
    ]


def _rows(widget: BatchExportWidget) -> list[tuple[str, str, str]]:
    t = widget.results
    return [
        tuple(t.item(r, c).text() for c in range(3))  # type: ignore[misc]
        for r in range(t.rowCount())
    ]


def _csv(path: Path) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Slice", "Mean", "time_s"]
    return np.array(rows[1:], dtype=float)


def _run(qtbot: Any, widget: BatchExportWidget) -> None:
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    assert widget.running, widget.status.text()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)


@pytest.fixture
def widget(make_napari_viewer: Any) -> BatchExportWidget:
    viewer = make_napari_viewer()
    w = BatchExportWidget(viewer)
    viewer.window.add_dock_widget(w, name="Batch export")
    return w


# ---------------------------------------------------------------- runs
def test_mean_trace_of_two_recordings(
    qtbot: Any, widget: BatchExportWidget, tmp_path: Path
) -> None:
    recs = _recordings(tmp_path)
    widget.files.value = recs
    assert widget.operation.value == "mean-trace"
    assert not widget.param_boxes["mean-trace"].native.isHidden()
    assert widget.param_boxes["dff"].native.isHidden()
    _run(qtbot, widget)

    assert widget.outcome is not None and widget.outcome.summary.ok
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.progress_bar is None  # closed when the worker finished
    csvs = [
        r.parents[1] / "processed" / r.name.replace(".ome.tiff", "_meso-mean-trace.csv")
        for r in recs
    ]
    rows = _rows(widget)
    assert [r[0] for r in rows] == ["ok", "ok"]
    assert [r[1] for r in rows] == [r.name for r in recs]
    assert [r[2] for r in rows] == [p.name for p in csvs]
    assert widget.status.text().startswith("mean-trace: 2 ok, 0 failed, 0 cancelled")

    assert len(widget.trace_lines) == 2
    for line, path, rec in zip(widget.trace_lines, csvs, recs, strict=True):
        data = _csv(path)
        assert data.shape == (N, 3)
        np.testing.assert_array_equal(data[:, 0], np.arange(1, N + 1))
        x, y = line.get_data()
        np.testing.assert_allclose(x, data[:, 2], atol=1e-6)  # time (s)
        np.testing.assert_allclose(y, data[:, 1], rtol=1e-9)
        expected = traced_stack(N, seed=int(rec.name[4])).mean(axis=(1, 2))
        np.testing.assert_allclose(y, expected, rtol=1e-9)
    assert widget.axes.get_xlabel() == "time (s)"
    assert widget.axes.get_ylabel() == "mean"
    # the first row is selected: its line is drawn thicker, the add button is on
    assert widget.results.currentRow() == 0 and widget.add_button.isEnabled()
    assert widget.trace_lines[0].get_linewidth() > widget.trace_lines[1].get_linewidth()

    # again without overwrite: both listed as failed, nothing plotted
    _run(qtbot, widget)
    assert [r[0] for r in _rows(widget)] == ["failed", "failed"]
    assert "already exists" in _rows(widget)[0][2]
    assert widget.trace_lines == [] and not widget.add_button.isEnabled()
    widget.overwrite.value = True
    _run(qtbot, widget)
    assert [r[0] for r in _rows(widget)] == ["ok", "ok"]


def test_cancel_mid_run_keeps_the_gui_responsive(
    qtbot: Any, widget: BatchExportWidget, tmp_path: Path, monkeypatch
) -> None:
    recs = _recordings(tmp_path, n=3)
    first_progress, release = threading.Event(), threading.Event()
    real = batch_requests.run_batch

    def held_run_batch(*args: Any, progress: Any, **kwargs: Any) -> Any:
        def hold(done: int, total: int) -> None:
            progress(done, total)
            first_progress.set()
            assert release.wait(WAIT_MS / 1000), "the test never released the job"

        return real(*args, progress=hold, **kwargs)

    monkeypatch.setattr(batch_requests, "run_batch", held_run_batch)
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(1))
    widget.files.value = recs
    try:
        qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
        timer.start()
        assert widget.running and not widget.run_button.isEnabled()
        assert widget.cancel_button.isEnabled()
        qtbot.waitUntil(first_progress.is_set, timeout=WAIT_MS)
        # the worker is busy with the batch; the event loop still runs
        n = len(ticks)
        qtbot.waitUntil(lambda: len(ticks) > n + 2, timeout=WAIT_MS)
        qtbot.waitUntil(
            lambda: widget.status.text().startswith("Running…"), timeout=WAIT_MS
        )
        assert widget.status.text() == f"Running… {N} of {3 * N} frames"
        bar = widget.progress_bar
        assert bar is not None and (bar.n, bar.total) == (N, 3 * N)
        qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
        assert widget.status.text() == "Cancelling…"
        assert not widget.cancel_button.isEnabled()
    finally:
        release.set()
        timer.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)

    assert [r[0] for r in _rows(widget)] == ["cancelled"] * 3
    assert all(r[2] == "cancelled (nothing written)" for r in _rows(widget))
    assert list(tmp_path.rglob("*.csv")) == []  # the first job stopped before writing
    assert list(tmp_path.rglob("*.tmp*")) == []
    assert widget.trace_lines == [] and widget.run_button.isEnabled()
    assert "0 ok, 0 failed, 3 cancelled" in widget.status.text()


def test_bad_recording_fails_alone(
    qtbot: Any, widget: BatchExportWidget, tmp_path: Path
) -> None:
    good = _recordings(tmp_path / "runs", n=1)[0]
    bad = write_recording(
        tmp_path / "runs" / "sub-9" / "func" / "sub-9_meso.ome.tiff",
        traced_stack(4, seed=9),
    )
    bad.write_bytes(b"this is not a TIFF" * 100)
    # a folder (searched recursively, pattern applies) and two local workers
    widget.folder.value = tmp_path / "runs"
    widget.workers.value = 2
    assert widget.pattern.value == ""  # every recording (videos: a checkbox)
    assert widget.include_videos.value is False
    _run(qtbot, widget)

    rows = _rows(widget)
    assert [(r[0], r[1]) for r in rows] == [("ok", good.name), ("failed", bad.name)]
    assert rows[1][2] and rows[1][2] != "failed"  # the reader's error message
    assert len(widget.trace_lines) == 1
    assert "1 ok, 1 failed" in widget.status.text()
    assert (good.parents[1] / "processed").is_dir()
    assert not (bad.parents[1] / "processed").exists()


def test_open_layers_roi_and_add_trace(
    qtbot: Any, widget: BatchExportWidget, tmp_path: Path, sim_core: Any
) -> None:
    path = tmp_path / "run" / "func" / "cam.ome.tiff"
    path.parent.mkdir(parents=True)
    assert record(sim_core, [CustomWriter(path)], timelapse(8)).ok
    viewer = widget._viewer
    (layer,) = viewer.open(path, plugin=PLUGIN)
    viewer.add_image(np.zeros((4, 4)), name="not ours")
    assert widget.layers.choices == (str(path),)  # only the mesofield layer
    widget.layers.value = [str(path)]

    rect = np.array([[4.5, 9.5], [4.5, 29.5], [20.5, 29.5], [20.5, 9.5]])
    viewer.add_shapes([rect], shape_type="rectangle", name="roi")
    labels = np.zeros(SHAPE, np.int32)
    labels[1:3, 2:5] = 7
    viewer.add_labels(labels, name="cells")
    assert set(widget.roi.choices) == {"", "roi", "cells"}
    widget.roi.value = "cells"
    widget.label.value = 7
    req = widget.make_request()
    assert req.params["roi"].shape == SHAPE and req.params["label"] == 7
    assert req.paths == [path]
    widget.roi.value = "roi"
    # the ROI belongs to the camera of the layer it is measured on
    assert widget.make_request().params == {
        "roi": (5, 21, 10, 30),
        "roi_camera": "cam",
    }
    _run(qtbot, widget)

    assert [r[0] for r in _rows(widget)] == ["ok"]
    expected = mean_trace(path, (5, 21, 10, 30), out_dir=tmp_path / "check")
    (line,) = widget.trace_lines
    np.testing.assert_allclose(line.get_ydata(), expected.values, rtol=1e-12)
    np.testing.assert_allclose(line.get_xdata(), expected.time_s, atol=1e-12)
    assert (
        path.parents[1] / "processed" / "cam_meso-roi-y5-21-x10-30-mean-trace.csv"
    ).exists()

    n_layers = len(viewer.layers)
    qtbot.mouseClick(widget.add_button, Qt.MouseButton.LeftButton)
    assert len(viewer.layers) == n_layers + 1
    added = viewer.layers[-1]
    assert (
        added.name == "cam_meso-roi-y5-21-x10-30-mean trace"
        and added.shape_type == ["path"]
    )
    meta = added.metadata["mesofield_trace"]
    np.testing.assert_allclose(meta["values"], expected.values)
    assert meta["csv"].endswith("cam_meso-roi-y5-21-x10-30-mean-trace.csv")
    assert meta["recording"] == str(path)
    # drawn over the recording's frame: inside its extent, time left to right
    verts = added.data[0]
    lo, hi = np.asarray(layer.extent.world)[:, -2:]
    assert (verts >= lo - 1e-9).all() and (verts <= hi + 1e-9).all()
    assert np.all(np.diff(verts[:, 1]) > 0)


def test_plugin_dock_widget_and_validation(make_napari_viewer: Any, qtbot: Any) -> None:
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Batch export")
    assert isinstance(widget, BatchExportWidget)

    from napari._app_model import get_app_model

    menu = get_app_model().menus.get_menu("napari/file/io_utilities")
    ids = [getattr(item, "command", None) for item in menu]
    assert any(getattr(c, "id", None) == "mesofield-napari.batch_export" for c in ids)

    for op in ("dff", "video", "montage", "mean-trace"):
        widget.operation.value = op
        shown = [n for n, b in widget.param_boxes.items() if not b.native.isHidden()]
        assert shown == [op]
    widget.operation.value = "montage"
    assert not widget.frame_index.native.isEnabled()
    widget.frame.value = "frame"
    assert widget.frame_index.native.isEnabled()
    widget.scheduler.value = "tcp://127.0.0.1:1"
    assert not widget.workers.native.isEnabled()

    # nothing chosen: a message, no worker
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    assert not widget.running
    assert widget.status.text().startswith("choose recordings")
    assert "e0393e" in widget.status.styleSheet()
    viewer.window.remove_dock_widget(dock)
    widget.close()
    viewer.add_image(np.zeros((2, 2)))  # no callback into the closed widget
    widget.deleteLater()
