"""CustomWriter: BigTIFF OME-TIFF + legacy frame-metadata sidecar (docs/design.md §5)."""

from __future__ import annotations

import itertools
import os
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
import tifffile
import useq

from _helpers import SHAPE, arrival_indices, read_json, sim_index, timelapse
from mesofield_napari.data import (
    CustomWriter,
    RecordingError,
    journal_path,
    sidecar_path,
)
from mesofield_napari.data.writer.signals import connect_direct

if TYPE_CHECKING:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

N = 6


def _record(
    core: UniMMCore, path: Path, seq: useq.MDASequence, **kw: Any
) -> CustomWriter:
    writer = CustomWriter(path, **kw)
    core.mda.run(seq, output=writer)
    assert writer.error is None, writer.error
    writer.raise_if_failed()
    return writer


@pytest.fixture
def recording(sim_core: UniMMCore, tmp_path: Path) -> tuple[CustomWriter, Path]:
    path = tmp_path / "run_meso.ome.tiff"
    return _record(sim_core, path, timelapse(N)), path


# ----------------------------------------------------------------- pixel data
def test_round_trip_pixels_equal_camera_frames(
    recording: tuple[CustomWriter, Path], camera: SimulatedMesoscopeCamera
) -> None:
    _, path = recording
    data = tifffile.imread(path)
    frames = read_json(sidecar_path(path))["p0"]
    assert data.dtype == np.uint16
    assert data.shape == (N, *SHAPE)
    indices = [sim_index(e) for e in frames]
    assert len(set(indices)) == N  # N distinct camera frames, none duplicated
    for entry in frames:
        t = entry["mda_event"]["t"]
        np.testing.assert_array_equal(data[t], camera.frame(sim_index(entry)))
    # a written frame is never the all-zero preallocation
    assert (data.reshape(N, -1).max(axis=1) > 0).all()


def test_file_is_bigtiff_ome_with_time_axis(
    recording: tuple[CustomWriter, Path],
) -> None:
    writer, path = recording
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        assert tif.is_ome
        series = tif.series[0]
        assert series.axes == "TYX"
        assert series.shape == (N, *SHAPE)
        assert len(tif.pages) == N
    assert writer.files == [path]
    assert writer.frames_written == {"p0": N}


def test_stats_count_every_frame(recording: tuple[CustomWriter, Path]) -> None:
    writer, _ = recording
    stats = writer.stats
    assert (stats.frames_received, stats.frames_written, stats.frames_lost) == (N, N, 0)
    assert stats.queued_bytes == 0  # drained
    assert stats.peak_queued_bytes >= SHAPE[0] * SHAPE[1] * 2


# ----------------------------------------------------------------- sidecar
def test_sidecar_legacy_contents(recording: tuple[CustomWriter, Path]) -> None:
    _, path = recording
    side = sidecar_path(path)
    assert side.name == "run_meso.ome.tiff_frame_metadata.json"
    payload = read_json(side)
    assert list(payload) == ["p0"]
    frames = payload["p0"]
    assert len(frames) == N
    for t, entry in enumerate(frames):
        for key in (
            "format",
            "version",
            "camera_device",
            "exposure_ms",
            "pixel_size_um",
            "property_values",
            "runner_time_ms",
            "camera_metadata",
        ):
            assert key in entry, key
        assert entry["camera_device"] == "MesoCam"
        assert entry["mda_event"] == {"t": t}  # the event index, not null
        cam_meta = entry["camera_metadata"]
        for key in ("ImageNumber", "ElapsedTime-ms", "TimeReceivedByCore"):
            assert key in cam_meta, key
        int(cam_meta["ImageNumber"])
    times = [e["runner_time_ms"] for e in frames]
    assert all(b > a for a, b in itertools.pairwise(times))


def test_sidecar_parses_like_downstream_analysis(
    recording: tuple[CustomWriter, Path],
) -> None:
    """What mesofield's parsers do: take data["p0"], build a table, use the clock."""
    _, path = recording
    table = pd.DataFrame(read_json(sidecar_path(path))["p0"])
    assert len(table) == N
    assert table["runner_time_ms"].is_monotonic_increasing
    elapsed = pd.to_numeric(table["camera_metadata"].map(lambda m: m["ElapsedTime-ms"]))
    assert elapsed.notna().all()


def test_journal_removed_and_sidecar_readable_by_others(
    recording: tuple[CustomWriter, Path],
) -> None:
    _, path = recording
    assert not journal_path(path).exists()
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    # same permissions as the data file (not mkstemp's 0600)
    side_mode = stat.S_IMODE(sidecar_path(path).stat().st_mode)
    assert side_mode == stat.S_IMODE(path.stat().st_mode)
    assert side_mode & stat.S_IRGRP


