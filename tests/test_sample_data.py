"""The npe2 sample data: a real demo run recorded on the simulated camera."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from _helpers import read_json, sim_index
from mesofield_napari._sample_data import (
    DEMO_EXPOSURE_MS,
    DEMO_FRAMES,
    DEMO_NOTE,
    DEMO_SHAPE,
    record_demo_run,
)
from mesofield_napari.data import sidecar_path
from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

PLUGIN = "mesofield-napari"


def test_open_sample_in_viewer(make_napari_viewer: Any) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "demo")
    assert len(layers) == 1 and len(viewer.layers) == 1
    layer = layers[0]
    meta = layer.metadata["mesofield"]
    assert meta["frames"] == DEMO_FRAMES
    assert layer.data.shape == (DEMO_FRAMES, *DEMO_SHAPE)
    assert layer.data.dtype == np.uint16
    assert meta["sidecar"] == "final" and meta["dropped_frames"] == 0
    assert meta["notes"] and meta["notes"][0].endswith(DEMO_NOTE)
    assert meta["warnings"] == []
    # the frame clock is the camera's: ~exposure apart (not a timing assertion on
    # speed, only that timestamps are real and increasing)
    t = np.asarray(meta["timestamps_s"])
    assert t.shape == (DEMO_FRAMES,) and t[0] == 0 and np.all(np.diff(t) > 0)
    assert t[-1] >= (DEMO_FRAMES - 1) * DEMO_EXPOSURE_MS / 1000 * 0.9

    source = Path(meta["source"])
    assert source.name.endswith("_meso.ome.tiff") and source.parent.name == "func"
    (root,) = [p for p in source.parents if p.name.startswith("mesofield-demo-")]
    assert root.parent == Path(tempfile.gettempdir())
    # pixels are the simulated camera's deterministic frames, in order
    entries = read_json(sidecar_path(source))["p0"]
    assert [sim_index(e) for e in entries] == list(range(DEMO_FRAMES))
    cam = SimulatedMesoscopeCamera(DEMO_SHAPE, exposure_ms=0)
    data = np.asarray(layer.data)
    for i in range(DEMO_FRAMES):
        np.testing.assert_array_equal(data[i], cam.frame(i))
    # the demo folder is kept for the lazy layer; a test cleans up after itself
    viewer.layers.clear()
    del layer, layers, data
    shutil.rmtree(root)


def test_record_demo_run_into_given_root(tmp_path: Path) -> None:
    run_dir = record_demo_run(tmp_path, frames=7, shape=(32, 48), exposure_ms=0)
    assert run_dir.is_relative_to(tmp_path)
    manifest = read_json(next(run_dir.glob("*_manifest.json")))
    assert manifest["acquisition_complete"] is True
    (tiff,) = run_dir.rglob("*.ome.tiff")
    assert len(read_json(sidecar_path(tiff))["p0"]) == 7
    notes = next(run_dir.glob("*_notes.txt")).read_text(encoding="utf-8")
    assert DEMO_NOTE in notes
