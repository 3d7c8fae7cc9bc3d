"""The pipeline contract: our runs load, unchanged, in mesofield's own datakit and
validate against mesokit-schema — the tools our users' analysis starts with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mesofield.datakit.core import Dataset
from mesokit_schema import AcquisitionManifest, find_files, iter_sessions

from _helpers import wait_until
from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.data.batch import dff_trace, mean_trace
from mesofield_napari.data.manager import paths as runpaths_mod
from mesofield_napari.data.manager.dataqueue import DataQueue
from mesofield_napari.data.manager.run_manager import RunManager
from mesofield_napari.devices.sim_camera import create_sim_core

FRAMES = 40


@pytest.fixture(scope="module")
def core():
    return create_sim_core((32, 32), exposure_ms=0)


def record_run(experiment: Path, core, frames: int = FRAMES) -> RunManager:
    params = {"experimenter": "JG", "protocol": "P7", "sex": "F", "genotype": "GCaMP6s"}
    with RunManager(experiment, "M042", 1, "widefield", params) as run:
        meso = run.writer_for("mesoscope", "tiff", suffix="meso")
        run.add_note("baseline")
        result = record(core, [meso], timelapse(frames))
        run.add_note("air puff")
    assert result.ok, result.errors
    return run


NO_TREADMILL = "No EncoderData payloads found in dataqueue"


def materialize(experiment: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """datakit's own loader, as our users call it; fails on any real error.

    datakit's treadmill source reads every session's data queue and reports
    "No EncoderData payloads" for a rig without a treadmill (mesofield's own wheel-only
    sessions included): that one, and only that one, is not an error of ours.
    """
    dataset = Dataset.from_directory(experiment)
    frame, errors = dataset.materialize(strict=False, return_errors=True)
    failed = errors[errors["status"] != "ok"]
    real = failed[
        (failed["Source"] != "treadmill") | (failed["message"] != NO_TREADMILL)
    ]
    assert real.empty, real[["Source", "message"]].to_string()
    others = [tag for tag in dataset.sources if tag != "treadmill"]
    _, errors = Dataset.from_directory(experiment, sources=others).materialize(
        strict=False, return_errors=True
    )
    assert (errors["status"] == "ok").all(), errors.to_string()
    return frame, errors


def dataqueue(run: RunManager) -> pd.DataFrame:
    return pd.read_csv(run.dataqueue_path, dtype={"payload": str, "device_ts": str})


def test_run_and_its_exports_load_in_datakit(tmp_path, core):
    run = record_run(tmp_path, core)
    assert run.run_dir == tmp_path / "data" / "sub-M042" / "ses-01"
    (tiff,) = run.run_dir.glob("func/*_meso.ome.tiff")
    mean = mean_trace(tiff)
    dff = dff_trace(tiff, "collapse_first")
    processed = tmp_path / "processed" / "sub-M042" / "ses-01"
    assert mean.path.parent == processed and dff.path.parent == processed
    assert pd.read_csv(dff.path).columns.tolist() == ["Slice", "Mean", "time_s"]

    frame, errors = materialize(tmp_path)
    loaded = set(errors.loc[errors["status"] == "ok", "Source"])
    assert {
        "meso_metadata",
        "dataqueue",
        "notes",
        "session_config",
        "timestamps",
        "meso_mean",
        "meso_dff",
    } <= loaded
    row = frame.iloc[0]
    assert len(row[("meso_metadata", "ImageNumber")]) == FRAMES
    # both trace sources land in datakit's "meso" stream
    assert len(row[("meso", "Mean")]) == FRAMES
    assert np.allclose(row[("meso", "dF_F")], dff.values)
    assert list(row[("notes", "note")]) == ["baseline", "air puff"]
    meta = row[("dataqueue", "meta")]
    assert meta["master_device_id"] == "mesoscope"
    assert meta["device_aliases"]["mesoscope"] == "meso"


def test_every_manifest_validates_and_declares_its_files(tmp_path, core):
    run = record_run(tmp_path, core)
    ((path, manifest),) = list(iter_sessions(tmp_path))
    assert path == run.manifest_path
    assert manifest.acquisition_complete
    assert manifest.session.subject == "M042" and manifest.session.session == "01"
    assert (manifest.session.task, manifest.session.experimenter) == ("widefield", "JG")
    assert manifest.session.protocol == "P7"
    assert manifest.started_at.utcoffset() is not None
    refs = find_files(tmp_path)
    assert all(ref.path.is_file() for ref in refs)
    (meso,) = [r for r in refs if r.device_id == "mesoscope"]
    assert (meso.file_type, meso.bids_type, meso.data_type) == (
        "ome.tiff",
        "func",
        "frames",
    )
    assert meso.metadata_path is not None and meso.metadata_path.is_file()
    assert meso.calibration["frames"] == FRAMES
    producers = {p.device_id: p for p in manifest.producers}
    assert producers["mesoscope"].dataqueue_schema.device_id == "mesoscope"
    assert producers["notes"].dataqueue_schema.device_id == "notes"


def test_one_queue_row_per_frame_in_time_order(tmp_path, core):
    run = record_run(tmp_path, core)
    dq = dataqueue(run)
    assert dq["queue_elapsed"].is_monotonic_increasing
    camera = dq[dq["device_id"] == "mesoscope"]
    (sidecar,) = run.run_dir.glob("func/*_frame_metadata.json")
    frames = json.loads(sidecar.read_text())["p0"]
    assert len(camera) == len(frames) == FRAMES
    assert camera["payload"].astype(int).tolist() == [
        int(f["camera_metadata"]["ImageNumber"]) for f in frames
    ]
    assert camera["device_ts"].tolist() == [
        f["camera_metadata"]["TimeReceivedByCore"] for f in frames
    ]
    notes = dq[dq["device_id"] == "notes"]
    assert notes["payload"].tolist() == ["baseline", "air puff"]
    # the notes bracket the frames on the one clock
    assert notes.index[0] < camera.index[0] and camera.index[-1] < notes.index[-1]


def test_two_runs_in_the_same_second_both_record(tmp_path, core, monkeypatch):
    """The stamp is claimed when the first file is created, not when it is chosen."""
    frozen = types.SimpleNamespace(
        now=lambda tz=None: __import__("datetime").datetime(2026, 1, 2, 3, 4, 5)
    )
    monkeypatch.setattr(runpaths_mod, "_dt", types.SimpleNamespace(datetime=frozen))
    first = RunManager(tmp_path, "M1", 1, "rec")
    second = RunManager(tmp_path, "M1", 1, "rec")
    assert first.paths.stamp == second.paths.stamp  # both chose the same second
    for run in (first, second):
        with run:
            writer = run.writer_for("mesoscope", "tiff", suffix="meso")
            assert record(core, [writer], timelapse(3)).ok
    assert first.paths.stamp == "20260102_030405"
    assert second.paths.stamp == "20260102_030406"
    assert len(list(iter_sessions(tmp_path))) == 2
    assert len(list(first.run_dir.glob("func/*_meso.ome.tiff"))) == 2


def test_two_processes_in_the_same_second_never_collide(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time, datetime
        from mesofield_napari.data.manager import RunManager
        run = RunManager(sys.argv[1], "M1", 1, "rec", {"who": sys.argv[2]})
        # both processes start their runs within the same second
        while datetime.datetime.now().microsecond > 200_000:
            time.sleep(0.005)
        with run:
            run.add_note(sys.argv[2])
        print(run.paths.stamp)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), who],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    stamps = {o[0].strip() for o in outs}
    assert len(stamps) == 2
    manifests = list(iter_sessions(tmp_path))
    assert len(manifests) == 2 and all(m.acquisition_complete for _, m in manifests)


def test_wall_clock_stamps_are_local_time_with_offset(tmp_path):
    """TZ=America/Denver: every stamp we write carries -07:00 (MST in November)."""
    script = textwrap.dedent(
        """
        import sys
        from mesofield_napari.acquisition.timelapse import record, timelapse
        from mesofield_napari.data.manager import RunManager
        from mesofield_napari.devices.sim_camera import create_sim_core
        core = create_sim_core((16, 16), exposure_ms=0)
        with RunManager(sys.argv[1], "M1", 1, "rec") as run:
            w = run.writer_for("mesoscope", "tiff", suffix="meso")
            run.add_note("tz")
            record(core, [w], timelapse(3))
        """
    )
    env = {**os.environ, "TZ": "America/Denver"}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, check=True, timeout=120
    )
    run_dir = tmp_path / "data" / "sub-M1" / "ses-01"
    (dq,) = run_dir.glob("beh/*_dataqueue.csv")
    packet_ts = pd.read_csv(dq)["packet_ts"]
    assert len(packet_ts) == 4 and all(v.endswith("-07:00") for v in packet_ts)
    (ts,) = run_dir.glob("*_timestamps.csv")
    stamps = pd.read_csv(ts)[["started", "stopped"]].to_numpy().ravel()
    assert all(str(v).endswith("-07:00") for v in stamps)
    ((_, manifest),) = list(iter_sessions(tmp_path))
    assert manifest.started_at.utcoffset().total_seconds() == -7 * 3600
    assert manifest.ended_at.utcoffset().total_seconds() == -7 * 3600


def test_data_queue_memory_does_not_grow_with_rows(tmp_path):
    """2 h at 100 Hz is 720 000 rows per camera: nothing may be kept per row."""
    queue = DataQueue(tmp_path / "dq.csv")
    queue.start()

    def push(n: int, start: int) -> None:
        for i in range(start, start + n):
            queue.push("mesoscope", i, "2026-01-01 00:00:00.000000")
            if i % 5000 == 0:  # let the logger keep up: measure what stays
                wait_until(lambda i=i: queue.rows_written > i - start - 5000)
        wait_until(lambda: queue.rows_written == start + n, what="rows on disk")

    push(10_000, 0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        push(100_000, 10_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    queue.push("wheel", {"speed": 1.5})  # a dict payload: fanned out at stop
    queue.stop()
    assert grown < 1_000_000, f"{grown} bytes kept for 100 000 rows"
    df = pd.read_csv(tmp_path / "dq.csv")
    assert len(df) == 110_001
    assert df.columns.tolist()[-2:] == ["payload", "speed"]
    assert df["speed"].iloc[-1] == 1.5


def test_pushing_after_stop_is_ignored(tmp_path):
    queue = DataQueue(tmp_path / "dq.csv")
    queue.start()
    queue.push("a", 1)
    queue.stop()
    queue.push("a", 2)  # a late device callback
    threading.Event().wait(0.05)
    assert pd.read_csv(tmp_path / "dq.csv")["payload"].tolist() == [1]


def test_manifest_model_round_trips(tmp_path, core):
    run = record_run(tmp_path, core, frames=3)
    model = AcquisitionManifest.read(run.manifest_path)
    assert model.model_dump(mode="json") == json.loads(run.manifest_path.read_text())


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesofield_napari", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_record_and_export_from_the_command_line_load_in_datakit(tmp_path):
    """The issue's "done when": record --out EXP, export mean-trace/dff EXP, datakit."""
    exp = tmp_path / "EXP"
    res = cli(
        "record", "--out", exp, "--subject", "M042", "--task", "widefield",
        "--frames", 30, "--size", "32x32", "--exposure", 0, "--note", "baseline",
        "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert Path(payload["run_dir"]) == exp / "data" / "sub-M042" / "ses-01"
    (entry,) = payload["files"]
    assert entry["path"].endswith("_task-widefield_meso.ome.tiff")
    for operation in ("mean-trace", "dff"):
        res = cli("export", operation, exp)
        assert res.returncode == 0, res.stderr
    processed = sorted(p.name for p in (exp / "processed").rglob("*.csv"))
    assert len(processed) == 2, processed
    frame, _ = materialize(exp)
    row = frame.iloc[0]
    assert len(row[("meso_metadata", "ImageNumber")]) == 30
    assert len(row[("meso", "Mean")]) == 30 and len(row[("meso", "dF_F")]) == 30
    assert row[("dataqueue", "meta")]["master_device_id"] == "mesoscope"
    notes = row[("notes", "note")]  # datakit keeps a single note as a scalar
    assert ([notes] if isinstance(notes, str) else list(notes)) == ["baseline"]


def test_recorder_session_runs_load_in_datakit(tmp_path, core):
    from mesofield_napari.models.recorder import RecorderSettings, RecordingSession

    session = RecordingSession(
        core,
        RecorderSettings(root=str(tmp_path), subject="M042", frames=25, writers="both"),
    )
    session.start()
    session.add_note("from the recorder")
    assert session.wait(60)
    (outcome,) = session.outcomes
    assert outcome.ok, outcome.errors
    assert sorted(p.name.rsplit("_", 1)[1] for p in outcome.data_files) == [
        "meso.mp4",
        "meso.ome.tiff",
    ]
    frame, _ = materialize(tmp_path)
    row = frame.iloc[0]
    assert len(row[("meso_metadata", "ImageNumber")]) == 25
    dq = row[("dataqueue", "device_id")]
    # both writers of the one camera: one clock row per frame, not two
    assert list(dq).count("mesoscope") == 25
    ((_, manifest),) = list(iter_sessions(tmp_path))
    assert manifest.acquisition_complete


EXAMPLE = Path(__file__).parents[1] / "examples" / "experiment"


def test_example_experiment_from_the_command_line_loads_in_datakit(tmp_path):
    """`record --experiment` on the shipped example: widefield + pupil + wheel."""
    res = cli(
        "record", "--experiment", EXAMPLE, "--duration", 1.5, "--out", tmp_path,
        "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert payload["ok"] is True
    by_id = {f["device_id"]: f for f in payload["files"]}
    assert set(by_id) == {"mesoscope", "thorcam", "encoder"}
    assert by_id["mesoscope"]["path"].endswith("_task-widefield_meso.ome.tiff")
    assert by_id["thorcam"]["path"].endswith("_pupil.mp4")
    assert by_id["encoder"]["path"].endswith("_wheel.csv")
    frame, _ = materialize(tmp_path)
    assert frame.index.tolist() == [("M042", "ses-01", "task-widefield")]
    row = frame.iloc[0]
    assert len(row[("meso_metadata", "ImageNumber")]) == by_id["mesoscope"]["frames"]
    assert len(row[("pupil_metadata", "runner_time_ms")]) == by_id["thorcam"]["frames"]
    assert row[("session_config", "genotype")] == "Thy1-GCaMP6s"
    assert row[("session_config", "sex")] == "F"
    # the wheel is aligned on the data queue (encoder rows + the thorcam origin)
    wheel = row[("wheel", "meta")]
    assert wheel["dataqueue_alignment"] == "direct"
    assert wheel["dataqueue_anchors"] == len(row[("wheel", "click_delta")])
