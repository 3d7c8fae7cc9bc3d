"""The recorder's compression option: its model on a real core, and its dock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from _helpers import SHAPE, accept_console_pushes, read_json, sim_index
from mesofield_napari.models.recorder import RecorderSettings, RecordingSession


def test_recorder_session_records_compressed(sim_core, camera, tmp_path: Path) -> None:
    settings = RecorderSettings(root=str(tmp_path), frames=15, compression="zstd")
    assert settings.problems() == []
    assert settings.parameters()["compression"] == "zstd"
    session = RecordingSession(sim_core, settings)
    session.start()
    assert session.wait(30)
    (outcome,) = session.outcomes
    assert outcome.ok and outcome.frames_written == 15
    tiff = next(p for p in outcome.data_files if p.name.endswith(".ome.tiff"))
    with tifffile.TiffFile(tiff) as tif:
        assert tif.pages.first.compression == 50000
        stack = tif.series[0].asarray()
    assert stack.shape == (15, *SHAPE)
    for entry in read_json(f"{tiff}_frame_metadata.json")["p0"]:
        np.testing.assert_array_equal(
            stack[entry["mda_event"]["t"]], camera.frame(sim_index(entry))
        )


def test_recorder_settings_bad_compression_is_a_problem() -> None:
    problems = RecorderSettings(root="x", compression="lzma").problems()
    assert any("unknown compression 'lzma'" in p for p in problems)
    assert "compression" not in RecorderSettings(root="x").parameters()


@pytest.fixture
def viewer(make_napari_viewer, tmp_path, monkeypatch):
    from mesofield_napari._widgets import recorder as recorder_mod

    monkeypatch.setenv(recorder_mod.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    return accept_console_pushes(make_napari_viewer())


def test_recorder_dock_compression_choice(viewer, tmp_path: Path) -> None:
    from mesofield_napari._widgets.recorder import RecorderWidget

    rec = RecorderWidget(viewer)
    rec.root_edit.setText(str(tmp_path))
    combo = rec.compression_combo
    assert [combo.itemData(i) for i in range(combo.count())] == [
        "",
        "deflate",
        "zstd",
        "jpegxl",
    ]
    assert rec.current_settings().compression == ""
    combo.setCurrentIndex(combo.findData("deflate"))
    assert rec.current_settings().compression == "deflate"
    assert rec.problems() == []


def test_recorder_dock_records_compressed_run(viewer, qtbot, tmp_path: Path) -> None:
    from mesofield_napari._widgets._micromanager import open_main_window
    from mesofield_napari._widgets.recorder import RecorderWidget
    from mesofield_napari.devices.sim_camera import create_sim_core, sim_camera

    core = create_sim_core(SHAPE, exposure_ms=1.0)
    win = open_main_window(viewer, core)
    try:
        rec = RecorderWidget(viewer)
        viewer.window.add_dock_widget(rec, name="Recorder", area="right")
        rec.root_edit.setText(str(tmp_path / "data"))
        rec.frames_spin.setValue(20)
        rec.compression_combo.setCurrentIndex(rec.compression_combo.findData("zstd"))
        with qtbot.waitSignal(rec.finished, timeout=60_000) as blocker:
            rec.record_button.click()
        outcome = blocker.args[0]
        assert outcome.ok and outcome.frames_written == 20
        (tiff,) = sorted((tmp_path / "data").rglob("*.ome.tiff"))
        with tifffile.TiffFile(tiff) as tif:
            assert tif.pages.first.compression == 50000
            stack = tif.series[0].asarray()
        assert stack.shape == (20, *SHAPE)
        np.testing.assert_array_equal(stack[19], sim_camera(core).frame(19))
    finally:
        core.mda.cancel()
        win._cleanup()
