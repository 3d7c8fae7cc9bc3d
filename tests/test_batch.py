"""Batch export operations on small synthetic recordings with known pixels."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from _helpers import read_video
from _synthetic import SHAPE, traced_stack, write_recording
from mesofield_napari.data import open_recording, sidecar_path
from mesofield_napari.data.batch import (
    Cancelled,
    default_out_dir,
    dff_trace,
    export_video,
    mean_trace,
    montage,
    moving_percentile,
)

N = 40


@pytest.fixture
def stack() -> np.ndarray:
    return traced_stack(N)


@pytest.fixture
def rec_path(tmp_path: Path, stack: np.ndarray) -> Path:
    return write_recording(tmp_path / "run" / "func" / "sub-1_meso.ome.tiff", stack)


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array(rows[1:], dtype=float)


# ---------------------------------------------------------------- mean trace
def test_mean_trace_values_times_and_default_folder(rec_path: Path, stack) -> None:
    res = mean_trace(rec_path)
    assert (
        res.path == rec_path.parents[1] / "processed" / "sub-1_meso_meso-mean-trace.csv"
    )
    assert default_out_dir(open_recording(rec_path)) == res.path.parent
    header, rows = read_csv(res.path)
    assert header == ["Slice", "Mean", "time_s"]
    np.testing.assert_array_equal(rows[:, 0], np.arange(1, N + 1))
    expected = stack.astype(np.float64).mean(axis=(1, 2))
    np.testing.assert_allclose(rows[:, 1], expected, rtol=1e-9)
    np.testing.assert_allclose(res.values, expected, rtol=1e-12)
    np.testing.assert_allclose(rows[:, 2], np.arange(N) * 0.05, atol=1e-6)
    assert res.frames == N and list(res.time_s[:2]) == [0.0, 0.05]


def test_time_column_is_the_sidecar_clock(tmp_path: Path, stack) -> None:
    rng = np.random.default_rng(3)
    times_ms = np.cumsum(rng.uniform(20, 80, N)) + 1234.5
    path = write_recording(tmp_path / "x.ome.tiff", stack, times_ms)
    res = mean_trace(path, out_dir=tmp_path / "out")
    _, rows = read_csv(res.path)
    np.testing.assert_allclose(rows[:, 2], (times_ms - times_ms[0]) / 1000, atol=1e-6)
    # the default ΔF/F sampling rate comes from the same clock
    dff = dff_trace(path, out_dir=tmp_path / "out", window_seconds=0.2)
    assert dff.params["fs"] == pytest.approx(1000 / np.median(np.diff(times_ms)))


def test_roi_rectangle_and_masks(rec_path: Path, stack, tmp_path: Path) -> None:
    out = tmp_path / "o"
    rect = mean_trace(rec_path, (5, 30, 10, 50), out_dir=out)
    np.testing.assert_allclose(
        rect.values, stack[:, 5:30, 10:50].astype(float).mean(axis=(1, 2))
    )
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[2:10, 3:20] = 1
    labels[20:40, 30:60] = 2
    labels[25, 35] = 0  # a hole: not a rectangle any more
    got = mean_trace(rec_path, labels, label=2, out_dir=out, overwrite=True)
    np.testing.assert_allclose(got.values, stack[:, labels == 2].astype(float).mean(1))
    got = mean_trace(rec_path, labels, out_dir=out, overwrite=True)
    np.testing.assert_allclose(got.values, stack[:, labels != 0].astype(float).mean(1))
    mask = np.zeros(SHAPE, dtype=bool)
    mask[::3, ::5] = True
    got = mean_trace(rec_path, mask, out_dir=out, overwrite=True)
    np.testing.assert_allclose(got.values, stack[:, mask].astype(float).mean(1))
    for bad in [(0, 0, 0, 5), (0, 49, 0, 5), np.zeros(SHAPE, bool), np.ones((4, 4))]:
        with pytest.raises(ValueError):
            mean_trace(rec_path, bad, out_dir=out, overwrite=True)


# ---------------------------------------------------------------- ΔF/F
def _reference_moving_percentile(f: np.ndarray, w: int, p: float) -> np.ndarray:
    n, rank = len(f), (w - 1 if p >= 100 else int(w * p / 100))
    out = np.empty(n)
    for i in range(n):
        idx = np.clip(np.arange(i - w // 2, i - w // 2 + w), 0, n - 1)
        out[i] = np.sort(f[idx])[rank]
    return out


@pytest.mark.parametrize("window_s", [0.35, 0.4, 5.0])
def test_dff_collapse_first_matches_reference(rec_path, stack, tmp_path, window_s):
    res = dff_trace(
        rec_path,
        "collapse_first",
        percentile=20.0,
        window_seconds=window_s,
        camera_offset=90.0,
        f0_floor=2.0,
        out_dir=tmp_path,
    )
    f = stack.astype(np.float64).mean(axis=(1, 2)) - 90.0
    w = round(window_s * 20.0)  # 50 ms frames
    f0 = _reference_moving_percentile(f, w, 20.0)
    ref = (f - f0) / (f0 + 2.0)
    ref[0] = ref[1]
    np.testing.assert_allclose(res.values, ref, rtol=1e-9, atol=1e-12)
    assert res.path.name == "sub-1_meso_meso-collapse_first-trace.csv"
    header, rows = read_csv(res.path)
    assert header == ["Slice", "Mean", "time_s"]  # what mesofield's datakit reads
    np.testing.assert_array_equal(rows[:, 0], np.arange(len(ref)))
    np.testing.assert_allclose(rows[:, 1], ref, rtol=1e-8, atol=1e-10)
    assert res.params["window_frames"] == w


@pytest.mark.parametrize("window", [1, 4, 7, 100])
def test_moving_percentile_numpy_fallback_equals_scipy(monkeypatch, window) -> None:
    f = np.random.default_rng(1).normal(size=50)
    ref = _reference_moving_percentile(f, window, 10.0)
    np.testing.assert_allclose(moving_percentile(f, window, 10.0), ref)
    monkeypatch.setitem(__import__("sys").modules, "scipy.ndimage", None)
    np.testing.assert_allclose(moving_percentile(f, window, 10.0), ref)


def test_dff_pixelwise_matches_reference(rec_path, stack, tmp_path) -> None:
    res = dff_trace(
        rec_path,
        "pixelwise",
        n_f0_samples=10,
        percentile=30.0,
        chunk_frames=7,
        fix_first_frame=False,
        out_dir=tmp_path,
    )
    f = stack.astype(np.float64) - 100.0
    idx = np.unique(np.linspace(0, N - 1, 10).round().astype(int))
    f0 = np.percentile(f[idx], 30.0, axis=0)
    ref = ((f - f0) / (f0 + 1.0)).mean(axis=(1, 2))
    np.testing.assert_allclose(res.values, ref, rtol=1e-5, atol=1e-6)
    assert res.path.name == "sub-1_meso_meso-pixelwise-trace.csv"


def test_dff_max_frames_fix_first_and_fs(tmp_path: Path, stack) -> None:
    path = write_recording(tmp_path / "x.ome.tiff", stack)
    res = dff_trace(path, max_frames=12, fs=10.0, window_seconds=0.5, out_dir=tmp_path)
    assert res.frames == 12 and res.values[0] == res.values[1]
    assert res.params["window_frames"] == 5
    with pytest.raises(ValueError, match="method"):
        dff_trace(path, "nope", out_dir=tmp_path)  # type: ignore[arg-type]
    sidecar_path(path).write_text(json.dumps({"p0": [{}] * N}))  # no clock
    with pytest.raises(ValueError, match="give fs"):
        dff_trace(path, out_dir=tmp_path, overwrite=True)


# ---------------------------------------------------------------- video
def test_video_frames_stable_brightness_and_sidecar(tmp_path: Path) -> None:
    gradient = np.tile(np.linspace(200, 3000, SHAPE[1]), (SHAPE[0], 1))
    stack = np.repeat(gradient[None], 30, axis=0).astype(np.uint16)
    path = write_recording(tmp_path / "g.ome.tiff", stack)
    res = export_video(path, fourcc="mp4v", out_dir=tmp_path / "v")
    frames, fps, _ = read_video(res.path)
    assert len(frames) == 30 and res.frames == 30
    assert fps == pytest.approx(20.0)
    means = np.array([f.mean() for f in frames])
    assert np.ptp(means) < 1.0  # one mapping: no flicker
    side = json.loads(res.sidecar.read_text())
    times = [e["runner_time_ms"] for e in side["frame_metadatas"]]
    np.testing.assert_allclose(times, np.arange(30) * 50.0)
    assert side["source"] == str(path) and side["codec"] == "mp4v"
    assert open_recording(res.path).frames == 30


def test_video_ramp_maps_monotonically_with_given_contrast(tmp_path: Path) -> None:
    values = 100 + 50 * np.arange(20)
    stack = np.broadcast_to(values[:, None, None], (20, *SHAPE)).astype(np.uint16)
    path = write_recording(tmp_path / "r.ome.tiff", stack)
    res = export_video(
        path, ".avi", fourcc="MJPG", contrast=(100, 1050), out_dir=tmp_path
    )
    assert res.path.name == "r.avi" and res.contrast_limits == (100.0, 1050.0)
    frames, _, _ = read_video(res.path)
    means = np.array([f.mean() for f in frames])
    assert len(means) == 20 and np.all(np.diff(means) > 0)
    expected = (values - 100) * 255 / 950
    np.testing.assert_allclose(means, expected, atol=3)


# ---------------------------------------------------------------- montage
def test_montage_shape_and_tiles(tmp_path: Path, stack) -> None:
    a = write_recording(tmp_path / "run" / "func" / "a.ome.tiff", stack)
    b = write_recording(tmp_path / "run" / "func" / "b.ome.tiff", stack[:, ::-1])
    res = montage([a, b, tmp_path / "missing.ome.tiff"], columns=2)
    assert res.path == tmp_path / "run" / "processed" / "montage.png"
    img = cv2.imread(str(res.path), cv2.IMREAD_UNCHANGED)
    assert img.shape == res.shape == (18 + SHAPE[0], 2 * SHAPE[1] + 4)
    assert res.tiles == [a, b] and list(res.skipped) == [tmp_path / "missing.ome.tiff"]
    left = img[18:, : SHAPE[1]].astype(float)
    right = img[18:, SHAPE[1] + 4 :].astype(float)
    np.testing.assert_allclose(left, right[::-1], atol=1)  # b is a flipped a
    mean = stack.astype(float).mean(0)
    assert np.corrcoef(left.ravel(), mean.ravel())[0, 1] > 0.99
    single = montage([a], frame=-1, name="last.png")
    assert single.shape == (18 + SHAPE[0], SHAPE[1])


# ---------------------------------------------------------------- cancel, overwrite
@pytest.mark.parametrize("op", ["mean", "collapse", "pixelwise", "video", "montage"])
def test_cancel_leaves_no_file(rec_path: Path, tmp_path: Path, op: str) -> None:
    out = tmp_path / "cancelled"
    cancel = threading.Event()
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        cancel.set()

    kw = {"out_dir": out, "progress": progress, "cancel": cancel}
    with pytest.raises(Cancelled):
        if op == "mean":
            mean_trace(rec_path, **kw)
        elif op == "collapse":
            dff_trace(rec_path, chunk_frames=4, **kw)
        elif op == "pixelwise":
            dff_trace(rec_path, "pixelwise", chunk_frames=4, **kw)
        elif op == "video":
            export_video(rec_path, fourcc="mp4v", **kw)
        else:
            montage([rec_path, rec_path], **kw)
    assert len(calls) == 1  # stopped at the first check after the request
    if op in ("collapse", "pixelwise", "montage"):  # several blocks: stopped early
        assert calls[0][0] < calls[0][1]
    assert list(out.iterdir()) == []


def test_overwrite_refused_keeps_file_identical(rec_path: Path, tmp_path: Path) -> None:
    first = mean_trace(rec_path, out_dir=tmp_path)
    before = first.path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        mean_trace(rec_path, out_dir=tmp_path, max_frames=5)
    assert first.path.read_bytes() == before
    video = export_video(rec_path, ".avi", fourcc="MJPG", out_dir=tmp_path)
    vbytes = video.path.read_bytes()
    with pytest.raises(FileExistsError):
        export_video(rec_path, ".avi", fourcc="MJPG", out_dir=tmp_path)
    assert video.path.read_bytes() == vbytes
    again = mean_trace(rec_path, out_dir=tmp_path, max_frames=5, overwrite=True)
    assert again.path == first.path and again.path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
