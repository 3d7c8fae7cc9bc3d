"""The ``mesofield-napari`` command: record / inspect / recover, run as the user runs it
(a subprocess of ``python -m mesofield_napari``), plus the dropped-frame heuristics."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from _helpers import (
    journal_entry_lines,
    kill_after_journal,
    manifest_view,
    wait_until,
)
from mesofield_napari._platform import system
from mesofield_napari.cli import main
from mesofield_napari.data.reader.summary import dropped_frames, frame_times_s

N, H, W = 5, 24, 40
NOTES = ["first note", "second, with a comma"]
RECORD_KEYS = {"ok", "files", "run_dir", "notes", "timestamps", "manifest"}
INSPECT_KEYS = {
    "frames",
    "shape",
    "dtype",
    "duration_s",
    "fps",
    "dropped_frames",
    "sidecar",
    "complete",
    "notes",
}


def cli(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesofield_napari", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def record_args(out: Path, writer: str, *extra: object) -> list[object]:
    args: list[object] = [
        "record",
        "--out",
        out,
        "--frames",
        N,
        "--writer",
        writer,
        "--size",
        f"{H}x{W}",
        "--exposure",
        0,
        "--subject",
        "M7",
        "--session",
        2,
        "--task",
        "wf",
    ]
    for note in NOTES:
        args += ["--note", note]
    return [*args, *extra, "--json"]


def assert_one_line_error(res: subprocess.CompletedProcess[str] | tuple) -> str:
    rc, err = (res.returncode, res.stderr) if not isinstance(res, tuple) else res
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mesofield-napari"), err
    return lines[0]


@pytest.fixture(scope="module")
def tiff_run(tmp_path_factory):
    """One TIFF recording made by the command, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("cli") / "data"
    res = cli(*record_args(out, "tiff"))
    assert res.returncode == 0, res.stderr
    return out, json.loads(res.stdout)


# ---------------------------------------------------------------- record
@pytest.mark.parametrize(
    ("writer", "kinds"),
    [("tiff", ["tiff"]), ("mp4", ["mp4"]), ("both", ["mp4", "tiff"])],
)
def test_record_json_files_and_contents(tmp_path, tiff_run, writer, kinds):
    if writer == "tiff":
        out, payload = tiff_run
    else:
        out = tmp_path / "data"
        res = cli(*record_args(out, writer))
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        payload = json.loads(res.stdout)  # exactly one JSON object on stdout
    assert set(payload) >= RECORD_KEYS
    assert payload["ok"] is True
    run_dir = out / "data" / "sub-M7" / "ses-02"
    assert Path(payload["run_dir"]) == run_dir
    assert sorted(f["kind"] for f in payload["files"]) == kinds
    for f in payload["files"]:
        path = Path(f["path"])
        assert path.is_file() and path.parent.parent == run_dir
        assert f["frames"] == N
        sidecar = Path(f["sidecar"])
        assert sidecar.is_file() and sidecar.name == path.name + "_frame_metadata.json"
        assert len(json.loads(sidecar.read_text())["p0"]) == N
        if f["kind"] == "tiff":
            assert path.parent.name == "func" and path.name.endswith(".ome.tiff")
            data = tifffile.imread(path)
            assert data.shape == (N, H, W)
            assert data.dtype == np.uint16
            assert data.any(axis=(1, 2)).all()  # no all-zero (unwritten) frame
        else:
            assert path.parent.name == "beh" and path.suffix == ".mp4"
            assert f["codec"]
            cap = cv2.VideoCapture(str(path))
            try:
                assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == N
                assert int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == H
                assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == W
            finally:
                cap.release()

    notes = Path(payload["notes"]).read_text(encoding="utf-8").splitlines()
    assert [line.split(": ", 1)[1] for line in notes] == NOTES
    assert (
        Path(payload["timestamps"]).read_text().startswith("device_id,started,stopped")
    )
    manifest = manifest_view(payload["manifest"])
    assert manifest["complete"] is True and manifest["errors"] == []
    assert manifest["session"] == "02"
    for key in ("notes", "timestamps", "manifest"):
        assert Path(payload[key]).parent == run_dir


