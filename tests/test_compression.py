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

CODES = {"deflate": 8, "zstd": 50000, "jpegxl": 50002}
PREDICTOR = {"deflate": 2, "zstd": 2, "jpegxl": 1}  # JPEG XL predicts pixels itself


def _record(
    core: UniMMCore, path: Path, seq: useq.MDASequence, **kw: Any
) -> CustomWriter:
    writer = CustomWriter(path, **kw)
    with writer.attached(core):
        core.mda.run(seq)
    assert writer.error is None, writer.error
    writer.raise_if_failed()
    return writer


@pytest.mark.parametrize("codec", ["deflate", "zstd", "jpegxl"])
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
        assert (page.compression, page.predictor) == (CODES[codec], PREDICTOR[codec])
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
    assert all(name in str(info.value) for name in ("deflate", "zstd", "jpegxl"))
    assert not list(tmp_path.iterdir())  # nothing created


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_jpegxl_refuses_frames_it_cannot_hold_before_any_file(
    tmp_path: Path, dtype: str
) -> None:
    from mesofield_napari.data.formats.tiff_compressed import create_compressed_tiff

    path = tmp_path / "x.ome.tiff"
    with pytest.raises(ValueError) as info:
        create_compressed_tiff(
            path, dtype=np.dtype(dtype), frame_shape=(8, 8), dims="T", sizes=(1,),
            growing=False, is_ome=False, metadata={}, compression="jpegxl",
        )  # fmt: skip
    assert str(info.value) == (
        f"jpegxl compresses uint8 and uint16 frames, not {dtype}: choose zstd or deflate"
    )
    assert not path.exists()


def test_jpegxl_keeps_every_16_bit_value(tmp_path: Path) -> None:
    """Lossless over the whole uint16 range (not only a camera's 12 bits)."""
    from mesofield_napari.data.formats.tiff_compressed import decode, encode_frame

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 2**16, (96, 130), dtype=np.uint16)
    frame[0, :4] = (0, 1, 65534, 65535)
    strip = encode_frame(frame, "jpegxl")
    np.testing.assert_array_equal(
        decode(strip, "jpegxl", frame.dtype, frame.shape), frame
    )
    with pytest.raises(ValueError, match="not uint8"):
        decode(strip, "jpegxl", np.dtype("uint8"), frame.shape)


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


# ----------------------------------------------------------------- a real crash
CRASH_CHILD = """
import sys, useq
from mesofield_napari.devices.sim_camera import create_sim_core
from mesofield_napari.data import CustomWriter
core = create_sim_core((64, 64), exposure_ms=2)
writer = CustomWriter(sys.argv[1], compression=sys.argv[2], until_stop=sys.argv[3] == "1")
with writer.attached(core):
    core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 2000}))
print("FINISHED", flush=True)
"""


@pytest.mark.parametrize(
    ("codec", "until_stop"),
    [("zstd", False), ("deflate", True), ("jpegxl", True)],
    ids=["plan", "open", "jpegxl-open"],
)
def test_sigkill_mid_compressed_run_then_recover(
    tmp_path: Path, codec: str, until_stop: bool
) -> None:
    from _helpers import record_then_kill
    from mesofield_napari.data import journal_path, recover
    from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

    path = tmp_path / "killed.ome.tiff"
    jpath = journal_path(path)
    n = record_then_kill(CRASH_CHILD, path, codec, str(int(until_stop)), frames=20)
    assert 20 <= n < 2000
    with tifffile.TiffFile(path) as tif:  # no IFD before it is finished
        assert len(tif.pages) == 0

    report = recover(path)
    assert report.recovered and report.frames == n
    assert not jpath.exists()
    entries = read_json(sidecar_path(path))["p0"]
    assert [e["mda_event"]["t"] for e in entries] == list(range(n))
    camera = SimulatedMesoscopeCamera((64, 64), 0, 12)  # same scene (seed 0)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.compression == CODES[codec]
        assert tif.series[0].shape == (n, 64, 64)  # exact, not the plan's 2000
        data = tif.series[0].asarray()
    for entry in entries:
        np.testing.assert_array_equal(
            data[entry["mda_event"]["t"]], camera.frame(sim_index(entry))
        )
    rec = open_recording(path)
    assert rec.frames == n
    np.testing.assert_array_equal(np.asarray(rec.data[n - 1]), data[n - 1])
    again = recover(path)  # idempotent: nothing left to do, file unchanged
    assert again.frames == n and not again.recovered