def test_journal_exists_while_recording(sim_core: UniMMCore, tmp_path: Path) -> None:
    """Frames are journaled as they are written; the journal goes at the end."""
    path = tmp_path / "live.ome.tiff"
    writer = CustomWriter(path)
    seen: list[tuple[bool, int, bool]] = []

    def during(frame: np.ndarray, event: useq.MDAEvent, meta: Any) -> None:
        # runs after the writer's own frameReady (connected first)
        if event.index.get("t") != 3:
            return
        deadline = time.monotonic() + 10
        while writer.stats.frames_written < 3 and time.monotonic() < deadline:
            time.sleep(0.002)
        jpath = journal_path(path)
        lines = jpath.read_text(encoding="utf-8").count("\n") if jpath.exists() else 0
        seen.append((jpath.exists(), lines, sidecar_path(path).exists()))

    with writer.attached(sim_core):
        sim_core.mda.events.frameReady.connect(during)
        try:
            sim_core.mda.run(timelapse(N))
        finally:
            sim_core.mda.events.frameReady.disconnect(during)

    assert len(seen) == 1
    exists, lines, final_exists = seen[0]
    assert exists
    assert lines >= 1 + 3  # header + the frames already written
    assert not final_exists  # the legacy JSON only appears at the end
    assert not journal_path(path).exists()
    assert len(read_json(sidecar_path(path))["p0"]) == N
    assert writer.stats.frames_written == N


def test_attached_mode_gives_same_files(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    path = tmp_path / "attached.ome.tiff"
    writer = CustomWriter(path)
    with writer.attached(sim_core):
        sim_core.mda.run(timelapse(4))
    # disconnected afterwards: a later run does not reach this writer
    sim_core.mda.run(timelapse(2))
    assert writer.stats.frames_received == 4
    data = tifffile.imread(path)
    frames = read_json(sidecar_path(path))["p0"]
    assert len(frames) == 4
    for entry in frames:
        np.testing.assert_array_equal(
            data[entry["mda_event"]["t"]], camera.frame(sim_index(entry))
        )


# ----------------------------------------------------------------- shapes/indexing
def test_time_and_z_frames_land_at_their_index(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    path = tmp_path / "stack.ome.tiff"
    seq = timelapse(2, z_plan={"range": 2, "step": 1})  # 2 t x 3 z, unsequenced
    _record(sim_core, path, seq)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        assert tif.series[0].axes == "TZYX"
        data = tif.series[0].asarray()
    assert data.shape == (2, 3, *SHAPE)
    payload = read_json(sidecar_path(path))
    order = arrival_indices(payload)
    assert sorted(
        (e["mda_event"]["t"], e["mda_event"]["z"]) for e in payload["p0"]
    ) == [(t, z) for t in range(2) for z in range(3)]
    for entry in payload["p0"]:
        ev = entry["mda_event"]
        np.testing.assert_array_equal(
            data[ev["t"], ev["z"]], camera.frame(order[id(entry)])
        )


@pytest.mark.parametrize(
    ("positions", "keys"),
    [
        ([useq.Position(z=0), useq.Position(z=5)], ["p0", "p1"]),
        (
            [useq.Position(z=0, name="left"), useq.Position(z=5, name="right")],
            ["left", "right"],
        ),
    ],
    ids=["indexed", "named"],
)
def test_multi_position_writes_one_file_per_position(
    sim_core: UniMMCore,
    camera: SimulatedMesoscopeCamera,
    tmp_path: Path,
    positions: list[useq.Position],
    keys: list[str],
) -> None:
    path = tmp_path / "multi.ome.tiff"
    writer = _record(sim_core, path, timelapse(3, stage_positions=positions))
    expected_files = [tmp_path / f"multi_{k}.ome.tiff" for k in keys]
    assert sorted(writer.files) == sorted(expected_files)
    assert not path.exists()  # only the per-position files
    payload = read_json(sidecar_path(path))  # one sidecar for the whole run
    assert sorted(payload) == sorted(keys)
    assert writer.frames_written == dict.fromkeys(keys, 3)
    order = arrival_indices(payload)
    for p, (key, file) in enumerate(zip(keys, expected_files, strict=True)):
        with tifffile.TiffFile(file) as tif:
            assert tif.is_bigtiff
            assert tif.series[0].axes == "TYX"
            data = tif.series[0].asarray()
        assert data.shape == (3, *SHAPE)
        entries = payload[key]
        assert [e["mda_event"] for e in entries] == [{"t": t, "p": p} for t in range(3)]
        for entry in entries:
            np.testing.assert_array_equal(
                data[entry["mda_event"]["t"]], camera.frame(order[id(entry)])
            )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f.name for f in expected_files] + [sidecar_path(path).name]
    )