# ---------------------------------------------------------------- bad arguments
@pytest.fixture
def in_process(monkeypatch):
    """Run ``main`` here; undo what it does to the process's warnings and logging."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)

    def run(argv: list[str]) -> int:
        root = logging.getLogger()
        before = list(root.handlers)
        try:
            return main(argv)
        finally:
            for handler in root.handlers[:]:
                if handler not in before:
                    root.removeHandler(handler)

    return run


@pytest.mark.parametrize(
    ("bad", "word"),
    [
        (["--size", "3x"], "--size"),
        (["--size", "4x4"], "--size"),
        (["--size", "axb"], "--size"),
        (["--frames", "-1"], "--frames"),
        (["--frames", "ten"], "--frames"),
        (["--exposure", "-1"], "--exposure"),
        (["--session", "a/b"], "session"),
        (["--session", ".."], "session"),
        (["--task", "two words"], "task"),
        (["--subject", ""], "subject"),
    ],
)
def test_bad_arguments_in_process(tmp_path, capsys, in_process, bad, word):
    out = tmp_path / "o"
    try:
        rc = in_process(["record", "--out", str(out), "--frames", "2", *bad])
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    captured = capsys.readouterr()
    line = assert_one_line_error((rc, captured.err))
    assert word in line and line.startswith("mesofield-napari record: error")
    assert captured.out == ""
    assert not list(tmp_path.rglob("sub-*"))


@pytest.mark.parametrize(
    "bad",
    [["--size", "3x"], ["--frames", "-1"], ["--subject", "../x"], "unwritable-out"],
    ids=["size", "frames", "subject", "out"],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, bad):
    afile = tmp_path / "afile"
    afile.write_text("a regular file")
    out = tmp_path / "out"
    extra = [] if bad == "unwritable-out" else bad
    if bad == "unwritable-out":
        out = afile / "x"
    res = cli(
        "record",
        "--out",
        out,
        "--frames",
        2,
        "--size",
        "16x16",
        "--exposure",
        0,
        *extra,
        "--json",
    )
    line = assert_one_line_error(res)
    assert res.stdout == ""
    if bad == "unwritable-out":
        assert str(out) in line
    else:
        assert bad[0].lstrip("-") in line
    # nothing was recorded anywhere, nothing escaped the output folder
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.rglob("*.tiff"))
    assert not list(tmp_path.rglob("sub-*"))
    assert afile.read_text() == "a regular file"


# ---------------------------------------------------------------- inspect
def test_inspect_run_dir_json(tiff_run):
    _, payload = tiff_run
    res = cli("inspect", payload["run_dir"], "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert set(summary) >= INSPECT_KEYS
    assert summary["frames"] == N
    assert summary["shape"] == [N, H, W]
    assert summary["dtype"] == "uint16"
    assert summary["sidecar"] == "final"
    assert summary["complete"] is True
    assert summary["dropped_frames"] == 0
    assert summary["duration_s"] > 0
    assert summary["fps"] == pytest.approx((N - 1) / summary["duration_s"], rel=0.01)
    assert [n.split(": ", 1)[1] for n in summary["notes"]] == NOTES
    # one recording, given directly
    (tiff,) = [f["path"] for f in payload["files"]]
    one = json.loads(cli("inspect", tiff, "--json").stdout)
    assert (one["frames"], one["sidecar"], one["complete"]) == (N, "final", True)
    assert one["shape"] == [N, H, W]


def test_inspect_or_recover_missing_path_exits_2(tmp_path, capsys, in_process):
    line = assert_one_line_error(cli("inspect", tmp_path / "nope", "--json"))
    assert "nope" in line
    (tmp_path / "empty").mkdir()
    for argv, word in (
        (["inspect", str(tmp_path / "empty")], "no recordings"),
        (["recover", str(tmp_path / "nope.ome.tiff"), "--json"], "nope.ome.tiff"),
    ):
        rc = in_process(argv)
        captured = capsys.readouterr()
        assert word in assert_one_line_error((rc, captured.err))
        assert captured.out == ""
    # a folder without a crashed recording: nothing to do, and it says so
    assert in_process(["recover", str(tmp_path / "empty")]) == 0
    assert "no crashed recording" in capsys.readouterr().out


def test_killed_recording_inspect_then_recover(tmp_path):
    """A `record` killed mid-run leaves a journal but no sidecar: inspect says so,
    recover rebuilds the sidecar with the frames really written."""
    out = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesofield_napari",
            "record",
            "--out",
            str(out),
            "--frames",
            "2000",  # pymmcore-plus builds all events first: keep this modest
            "--size",
            "32x32",
            "--exposure",
            "5",
            "--writer",
            "tiff",
            "--note",
            "before the crash",
            "--json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = kill_after_journal(
        proc, lambda: next(out.glob("data/sub-sim/ses-01/func/*.jsonl"), None), frames=3
    )

    data = journal.with_name(journal.name.removesuffix("_frame_metadata.jsonl"))
    sidecar = data.with_name(data.name + "_frame_metadata.json")
    assert data.name.endswith("_meso.ome.tiff")
    assert not sidecar.exists()
    frames = journal_entry_lines(journal)

    res = cli("inspect", data, "--json")
    assert res.returncode == 2, res.stderr  # incomplete until recovered
    summary = json.loads(res.stdout)
    assert summary["sidecar"] == "journal"
    assert summary["frames"] == frames
    assert summary["complete"] is False
    run = json.loads(cli("inspect", data.parent.parent, "--json").stdout)
    assert run["sidecar"] == "journal" and run["complete"] is False
    assert run["frames"] == frames
    assert [n.split(": ", 1)[1] for n in run["notes"]] == ["before the crash"]

    res = cli("recover", out, "--json")  # the experiment folder: every crashed file
    assert res.returncode == 0, res.stderr
    (report,) = json.loads(res.stdout)["recordings"]
    assert report["frames"] == frames
    assert Path(report["manifest"]).parent == data.parent.parent
    assert report["recovered"] is True
    assert cli("inspect", data).returncode == 0  # complete once recovered
    assert Path(report["sidecar"]) == sidecar
    assert len(json.loads(sidecar.read_text())["p0"]) == frames
    assert not journal.exists()

    again = json.loads(cli("inspect", data, "--json").stdout)
    assert (again["sidecar"], again["frames"], again["complete"]) == (
        "final",
        frames,
        True,
    )
    # the run's manifest was completed by recover: the whole experiment is readable
    assert json.loads(cli("inspect", out, "--json").stdout)["complete"] is True
    assert "no crashed recording" in cli("recover", out).stdout


# ---------------------------------------------------------------- dropped frames
def _entries(numbers=None, times_ms=None):
    count = len(numbers if numbers is not None else times_ms)
    entries = []
    for i in range(count):
        e: dict = {"runner_time_ms": times_ms[i] if times_ms else 10.0 * i}
        if numbers is not None:
            e["camera_metadata"] = {"ImageNumber": str(numbers[i])}
        entries.append(e)
    return entries


def test_dropped_frames_from_image_number_gap():
    # the frame clock looks regular: only the camera's counter shows the drop
    entries = _entries(numbers=[0, 1, 2, 5, 6])
    assert dropped_frames(entries, frame_times_s(entries)) == 2
    entries = _entries(numbers=[10, 11, 12, 13])
    assert dropped_frames(entries, frame_times_s(entries)) == 0


def test_long_intervals_without_frame_numbers_are_late_not_missing():
    from mesofield_napari.data.frame_timing import frame_timing

    entries = _entries(times_ms=[0.0, 10.0, 20.0, 50.0, 60.0, 70.0])
    times = frame_times_s(entries)
    assert times.tolist() == pytest.approx([0, 0.01, 0.02, 0.05, 0.06, 0.07])
    # no ImageNumber: nothing proves a frame missing; the stall is one late frame
    assert dropped_frames(entries, times) == 0
    assert frame_timing([], times).late == 1
    jitter = _entries(times_ms=[0.0, 10.2, 19.9, 30.1, 40.0, 49.8])
    assert frame_timing([], frame_times_s(jitter)).late == 0
    # ElapsedTime-ms is the fallback clock
    elapsed = [
        {"camera_metadata": {"ElapsedTime-ms": str(t)}}
        for t in (100.0, 110.0, 120.0, 150.0, 160.0)
    ]
    assert frame_timing([], frame_times_s(elapsed)).late == 1


def _stop_posix(proc: subprocess.Popen, stop_file: Path, how: str) -> None:
    import signal

    proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGHUP)


def _stop_windows(proc: subprocess.Popen, stop_file: Path, how: str) -> None:
    import signal

    if how == "ctrl-break":  # what another program sends (same process group)
        os.kill(proc.pid, signal.CTRL_BREAK_EVENT)
    else:  # the console window closed: CTRL_CLOSE_EVENT (emulated: the real SIGHUP)
        import _emulate_os

        _emulate_os._Real.kill(proc.pid, _emulate_os.signal.Signals.SIGHUP)


STOPS = {
    "stop-file": (None, lambda proc, stop_file, how: stop_file.touch()),
    "sigterm": ("posix", _stop_posix),
    "sighup": ("posix", _stop_posix),  # the terminal closed
    "ctrl-break": ("windows", _stop_windows),
    "console-closed": ("windows", _stop_windows),
}


@pytest.mark.parametrize("how", list(STOPS))
def test_record_until_stop_ends_cleanly(tmp_path, how):
    """`--frames 0`: no planned length; every way a user or program stops a run on
    this system ends it with exit 0, and the file holds exactly the frames recorded.
    (On Windows SIGTERM from another program is TerminateProcess: nothing can be
    finished, which is why the stop file exists.)"""
    import _emulate_os

    needs, stop = STOPS[how]
    windows = system() == "windows"
    if needs == "posix" and windows:
        pytest.skip(f"{how}: no such signal on Windows (use the stop file)")
    if needs == "windows" and not windows:
        pytest.skip(f"{how}: a Windows console event")
    if how == "console-closed" and _emulate_os.emulated_system() != "windows":
        pytest.skip("closing a real console window is not scriptable in CI")
    out, stop_file = tmp_path / "exp", tmp_path / "STOP"
    flags = 0
    if sys.platform == "win32":  # Ctrl-Break reaches a process group of its own
        flags = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesofield_napari",
            "record",
            "--out",
            str(out),
            "--frames",
            "0",
            "--size",
            "32x48",
            "--exposure",
            "1",
            "--json",
            "--stop-file",
            str(stop_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        creationflags=flags,
    )
    try:
        wait_until(
            lambda: (
                (j := next(out.rglob("*.jsonl"), None)) is not None
                and journal_entry_lines(j) >= 200
            ),
            timeout=60,
            what="200 frames journaled",
        )
        stop(proc, stop_file, how)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how == "console-closed":  # Windows may end the process before it reports
        manifest = manifest_view(next(out.rglob("*_manifest.json")))
        assert manifest["complete"] is True
        (entry,) = manifest["files"]
        n = entry["frames"]
        path = next(out.rglob("*.ome.tiff"))
        sidecar = Path(str(path) + "_frame_metadata.json")
        assert n >= 200 and tifffile.memmap(path).shape == (n, 32, 48)
        assert len(json.loads(sidecar.read_text(encoding="utf-8"))["p0"]) == n
        return
    assert proc.returncode == 0, stderr
    assert "until Stop" in stderr
    payload = json.loads(stdout)
    assert payload["ok"] is True and payload["frames_requested"] == 0
    (entry,) = payload["files"]
    n = entry["frames"]
    assert n >= 200 and payload["frames_written"] == n
    assert tifffile.memmap(entry["path"]).shape == (n, 32, 48)
    assert len(json.loads(Path(entry["sidecar"]).read_text())["p0"]) == n
    assert manifest_view(payload["manifest"])["complete"] is True
