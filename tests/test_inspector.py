"""The recording inspector: its Qt-free model and the dock widget in a real viewer.

Recordings are real (simulated camera -> RunManager -> CustomWriter). Their frame
clock is then rewritten in the sidecar to a regular 10 ms grid, so the timing is
deterministic; the "gappy" recording also gets a camera that skipped 3 frames after
frame 9 (ImageNumber jumps by 4, and 40 ms pass), which is what the reader reports as
dropped frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from qtpy.QtGui import QImage

from _helpers import read_json
from mesofield_napari._widgets.inspector import NO_RECORDING, RecordingInspector
from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.data import open_recording, sidecar_path
from mesofield_napari.data.manager.run_manager import RunManager
from mesofield_napari.devices.sim_camera import create_sim_core
from mesofield_napari.models.inspector import (
    inspect_layer,
    inspect_metadata,
    inspect_recording,
    interval_gaps,
)

if TYPE_CHECKING:
    from napari.viewer import Viewer

PLUGIN = "mesofield-napari"
H, W = 32, 40
FRAMES = 30
PERIOD_MS = 10.0
GAP_AFTER = 9  # frames 10.. arrive 3 periods late
SKIPPED = 3


def _record(root: Path, subject: str, note: str) -> Path:
    core = create_sim_core((H, W), exposure_ms=0)
    try:
        run = RunManager(root, subject, 1, "wf").start()
        run.add_note(note)
        assert record(core, [run.writer_for("meso", "tiff")], timelapse(FRAMES)).ok
        run.stop()
    finally:
        core.unloadAllDevices()
    (tiff,) = run.run_dir.rglob("*.ome.tiff")
    return tiff


def _set_clock(tiff: Path, skipped_after: int | None) -> None:
    """Rewrite runner_time_ms / ImageNumber: 10 ms apart, optionally with a gap."""
    path = sidecar_path(tiff)
    payload = read_json(path)
    for i, entry in enumerate(payload["p0"]):
        n = i + (SKIPPED if skipped_after is not None and i > skipped_after else 0)
        entry["runner_time_ms"] = 1000.0 + n * PERIOD_MS
        entry["camera_metadata"]["ImageNumber"] = str(n)
        entry["camera_metadata"]["ElapsedTime-ms"] = str(n * PERIOD_MS)
    path.write_text(json.dumps(payload), encoding="utf-8")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    clean = _record(root, "clean", "baseline")
    gappy = _record(root, "gappy", "stim at 0.1 s")
    _set_clock(clean, None)
    _set_clock(gappy, GAP_AFTER)
    return {"clean": clean, "gappy": gappy}


def _inspector(viewer: Viewer) -> RecordingInspector:
    widget = RecordingInspector(viewer)
    viewer.window.add_dock_widget(widget, name="Recording inspector")
    return widget


def _values(widget: RecordingInspector) -> dict[str, str]:
    return {k: v.text() for k, v in widget.values.items()}


# ---------------------------------------------------------------- model (no Qt)
def test_model_from_recording(recordings: dict[str, Path]) -> None:
    insp = inspect_recording(open_recording(recordings["gappy"]))
    assert insp.frames == FRAMES and insp.dropped_frames == SKIPPED
    np.testing.assert_allclose(insp.median_interval_ms, PERIOD_MS)
    assert list(insp.gap_intervals) == [GAP_AFTER]
    assert list(insp.gap_frames) == [GAP_AFTER + 1]
    assert insp.intervals_ms.shape == (FRAMES - 1,)
    np.testing.assert_allclose(insp.intervals_ms[GAP_AFTER], (SKIPPED + 1) * PERIOD_MS)
    total = (FRAMES - 1 + SKIPPED) * PERIOD_MS / 1000
    np.testing.assert_allclose(insp.duration_s, total)
    assert insp.fps == pytest.approx((FRAMES - 1) / total)
    rows = dict(insp.rows())
    # the camera's counter skipped 3: missing, not late (one story: frame_timing)
    assert rows["Missing frames"] == "3" and rows["Late frames"] == "0"
    assert rows["Sidecar"] == "final" and rows["Notes"].endswith("stim at 0.1 s")


def test_model_tolerates_odd_metadata() -> None:
    insp = inspect_metadata(
        {"frames": "x", "timestamps_s": [0, 0.01, None, 0.03, 0.1], "fps": "fast"}
    )
    assert insp.frames == 5 and insp.fps is None
    assert np.isnan(insp.intervals_ms[1]) and np.isnan(insp.intervals_ms[2])
    assert list(insp.gap_frames) == [4]  # 70 ms vs a 10 ms median
    assert insp.dropped_frames == 0 and insp.sidecar is None
    empty = inspect_metadata({})
    assert empty.frames == 0 and empty.duration_s is None
    assert empty.median_interval_ms is None and empty.gap_frames.size == 0
    assert dict(empty.rows())["Duration"] == "n/a"
    assert interval_gaps(np.array([0.0, 0.0]))[1].size == 0
    assert inspect_layer(None) is None
    assert inspect_layer(type("L", (), {"metadata": {"other": 1}})()) is None


# ---------------------------------------------------------------- widget
def test_summary_and_plot(make_napari_viewer: Any, recordings: dict[str, Path]) -> None:
    viewer = make_napari_viewer()
    widget = _inspector(viewer)
    assert widget.message.text() == NO_RECORDING and widget.interval_line is None

    (layer,) = viewer.open(recordings["clean"], plugin=PLUGIN)
    assert viewer.layers.selection.active is layer
    values = _values(widget)
    assert widget.message.text() == f"<b>{layer.name}</b>"
    assert values["File"] == recordings["clean"].name
    assert values["Frames"] == str(FRAMES)
    assert values["Duration"] == f"{(FRAMES - 1) * PERIOD_MS / 1000:.3f} s"
    assert values["Frame rate"] == "100.00 fps"
    assert values["Median interval"] == "10.00 ms"
    assert values["Missing frames"] == "0"
    assert values["Codec"] == "uncompressed"
    assert values["Sidecar"] == "final"
    assert values["Notes"].endswith("baseline")
    assert values["Warnings"] == "none"
    assert not widget.summary.isHidden()

    x, y = widget.interval_line.get_data()
    np.testing.assert_array_equal(x, np.arange(1, FRAMES))
    np.testing.assert_allclose(y, PERIOD_MS)
    assert len(widget.gap_line.get_xdata()) == 0
    np.testing.assert_allclose(widget.median_line.get_ydata(), PERIOD_MS)


def test_selection_updates_and_other_layers(
    make_napari_viewer: Any, recordings: dict[str, Path]
) -> None:
    viewer = make_napari_viewer()
    widget = _inspector(viewer)
    (clean,) = viewer.open(recordings["clean"], plugin=PLUGIN)
    (gappy,) = viewer.open(recordings["gappy"], plugin=PLUGIN)

    # the last opened layer is active: the gappy one
    values = _values(widget)
    assert values["File"] == recordings["gappy"].name
    assert widget.message.text() == f"<b>{gappy.name}</b>"
    assert values["Missing frames"] == f"{SKIPPED}"
    total = (FRAMES - 1 + SKIPPED) * PERIOD_MS / 1000
    assert values["Duration"] == f"{total:.3f} s"
    assert values["Notes"].endswith("stim at 0.1 s")
    x, y = widget.interval_line.get_data()
    assert len(x) == len(y) == FRAMES - 1
    gx, gy = widget.gap_line.get_data()
    np.testing.assert_array_equal(gx, [GAP_AFTER + 1])
    np.testing.assert_allclose(gy, [(SKIPPED + 1) * PERIOD_MS])
    assert widget.gap_line.get_color() == "#e0393e"

    viewer.layers.selection.active = clean
    assert _values(widget)["Missing frames"] == "0"
    assert _values(widget)["Notes"].endswith("baseline")
    assert len(widget.gap_line.get_xdata()) == 0

    plain = viewer.add_image(np.zeros((4, 8, 8), np.uint16), name="plain")
    assert viewer.layers.selection.active is plain
    assert widget.message.text() == NO_RECORDING
    assert widget.summary.isHidden() and widget.inspection is None
    assert widget.interval_line is None and widget.gap_line is None
    assert all(v == "" for v in _values(widget).values())

    viewer.layers.selection.active = gappy
    assert widget.inspection is not None
    assert list(widget.inspection.gap_frames) == [GAP_AFTER + 1]
    viewer.layers.selection.clear()
    assert widget.message.text() == NO_RECORDING


def _pixels(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGBA8888)
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), -1)
    px = rows[:, : image.width() * 4].reshape(image.height(), image.width(), 4)
    return px.copy()  # the QImage's buffer goes away with it


def test_screenshot_is_drawn(
    make_napari_viewer: Any, recordings: dict[str, Path], tmp_path: Path
) -> None:
    viewer = make_napari_viewer()
    widget = _inspector(viewer)
    viewer.open(recordings["gappy"], plugin=PLUGIN)
    widget.canvas.draw()

    shot = tmp_path / "inspector.png"
    assert widget.grab().save(str(shot))
    loaded = QImage(str(shot))
    assert not loaded.isNull() and loaded.width() > 100 and loaded.height() > 200

    px = _pixels(widget.canvas.grab().toImage())[..., :3].reshape(-1, 3)
    colours = np.unique(px, axis=0)
    assert len(colours) > 50  # lines, text and markers, not a blank canvas
    background = np.bincount(np.ravel_multi_index(px.T, (256, 256, 256))).argmax()
    assert np.count_nonzero(np.ravel_multi_index(px.T, (256,) * 3) != background) > 500
    red = (px[:, 0] > 180) & (px[:, 1] < 100) & (px[:, 2] < 100)
    assert np.count_nonzero(red) > 10  # the dropped-frame marker is drawn


def test_plugin_dock_widget(
    make_napari_viewer: Any, recordings: dict[str, Path]
) -> None:
    viewer = make_napari_viewer()
    emitter = viewer.layers.selection.events.active
    before = len(emitter.callbacks)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Recording inspector")
    assert isinstance(widget, RecordingInspector)
    assert len(emitter.callbacks) == before + 1
    (layer,) = viewer.open(recordings["gappy"], plugin=PLUGIN)
    assert _values(widget)["Frames"] == str(FRAMES)
    assert _values(widget)["File"] == Path(layer.metadata["mesofield"]["source"]).name

    viewer.window.remove_dock_widget(dock)
    widget.close()  # removing the dock reparents the widget; closing disconnects
    assert len(emitter.callbacks) == before
    viewer.layers.selection.clear()  # no callback into the closed widget
    assert _values(widget)["Frames"] == str(FRAMES)
    widget.deleteLater()
