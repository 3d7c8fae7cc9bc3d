"""CV2Writer: MP4/AVI through OpenCV, MDA-driven and direct mode (docs/design.md §5)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
import useq

from _helpers import SHAPE, read_json, read_video, sim_index, timelapse, wait_until
from mesofield_napari.data import CV2Writer, journal_path, sidecar_path
from mesofield_napari.data.writer import codecs
from mesofield_napari.data.writer.codecs import CodecUnavailableWarning

if TYPE_CHECKING:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

H, W = SHAPE
LIMITS = (0, 4095)


@pytest.fixture(autouse=True)
def _no_fourcc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(codecs.FOURCC_ENV, raising=False)


def _expected_uint8(frame: np.ndarray, hi: float = 4095.0) -> np.ndarray:
    return np.clip(np.rint(frame.astype(np.float64) * 255.0 / hi), 0, 255)


def _direct(
    path: Path, frames: list[np.ndarray], *, is_color: bool = False, **kw: object
) -> tuple[CV2Writer, Path]:
    writer = CV2Writer(path, **kw)  # type: ignore[arg-type]
    writer.begin(W, H, is_color=is_color)
    for frame in frames:
        writer.add_frame(frame)
    side = writer.finish({"subject": "m01"})
    return writer, side


# ----------------------------------------------------------------- MDA mode
@pytest.mark.parametrize(
    ("ext", "fourcc", "fps", "tolerance"),
    [(".avi", "FFV1", 29.97, 1), (".mp4", "mp4v", 30, 3), (".avi", "MJPG", 10, 3)],
)
def test_mda_mode_video_and_sidecar(
    sim_core: UniMMCore,
    camera: SimulatedMesoscopeCamera,
    tmp_path: Path,
    ext: str,
    fourcc: str,
    fps: float,
    tolerance: float,
) -> None:
    path = tmp_path / f"pupil{ext}"
    writer = CV2Writer(path, fps=fps, fourcc=fourcc, bit_depth=12)
    assert writer.fourcc == fourcc
    sim_core.mda.run(timelapse(7), output=writer)
    writer.raise_if_failed()
    assert writer.stats.frames_written == 7

    frames, read_fps, _ = read_video(path)
    assert len(frames) == 7
    assert read_fps == pytest.approx(fps, abs=1e-3)
    assert frames[0].shape[:2] == SHAPE

    payload = read_json(sidecar_path(path))
    assert list(payload) == ["p0"]
    entries = payload["p0"]
    assert len(entries) == 7
    assert [e["mda_event"] for e in entries] == [{"t": t} for t in range(7)]
    for entry in entries:
        assert entry["video_codec"] == fourcc
        assert entry["video_fps"] == pytest.approx(fps)
        assert "ImageNumber" in entry["camera_metadata"]
    times = [e["runner_time_ms"] for e in entries]
    assert times == sorted(times)
    assert not journal_path(path).exists()

    # pixels: the fixed 12-bit mapping (lossless codec exact, lossy ones close)
    for video_frame, entry in zip(frames, entries, strict=True):
        expected = _expected_uint8(camera.frame(sim_index(entry)))
        got = video_frame[..., 0].astype(np.float64)
        if tolerance <= 1:
            assert np.abs(got - expected).max() <= tolerance
        else:
            assert np.abs(got - expected).mean() <= tolerance
            assert got.mean() == pytest.approx(expected.mean(), abs=1)


def test_mda_mode_multi_position_videos(sim_core: UniMMCore, tmp_path: Path) -> None:
    path = tmp_path / "cam.avi"
    writer = CV2Writer(path, fourcc="MJPG", bit_depth=12)
    seq = timelapse(3, stage_positions=[useq.Position(z=0), useq.Position(z=1)])
    sim_core.mda.run(seq, output=writer)
    writer.raise_if_failed()
    assert sorted(p.name for p in writer.files) == ["cam_p0.avi", "cam_p1.avi"]
    for key in ("p0", "p1"):
        frames, _, _ = read_video(tmp_path / f"cam_{key}.avi")
        assert len(frames) == 3
    payload = read_json(sidecar_path(path))
    assert {k: len(v) for k, v in payload.items()} == {"p0": 3, "p1": 3}


# ----------------------------------------------------------------- direct mode
def test_direct_mode_video_and_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "behaviour.mp4"
    frames = [np.full((H, W), 200 * i, np.uint16) for i in range(9)]
    writer = CV2Writer(path, fps=20, fourcc="mp4v", contrast_limits=LIMITS)
    writer.begin(W, H, is_color=True)
    assert not journal_path(path).exists()  # made with the first frame
    writer.add_frame(frames[0])
    wait_until(journal_path(path).exists, 30, what="the journal")  # journaling
    for frame in frames[1:]:
        writer.add_frame(frame)
    side = writer.finish({"subject": "m01", "session": 2, "note": "ok"})

    assert side == sidecar_path(path)
    assert side.name == "behaviour.mp4_frame_metadata.json"
    assert not journal_path(path).exists()
    video, fps, _ = read_video(path)
    assert len(video) == 9
    assert video[0].shape == (H, W, 3)
    assert fps == pytest.approx(20)

    payload = read_json(side)
    assert next(iter(payload)) == "frame_metadatas"  # downstream takes the first key
    assert payload["subject"] == "m01"
    assert payload["session"] == 2
    assert payload["note"] == "ok"
    assert payload["codec"] == "mp4v"
    assert payload["fps"] == pytest.approx(20)
    metas = payload["frame_metadatas"]
    assert isinstance(metas, list)
    assert [m["index"] for m in metas] == list(range(9))
    times = [m["runner_time_ms"] for m in metas]
    assert times[0] >= 0
    assert times == sorted(times)
    assert all(m["time_utc"].endswith("+00:00") for m in metas)

    # what mesofield's parser does with a camera sidecar
    table = pd.DataFrame(payload[next(iter(payload))])
    assert table["runner_time_ms"].is_monotonic_increasing
    assert len(table) == 9


def test_direct_mode_grey_frames_to_grey_video(tmp_path: Path) -> None:
    path = tmp_path / "grey.avi"
    frames = [np.full((H, W), v, np.uint16) for v in (0, 1000, 2048, 4095)]
    _direct(path, frames, fourcc="FFV1", contrast_limits=LIMITS)
    video, _, _ = read_video(path)
    assert [int(f[..., 0].mean()) for f in video] == [0, 62, 128, 255]


def test_direct_mode_uint8_color_frames_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "colour.avi"
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    _direct(path, frames, is_color=True, fourcc="FFV1")
    video, _, _ = read_video(path)
    assert len(video) == 3
    for got, sent in zip(video, frames, strict=True):
        np.testing.assert_array_equal(got, sent)  # lossless, no contrast change


def test_add_frame_before_begin_raises(tmp_path: Path) -> None:
    writer = CV2Writer(tmp_path / "x.avi", fourcc="MJPG")
    with pytest.raises(RuntimeError, match="before begin"):
        writer.add_frame(np.zeros((H, W), np.uint16))
    with pytest.raises(RuntimeError, match="before begin"):
        writer.finish()
    assert list(tmp_path.iterdir()) == []


def test_begin_twice_raises(tmp_path: Path) -> None:
    writer = CV2Writer(tmp_path / "x.avi", fourcc="MJPG")
    writer.begin(W, H)
    try:
        with pytest.raises(RuntimeError, match="already recording"):
            writer.begin(W, H)
    finally:
        writer.finish()
    assert read_json(sidecar_path(tmp_path / "x.avi"))["frame_metadatas"] == []


def test_wrong_frame_shape_rejected_and_recording_continues(tmp_path: Path) -> None:
    path = tmp_path / "shape.avi"
    writer = CV2Writer(path, fourcc="FFV1", contrast_limits=LIMITS)
    writer.begin(W, H, is_color=False)
    writer.add_frame(np.full((H, W), 4095, np.uint16))
    with pytest.raises(ValueError, match="does not match"):
        writer.add_frame(np.zeros((H + 1, W), np.uint16))
    with pytest.raises(ValueError, match="does not match"):
        writer.add_frame(np.zeros((W, H), np.uint16))  # transposed
    writer.add_frame(np.full((H, W), 0, np.uint16))
    side = writer.finish()
    video, _, _ = read_video(path)
    assert [int(f.mean()) for f in video] == [255, 0]
    assert [m["index"] for m in read_json(side)["frame_metadatas"]] == [0, 1]


@pytest.mark.parametrize("size", [(0, H), (W, -1)])
def test_begin_rejects_empty_frame_size(tmp_path: Path, size: tuple[int, int]) -> None:
    writer = CV2Writer(tmp_path / "x.avi", fourcc="MJPG")
    with pytest.raises(ValueError, match="frame size"):
        writer.begin(*size)


# ----------------------------------------------------------------- brightness
def test_fixed_contrast_keeps_brightness_stable(tmp_path: Path) -> None:
    """Equal frames give equal brightness, whatever the range of other frames."""
    path = tmp_path / "stable.avi"
    const = np.full((H, W), 2048, np.uint16)
    ramp = np.tile(np.linspace(0, 4095, W).astype(np.uint16), (H, 1))
    dim = np.full((H, W), 300, np.uint16)
    _direct(
        path, [const, ramp, const, dim, const], fourcc="FFV1", contrast_limits=LIMITS
    )
    video, _, _ = read_video(path)
    grey = [f[..., 0].astype(int) for f in video]
    assert len(grey) == 5
    for k in (0, 2, 4):
        np.testing.assert_array_equal(grey[k], grey[0])
    assert abs(grey[0].mean() - 128) <= 1
    assert grey[1].min() == 0
    assert grey[1].max() == 255
    assert abs(grey[3].mean() - 300 * 255 / 4095) <= 1


def test_bit_depth_sets_the_same_mapping_as_limits(tmp_path: Path) -> None:
    const = np.full((H, W), 2048, np.uint16)
    _direct(tmp_path / "a.avi", [const], fourcc="FFV1", bit_depth=12)
    _direct(tmp_path / "b.avi", [const], fourcc="FFV1", bit_depth=16)
    (a,), _, _ = read_video(tmp_path / "a.avi")
    (b,), _, _ = read_video(tmp_path / "b.avi")
    assert abs(a.mean() - 128) <= 1
    assert abs(b.mean() - 2048 * 255 / 65535) <= 1


def test_per_frame_stretch_brightens_a_dim_frame(tmp_path: Path) -> None:
    dim = np.tile(np.linspace(100, 200, W).astype(np.uint16), (H, 1))
    _direct(tmp_path / "fixed.avi", [dim], fourcc="FFV1", contrast_limits=LIMITS)
    _direct(
        tmp_path / "stretch.avi",
        [dim],
        fourcc="FFV1",
        contrast_limits=LIMITS,
        per_frame_stretch=True,
    )
    (fixed,), _, _ = read_video(tmp_path / "fixed.avi")
    (stretched,), _, _ = read_video(tmp_path / "stretch.avi")
    assert fixed.max() <= 13  # 200/4095 of full scale
    assert stretched.min() == 0
    assert stretched.max() == 255
    assert stretched.mean() > 10 * max(fixed.mean(), 1)


def test_invalid_contrast_limits_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="low < high"):
        CV2Writer(tmp_path / "x.avi", fourcc="MJPG", contrast_limits=(100, 100))


# ----------------------------------------------------------------- codecs
def test_default_is_real_h264_without_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback any more
        writer = CV2Writer(tmp_path / "a.mp4")  # default: H264
    assert writer.requested_fourcc == "H264"
    assert writer.fourcc == writer.codec == "h264"
    writer.begin(W, H)
    for _ in range(3):
        writer.add_frame(np.zeros((H, W), np.uint16))
    payload = read_json(writer.finish())
    assert payload["codec"] == "h264"  # the codec actually used
    video, _, fourcc = read_video(tmp_path / "a.mp4")
    assert len(video) == 3
    assert fourcc.lower() in ("avc1", "h264")


@pytest.mark.parametrize(
    ("ext", "used", "words"),
    [(".mp4", "h264", "H.264 (libx264 via PyAV)"), (".avi", "MJPG", "'MJPG'")],
)
def test_unknown_fourcc_warning_names_what_was_asked_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ext: str, used: str, words: str
) -> None:
    monkeypatch.setattr(codecs, "_resolved", {})  # forget earlier probes
    with pytest.warns(CodecUnavailableWarning) as caught:
        writer = CV2Writer(tmp_path / f"a{ext}", fourcc="XXXX")
    (warning,) = caught
    message = str(warning.message)
    assert f"cannot encode fourcc 'XXXX' into {ext} files here; using {words}" in (
        message
    )
    assert "no H.264" not in message
    assert writer.requested_fourcc == "XXXX"
    assert writer.fourcc == used
    writer.begin(W, H)
    writer.add_frame(np.zeros((H, W), np.uint16))
    assert read_json(writer.finish())["codec"] == used

    with warnings.catch_warnings(record=True) as again:  # one warning per combination
        warnings.simplefilter("always")
        CV2Writer(tmp_path / f"b{ext}", fourcc="XXXX")
    assert [w for w in again if issubclass(w.category, CodecUnavailableWarning)] == []


@pytest.mark.parametrize("fourcc", ["MJPG", "FFV1"])
def test_env_var_chooses_the_codec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fourcc: str
) -> None:
    monkeypatch.setenv(codecs.FOURCC_ENV, fourcc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an available codec: no fallback warning
        writer = CV2Writer(tmp_path / "x.avi")
    assert writer.requested_fourcc == fourcc
    assert writer.fourcc == fourcc
    writer.begin(W, H)
    writer.add_frame(np.zeros((H, W), np.uint16))
    payload = read_json(writer.finish())
    assert payload["codec"] == fourcc
    _, _, stored = read_video(tmp_path / "x.avi")
    assert stored.upper() == fourcc


def test_explicit_fourcc_beats_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(codecs.FOURCC_ENV, "FFV1")
    writer = CV2Writer(tmp_path / "x.avi", fourcc="MJPG")
    assert writer.fourcc == "MJPG"


# ----------------------------------------------------------------- paths
@pytest.mark.parametrize("name", ["x.mkv", "x.ome.tiff", "x.mov", "x"])
def test_wrong_extension_names_the_allowed_ones(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"\.mp4") as info:
        CV2Writer(tmp_path / name, fourcc="MJPG")
    assert ".avi" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "fps", [0, -5, float("nan"), float("inf"), -float("inf"), 1000.5, 1e9, "30", True]
)
@pytest.mark.parametrize("fourcc", ["MJPG", "H264"])
def test_invalid_fps_rejected(tmp_path: Path, fps: object, fourcc: str) -> None:
    """fps=inf used to hang forever inside cv2.VideoWriter."""
    with pytest.raises(ValueError, match=r"fps must be a finite number in \(0, 1000\]"):
        CV2Writer(tmp_path / "x.avi", fps=fps, fourcc=fourcc)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_existing_video_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "old.mp4"
    path.write_bytes(b"last week's pupil video")
    with pytest.raises(FileExistsError):
        CV2Writer(path, fourcc="mp4v")
    assert path.read_bytes() == b"last week's pupil video"


def test_missing_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CV2Writer(tmp_path / "nope" / "x.mp4", fourcc="mp4v")


def test_raise_if_failed_is_quiet_after_a_good_run(tmp_path: Path) -> None:
    writer, _ = _direct(
        tmp_path / "ok.avi", [np.zeros((H, W), np.uint16)], fourcc="MJPG"
    )
    assert writer.error is None
    writer.raise_if_failed()
