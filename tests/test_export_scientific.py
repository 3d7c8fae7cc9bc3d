"""Exports come from the scientific data: the TIFF cameras, unless videos are asked for.

A user following the README (``record --writer both``, ``export mean-trace EXP``,
``export dff EXP``, datakit) once got datakit's ``meso`` traces from the 8-bit H.264
preview: the video's trace was named ``…_meso_mp4_meso-mean-trace.csv``, which
datakit's ``*_meso-mean-trace.csv`` also matches. These tests run the real pipeline
(simulated core, real files, real datakit) and compare with NumPy on the TIFF.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from mesofield.datakit.core import Dataset
from mesofield.datakit.sources import SOURCE_REGISTRY

from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.data.batch import run_batch
from mesofield_napari.data.manager import RunManager
from mesofield_napari.devices.sim_camera import create_sim_core
from mesofield_napari.models.batch_export import build_request, execute

NO_TREADMILL = "No EncoderData payloads found in dataqueue"


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    # the warnings name reasons with "—": read them as UTF-8 whatever the console's
    # code page (a Windows console is cp1252; our output adapts to it)
    return subprocess.run(
        [sys.executable, "-m", "mesofield_napari", *map(str, args)],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=300,
    )


def datakit_patterns() -> list[str]:
    """Every file glob of datakit's registered sources (``**/`` dropped)."""
    return [
        pat.rsplit("/", 1)[-1]
        for cls in SOURCE_REGISTRY.values()
        for pat in getattr(cls, "patterns", ())
    ]


def matching_sources(name: str) -> list[str]:
    return [
        tag
        for tag, cls in SOURCE_REGISTRY.items()
        for pat in getattr(cls, "patterns", ())
        if fnmatch.fnmatch(name, pat.rsplit("/", 1)[-1])
    ]


def numpy_dff(f: np.ndarray, window: int, percentile: float = 10.0) -> np.ndarray:
    """collapse_first as the README defines it, in plain NumPy."""
    rank = int(window * percentile / 100.0)
    left = window // 2
    padded = np.pad(f, (left, window - 1 - left), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)
    f0 = np.sort(windows, axis=-1)[:, rank]
    dff = (f - f0) / (f0 + 1.0)
    dff[0] = dff[1]
    return dff


