"""RunManager: run folder, file names, notes, timestamps, configuration, data queue
and manifest (docs/design.md §5), exercised with the simulated camera and real writers."""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import re
import select
import subprocess
import sys
import threading
import types
from pathlib import Path

import cv2
import pandas as pd
import pytest
import tifffile

from _helpers import journal_entry_lines, kill_after_journal, wait_until
from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.data import clock, recover
from mesofield_napari.data.manager import paths as runpaths_mod
from mesofield_napari.data.manager.run_manager import RunManager
from mesofield_napari.devices.sim_camera import create_sim_core

STAMP_RE = r"\d{8}_\d{6}"
NOTE_RE = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}): (.*)")
UTC_OFFSET_RE = re.compile(r"(\+|-)\d{2}:\d{2}$")
DATAQUEUE_COLUMNS = ["queue_elapsed", "packet_ts", "device_ts", "device_id", "payload"]
FROZEN = datetime.datetime(2024, 5, 6, 7, 8, 9)
FROZEN_STAMP = "20240506_070809"


# ---------------------------------------------------------------- fixtures/helpers
@pytest.fixture(scope="module")
def core():
    """One small, fast simulated microscope for the module."""
    return create_sim_core((32, 32), exposure_ms=0)


@pytest.fixture
def frozen_stamp(monkeypatch):
    """Every RunPaths created in the test gets the same stamp (same-second runs)."""

    class _Clock:
        @staticmethod
        def now(tz=None):
            return FROZEN

    monkeypatch.setattr(runpaths_mod, "_dt", types.SimpleNamespace(datetime=_Clock))
    return FROZEN_STAMP


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def ours(manifest: dict) -> dict:
    """Our block of an AcquisitionManifest (what the schema has no field for)."""
    return manifest["extra"]["mesofield_napari"]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def parse_utc(values: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(values, utc=True)
    assert not parsed.isna().any(), values.tolist()
    return parsed


# ---------------------------------------------------------------- layout & names
def test_run_folder_layout_and_file_names(tmp_path, core):
    before = datetime.datetime.now().replace(microsecond=0)
    with RunManager(tmp_path, "M042", 1, "widefield", {"led_mw": 5}) as run:
        tiff = run.writer_for("meso", "tiff")
        mp4 = run.writer_for("pupil", "mp4", fourcc="mp4v", fps=30)
        result = record(core, [tiff, mp4], timelapse(3))
    after = datetime.datetime.now()
    assert result.ok, result.errors

    run_dir = tmp_path / "data" / "sub-M042" / "ses-01"
    assert run.run_dir == run_dir
    stamp = run.paths.stamp
    assert re.fullmatch(STAMP_RE, stamp)
    assert before <= datetime.datetime.strptime(stamp, "%Y%m%d_%H%M%S") <= after
    prefix = f"{stamp}_sub-M042_ses-01_task-widefield"

    expected = {
        f"{prefix}_configuration.csv",
        f"{prefix}_notes.txt",
        f"{prefix}_timestamps.csv",
        f"{prefix}_manifest.json",
        f"func/{prefix}_meso.ome.tiff",
        f"func/{prefix}_meso.ome.tiff_frame_metadata.json",
        f"beh/{prefix}_pupil.mp4",
        f"beh/{prefix}_pupil.mp4_frame_metadata.json",
        f"beh/{prefix}_dataqueue.csv",
    }
    assert files_under(run_dir) == expected
    assert files_under(tmp_path) == {f"data/sub-M042/ses-01/{f}" for f in expected}
    assert tiff.files == [run_dir / "func" / f"{prefix}_meso.ome.tiff"]
    assert mp4.files == [run_dir / "beh" / f"{prefix}_pupil.mp4"]

    data = tifffile.imread(tiff.files[0])
    assert data.shape == (3, 32, 32)
    assert data.any(axis=(1, 2)).all()  # every frame really written
    cap = cv2.VideoCapture(str(mp4.files[0]))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    finally:
        cap.release()


@pytest.mark.parametrize(
    ("session", "folder"),
    [(1, "01"), ("1", "01"), (7, "07"), ("12", "12"), (123, "123"), ("pre", "pre")],
)
def test_numeric_session_is_zero_padded(tmp_path, session, folder):
    run = RunManager(tmp_path, "M1", session, "rec")
    assert run.run_dir == tmp_path / "data" / "sub-M1" / f"ses-{folder}"
    assert f"_ses-{folder}_task-rec_notes.txt" in run.notes_path.name
    with run:
        assert run.running
    assert (tmp_path / "data" / "sub-M1" / f"ses-{folder}").is_dir()
    assert run.manifest()["session"]["session"] == folder


def test_same_second_runs_never_overwrite_and_keep_compound_extension(
    tmp_path, core, frozen_stamp
):
    prefix = f"{frozen_stamp}_sub-M1_ses-01_task-rec"
    run_dir = tmp_path / "data" / "sub-M1" / "ses-01"
    (run_dir / "func").mkdir(parents=True)
    precious = run_dir / "func" / f"{prefix}_meso.ome.tiff"
    precious.write_bytes(b"someone else's data")

    # a run whose stamp is taken moves to the next free second (same stamp format)
    with RunManager(tmp_path, "M1", 1, "rec") as run1:
        w1 = run1.writer_for("meso", "tiff")
        assert record(core, [w1], timelapse(2)).ok
        run1.add_note("first run")
    prefix1 = run1.paths.prefix
    assert prefix1 != prefix and prefix1.endswith("_sub-M1_ses-01_task-rec")
    assert w1.files == [run_dir / "func" / f"{prefix1}_meso.ome.tiff"]
    assert run1.notes_path.name == f"{prefix1}_notes.txt"
    snapshot = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    with RunManager(tmp_path, "M1", 1, "rec") as run2:
        w2 = run2.writer_for("meso", "tiff")
        assert record(core, [w2], timelapse(3)).ok
        run2.add_note("second run")

    prefix2 = run2.paths.prefix
    assert prefix2 not in (prefix, prefix1)
    assert w2.files == [run_dir / "func" / f"{prefix2}_meso.ome.tiff"]
    assert str(w2.files[0]).endswith(".ome.tiff")  # compound extension kept
    for path in (
        run2.notes_path,
        run2.timestamps_path,
        run2.configuration_path,
        run2.manifest_path,
        run2.dataqueue_path,
    ):
        assert path.name.startswith(prefix2)
    # nothing of the first run (or the foreign file) was touched
    for path, content in snapshot.items():
        assert path.read_bytes() == content, path
    assert precious.read_bytes() == b"someone else's data"
    names = [p.name for p in run_dir.rglob("*")]
    assert not [n for n in names if ".ome_" in n], names
    assert tifffile.imread(w1.files[0]).shape == (2, 32, 32)
    assert tifffile.imread(w2.files[0]).shape == (3, 32, 32)
    assert "first run" not in run2.notes_path.read_text()


def test_leftover_journal_or_sidecar_also_counts_as_taken(tmp_path, frozen_stamp):
    prefix = f"{frozen_stamp}_sub-M1_ses-01_task-rec"
    func = tmp_path / "data" / "sub-M1" / "ses-01" / "func"
    func.mkdir(parents=True)
    # a crashed recording left only its journal; another only its sidecar
    (func / f"{prefix}_meso.ome.tiff_frame_metadata.jsonl").write_text("{}\n")
    (func / f"{prefix}_meso_1.ome.tiff_frame_metadata.json").write_text("{}")
    with RunManager(tmp_path, "M1", 1, "rec") as run:
        writer = run.writer_for("meso", "tiff")
    assert run.paths.prefix != prefix  # the stamp moved on to a free second
    assert writer.files == [func / f"{run.paths.prefix}_meso.ome.tiff"]
    assert (func / f"{prefix}_meso.ome.tiff_frame_metadata.jsonl").read_text() == "{}\n"


def test_one_writer_per_device_and_kind(tmp_path):
    with RunManager(tmp_path, "M1", 1, "rec") as run:
        run.writer_for("meso", "tiff")
        with pytest.raises(ValueError, match="meso"):
            run.writer_for("meso", "tiff")
        with pytest.raises(ValueError, match="kind"):
            run.writer_for("meso", "png")  # type: ignore[arg-type]


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("field", ["subject", "session", "task"])
@pytest.mark.parametrize(
    "value", ["../x", "a/b", "a\\b", "..", "/abs", "", "   ", "M 42", "a.b", "Mé42"]
)
def test_bad_labels_are_rejected_before_touching_disk(tmp_path, field, value):
    kwargs = {"subject": "M1", "session": 1, "task": "rec", field: value}
    with pytest.raises(ValueError) as info:
        RunManager(tmp_path / "root", **kwargs)
    message = str(info.value)
    assert field in message
    if value.strip():
        assert repr(value.strip()) in message  # says what was wrong
    assert list(tmp_path.iterdir()) == []


def test_label_messages_say_ascii_and_length(tmp_path):
    with pytest.raises(ValueError, match="ASCII letters"):
        RunManager(tmp_path, subject="Mäuschen")
    # a 300-character label would overflow the 255-byte file-name limit
    with pytest.raises(ValueError, match="300 characters long; use at most 64"):
        RunManager(tmp_path, subject="M" * 300)
    assert list(tmp_path.iterdir()) == []


def test_root_below_a_regular_file_gives_a_clear_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    root = afile / "x"
    run = RunManager(root, "M1", 1, "rec")
    with pytest.raises(OSError) as info:
        run.start()
    message = str(info.value)
    assert "cannot create run folder" in message
    assert str(root) in message
    assert "Traceback" not in message and "\n" not in message
    assert not run.running
    with (
        pytest.raises(OSError, match="cannot create run folder"),
        RunManager(root, "M1", 1, "rec"),
    ):
        pytest.fail("the block must not run")  # pragma: no cover
    assert afile.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# ---------------------------------------------------------------- notes
def test_notes_are_written_immediately_one_line_each(tmp_path):
    with RunManager(tmp_path, "M1", 1, "rec") as run:
        assert run.notes_path.read_text() == ""
        before = datetime.datetime.now().replace(microsecond=0)
        line = run.add_note("whisker stim at 60 s")
        after = datetime.datetime.now()
        # on disk while the run goes on
        assert run.notes_path.read_text(encoding="utf-8") == line + "\n"
        m = NOTE_RE.fullmatch(line)
        assert m and m.group(2) == "whisker stim at 60 s"
        stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        assert before <= stamp <= after

        run.add_note("two\nlines\r\nthree\rand a \\ backslash")
        lines = run.notes_path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 2
        m2 = NOTE_RE.fullmatch(lines[1])
        assert m2 and m2.group(2) == "two\\nlines\\nthree\\nand a \\\\ backslash"
        run.add_note("ünïcode µm")
    lines = run.notes_path.read_text(encoding="utf-8").splitlines()
    assert [NOTE_RE.fullmatch(x).group(2) for x in lines][2] == "ünïcode µm"
    assert ours(load_json(run.manifest_path))["notes"] == 3
    with pytest.raises(RuntimeError):
        run.add_note("after the run")
    assert len(run.notes_path.read_text(encoding="utf-8").splitlines()) == 3


def test_notes_from_many_threads_each_stay_whole(tmp_path):
    texts = {f"thread {t} note {i}" for t in range(4) for i in range(25)}
    with RunManager(tmp_path, "M1", 1, "rec") as run:
        barrier = threading.Barrier(4)

        def worker(t: int) -> None:
            barrier.wait()
            for i in range(25):
                run.add_note(f"thread {t} note {i}")

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    lines = run.notes_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 100
    found = [NOTE_RE.fullmatch(line) for line in lines]
    assert all(found), lines
    assert {m.group(2) for m in found} == texts


def test_notes_belong_to_one_run(tmp_path):
    with RunManager(tmp_path, "M1", 1, "rec") as first:
        first.add_note("only in the first run")
    with RunManager(tmp_path, "M1", 1, "rec") as second:
        second.add_note("only in the second run")
    assert first.notes_path != second.notes_path
    assert first.notes_path.parent == second.notes_path.parent
    one = first.notes_path.read_text(encoding="utf-8")
    two = second.notes_path.read_text(encoding="utf-8")
    assert "only in the first run" in one and "second" not in one
    assert "only in the second run" in two and "first" not in two
    assert len(two.splitlines()) == 1


# ---------------------------------------------------------------- timestamps
def test_timestamps_written_at_start_and_completed_at_stop(tmp_path, core):
    with RunManager(tmp_path, "M1", 1, "rec") as run:
        rows = read_rows(run.timestamps_path)
        assert rows[0] == ["device_id", "started", "stopped"]
        assert len(rows) == 2
        assert rows[1][0] == "run" and rows[1][1] and rows[1][2] == ""
        tiff = run.writer_for("meso", "tiff")
        mp4 = run.writer_for("pupil", "mp4", fourcc="mp4v")
        run.device_started("wheel")
        assert record(core, [tiff, mp4], timelapse(3)).ok
        run.device_stopped("wheel")

    df = pd.read_csv(run.timestamps_path, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["device_id", "started", "stopped"]
    assert df["device_id"].tolist() == ["run", "meso", "pupil", "wheel"]
    for col in ("started", "stopped"):
        for value in df[col]:
            assert UTC_OFFSET_RE.search(value), value
    started, stopped = parse_utc(df["started"]), parse_utc(df["stopped"])
    assert (stopped >= started).all()
    assert (started[1:] >= started[0]).all()  # devices start within the run
    assert (stopped[1:] <= stopped[0]).all()
    # the start-time row was completed in place, not replaced by another clock
    assert df["started"][0] == rows[1][1]
    assert df["started"][1] == tiff.started_at
    assert df["stopped"][2] == mp4.stopped_at


def test_timestamps_parse_when_a_reading_falls_on_a_whole_second(tmp_path, monkeypatch):
    """isoformat() drops '.ffffff' at microsecond 0; pandas then rejects the column."""
    t0 = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    ticks = iter(range(1, 10_000))

    class _HalfSecondClock(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return t0 + datetime.timedelta(milliseconds=500 * next(ticks))

    clock_module = types.SimpleNamespace(**vars(datetime))
    clock_module.datetime = _HalfSecondClock
    monkeypatch.setattr(clock, "_dt", clock_module)

    with RunManager(tmp_path, "M1", 1, "rec") as run:
        run.device_started("wheel")
        for i in range(4):
            run.push("wheel", i)
        run.device_stopped("wheel")
    ts = pd.read_csv(run.timestamps_path, dtype=str, keep_default_na=False)
    parsed = pd.concat([parse_utc(ts["started"]), parse_utc(ts["stopped"])])
    assert {t.microsecond for t in parsed} == {0, 500000}  # both cases occurred
    dq = pd.read_csv(run.dataqueue_path, dtype=str, keep_default_na=False)
    assert len(dq) == 4
    parse_utc(dq["packet_ts"])


# ---------------------------------------------------------------- configuration
def test_configuration_csv(tmp_path):
    params = {"led_mw": 5.5, "stim": "air puff, left", "trials": 3}
    with RunManager(tmp_path, "M042", 2, "widefield", params) as run:
        rows = read_rows(run.configuration_path)  # written at start
    assert rows == [
        ["Parameter", "Value"],
        ["subject", "M042"],
        ["session", "02"],
        ["task", "widefield"],
        ["led_mw", "5.5"],
        ["stim", "air puff, left"],
        ["trials", "3"],
    ]
    df = pd.read_csv(run.configuration_path)
    assert list(df.columns) == ["Parameter", "Value"]
    assert dict(zip(df["Parameter"], df["Value"], strict=True))["stim"] == (
        "air puff, left"
    )


# ---------------------------------------------------------------- data queue
def test_dataqueue_concurrent_pushes_streamed_and_ordered(tmp_path):
    n_threads, n_each = 4, 200
    with RunManager(tmp_path, "M1", 1, "rec") as run:
        assert run.dataqueue_path.parent.name == "beh"
        run.push("probe", "first")
        wait_until(
            lambda: len(read_rows(run.dataqueue_path)) == 2,
            what="the first packet on disk",
        )
        barrier = threading.Barrier(n_threads)

        def worker(t: int) -> None:
            barrier.wait()
            for i in range(n_each):
                run.push(f"dev{t}", i, device_ts=i / 100)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        # streamed: every row is on disk while the run is still going
        rows = wait_until(
            lambda: (
                (r := read_rows(run.dataqueue_path))
                and len(r) == 2 + n_threads * n_each
                and r
            ),
            what="all packets on disk",
        )
        assert run.running
        assert rows[0] == DATAQUEUE_COLUMNS

    df = pd.read_csv(run.dataqueue_path, dtype={"payload": str})
    assert list(df.columns) == DATAQUEUE_COLUMNS
    assert len(df) == 1 + n_threads * n_each
    assert df["queue_elapsed"].is_monotonic_increasing
    packet_ts = parse_utc(df["packet_ts"])
    assert packet_ts.is_monotonic_increasing
    assert all(UTC_OFFSET_RE.search(v) for v in df["packet_ts"])
    assert df["device_id"].iloc[0] == "probe" and df["payload"].iloc[0] == "first"
    for t in range(n_threads):
        rows_t = df[df["device_id"] == f"dev{t}"]
        assert rows_t["payload"].astype(int).tolist() == list(range(n_each))
        assert rows_t["device_ts"].tolist() == pytest.approx(
            [i / 100 for i in range(n_each)]
        )
    assert ours(load_json(run.manifest_path))["dataqueue_rows"] == len(df)


def test_dataqueue_fans_out_dict_payloads_at_stop(tmp_path):
    with RunManager(tmp_path, "M1", 1, "rec") as run:
        run.push("wheel", {"speed": 1.5, "distance": 10}, 0.1)
        run.push("encoder", "raw-7", 0.2)
        run.push("licks", {"lick": 1}, None)
        rows = wait_until(
            lambda: (r := read_rows(run.dataqueue_path)) and len(r) == 4 and r,
            what="streamed packets",
        )
        # while running a dict payload is kept whole, as JSON
        assert rows[0] == DATAQUEUE_COLUMNS
        assert json.loads(rows[1][4]) == {"speed": 1.5, "distance": 10}
    df = pd.read_csv(run.dataqueue_path, dtype=str, keep_default_na=False)
    assert list(df.columns) == [*DATAQUEUE_COLUMNS, "speed", "distance", "lick"]
    assert df.to_dict("records")[0] | {"queue_elapsed": "", "packet_ts": ""} == {
        "queue_elapsed": "",
        "packet_ts": "",
        "device_ts": "0.1",
        "device_id": "wheel",
        "payload": "",
        "speed": "1.5",
        "distance": "10",
        "lick": "",
    }
    assert df["payload"].tolist() == ["", "raw-7", ""]
    assert df["speed"].tolist() == ["1.5", "", ""]
    assert df["lick"].tolist() == ["", "", "1"]
    assert df["device_ts"].tolist() == ["0.1", "0.2", ""]
    parse_utc(df["packet_ts"])
    # the atomic rewrite keeps the permissions every other run file has
    mode = run.dataqueue_path.stat().st_mode & 0o777
    assert mode == run.notes_path.stat().st_mode & 0o777
    assert not [p for p in run.dataqueue_path.parent.iterdir() if "tmp" in p.name]


def test_dataqueue_list_payloads_stay_json_with_and_without_fan_out(tmp_path):
    for with_dict in (False, True):
        with RunManager(tmp_path / str(with_dict), "M1", 1, "rec") as run:
            run.push("camera", ["frame", 7, {"roi": "V1"}])
            if with_dict:
                run.push("wheel", {"speed": 2, "pos": [1, 2]})
        df = pd.read_csv(run.dataqueue_path, dtype=str, keep_default_na=False)
        assert json.loads(df["payload"][0]) == ["frame", 7, {"roi": "V1"}]
        if with_dict:
            assert df["speed"].tolist() == ["", "2"]
            assert json.loads(df["pos"][1]) == [1, 2]


# ---------------------------------------------------------------- manifest
def test_manifest_at_start_and_complete_at_stop(tmp_path, core):
    with RunManager(tmp_path, "M1", 1, "rec", {"x": 1, "experimenter": "JG"}) as run:
        m0 = load_json(run.manifest_path)
        assert m0["acquisition_complete"] is False
        assert ours(m0)["errors"] == []
        assert m0["started_at"] and m0["ended_at"] is None
        tiff = run.writer_for("mesoscope", "tiff", suffix="meso")
        mp4 = run.writer_for("pupil", "mp4", fourcc="mp4v", fps=20)
        m1 = load_json(run.manifest_path)
        assert m1["acquisition_complete"] is False
        assert {f["kind"] for f in ours(m1)["files"]} >= {"tiff", "mp4"}
        assert record(core, [tiff, mp4], timelapse(4)).ok
        run.push("wheel", 1.0)

    m = load_json(run.manifest_path)
    assert m == run.manifest()
    assert m["acquisition_complete"] is True
    assert ours(m)["errors"] == []
    assert m["session"] == {
        "subject": "M1",
        "session": "01",
        "task": "rec",
        "experimenter": "JG",
        "protocol": None,
    }
    assert ours(m)["stamp"] == run.paths.stamp
    parse_utc(pd.Series([m["started_at"], m["ended_at"]]))
    # one row per frame of each camera, one per push
    assert ours(m)["dataqueue_rows"] == 4 + 4 + 1

    producers = {(p["device_id"], p["data_type"]): p for p in m["producers"]}
    assert set(producers) == {
        ("mesoscope", "frames"),
        ("pupil", "video"),
        ("dataqueue", "dataqueue"),
        ("notes", "notes"),
        ("session", "session_config"),
        ("session", "timestamps"),
    }
    meso, pupil = producers["mesoscope", "frames"], producers["pupil", "video"]
    assert meso["output_path"].startswith("func/")
    assert meso["output_path"].endswith("_meso.ome.tiff")
    assert meso["file_type"] == "ome.tiff" and meso["bids_type"] == "func"
    assert pupil["output_path"].startswith("beh/") and pupil["file_type"] == "mp4"
    assert pupil["sampling_rate_hz"] == 20
    assert pupil["calibration"]["codec"] == "mp4v"
    for entry in (meso, pupil):
        assert entry["calibration"]["frames"] == 4
        assert entry["calibration"]["frames_lost"] == 0
        assert entry["metadata_path"] == entry["output_path"] + "_frame_metadata.json"
        sidecar_payload = load_json(run.run_dir / entry["metadata_path"])
        assert len(sidecar_payload["p0"]) == 4
        assert entry["dataqueue_schema"]["device_id"] == entry["device_id"]
        parse_utc(
            pd.Series(
                [entry["calibration"]["started"], entry["calibration"]["stopped"]]
            )
        )
    assert producers["notes", "notes"]["dataqueue_schema"]["device_id"] == "notes"

    # every file of the run is accounted for
    listed = {p["output_path"] for p in m["producers"]} | {
        p["metadata_path"] for p in m["producers"] if p.get("metadata_path")
    }
    assert all((run.run_dir / p).exists() for p in listed)
    assert files_under(run.run_dir) == listed | {run.manifest_path.name}


def test_exception_in_block_propagates_and_run_is_still_finalized(tmp_path, core):
    with (
        pytest.raises(RuntimeError, match="stage jammed"),
        RunManager(tmp_path, "M1", 1, "rec") as run,
    ):
        tiff = run.writer_for("meso", "tiff")
        assert record(core, [tiff], timelapse(3)).ok
        run.add_note("before the failure")
        run.push("wheel", 2.5)
        raise RuntimeError("stage jammed")
    assert not run.running
    m = load_json(run.manifest_path)
    assert m["acquisition_complete"] is False
    assert any("stage jammed" in e for e in ours(m)["errors"]), ours(m)["errors"]
    assert m["ended_at"] is not None
    (entry,) = [f for f in ours(m)["files"] if f["kind"] == "tiff"]
    assert entry["frames"] == 3
    assert (run.run_dir / entry["sidecar"]).is_file()
    ts = pd.read_csv(run.timestamps_path, dtype=str, keep_default_na=False)
    assert ts["device_id"].tolist() == ["run", "meso"]
    parse_utc(ts["stopped"])
    dq = pd.read_csv(run.dataqueue_path)
    assert dq["device_id"].tolist() == ["meso"] * 3 + ["notes", "wheel"]
    assert "before the failure" in run.notes_path.read_text(encoding="utf-8")


def test_exception_while_a_recording_is_running(tmp_path, core):
    """The block fails mid-acquisition: the partial recording is finalized."""
    core.setExposure(2)
    try:
        with (
            pytest.raises(KeyError, match="lost trigger"),
            RunManager(tmp_path, "M1", 1, "rec") as run,
            contextlib.ExitStack() as stack,
        ):
            tiff = run.writer_for("meso", "tiff")
            stack.enter_context(tiff.attached(core))
            thread = core.run_mda(timelapse(2000))
            stack.callback(thread.join, 30)
            stack.callback(core.mda.cancel)
            wait_until(
                lambda: tiff.frames_written.get("p0", 0) >= 3,
                what="a few frames written",
            )
            raise KeyError("lost trigger")
    finally:
        core.setExposure(0)
    assert not thread.is_alive()
    m = load_json(run.manifest_path)
    assert m["acquisition_complete"] is False
    assert any("lost trigger" in e for e in ours(m)["errors"])
    (entry,) = [f for f in ours(m)["files"] if f["kind"] == "tiff"]
    frames = entry["frames"]
    assert 3 <= frames < 2000
    sidecar_payload = load_json(run.run_dir / entry["sidecar"])
    assert len(sidecar_payload["p0"]) == frames
    assert entry["journal"] is None


# ---------------------------------------------------------------- crash safety
CRASH_SCRIPT = r"""
import sys
from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.data.manager import RunManager
from mesofield_napari.devices.sim_camera import create_sim_core

core = create_sim_core((32, 32), exposure_ms=2)
run = RunManager(sys.argv[1], "M1", 1, "crash", {"power": 3}).start()
for text in ("first note", "second\nnote", "third note"):
    run.add_note(text)
run.push("wheel", {"speed": 1.0})
writer = run.writer_for("meso", "tiff")
print("ready", flush=True)
record(core, [writer], timelapse(2000))  # ~4 s; long sequences cost
# pymmcore-plus O(frames) event building before the first frame
print("finished", flush=True)
"""


def test_notes_and_journal_survive_sigkill(tmp_path):
    root = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "child never became ready"
        assert proc.stdout.readline().strip() == "ready"
        journal = kill_after_journal(
            proc,
            lambda: next(root.glob("data/sub-M1/ses-01/func/*.jsonl"), None),
            3,
            30,
        )
    finally:
        if proc.poll() is None:  # the child never got as far as the kill
            proc.kill()
            proc.wait()
        proc.stdout.close()

    run_dir = root / "data" / "sub-M1" / "ses-01"
    (notes,) = run_dir.glob("*_task-crash_notes.txt")
    lines = notes.read_text(encoding="utf-8").splitlines()
    assert [NOTE_RE.fullmatch(x).group(2) for x in lines] == [
        "first note",
        "second\\nnote",
        "third note",
    ]
    (manifest_path,) = run_dir.glob("*_manifest.json")
    manifest = load_json(manifest_path)
    assert manifest["acquisition_complete"] is False
    assert manifest["ended_at"] is None
    assert any(f["kind"] == "tiff" for f in ours(manifest)["files"])
    (timestamps,) = run_dir.glob("*_timestamps.csv")
    ts = read_rows(timestamps)
    assert ts[1][0] == "run" and ts[1][1] and ts[1][2] == ""
    (config,) = run_dir.glob("*_configuration.csv")
    assert ["power", "3"] in read_rows(config)
    (dataqueue,) = run_dir.glob("beh/*_dataqueue.csv")
    dq = read_rows(dataqueue)
    assert [r[3] for r in dq[1:5]] == ["notes"] * 3 + ["wheel"]
    assert json.loads(dq[4][4]) == {"speed": 1.0}
    assert {r[3] for r in dq[5:]} == {"meso"}  # the camera's frames: the run's clock

    # the recording is recoverable from its journal
    (data,) = run_dir.glob("func/*_meso.ome.tiff")
    assert not (data.parent / (data.name + "_frame_metadata.json")).exists()
    frames = journal_entry_lines(journal)
    report = recover(data)
    assert report.recovered
    assert report.frames == frames >= 3
    payload = load_json(report.sidecar)
    assert len(payload["p0"]) == frames
    assert not journal.exists()
    written = tifffile.imread(data, key=range(frames))
    assert written.shape == (frames, 32, 32)
    assert written.any(axis=(1, 2)).all()
    # ... and recover completes the run's manifest with what was recovered
    assert report.manifest == manifest_path
    after = load_json(manifest_path)
    assert after["acquisition_complete"] is True  # mesokit's find_files now sees it
    assert after["ended_at"] is not None
    (meso,) = [p for p in after["producers"] if p["device_id"] == "meso"]
    assert meso["calibration"]["frames"] == frames
    assert any("ended without finishing" in e for e in ours(after)["errors"])
    assert ours(after)["recovered"] is True
    assert ours(after)["recovered_files"][meso["output_path"]]["frames"] == frames
    assert tifffile.memmap(data).shape == (frames, 32, 32)  # the exact file
