"""The batch-export widget's Qt-free model: requests, ROIs, running, results."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from _synthetic import SHAPE, traced_stack, write_recording
from mesofield_napari.data.batch import dff_trace, mean_trace
from mesofield_napari.models.batch_export import (
    DEFAULT_PATTERN,
    OPTIONS,
    LatestProgress,
    RequestError,
    Trace,
    build_request,
    execute,
    labels_mask,
    layer_sources,
    option_defaults,
    read_trace_csv,
    rect_roi,
    result_rows,
    trace_matches,
    trace_path,
)

N = 20


@pytest.fixture
def recs(tmp_path: Path) -> list[Path]:
    return [
        write_recording(
            tmp_path / "runs" / f"sub-{i}" / "func" / f"sub-{i}_meso.ome.tiff",
            traced_stack(N, seed=i),
        )
        for i in (1, 2)
    ]


# ---------------------------------------------------------------- build_request
def test_defaults_mirror_the_library_and_cli_names() -> None:
    d = option_defaults()
    assert set(d) == set(OPTIONS)
    assert d["method"] == "collapse_first" and d["camera_offset"] == 100.0
    assert d["percentile"] == 10.0 and d["window_seconds"] == 30.0
    assert d["n_f0_samples"] == 200 and d["chunk_frames"] == 256
    assert d["fix_first_frame"] is True and d["ext"] == ".mp4"
    assert d["name"] == "montage.png"
    assert (d["fs"], d["fps"], d["contrast_low"], d["contrast_high"]) == (0, 0, 0, 0)


def test_inputs_are_merged_once_and_run_kwargs(recs: list[Path], tmp_path) -> None:
    req = build_request(
        "mean-trace",
        files=[recs[0]],
        folder=tmp_path / "runs",
        layer_paths=[str(recs[0]), recs[1]],
        out_dir="",
        scheduler="  ",
    )
    assert req.paths == [recs[0], recs[1], tmp_path / "runs"]
    assert DEFAULT_PATTERN == "" and req.pattern is None and req.out_dir is None
    assert req.scheduler is None and req.params == {}
    kw = req.run_kwargs()
    assert kw["operation"] == "mean-trace" and kw["workers"] == 1
    assert kw["pattern"] is None and kw["overwrite"] is False
    assert kw["include_videos"] is False  # the TIFF cameras unless asked
    assert build_request("dff", files=recs, include_videos=True).include_videos
    assert build_request("mean-trace", files=recs, pattern="").pattern is None


def test_zero_means_default_and_only_the_operation_s_options(recs) -> None:
    dff = build_request("dff", files=recs, max_frames=0, options={"fs": 0})
    assert "fs" not in dff.params and "max_frames" not in dff.params
    assert dff.params == {
        "method": "collapse_first",
        "camera_offset": 100.0,
        "percentile": 10.0,
        "window_seconds": 30.0,
        "f0_floor": 1.0,
        "n_f0_samples": 200,
        "chunk_frames": 256,
        "fix_first_frame": True,
    }
    dff = build_request(
        "dff",
        files=recs,
        max_frames=7,
        options={"fs": 20, "method": "pixelwise", "fix_first_frame": False},
    )
    assert dff.params["fs"] == 20 and dff.params["max_frames"] == 7
    assert dff.params["method"] == "pixelwise" and not dff.params["fix_first_frame"]

    video = build_request("video", files=recs)
    assert video.params == {"out_ext": ".mp4"}
    video = build_request(
        "video",
        files=recs,
        options={
            "ext": "avi",
            "fps": 12.5,
            "fourcc": "MJPG",
            "contrast_low": 10,
            "contrast_high": 900,
        },
    )
    assert video.params == {
        "out_ext": ".avi",
        "fps": 12.5,
        "fourcc": "MJPG",
        "contrast": (10.0, 900.0),
    }
    mont = build_request("montage", files=recs)
    assert mont.params == {"frame": "mean", "name": "montage.png"}
    mont = build_request(
        "montage",
        files=recs,
        options={"frame": "frame", "frame_index": -1, "columns": 3, "name": "a.PNG"},
    )
    assert mont.params == {"frame": -1, "columns": 3, "name": "a.PNG"}
    trace = build_request("mean-trace", files=recs, roi=[1, 5, 2, 9])
    assert trace.params == {"roi": (1, 5, 2, 9)}
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:4, 3:6] = 2
    trace = build_request("mean-trace", files=recs, roi=mask, label=2)
    assert trace.params["roi"] is mask and trace.params["label"] == 2
    assert "label" not in build_request("mean-trace", files=recs, roi=mask).params
    # a ROI is ignored by the other operations (the widget hides it)
    assert "roi" not in build_request("dff", files=recs, roi=(0, 1, 0, 1)).params


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"files": []}, "choose recordings"),
        ({"files": ["/no/such.ome.tiff"]}, "no such file"),
        ({"folder": "/no/such/folder"}, "not a folder"),
        ({"operation": "zip"}, "unknown operation"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"workers": 2, "scheduler": "tcp://x:1"}, "workers is for local runs"),
        ({"operation": "dff", "options": {"percentile": 101}}, "within 0..100"),
        ({"operation": "dff", "options": {"window_seconds": 0}}, "positive"),
        ({"operation": "dff", "options": {"method": "x"}}, "method must be"),
        ({"operation": "dff", "options": {"fs": float("nan")}}, "finite"),
        ({"operation": "video", "options": {"ext": ".mkv"}}, ".mp4 or .avi"),
        ({"operation": "video", "options": {"fourcc": "H26"}}, "4 characters"),
        (
            {"operation": "video", "options": {"contrast_low": 5, "contrast_high": 5}},
            "low < high",
        ),
        ({"operation": "montage", "options": {"name": "m.jpg"}}, "end with .png"),
        ({"operation": "montage", "options": {"name": "d/m.png"}}, "a file name"),
        ({"operation": "montage", "options": {"columns": -1}}, "at least 0"),
        ({"roi": (5, 5, 0, 3)}, "is empty"),
        ({"options": {"bogus": 1}}, "unknown option"),
    ],
)
def test_invalid_values_are_refused(recs, kwargs: dict, message: str) -> None:
    op = kwargs.pop("operation", "mean-trace")
    if "folder" not in kwargs:
        kwargs.setdefault("files", recs)
    with pytest.raises(RequestError, match=message):
        build_request(op, **kwargs)


# ---------------------------------------------------------------- ROIs and layers
def test_rect_roi_pixel_centres_transforms_and_clipping() -> None:
    # napari's rectangle around pixels 2..5 (rows) and 3..8 (cols): edges at ±0.5
    corners = np.array([[1.5, 2.5], [1.5, 8.5], [5.5, 8.5], [5.5, 2.5]])
    assert rect_roi(corners) == (2, 6, 3, 9)
    # a 3-D shapes layer (t, y, x): the last two columns count
    assert rect_roi(np.c_[np.zeros(4), corners]) == (2, 6, 3, 9)
    # shapes drawn in µm over an image with 2 µm pixels, shifted by 10 µm
    world = corners * 2 + 10
    assert rect_roi(world, image_scale=(2, 2), image_translate=(10, 10)) == (
        2,
        6,
        3,
        9,
    )
    assert rect_roi(corners / 2, scale=(2, 2)) == (2, 6, 3, 9)
    # clipped to the frame
    big = np.array([[-20.0, -20.0], [100.0, 200.0]])
    assert rect_roi(big, frame_shape=SHAPE) == (0, SHAPE[0], 0, SHAPE[1])
    with pytest.raises(RequestError, match="no pixel"):
        rect_roi(np.array([[-9.0, -9.0], [-5.0, -5.0]]), frame_shape=SHAPE)
    with pytest.raises(RequestError, match="no vertices"):
        rect_roi(np.zeros((0, 2)))


def test_labels_mask_and_layer_sources(tmp_path: Path) -> None:
    lab = np.zeros((3, 4, 5), np.int32)
    lab[1, 0, 0] = 3
    lab[2, 3, 4] = 1
    mask = labels_mask(lab)
    assert mask.shape == (4, 5) and mask[0, 0] == 3 and mask[3, 4] == 1
    with pytest.raises(RequestError, match="no labelled pixel"):
        labels_mask(np.zeros((4, 5), np.int32))

    class Layer:
        def __init__(self, name: str, metadata: object) -> None:
            self.name, self.metadata = name, metadata

    src = tmp_path / "a.ome.tiff"
    layers = [
        Layer("a", {"mesofield": {"source": str(src)}}),
        Layer("plain", {}),
        Layer("odd", {"mesofield": {"source": None}}),
        Layer("odd2", None),
    ]
    assert layer_sources(layers) == {"a": src}


def test_trace_drawing_and_layer_matching(tmp_path: Path) -> None:
    rec = tmp_path / "x.ome.tiff"
    t = np.array([0.0, 1.0, 2.0, np.nan])
    trace = Trace(rec, tmp_path / "x_meso-mean-trace.csv", "p0", t, np.arange(4.0), "")
    x, _, label = trace.xy()  # a NaN time: fall back to frame indices
    assert label == "frame" and list(x) == [0, 1, 2, 3]
    assert trace.label == "x_meso-mean"
    verts = trace_path(trace, extent=(30, 60), origin=(5, 7))
    np.testing.assert_allclose(verts[:, 1], [7, 27, 47, 67])
    np.testing.assert_allclose(verts[:, 0], [35, 25, 15, 5])  # larger = higher
    trace.time_s = np.array([0.0, 0.5, 1.0, 1.5])
    trace.values = np.array([1.0, np.inf, 2.0, 3.0])
    assert len(trace_path(trace)) == 3  # the infinite point is dropped
    trace.values = np.array([np.nan, np.nan, np.nan, 1.0])
    with pytest.raises(RequestError, match="fewer than 2"):
        trace_path(trace)

    assert trace_matches(trace, rec, "p0") and trace_matches(trace, rec, None)
    assert not trace_matches(trace, rec, "p1")
    trace.position = "p1"
    assert trace_matches(trace, tmp_path / "x_p1.ome.tiff", "p1")
    assert not trace_matches(trace, tmp_path / "x_p2.ome.tiff", "p1")
    assert not trace_matches(trace, tmp_path / "y.ome.tiff", "p1")


# ---------------------------------------------------------------- execute/results
def test_latest_progress_reports_changes_only() -> None:
    p = LatestProgress()
    assert p.take() is None
    p(1, 10)
    p(3, 10)
    assert p.take() == (3, 10) and p.take() is None
    threads = [threading.Thread(target=p, args=(i, 99)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert p.take()[1] == 99


def test_execute_mean_trace_and_read_back(recs: list[Path], tmp_path: Path) -> None:
    seen = LatestProgress()
    out = execute(build_request("mean-trace", files=recs, roi=(0, 10, 0, 20)), seen)
    assert out.error is None and out.summary is not None and out.summary.ok
    assert seen.take() == (2 * N, 2 * N)
    rows = out.rows
    assert [r.status for r in rows] == ["ok", "ok"]
    assert [r.recording for r in rows] == recs
    assert len(out.traces) == 2
    for trace, rec in zip(out.traces, recs, strict=True):
        expected = mean_trace(rec, (0, 10, 0, 20), out_dir=tmp_path / "check")
        np.testing.assert_allclose(trace.values, expected.values)
        t, v, quantity = read_trace_csv(trace.path)
        assert quantity == "mean" and len(v) == N
        np.testing.assert_allclose(v, trace.values, rtol=1e-9)
        np.testing.assert_allclose(t, np.arange(N) * 0.05, atol=1e-6)
        assert trace.path == rec.parents[1] / "processed" / (
            "sub-"
            + rec.name.split("-")[1].split("_")[0]
            + "_meso_meso-roi-y0-10-x0-20-mean-trace.csv"  # an ROI trace's own name
        )
    # again without overwrite: both fail, listed, no traces
    again = execute(build_request("mean-trace", files=recs, roi=(0, 10, 0, 20)))
    assert [r.status for r in again.rows] == ["failed", "failed"]
    assert "already exists" in again.rows[0].detail and again.traces == []


def test_execute_dff_reads_the_csv_when_results_are_remote(recs, tmp_path) -> None:
    out = execute(
        build_request(
            "dff",
            files=recs[:1],
            out_dir=tmp_path / "o",
            options={"window_seconds": 0.2},
        )
    )
    (trace,) = out.traces
    assert trace.quantity == "dF/F" and len(trace.values) == N
    # as after a dask run: JobResult.results are dropped, the CSV is read instead
    out.summary.jobs[0].results = []
    from mesofield_napari.models.batch_export import traces_from_summary

    (again,) = traces_from_summary(out.summary)
    np.testing.assert_allclose(again.values, trace.values, rtol=1e-8)
    direct = dff_trace(recs[0], window_seconds=0.2, out_dir=tmp_path / "p")
    np.testing.assert_allclose(again.values, direct.values, rtol=1e-8)
    with pytest.raises(ValueError, match="not a trace file"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n", encoding="utf-8")
        read_trace_csv(bad)


def test_execute_cancel_and_errors(recs: list[Path], tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    out = execute(build_request("mean-trace", files=recs), cancel=cancel)
    assert [r.status for r in out.rows] == ["cancelled", "cancelled"]
    assert not list(tmp_path.rglob("*.csv")) and out.traces == []
    # a folder without recordings: the batch cannot start -> error, no summary
    empty = tmp_path / "empty"
    empty.mkdir()
    out = execute(build_request("mean-trace", folder=empty))
    assert out.summary is None and "no recordings found" in out.error
    assert out.rows == []
    # a montage: one PNG shared by every row, no traces
    out = execute(build_request("montage", files=recs, out_dir=tmp_path / "m"))
    assert [r.status for r in out.rows] == ["ok", "ok"] and out.traces == []
    assert result_rows(out.summary)[0].outputs == [tmp_path / "m" / "montage.png"]