def test_readme_record_both_export_datakit_gets_the_tiff_numbers(tmp_path):
    """`record --writer both` → `export mean-trace EXP` → `export dff EXP` → datakit."""
    exp = tmp_path / "EXP"
    res = cli(
        "record", "--out", exp, "--subject", "M042", "--task", "widefield",
        "--frames", 40, "--size", "64x64", "--exposure", 5, "--writer", "both",
        "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    kinds = {f["kind"] for f in json.loads(res.stdout)["files"]}
    assert kinds == {"tiff", "mp4"}
    for operation in ("mean-trace", "dff"):
        res = cli("export", operation, exp, "--json")
        assert res.returncode == 0, res.stderr
        summary = json.loads(res.stdout)
        # the TIFF only; the MP4 preview is reported as skipped, not exported
        assert [Path(j["path"]).suffix for j in summary["jobs"]] == [".tiff"]
        (skipped,) = summary["skipped"]
        assert skipped["path"].endswith("_meso.mp4")
        assert "video" in skipped["reason"]
    outputs = sorted(p.name for p in (exp / "processed").rglob("*.csv"))
    assert len(outputs) == 2, outputs

    (tiff,) = exp.glob("data/*/*/func/*_meso.ome.tiff")
    stack = tifffile.imread(tiff).astype(np.float64)
    mean = stack.mean(axis=(1, 2))
    times = np.array(
        [e["runner_time_ms"] for e in json.loads(Path(f"{tiff}_frame_metadata.json")
                                                .read_text())["p0"]]
    ) / 1000.0  # fmt: skip
    fs = 1.0 / np.median(np.diff(times))
    dff = numpy_dff(mean - 100.0, max(1, round(30.0 * fs)))

    frame, errors = Dataset.from_directory(exp).materialize(
        strict=False, return_errors=True
    )
    failed = errors[(errors["status"] != "ok") & (errors["message"] != NO_TREADMILL)]
    assert failed.empty, failed.to_string()
    row = frame.iloc[0]
    assert np.allclose(np.asarray(row[("meso", "Mean")], float), mean, rtol=1e-9)
    assert np.allclose(np.asarray(row[("meso", "dF_F")], float), dff, atol=1e-9)
    assert mean.mean() > 255  # 12-bit camera counts, not an 8-bit preview


# ---------------------------------------------------------------- in-process runs
@pytest.fixture(scope="module")
def core():
    return create_sim_core((32, 48), exposure_ms=0)


def record_both(root: Path, core, frames: int = 12, task: str = "widefield") -> Path:
    with RunManager(root, "M042", 1, task) as run:
        writers = [
            run.writer_for("mesoscope", "tiff", suffix="meso"),
            run.writer_for("mesoscope", "mp4", suffix="meso", fps=30.0),
        ]
        result = record(core, writers, timelapse(frames))
    assert result.ok, result.errors
    return run.run_dir


def test_folder_export_takes_the_tiffs_and_says_what_it_skipped(tmp_path, core):
    run_dir = record_both(tmp_path, core)
    summary = run_batch("mean-trace", [tmp_path])
    assert summary.ok
    assert [j.path.name.endswith("_meso.ome.tiff") for j in summary.jobs] == [True]
    ((path, reason),) = [(s.path, s.reason) for s in summary.skipped]
    assert path.parent == run_dir / "beh" and path.suffix == ".mp4"
    assert "include_videos" in reason
    assert summary.as_dict()["skipped"] == [{"path": str(path), "reason": reason}]


def test_videos_when_asked_for_are_named_after_their_own_camera(tmp_path, core):
    record_both(tmp_path, core)
    for operation in ("mean-trace", "dff"):
        summary = run_batch(operation, [tmp_path], include_videos=True)
        assert summary.ok and len(summary.jobs) == 2, summary.failures
        assert not summary.skipped
        by_kind = {j.path.suffix: j.outputs[0].name for j in summary.jobs}
        tiff_out, video_out = by_kind[".tiff"], by_kind[".mp4"]
        expected = {"mean-trace": ["meso_mean"], "dff": ["meso_dff"]}[operation]
        assert matching_sources(tiff_out) == expected
        # no datakit glob takes the video's trace for the widefield trace
        assert matching_sources(video_out) == [], (video_out, datakit_patterns())
        assert "_meso_mp4" in video_out  # its camera and its kind


def test_an_explicitly_named_video_is_exported(tmp_path, core):
    run_dir = record_both(tmp_path, core)
    (mp4,) = run_dir.glob("beh/*.mp4")
    summary = run_batch("mean-trace", [mp4])
    assert summary.ok and [j.path for j in summary.jobs] == [mp4]


def two_sizes(root: Path) -> tuple[Path, Path]:
    """A 32x48 widefield TIFF and a 16x16 second TIFF camera in one session."""
    big = create_sim_core((32, 48), exposure_ms=0)
    small = create_sim_core((16, 16), exposure_ms=0)
    with RunManager(root, "M042", 1, "widefield") as run:
        meso = run.writer_for("mesoscope", "tiff", suffix="meso")
        side = run.writer_for("side", "tiff", suffix="side")
        assert record(big, [meso], timelapse(6)).ok
        assert record(small, [side], timelapse(6)).ok
    (meso_path,) = run.run_dir.glob("func/*_meso.ome.tiff")
    (side_path,) = run.run_dir.glob("func/*_side.ome.tiff")
    return meso_path, side_path


def test_roi_outside_a_recording_skips_it_and_exports_the_others(tmp_path):
    meso, side = two_sizes(tmp_path)
    summary = run_batch("mean-trace", [tmp_path], roi=(20, 30, 10, 40))
    assert summary.ok, summary.failures
    assert [j.path for j in summary.jobs] == [meso]
    ((path, reason),) = [(s.path, s.reason) for s in summary.skipped]
    assert path == side and "16x16" in reason
    stack = tifffile.imread(meso).astype(float)
    (res,) = summary.jobs[0].results
    assert np.allclose(res.values, stack[:, 20:30, 10:40].mean(axis=(1, 2)))


def test_roi_belongs_to_the_camera_it_was_drawn_on(tmp_path):
    meso, side = two_sizes(tmp_path)
    summary = run_batch("mean-trace", [tmp_path], roi=(2, 8, 2, 8), roi_camera="meso")
    assert summary.ok
    assert [j.path for j in summary.jobs] == [meso]
    ((path, reason),) = [(s.path, s.reason) for s in summary.skipped]
    assert path == side and "camera 'meso'" in reason and "'side'" in reason


def test_roi_trace_has_its_own_name(tmp_path, core):
    run_dir = record_both(tmp_path, core)
    (tiff,) = run_dir.glob("func/*.ome.tiff")
    whole = run_batch("mean-trace", [tiff])
    roi = run_batch("mean-trace", [tiff], roi=(0, 10, 0, 20))
    assert whole.ok and roi.ok, (whole.failures, roi.failures)
    (w,), (r,) = whole.outputs, roi.outputs
    assert w != r and w.exists() and r.exists()
    assert matching_sources(w.name) == ["meso_mean"]
    assert matching_sources(r.name) == []  # not mistaken for the whole-frame trace
    assert "roi" in r.name
    assert pd.read_csv(r).columns.tolist() == ["Slice", "Mean", "time_s"]


def test_contrast_outside_a_dtype_skips_that_recording(tmp_path, core):
    record_both(tmp_path, core)
    summary = run_batch(
        "video", [tmp_path], include_videos=True, contrast=(100.0, 4000.0), fps=30.0
    )
    assert summary.ok, summary.failures
    assert [j.path.suffix for j in summary.jobs] == [".tiff"]
    ((path, reason),) = [(s.path, s.reason) for s in summary.skipped]
    assert path.suffix == ".mp4" and "uint8 range (0..255)" in reason


def test_widget_request_takes_videos_only_when_asked(tmp_path, core):
    record_both(tmp_path, core)
    plain = execute(build_request("mean-trace", folder=tmp_path, pattern=""))
    assert [r.status for r in plain.rows] == ["ok", "skipped"]
    assert "video" in plain.rows[1].detail
    both = execute(
        build_request(
            "mean-trace", folder=tmp_path, include_videos=True, overwrite=True
        )
    )
    assert [r.status for r in both.rows] == ["ok", "ok"]


def test_widget_request_roi_camera(tmp_path):
    meso, side = two_sizes(tmp_path)
    out = execute(
        build_request(
            "mean-trace",
            folder=tmp_path,
            pattern="",
            roi=(1, 5, 1, 5),
            roi_camera="side",
        )
    )
    assert {r.recording: r.status for r in out.rows} == {
        side: "ok",
        meso: "skipped",
    }