def test_inspect_reports_compression_and_ratio(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    from mesofield_napari.data.reader.summary import inspect_lines, summarize_recording

    path = tmp_path / "ratio.ome.tiff"
    _record(sim_core, path, timelapse(10), compression="zstd")
    summary = summarize_recording(path)
    assert summary["compression"] == "zstd"
    raw = 10 * SHAPE[0] * SHAPE[1] * 2
    assert summary["size_ratio"] == pytest.approx(path.stat().st_size / raw, abs=1e-4)
    assert 0 < summary["size_ratio"] < 1
    assert summary["complete"] and summary["frames"] == 10
    text = "\n".join(inspect_lines(summary))
    assert f"compression: zstd  size ratio {summary['size_ratio']:.3f} of raw" in text

    plain = tmp_path / "plain.ome.tiff"
    _record(sim_core, plain, timelapse(2))
    assert summarize_recording(plain)["compression"] is None


def test_stopped_early_planned_run_keeps_zero_planes(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    """A t/z run stopped mid time point keeps whole time points; the planes never
    acquired read as zeros (one shared zero strip), as uncompressed files do."""
    path = tmp_path / "early.ome.tiff"
    writer = CustomWriter(path, compression="deflate")
    seq = timelapse(4, z_plan={"range": 2, "step": 1})  # 4 t x 3 z

    def stop_after_four(frame: np.ndarray, event: useq.MDAEvent, meta: Any) -> None:
        if writer.stats.frames_received >= 4:
            sim_core.mda.cancel()

    with writer.attached(sim_core):
        sim_core.mda.events.frameReady.connect(stop_after_four)
        sim_core.mda.run(seq)
    writer.raise_if_failed()
    got = writer.stats.frames_written
    assert got >= 4
    data = tifffile.imread(path)
    pages = -(-got // 3) * 3
    assert data.shape == (pages // 3, 3, *SHAPE)
    payload = read_json(sidecar_path(path))["p0"]
    assert len(payload) == got
    seen = {(e["mda_event"]["t"], e["mda_event"]["z"]) for e in payload}
    for t in range(pages // 3):
        for z in range(3):
            if (t, z) not in seen:
                assert not data[t, z].any()


# ----------------------------------------------------------------- the command line
def _cli(*args: object) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "mesofield_napari", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_record_compression_option_then_inspect(tmp_path: Path) -> None:
    import json

    out = tmp_path / "exp"
    proc = _cli(
        "record", "--out", out, "--frames", 6, "--size", "32x48", "--exposure", 0,
        "--compression", "zstd", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"]
    tiff = next(Path(f["path"]) for f in result["files"] if f["kind"] == "tiff")
    with tifffile.TiffFile(tiff) as tif:
        assert tif.pages.first.compression == 50000
        assert tif.series[0].shape == (6, 32, 48)
    proc = _cli("inspect", tiff, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["compression"] == "zstd"
    assert 0 < summary["size_ratio"] < 1
    text = _cli("inspect", tiff).stdout
    assert "compression: zstd  size ratio" in text


def test_record_bad_compression_is_one_line(tmp_path: Path) -> None:
    proc = _cli(
        "record", "--out", tmp_path / "o", "--frames", 2, "--compression", "lz4"
    )
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "--compression" in lines[0]
    assert not list(tmp_path.rglob("sub-*"))


# ----------------------------------------------------------------- hardware.yaml
ONE_CAMERA = """\
cameras:
  - id: mesoscope
    name: meso
    backend: micromanager
    primary: "true"
    fps: 20
    properties: {width: 64, height: 48}
    output: {bids_type: func, file_type: ome.tiff, compression: %s}
"""


def _experiment(folder: Path, compression: str) -> Path:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hardware.yaml").write_text(ONE_CAMERA % compression, encoding="utf-8")
    subject = {"sex": "F", "genotype": "g", "DOB": "2025-01-02", "DOS": "2025-06-20",
               "session": "3", "task": "wf", "weight": "20"}  # fmt: skip
    config = {
        "Configuration": {"experimenter": "JG", "protocol": "P7", "duration": 0.5},
        "Subjects": {"M1": subject},
        "DisplayKeys": ["subject", "session"],
    }
    (folder / "experiment.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_hardware_yaml_output_compression_records_compressed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mesofield.datakit.core import Dataset

    from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera
    from mesofield_napari.experiment import load_experiment, record_experiment

    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", "psygnal")
    rig = _experiment(tmp_path / "rig", "deflate")
    assert load_experiment(rig).cameras[0].output.compression == "deflate"
    out = tmp_path / "experiment"
    result = record_experiment(rig, out=out)
    assert result["ok"], result["errors"]
    meso = next(f for f in result["files"] if f["device_id"] == "mesoscope")
    with tifffile.TiffFile(meso["path"]) as tif:
        assert tif.pages.first.compression == 8
        stack = tif.series[0].asarray()
    side = read_json(meso["sidecar"])["p0"]
    assert stack.shape == (meso["frames"], 48, 64) and len(side) == meso["frames"] > 0
    camera = SimulatedMesoscopeCamera((48, 64), seed=0)
    for plane, entry in zip(stack, side, strict=True):
        np.testing.assert_array_equal(plane, camera.frame(sim_index(entry)))
    frame, errors = Dataset.from_directory(out).materialize(
        strict=False, return_errors=True
    )
    loaded = set(errors.loc[errors["status"] == "ok", "Source"])
    assert "meso_metadata" in loaded
    row = frame.iloc[0]
    assert len(row[("meso_metadata", "ImageNumber")]) == meso["frames"]


@pytest.mark.parametrize(
    ("value", "file_type", "words"),
    [
        ("lz4", "ome.tiff", "output.compression: unknown compression 'lz4'"),
        ("zstd", "mp4", "output.compression applies to ome.tiff files only"),
    ],
)
def test_hardware_yaml_bad_compression_is_one_line(
    tmp_path: Path, value: str, file_type: str, words: str
) -> None:
    from mesofield_napari.experiment import ExperimentError, load_experiment

    rig = _experiment(tmp_path / "rig", value)
    text = (rig / "hardware.yaml").read_text().replace("ome.tiff", file_type)
    (rig / "hardware.yaml").write_text(text)
    with pytest.raises(ExperimentError) as info:
        load_experiment(rig)
    message = str(info.value)
    assert words in message and "hardware.yaml" in message and "\n" not in message


def test_reader_is_lazy_and_names_a_frame_that_does_not_decode(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    """Opening reads the strip table only: a damaged strip is found when (and only
    when) its frame is read, with one clear error naming the file and frame."""
    path = tmp_path / "lazy.ome.tiff"
    _record(sim_core, path, timelapse(8), compression="zstd")
    strips: list[tuple[int, int]] = []
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            strips.append((page.dataoffsets[0], page.databytecounts[0]))
    offset, nbytes = strips[5]
    with open(path, "r+b") as fh:  # scramble frame 5's strip
        fh.seek(offset)
        fh.write(bytes(nbytes))
    rec = open_recording(path)  # no decompression at open: no error yet
    assert rec.frames == 8 and rec.compression == "zstd"
    frames = read_json(sidecar_path(path))["p0"]
    np.testing.assert_array_equal(
        np.asarray(rec.data[0]), camera.frame(sim_index(frames[0]))
    )
    with pytest.raises(ValueError, match=r"lazy\.ome\.tiff: frame 5 does not decode"):
        np.asarray(rec.data[5])
