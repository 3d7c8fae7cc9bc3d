"""Opening recordings lazily: round trips through the real writers and bad input."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile
import useq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import wait_until
from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.data import (
    CustomWriter,
    CV2Writer,
    Recording,
    journal_path,
    open_recording,
    sidecar_path,
)
from mesofield_napari.data.manager.run_manager import RunManager
from mesofield_napari.data.reader.recording import RecordingWarning, open_run
from mesofield_napari.devices.sim_camera import create_sim_core

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pymmcore_plus.experimental.unicore import UniMMCore

H, W = 24, 32


@pytest.fixture
def core() -> Iterator[UniMMCore]:
    c = create_sim_core((H, W), exposure_ms=0)
    yield c
    c.unloadAllDevices()


def _record_tiff(core: UniMMCore, path: Path, seq: useq.MDASequence) -> CustomWriter:
    w = CustomWriter(path)
    result = record(core, [w], seq)
    assert result.ok, result.errors
    return w


@pytest.fixture(scope="module")
def _tiff_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real 6-frame recording; tests get a copy (recording is the slow part)."""
    c = create_sim_core((H, W), exposure_ms=0)
    path = tmp_path_factory.mktemp("template") / "cam.ome.tiff"
    try:
        _record_tiff(c, path, timelapse(6))
    finally:
        c.unloadAllDevices()
    return path


@pytest.fixture
def tiff_path(_tiff_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / _tiff_template.name
    for src in (_tiff_template, sidecar_path(_tiff_template)):
        shutil.copyfile(src, tmp_path / src.name)
    return path


def _quiet_open(path: Path) -> Recording:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordingWarning)
        return open_recording(path)


# ---------------------------------------------------------------- round trips
def test_tiff_round_trip(tiff_path: Path) -> None:
    truth = tifffile.imread(tiff_path)
    for given_path in (tiff_path, sidecar_path(tiff_path)):
        rec = open_recording(given_path)
        assert rec.path == tiff_path
        assert rec.kind == "tiff"
        assert rec.sidecar_state == "final"
        assert rec.positions == ["p0"]
        assert rec.frames == 6
        assert rec.data.shape == (6, H, W)
        assert rec.data.dtype == np.uint16
        np.testing.assert_array_equal(rec.data.compute(), truth)
        assert rec.data[2:4].compute().max() > 0  # real pixels, not the zero fill
        assert len(rec.metadata) == 6
        assert rec.metadata[0]["camera_device"] == "MesoCam"
        t = rec.timestamps_s
        assert t.shape == (6,) and t[0] == 0 and np.all(np.diff(t) >= 0)
        assert rec.fps is not None and rec.fps > 0
        assert rec.dropped_frames == 0
        assert rec.warnings == [] and rec.notes == []
        assert rec.pixel_size_um is None  # the simulated core has no pixel size


def test_video_mda_round_trip(core: UniMMCore, tmp_path: Path) -> None:
    path = tmp_path / "beh.mp4"
    w = CV2Writer(path, fps=20, fourcc="mp4v", bit_depth=12)
    assert record(core, [w], timelapse(5)).ok
    rec = open_recording(path)
    assert (rec.kind, rec.frames, rec.codec) == ("video", 5, "mp4v")
    data = rec.data
    assert data.shape == (5, H, W) and data.dtype == np.uint8  # gray, not BGR
    frames = data.compute()
    assert frames.max() > 0
    np.testing.assert_array_equal(data[3].compute(), frames[3])  # seeking works
    assert rec.sidecar_state == "final"


