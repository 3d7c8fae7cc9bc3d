"""Drop-in parity: ``CustomWriter`` files read back like pymmcore-plus's
``OMETiffWriter``'s for the same sequences (series shape, axes and pixels)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile
import useq

from mesofield_napari.data import CustomWriter
from mesofield_napari.data.writer._upstream import OMETiffWriter
from mesofield_napari.devices.sim_camera import create_sim_core

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pymmcore_plus.experimental.unicore import UniMMCore

SHAPE = (32, 48)
TIME = {"interval": 0, "loops": 3}
# the sequences of upstream's OMETiffWriter tests (t, tc, ptc...) and a few more
SEQUENCES = {
    "t": useq.MDASequence(time_plan=TIME),
    "tc": useq.MDASequence(time_plan=TIME, channels=["DAPI"]),
    "ptc": useq.MDASequence(
        time_plan=TIME, channels=["DAPI"], stage_positions=[(0, 0, 0), (1, 1, 1)]
    ),
    "tc2": useq.MDASequence(time_plan=TIME, channels=["DAPI", "FITC"]),
    "tzc": useq.MDASequence(
        time_plan={"interval": 0, "loops": 2},
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
        axis_order="tpcz",
    ),
}


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch) -> Iterator[UniMMCore]:
    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", "psygnal")
    core = create_sim_core(SHAPE, exposure_ms=0)
    for preset in ("DAPI", "FITC"):
        core.defineConfig("Channel", preset)
    core.setChannelGroup("Channel")
    yield core
    core.unloadAllDevices()


def _series(folder: Path) -> dict[str, tuple[tuple[int, ...], str, np.ndarray]]:
    out = {}
    for path in sorted(folder.glob("*.tif")):
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            out[path.name] = (series.shape, series.axes, series.asarray())
    return out


@pytest.mark.parametrize("ext", [".tif", ".ome.tif"])
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_same_series_as_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, ext: str
) -> None:
    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", "psygnal")
    seq = SEQUENCES[name]
    results = []
    for which, cls in (("up", OMETiffWriter), ("ours", CustomWriter)):
        folder = tmp_path / which
        folder.mkdir()
        # the simulated camera restarts its frame counter per core: same pixels
        sim = create_sim_core(SHAPE, exposure_ms=0)
        for preset in ("DAPI", "FITC"):
            sim.defineConfig("Channel", preset)
        sim.setChannelGroup("Channel")
        try:
            sim.mda.run(seq, output=cls(folder / f"run{ext}"))
        finally:
            sim.unloadAllDevices()
        results.append(_series(folder))
    upstream, ours = results
    assert list(ours) == list(upstream)  # same file names (one per position)
    assert upstream, "upstream wrote nothing"
    for fname, (shape, axes, data) in upstream.items():
        our_shape, our_axes, our_data = ours[fname]
        assert (our_shape, our_axes) == (shape, axes), fname
        np.testing.assert_array_equal(our_data, data)


def test_plain_tif_one_channel_has_no_singleton_axis(
    core: UniMMCore, tmp_path: Path
) -> None:
    """The reported case: (3, 1, 32, 48) before, upstream's (3, 32, 48) now."""
    path = tmp_path / "tc.tif"
    core.mda.run(SEQUENCES["tc"], output=CustomWriter(path))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        assert (tif.series[0].shape, tif.series[0].axes) == ((3, *SHAPE), "TYX")
    assert tifffile.memmap(path).shape == (3, *SHAPE)