# ----------------------------------------------------------------- back-pressure
def test_tiny_queue_budget_applies_backpressure_without_loss(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    frame_bytes = SHAPE[0] * SHAPE[1] * 2
    path = tmp_path / "bp.ome.tiff"
    writer = _record(sim_core, path, timelapse(30), max_queue_bytes=frame_bytes)
    stats = writer.stats
    assert stats.backpressure_events > 0
    assert stats.peak_queued_bytes <= frame_bytes  # never more than the budget
    assert (stats.frames_received, stats.frames_written, stats.frames_lost) == (
        30,
        30,
        0,
    )
    data = tifffile.imread(path)
    frames = read_json(sidecar_path(path))["p0"]
    assert [e["mda_event"]["t"] for e in frames] == list(range(30))
    for entry in frames:
        np.testing.assert_array_equal(
            data[entry["mda_event"]["t"]], camera.frame(sim_index(entry))
        )


def test_backpressure_bounds_memory_from_another_thread(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    """With ``attached`` the acquisition thread itself waits for the disk."""
    frame_bytes = SHAPE[0] * SHAPE[1] * 2
    writer = CustomWriter(tmp_path / "bp2.ome.tiff", max_queue_bytes=2 * frame_bytes)
    peak: list[int] = []

    def watch(*_: Any) -> None:
        peak.append(writer.stats.queued_bytes)

    with writer.attached(sim_core):
        # on the acquisition thread too, even when the core uses Qt signals (a
        # QApplication exists once any GUI test ran)
        connect_direct(sim_core.mda.events.frameReady, watch)
        try:
            worker = threading.Thread(target=sim_core.mda.run, args=(timelapse(40),))
            worker.start()
            worker.join(60)
        finally:
            sim_core.mda.events.frameReady.disconnect(watch)
    assert not worker.is_alive()
    assert max(peak) <= 2 * frame_bytes
    assert writer.stats.frames_written == 40
    assert writer.stats.frames_lost == 0


# ----------------------------------------------------------------- never overwrite
@pytest.mark.parametrize("existing", ["data", "sidecar", "journal"])
def test_existing_file_is_never_overwritten(tmp_path: Path, existing: str) -> None:
    path = tmp_path / "taken.ome.tiff"
    victim = {
        "data": path,
        "sidecar": sidecar_path(path),
        "journal": journal_path(path),
    }[existing]
    content = b"precious recording \x00\x01\x02" * 100
    victim.write_bytes(content)
    before = victim.stat()
    with pytest.raises(FileExistsError, match="overwrite"):
        CustomWriter(path)
    assert victim.read_bytes() == content
    assert victim.stat().st_mtime_ns == before.st_mtime_ns
    assert [p.name for p in tmp_path.iterdir()] == [victim.name]


def test_existing_position_file_is_never_overwritten(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    path = tmp_path / "multi.ome.tiff"
    victim = tmp_path / "multi_p1.ome.tiff"
    content = b"another run's data" * 50
    victim.write_bytes(content)
    writer = CustomWriter(path)  # the base name itself is free
    seq = timelapse(2, stage_positions=[useq.Position(z=0), useq.Position(z=5)])
    sim_core.mda.run(seq, output=writer)
    assert isinstance(writer.error, FileExistsError)
    assert victim.read_bytes() == content
    assert writer.stats.frames_lost > 0
    assert writer.stats.frames_written + writer.stats.frames_lost == 4
    with pytest.raises(RecordingError, match="not saved"):
        writer.raise_if_failed()


# ----------------------------------------------------------------- bad paths
@pytest.mark.parametrize(
    "name", ["x.png", "x.zarr", "x.ome.zarr", "x.tiff.bak", "x", "x.mp4"]
)
def test_bad_extension_is_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"\.ome\.tiff"):
        CustomWriter(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_rejected(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CustomWriter(missing / "x.ome.tiff")
    assert not (tmp_path / "no").exists()  # folders are not created behind our back


def test_parent_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(FileNotFoundError):
        CustomWriter(blocker / "x.ome.tiff")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root can write anywhere (os.access is always True)",
)
def test_unwritable_folder_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            CustomWriter(folder / "x.ome.tiff")
    finally:
        folder.chmod(0o700)


# ----------------------------------------------------------------- plain TIFF
@pytest.mark.parametrize("ext", [".tif", ".tiff", ".btf", ".ome.tif"])
def test_every_tiff_flavour_is_bigtiff(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path, ext: str
) -> None:
    path = tmp_path / f"plain{ext}"
    writer = _record(sim_core, path, timelapse(3))
    assert writer.files == [path]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, sidecar_path(path).name]
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        assert tif.is_ome == (".ome." in ext)
        # one grey page per frame: 3 frames are not one planar-RGB page
        assert len(tif.pages) == 3
        assert all(
            page.photometric == tifffile.PHOTOMETRIC.MINISBLACK for page in tif.pages
        )
        data = tif.series[0].asarray()
    assert data.shape == (3, *SHAPE)
    for entry in read_json(sidecar_path(path))["p0"]:
        np.testing.assert_array_equal(
            data[entry["mda_event"]["t"]], camera.frame(sim_index(entry))
        )