def test_video_direct_mode_color(tmp_path: Path) -> None:
    path = tmp_path / "pupil.avi"
    w = CV2Writer(path, fps=10, fourcc="MJPG")
    w.begin(W, H, is_color=True)
    for i in range(4):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[..., 2] = 200  # OpenCV frames are BGR: red
        frame[0, 0] = i
        w.add_frame(frame)
    w.finish({"camera": "pupil"})
    rec = open_recording(path)
    assert rec.positions == ["frame_metadatas"]
    assert rec.frames == 4 and rec.data.shape == (4, H, W, 3)
    rgb = rec.data[1].compute()
    assert rgb[H // 2, W // 2, 0] > 150 > rgb[H // 2, W // 2, 2]  # RGB order
    assert rec.fps is not None and rec.codec == "MJPG"


def test_multi_position(core: UniMMCore, tmp_path: Path) -> None:
    seq = useq.MDASequence(
        stage_positions=[{"z": 0}, {"z": 1}], time_plan={"interval": 0, "loops": 3}
    )
    path = tmp_path / "multi.ome.tiff"
    _record_tiff(core, path, seq)
    rec = open_recording(sidecar_path(path))
    assert rec.positions == ["p0", "p1"]
    for pos in rec.positions:
        assert rec.files[pos].name == f"multi_{pos}.ome.tiff"
        assert rec.frames_for(pos) == 3
        np.testing.assert_array_equal(
            rec.data_for(pos).compute(), tifffile.imread(rec.files[pos])
        )
    one = open_recording(tmp_path / "multi_p1.ome.tiff")  # a position's own file
    assert one.positions == ["p1"] and one.frames == 3
    with pytest.raises(KeyError):
        rec.data_for("p7")


def test_run_folder(core: UniMMCore, tmp_path: Path) -> None:
    run = RunManager(tmp_path, "m1", 2, "wf").start()
    run.add_note("mouse awake")
    writers = [
        run.writer_for("meso", "tiff"),
        run.writer_for("pupil", "mp4", fps=30, fourcc="mp4v", bit_depth=12),
    ]
    assert record(core, writers, timelapse(4)).ok
    run.stop()
    recs = open_run(tmp_path)
    assert sorted(r.kind for r in recs) == ["tiff", "video"]
    for r in recs:
        assert r.frames == 4
        assert len(r.notes) == 1 and r.notes[0].endswith("mouse awake")
    with pytest.raises(FileNotFoundError):
        open_run(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("nothing here")
    return folder


# ---------------------------------------------------------------- crashed run
def _crashed_run(core: UniMMCore, path: Path, allocated: int, written: int) -> None:
    """Run a writer's callbacks by hand and stop before sequenceFinished."""
    seq = timelapse(allocated)
    w = CustomWriter(path)
    w.sequenceStarted(seq, {})
    for i, event in enumerate(seq):
        if i == written:
            break
        core.snapImage()
        meta = {"runner_time_ms": 10.0 * i, "camera_metadata": {"ImageNumber": i}}
        w.frameReady(core.getImage(), event, meta)
    wait_until(lambda: w.stats.frames_written >= written, 10)
    w._pipeline.stop()  # the process "died": no sidecar, the journal stays
    assert w._journal is not None
    w._journal.close()  # what the OS does for a dead process: close, keep the file
    for target in w._targets.values():
        os.close(target.fd)


def test_journal_only_crashed_run(core: UniMMCore, tmp_path: Path) -> None:
    path = tmp_path / "crash.ome.tiff"
    _crashed_run(core, path, allocated=8, written=3)
    assert journal_path(path).exists() and not sidecar_path(path).exists()
    assert tifffile.imread(path).shape[0] == 8  # preallocated until recover finishes it
    rec = open_recording(journal_path(path))
    assert rec.sidecar_state == "journal"
    assert rec.frames == 3 and rec.data.shape == (3, H, W)
    assert rec.data.compute().min(axis=(1, 2)).all()  # no all-zero frame
    np.testing.assert_allclose(rec.timestamps_s, [0, 0.01, 0.02])
    assert rec.fps == pytest.approx(100)


def test_journal_cut_mid_line(core: UniMMCore, tmp_path: Path) -> None:
    path = tmp_path / "cut.ome.tiff"
    _crashed_run(core, path, allocated=6, written=4)
    jpath = journal_path(path)
    jpath.write_bytes(jpath.read_bytes()[:-25])  # last line cut short
    with pytest.warns(RecordingWarning, match="unreadable line"):
        rec = open_recording(path)
    assert rec.frames == 3 and rec.sidecar_state == "journal"


# ---------------------------------------------------------------- bad input
def test_corrupt_sidecar_falls_back_to_journal(core: UniMMCore, tmp_path: Path) -> None:
    path = tmp_path / "both.ome.tiff"
    _crashed_run(core, path, allocated=5, written=2)
    sidecar_path(path).write_text('{"p0": [', encoding="utf-8")
    with pytest.warns(RecordingWarning, match="not valid JSON"):
        rec = open_recording(path)
    assert (rec.sidecar_state, rec.frames) == ("journal", 2)
    assert any("journal" in w for w in rec.warnings)


def test_corrupt_sidecar_without_journal(tiff_path: Path) -> None:
    sidecar_path(tiff_path).write_bytes(b"\xff\xfe garbage")
    with pytest.warns(RecordingWarning, match="without frame metadata"):
        rec = open_recording(tiff_path)
    assert rec.sidecar_state == "corrupt"
    assert rec.metadata == [] and rec.timestamps_s.size == 0 and rec.fps is None
    assert rec.frames == 6  # all the frames the file holds


def test_sidecar_with_more_frames_than_file(tiff_path: Path) -> None:
    spath = sidecar_path(tiff_path)
    payload = json.loads(spath.read_text())
    payload["p0"] = payload["p0"] * 3  # 18 entries for a 6-frame file
    spath.write_text(json.dumps(payload))
    with pytest.warns(RecordingWarning, match="holds 6"):
        rec = open_recording(tiff_path)
    assert rec.frames == 6 and rec.data.shape[0] == 6 and len(rec.metadata) == 6


def test_truncated_tiff_opens_complete_frames(tiff_path: Path) -> None:
    frame_bytes = H * W * 2
    with tifffile.TiffFile(tiff_path) as tf:
        offset = tf.pages.first.dataoffsets[0]
    truth = tifffile.imread(tiff_path)
    with open(tiff_path, "r+b") as fh:  # cut in the middle of frame 3
        fh.truncate(offset + 3 * frame_bytes + frame_bytes // 2)
    with pytest.warns(RecordingWarning, match="holds 3"):
        rec = open_recording(tiff_path)
    assert rec.frames == 3
    np.testing.assert_array_equal(rec.data.compute(), truth[:3])


def test_position_keys_cannot_name_other_files(tiff_path: Path) -> None:
    other = tiff_path.parent / "sub"
    other.mkdir()
    shutil.copyfile(tiff_path, other / "x_.ome.tiff")
    sidecar_path(tiff_path).write_text(json.dumps({"/sub/x": [{}], "p0": [{}]}))
    with pytest.warns(RecordingWarning, match="not file names"):
        rec = open_recording(tiff_path)
    assert rec.files == {"p0": tiff_path} and rec.frames == 1


def test_tiff_cut_in_header_is_a_clear_error(tiff_path: Path) -> None:
    with open(tiff_path, "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(ValueError, match=r"cam\.ome\.tiff"):
        _quiet_open(tiff_path)


def test_unreadable_video_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(b"\x00" * 4096)
    with pytest.raises(OSError, match=r"bad\.mp4"):
        open_recording(path)


def test_missing_data_file(tiff_path: Path) -> None:
    spath = sidecar_path(tiff_path)
    tiff_path.unlink()
    with pytest.raises(FileNotFoundError, match=r"cam\.ome\.tiff"):
        open_recording(spath)


def test_unknown_file_type(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a recording"):
        open_recording(path)


def test_open_does_not_read_pixels(tiff_path: Path) -> None:
    """Pixels are mapped, not read: overwriting them after opening shows up."""
    rec = open_recording(tiff_path)
    with tifffile.TiffFile(tiff_path) as tf:
        offset = tf.pages.first.dataoffsets[0]
    with open(tiff_path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.full(H * W, 7, np.uint16).tobytes())
    assert (rec.data[0].compute() == 7).all()


def test_open_reads_no_ifd_beyond_the_second(tiff_path: Path) -> None:
    """O(1) opening: later IFDs are never parsed (garbage there goes unnoticed)."""
    truth = tifffile.imread(tiff_path)
    with tifffile.TiffFile(tiff_path) as tf:
        later = [tf.pages[i].offset for i in range(2, 6)]
    with open(tiff_path, "r+b") as fh:
        for offset in later:
            fh.seek(offset)
            fh.write(b"\xff" * 8)  # absurd tag counts: walking the IFDs would fail
    rec = open_recording(tiff_path)
    assert rec.frames == 6 and rec.warnings == []
    np.testing.assert_array_equal(rec.data.compute(), truth)


# ---------------------------------------------------------------- fuzzing
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(["p0", "p1", "frame_metadatas", "runner_time_ms", "x"]),
            kids,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(
        st.binary(max_size=24)
        | _json.map(lambda v: json.dumps(v).encode())
        | _json.map(lambda v: json.dumps({"meta": v, "pos": "p0"}).encode()),
        max_size=5,
    )
)
def test_fuzz_journal(tiff_path: Path, lines: list[bytes]) -> None:
    sidecar_path(tiff_path).unlink(missing_ok=True)
    header = b'{"format":"mesofield-frame-journal","version":1,"mode":"mda"}'
    journal_path(tiff_path).write_bytes(b"\n".join([header, *lines]))
    try:
        rec = _quiet_open(tiff_path)
    except (ValueError, OSError) as exc:
        assert "cam" in str(exc)
        return
    assert rec.sidecar_state in ("journal", "corrupt")
    assert rec.data.shape[0] == rec.frames <= 6
    rec.fps, rec.dropped_frames, rec.codec, rec.pixel_size_um  # noqa: B018


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(content=st.binary(max_size=64) | _json.map(lambda v: json.dumps(v).encode()))
def test_fuzz_sidecar(tiff_path: Path, content: bytes) -> None:
    sidecar_path(tiff_path).write_bytes(content)
    try:
        rec = _quiet_open(tiff_path)
    except (ValueError, OSError) as exc:
        assert "cam" in str(exc)
        return
    assert 0 <= rec.frames <= 6
    assert rec.data.shape[0] == rec.frames
    assert rec.sidecar_state in ("final", "corrupt")
    for prop in ("fps", "dropped_frames", "codec", "pixel_size_um", "timestamps_s"):
        getattr(rec, prop)


def test_opening_a_recording_reads_no_pixels(tmp_path):
    """dask's from_array copies array inputs that have .copy(); a memmap has one."""
    import tracemalloc

    path = tmp_path / "big.ome.tif"
    stack = np.arange(400 * 128 * 256, dtype=np.uint16).reshape(400, 128, 256)
    tifffile.imwrite(path, stack, bigtiff=True, contiguous=True)
    entries = [{"runner_time_ms": 10.0 * i} for i in range(400)]
    Path(f"{path}_frame_metadata.json").write_text(json.dumps({"p0": entries}))
    del stack
    import dask.array as da

    da.ones(3).sum().compute()  # dask imports its schedulers on first use: not ours
    tracemalloc.start()
    try:
        rec = open_recording(path)
        data = rec.data
        frame = np.asarray(data[123])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data.shape == (400, 128, 256)
    assert frame[0, 0] == 123 * 128 * 256 % 65536
    assert peak < 4 * 2**20  # the file is 25 MiB; open + one frame stays far below
