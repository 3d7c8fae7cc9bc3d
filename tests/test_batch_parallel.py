"""run_batch: folders, bad recordings, thread pool, cancel, dask.distributed."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from _synthetic import traced_stack, write_recording
from mesofield_napari.data.batch import run_batch


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Three good recordings, a corrupt TIFF and an earlier output folder."""
    func = tmp_path / "run" / "func"
    for i in range(3):
        write_recording(func / f"cam{i}.ome.tiff", traced_stack(20, seed=i))
    bad = func / "corrupt.ome.tiff"
    bad.write_bytes(b"II*\x00" + b"\xff" * 64)
    (func / "corrupt.ome.tiff_frame_metadata.json").write_text('{"p0": [{}]}')
    write_recording(tmp_path / "run" / "processed" / "old.ome.tiff", traced_stack(5))
    return tmp_path / "run"


def test_bad_recordings_reported_others_succeed(run_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "gone.ome.tiff"
    seen: list[tuple[int, int]] = []
    summary = run_batch(
        "mean-trace",
        [run_dir, missing],
        workers=2,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert not summary.ok
    assert set(summary.failures) == {run_dir / "func" / "corrupt.ome.tiff", missing}
    assert "not found" in summary.failures[missing]
    names = sorted(p.name for p in summary.outputs)
    assert names == [f"cam{i}_meso-mean-trace.csv" for i in range(3)]
    assert all(p.parent == run_dir / "processed" for p in summary.outputs)
    assert seen[-1] == (60, 60)  # frames over the whole batch
    for i, job in enumerate(j for j in summary.jobs if j.ok):
        expected = traced_stack(20, seed=i).astype(float).mean(axis=(1, 2))
        np.testing.assert_allclose(job.results[0].values, expected)
    d = summary.as_dict()
    assert d["ok"] is False and len(d["jobs"]) == 5 and d["cancelled"] == []


def test_params_are_checked_before_running(run_dir: Path) -> None:
    with pytest.raises(TypeError, match="bogus"):
        run_batch("dff", [run_dir], bogus=1)
    with pytest.raises(ValueError, match="unknown operation"):
        run_batch("nope", [run_dir])


def test_cancelled_batch_writes_nothing(run_dir: Path, tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    out = tmp_path / "out"
    summary = run_batch("dff", [run_dir], out_dir=out, cancel=cancel, pattern="cam*")
    assert len(summary.cancelled) == 3 and summary.outputs == []
    assert list(out.iterdir()) == []


def test_montage_batch_and_dff_params(run_dir: Path, tmp_path: Path) -> None:
    summary = run_batch("montage", [run_dir], out_dir=tmp_path, frame=0, columns=3)
    assert summary.outputs == [tmp_path / "montage.png"]
    assert len(summary.failures) == 1
    s2 = run_batch(
        "dff", [run_dir], pattern="cam1*", method="pixelwise", out_dir=tmp_path
    )
    assert s2.ok and s2.outputs[0].name == "cam1_meso-pixelwise-trace.csv"


@pytest.mark.slow
def test_dask_distributed_local_cluster(run_dir: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        summary = run_batch(
            "dff", [run_dir], scheduler=client, out_dir=tmp_path, window_seconds=0.2
        )
    assert set(summary.failures) == {run_dir / "func" / "corrupt.ome.tiff"}
    assert sorted(p.name for p in summary.outputs) == [
        f"cam{i}_meso-collapse_first-trace.csv" for i in range(3)
    ]
    local = run_batch("dff", [run_dir], out_dir=tmp_path / "local", window_seconds=0.2)
    for a, b in zip(sorted(summary.outputs), sorted(local.outputs), strict=True):
        assert a.read_bytes() == b.read_bytes()
