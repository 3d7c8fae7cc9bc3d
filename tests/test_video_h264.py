"""Real H.264 (PyAV's libx264): round trips decoded with OpenCV *and* PyAV."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest

from _helpers import SHAPE, read_json, read_video, sim_index, timelapse
from mesofield_napari.data import CV2Writer, open_recording, sidecar_path
from mesofield_napari.data.formats.video_check import decodable_frames
from mesofield_napari.data.writer import codecs
from mesofield_napari.data.writer.h264 import keyframe_interval

if TYPE_CHECKING:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

H, W = SHAPE


@pytest.fixture(autouse=True)
def _no_fourcc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(codecs.FOURCC_ENV, raising=False)


def _uint8(frame: np.ndarray, hi: float = 4095.0) -> np.ndarray:
    """The writer's fixed mapping (cv2.convertScaleAbs rounds half to even)."""
    return np.clip(np.rint(frame.astype(np.float64) * 255.0 / hi), 0, 255)


def psnr(got: np.ndarray, want: np.ndarray) -> float:
    mse = float(np.mean((got.astype(np.float64) - want.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def av_frames(path: Path) -> tuple[list[np.ndarray], str, int]:
    """Gray frames decoded by PyAV, the stream's codec name and its packet count."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="gray") for f in container.decode(stream)]
        name = stream.codec_context.name
    with av.open(str(path)) as container:
        packets = sum(1 for p in container.demux(video=0) if p.size)
    return frames, name, packets


def _camera_frames(camera: SimulatedMesoscopeCamera, n: int) -> list[np.ndarray]:
    return [camera.frame(i) for i in range(n)]


# ----------------------------------------------------------------- lossy H.264
def test_direct_mode_h264_round_trip(
    tmp_path: Path, camera: SimulatedMesoscopeCamera
) -> None:
    path = tmp_path / "pupil.mp4"
    source = _camera_frames(camera, 40)
    writer = CV2Writer(path, fps=30, bit_depth=12)
    assert writer.fourcc == "h264"
    writer.begin(W, H, is_color=False)
    for frame in source:
        writer.add_frame(frame)
    payload = read_json(writer.finish({"camera": "pupil"}))
    writer.raise_if_failed()
    assert writer.frames_written == {"frame_metadatas": 40}
    assert writer.stats.frames_written == 40
    assert payload["codec"] == "h264"
    assert len(payload["frame_metadatas"]) == 40

    cv_frames, fps, fourcc = read_video(path)
    assert len(cv_frames) == 40
    assert fourcc.lower() in ("avc1", "h264")
    # timestamps are the frames' real times (here a tight loop), not 30 fps:
    # test_reader_timing checks them against the sidecar's clock
    assert fps > 0 and fps != pytest.approx(30)
    gray, codec, packets = av_frames(path)
    assert (len(gray), codec, packets) == (40, "h264", 40)
    for cv_frame, av_frame, src in zip(cv_frames, gray, source, strict=True):
        want = _uint8(src)
        assert np.ptp(cv_frame.astype(int), axis=-1).max() == 0  # gray stays gray
        assert psnr(cv_frame[..., 0], want) >= 35
        assert psnr(av_frame, want) >= 35
        np.testing.assert_array_equal(cv_frame[..., 0], av_frame)
    assert decodable_frames(path) == 40


def test_mda_mode_h264_round_trip(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    path = tmp_path / "pupil.mp4"
    writer = CV2Writer(path, fps=29.97, bit_depth=12)
    sim_core.mda.run(timelapse(25), output=writer)
    writer.raise_if_failed()
    assert writer.frames_written == {"p0": 25}

    entries = read_json(sidecar_path(path))["p0"]
    assert len(entries) == 25
    assert {e["video_codec"] for e in entries} == {"h264"}
    cv_frames, fps, _ = read_video(path)
    gray, _, _ = av_frames(path)
    assert len(cv_frames) == len(gray) == 25
    assert fps > 0 and fps != pytest.approx(29.97)  # real times, not the nominal
    for cv_frame, av_frame, entry in zip(cv_frames, gray, entries, strict=True):
        want = _uint8(camera.frame(sim_index(entry)))
        assert psnr(cv_frame[..., 0], want) >= 35
        assert psnr(av_frame, want) >= 35

    rec = open_recording(path)  # our reader
    assert (rec.kind, rec.frames, rec.codec) == ("video", 25, "h264")
    assert psnr(np.asarray(rec.data[24]), cv_frames[24][..., 0]) == float("inf")


def test_keyframes_at_most_one_second_apart(tmp_path: Path) -> None:
    path = tmp_path / "k.mp4"
    rng = np.random.default_rng(3)
    writer = CV2Writer(path, fps=10)
    writer.begin(W, H, is_color=False)
    for _ in range(35):
        writer.add_frame(rng.integers(0, 256, (H, W), dtype=np.uint8))
    writer.finish()
    with av.open(str(path)) as container:
        keys = [i for i, p in enumerate(container.demux(video=0)) if p.is_keyframe]
    assert keyframe_interval(10) == 10
    assert keys == [0, 10, 20, 30]


def test_colour_frames_h264(tmp_path: Path) -> None:
    path = tmp_path / "colour.mp4"
    base = np.zeros((H, W, 3), np.uint8)
    base[:, : W // 2] = (255, 0, 0)  # blue half (BGR)
    base[:, W // 2 :] = (0, 0, 255)  # red half
    writer = CV2Writer(path, fps=20)
    writer.begin(W, H, is_color=True)
    for _ in range(5):
        writer.add_frame(base)
    writer.finish()
    frames, _, _ = read_video(path)
    assert len(frames) == 5
    assert psnr(frames[-1], base) >= 35


def test_crf_trades_size_for_quality(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    source = [rng.integers(0, 256, (H, W), dtype=np.uint8) for _ in range(10)]
    sizes = {}
    for crf in (10, 40):
        path = tmp_path / f"crf{crf}.mp4"
        writer = CV2Writer(path, crf=crf, preset="veryfast")
        writer.begin(W, H, is_color=False)
        for frame in source:
            writer.add_frame(frame)
        writer.finish()
        sizes[crf] = path.stat().st_size
        assert len(read_video(path)[0]) == 10
    assert sizes[10] > 2 * sizes[40]


@pytest.mark.parametrize("crf", [-1, 52, float("nan")])
def test_bad_crf_rejected(tmp_path: Path, crf: float) -> None:
    with pytest.raises(ValueError, match=r"crf must be within 0\.\.51"):
        CV2Writer(tmp_path / "x.mp4", crf=crf)


# ----------------------------------------------------------------- lossless
@pytest.mark.parametrize("how", [{"lossless": True}, {"fourcc": "h264-lossless"}])
def test_lossless_h264_gives_back_exact_pixels(
    tmp_path: Path, camera: SimulatedMesoscopeCamera, how: dict[str, object]
) -> None:
    path = tmp_path / "exact.mp4"
    source = [f.astype(np.uint16) for f in _camera_frames(camera, 12)]
    source.append(np.tile(np.arange(W, dtype=np.uint16) * 64, (H, 1)))  # 0..4032 ramp
    writer = CV2Writer(path, fps=25, bit_depth=12, **how)  # type: ignore[arg-type]
    assert writer.fourcc == "h264-lossless"
    writer.begin(W, H, is_color=False)
    for frame in source:
        writer.add_frame(frame)
    payload = read_json(writer.finish())
    assert payload["codec"] == "h264-lossless"

    cv_frames, _, _ = read_video(path)
    gray, codec, _ = av_frames(path)
    assert len(cv_frames) == len(gray) == len(source)
    assert codec == "h264"
    for cv_frame, av_frame, src in zip(cv_frames, gray, source, strict=True):
        want = _uint8(src).astype(np.uint8)
        np.testing.assert_array_equal(av_frame, want)
        np.testing.assert_array_equal(cv_frame[..., 0], want)


def test_lossless_rejects_a_lossy_fourcc(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lossless video needs H264"):
        CV2Writer(tmp_path / "x.mp4", fourcc="mp4v", lossless=True)


def test_env_var_h264_lossless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(codecs.FOURCC_ENV, "h264-lossless")
    assert CV2Writer(tmp_path / "x.mp4").fourcc == "h264-lossless"


# ----------------------------------------------------------------- export video
def test_export_video_writes_h264_by_default(tmp_path: Path) -> None:
    from _synthetic import write_recording
    from mesofield_napari.data.batch import export_video

    ramp = (np.arange(24)[:, None, None] * 150 + np.zeros((1, H, W))).astype(np.uint16)
    src = write_recording(tmp_path / "r.ome.tiff", ramp)
    res = export_video(src, contrast=(0, 24 * 150), out_dir=tmp_path / "v", fps=20)
    assert res.fourcc == "h264"
    assert read_json(res.sidecar)["codec"] == "h264"
    gray, codec, packets = av_frames(res.path)
    assert (len(gray), codec, packets) == (24, "h264", 24)
    cv_frames, _, _ = read_video(res.path)
    assert len(cv_frames) == 24
    for i, frame in enumerate(gray):
        assert abs(float(frame.mean()) - i * 150 * 255 / 3600) <= 1.5
