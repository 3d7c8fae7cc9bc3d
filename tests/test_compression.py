"""Lossless compression in CustomWriter: the append layout (docs/design.md §5)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tifffile
import useq

from _helpers import SHAPE, arrival_indices, read_json, sim_index, timelapse
from mesofield_napari.data import CustomWriter, RecordingError, sidecar_path
from mesofield_napari.data.formats import tiff_compressed
from mesofield_napari.data.reader import open_recording
from mesofield_napari.data.writer import _compress

if TYPE_CHECKING:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

CODES = {"deflate": 8, "zstd": 50000}


def _record(
    core: UniMMCore, path: Path, seq: useq.MDASequence, **kw: Any
) -> CustomWriter:
    writer = CustomWriter(path, **kw)
    with writer.attached(core):
        core.mda.run(seq)
    assert writer.error is None, writer.error
    writer.raise_if_failed()
    return writer


@pytest.mark.parametrize("codec", ["deflate", "zstd"])
def test_compressed_run_reads_back_bit_exact(
    sim_core: UniMMCore,
    camera: SimulatedMesoscopeCamera,
    tmp_path: Path,
    codec: str,
) -> None:
    path = tmp_path / "run_meso.ome.tiff"
    writer = _record(sim_core, path, timelapse(12), compression=codec)
    assert writer.compression == codec
    assert (writer.stats.frames_written, writer.stats.frames_lost) == (12, 0)
    frames = read_json(sidecar_path(path))["p0"]
    assert [e["mda_event"]["t"] for e in frames] == list(range(12))
    assert "strip" not in frames[0]  # the sidecar keeps its legacy contents
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.is_ome
        page = tif.pages.first
        assert (page.compression, page.predictor) == (CODES[codec], 2)
        assert tif.series[0].axes == "TYX"
        data = tif.series[0].asarray()
    assert data.shape == (12, *SHAPE)
    raw = 12 * SHAPE[0] * SHAPE[1] * 2
    assert path.stat().st_size < raw  # really compressed, headers included
    for entry in frames:
        expected = camera.frame(sim_index(entry))
        np.testing.assert_array_equal(data[entry["mda_event"]["t"]], expected)
    rec = open_recording(path)
    assert rec.frames == 12
    lazy = rec.data
    for entry in frames:
        t = entry["mda_event"]["t"]
        np.testing.assert_array_equal(
            np.asarray(lazy[t]), camera.frame(sim_index(entry))
        )
    np.testing.assert_array_equal(np.asarray(rec.frame_block(3, 7)), data[3:7])


def test_compressed_multi_position_and_z(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    path = tmp_path / "multi.ome.tiff"
    positions = [useq.Position(z=0), useq.Position(z=5)]
    seq = timelapse(3, stage_positions=positions, z_plan={"range": 1, "step": 1})
    writer = _record(sim_core, path, seq, compression="zstd")
    payload = read_json(sidecar_path(path))
    order = arrival_indices(payload)
    assert writer.frames_written == {"p0": 6, "p1": 6}
    for key in ("p0", "p1"):
        file = tmp_path / f"multi_{key}.ome.tiff"
        with tifffile.TiffFile(file) as tif:
            assert tif.series[0].axes == "TZYX"
            data = tif.series[0].asarray()
        assert data.shape == (3, 2, *SHAPE)
        for entry in payload[key]:
            ev = entry["mda_event"]
            np.testing.assert_array_equal(
                data[ev["t"], ev["z"]], camera.frame(order[id(entry)])
            )


def test_compressed_until_stop_plain_tiff(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    path = tmp_path / "open.tif"
    writer = _record(
        sim_core, path, timelapse(9), compression="deflate", until_stop=True
    )
    assert writer.until_stop
    data = tifffile.imread(path)
    frames = read_json(sidecar_path(path))["p0"]
    assert data.shape == (9, *SHAPE)
    for n, entry in enumerate(frames):
        np.testing.assert_array_equal(data[n], camera.frame(sim_index(entry)))


def test_slow_compressor_backpressure_loses_nothing(
    sim_core: UniMMCore,
    camera: SimulatedMesoscopeCamera,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compressor far slower than the camera: the acquisition waits, memory stays
    within the budget plus the pool's bounded frames, and every frame is kept."""
    frame_bytes = SHAPE[0] * SHAPE[1] * 2
    real = tiff_compressed.encode_frame
    in_pool: list[int] = []
    lock = threading.Lock()
    live = [0]

    def slow(frame: np.ndarray, codec: str) -> bytes:
        with lock:
            live[0] += 1
            in_pool.append(live[0])
        time.sleep(0.01)
        try:
            return real(frame, codec)
        finally:
            with lock:
                live[0] -= 1

    monkeypatch.setattr(_compress, "encode_frame", slow)
    path = tmp_path / "bp.ome.tiff"
    writer = CustomWriter(
        path, compression="zstd", compress_workers=2, max_queue_bytes=2 * frame_bytes
    )
    writer._pool = None  # made at sequenceStarted with the patched encoder
    with writer.attached(sim_core):
        sim_core.mda.run(timelapse(40))
    writer.raise_if_failed()
    stats = writer.stats
    assert stats.backpressure_events > 0
    assert stats.peak_queued_bytes <= 2 * frame_bytes
    assert max(in_pool) <= 2  # never more encodes at once than workers
    assert (stats.frames_received, stats.frames_written, stats.frames_lost) == (
        40,
        40,
        0,
    )
    data = tifffile.imread(path)
    for entry in read_json(sidecar_path(path))["p0"]:
        np.testing.assert_array_equal(
            data[entry["mda_event"]["t"]], camera.frame(sim_index(entry))
        )


@pytest.mark.parametrize("bad", ["lz5", "jpeg", 3])
def test_bad_compression_is_one_clear_line(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="unknown compression") as info:
        CustomWriter(tmp_path / "x.ome.tiff", compression=bad)
    assert "\n" not in str(info.value)
    assert "deflate" in str(info.value) and "zstd" in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing created


def test_none_means_uncompressed(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    path = tmp_path / "raw.ome.tiff"
    _record(sim_core, path, timelapse(3), compression="none")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.compression == 1


def test_disk_error_is_reported_not_hidden(
    sim_core: UniMMCore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from mesofield_napari._platform import fileio

    real = fileio.pwrite_all
    calls = [0]

    def failing(fd: int, data: Any, offset: int) -> None:
        calls[0] += 1
        if offset > 16 and calls[0] > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, offset)

    path = tmp_path / "full.ome.tiff"
    writer = CustomWriter(path, compression="deflate", compress_workers=1)
    monkeypatch.setattr(fileio, "pwrite_all", failing)
    with writer.attached(sim_core):
        sim_core.mda.run(timelapse(20))
    monkeypatch.setattr(fileio, "pwrite_all", real)
    with pytest.raises(RecordingError, match="disk full"):
        writer.raise_if_failed()
    stats = writer.stats
    assert stats.frames_written + stats.frames_lost == stats.frames_received == 20
    assert stats.frames_written == sum(writer.frames_written.values())
