"""The npe2 reader, through napari's own ``viewer.open``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tifffile

from mesofield_napari._reader import get_reader
from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.data import CustomWriter, CV2Writer, sidecar_path
from mesofield_napari.data.manager.run_manager import RunManager
from mesofield_napari.devices.sim_camera import create_sim_core

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pymmcore_plus.experimental.unicore import UniMMCore

H, W = 24, 32
PLUGIN = "mesofield-napari"


@pytest.fixture
def core() -> Iterator[UniMMCore]:
    c = create_sim_core((H, W), exposure_ms=0)
    yield c
    c.unloadAllDevices()


@pytest.fixture
def run_dir(core: UniMMCore, tmp_path: Path) -> Path:
    run = RunManager(tmp_path / "data", "m1", 1, "wf").start()
    run.add_note("baseline")
    writers = [
        run.writer_for("meso", "tiff"),
        run.writer_for("pupil", "mp4", fps=25, fourcc="mp4v", bit_depth=12),
    ]
    assert record(core, writers, timelapse(5)).ok
    run.stop()
    return run.run_dir


def _one(run_dir: Path, pattern: str) -> Path:
    (path,) = run_dir.rglob(pattern)
    return path


def test_open_tiff(make_napari_viewer: Any, run_dir: Path) -> None:
    viewer = make_napari_viewer()
    path = _one(run_dir, "*.ome.tiff")
    layers = viewer.open(path, plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert layer.name.endswith("meso (tiff)")
    assert layer.data.shape == (5, H, W)
    assert tuple(layer.axis_labels) == ("t", "y", "x")
    meta = layer.metadata["mesofield"]
    assert meta["frames"] == 5 and meta["sidecar"] == "final"
    assert len(meta["timestamps_s"]) == 5 and meta["timestamps_s"][0] == 0
    assert meta["fps"] > 0 and meta["dropped_frames"] == 0
    assert meta["source"] == str(path)
    assert meta["notes"][0].endswith("baseline")
    lo, hi = layer.contrast_limits
    frames = tifffile.imread(path)
    assert (lo, hi) == (frames.min(), frames.max())
    np.testing.assert_array_equal(np.asarray(layer.data[4]), frames[4])


def test_open_mp4_and_sidecar(make_napari_viewer: Any, run_dir: Path) -> None:
    viewer = make_napari_viewer()
    path = _one(run_dir, "*.mp4")
    for given in (path, sidecar_path(path)):
        (layer,) = viewer.open(given, plugin=PLUGIN)
        assert layer.data.shape == (5, H, W)
        assert layer.metadata["mesofield"]["codec"] == "mp4v"
        assert not layer.rgb


def test_open_run_folder(make_napari_viewer: Any, run_dir: Path) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open(run_dir, plugin=PLUGIN)
    assert len(layers) == 2
    assert sorted(Path(ly.metadata["mesofield"]["source"]).suffix for ly in layers) == [
        ".mp4",
        ".tiff",
    ]
    assert len(viewer.layers) == 2


def test_scale_from_pixel_size(core: UniMMCore, tmp_path: Path) -> None:
    core.definePixelSizeConfig("px")
    core.setPixelSizeUm("px", 0.5)
    core.setPixelSizeConfig("px")
    path = tmp_path / "scaled.ome.tiff"
    assert record(core, [CustomWriter(path)], timelapse(3)).ok
    reader = get_reader(str(path))
    assert reader is not None
    ((data, kwargs, kind),) = reader(str(path))
    assert kind == "image" and data.shape == (3, H, W)
    t = np.asarray(kwargs["metadata"]["mesofield"]["timestamps_s"])
    # time in seconds per frame (the camera's median interval), then the pixel size
    assert kwargs["scale"] == (float(np.median(np.diff(t))), 0.5, 0.5)


def test_direct_color_video(tmp_path: Path) -> None:
    path = tmp_path / "cam.avi"
    w = CV2Writer(path, fps=10, fourcc="MJPG")
    w.begin(W, H, is_color=True)
    for _ in range(3):
        w.add_frame(np.dstack([np.full((H, W), v, np.uint8) for v in (0, 60, 200)]))
    w.finish()
    reader = get_reader([str(path)])
    assert reader is not None
    ((data, kwargs, _),) = reader([str(path)])
    assert data.shape == (3, H, W, 3) and kwargs["rgb"] is True
    assert "axis_labels" not in kwargs


def test_foreign_files_are_not_ours(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((2, 8, 8), np.uint16))
    assert get_reader(str(plain)) is None
    assert get_reader(str(tmp_path)) is None  # a folder without our recordings
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([]) is None


def test_foreign_tiff_goes_to_builtin_reader(
    make_napari_viewer: Any, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(plain)
    assert "mesofield" not in layer.metadata
