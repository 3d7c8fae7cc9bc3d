"""Runs that end otherwise than planned (issue 21): real processes, real signals.

- pymmcore-plus's coloured "MDA Canceled" line must not reach an experiment run's
  stderr (the single-camera CLI already kept it off);
- a planned run interrupted (Ctrl-C, Stop, closing the app, ExperimentRun.stop) is
  not complete: its manifest says why;
- a run folder deleted mid-run stops the run within a second or so, with the error,
  instead of recording on into unlinked files until the planned end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import wait_until
from mesofield_napari.data.reader.summary import summarize_run
from mesofield_napari.experiment import ExperimentRun, load_experiment
from mesofield_napari.models.recorder import RecorderSettings, RecordingSession

SRC = str(Path(__file__).parents[1] / "src")
TIMEOUT = 120  # generous for a loaded machine; a hang fails instead of stalling


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC}


def cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mesofield_napari", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def journal_frames(root: Path) -> int:
    """Frames journaled so far by a running process (0 before its journal exists)."""
    total = 0
    for journal in root.rglob("*_frame_metadata.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            total += max(0, len(journal.read_bytes().splitlines()) - 1)
    return total


def manifest_of(root: Path) -> dict:
    (path,) = root.rglob("*_manifest.json")
    return json.loads(path.read_text(encoding="utf-8"))


def ours(manifest: dict) -> dict:
    return manifest["extra"]["mesofield_napari"]


RIG = """\
cameras:
  - id: mesoscope
    name: meso
    backend: micromanager
    primary: true
    fps: 20
    properties: {width: 32, height: 32}
  - id: pupil
    name: pupil
    backend: micromanager
    fps: 20
    properties: {width: 32, height: 32, exposure_ms: 200}
    output: {bids_type: beh, file_type: mp4}
"""


def rig(folder: Path, hardware: str = RIG, duration: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hardware.yaml").write_text(hardware, encoding="utf-8")
    config = {"Configuration": {"duration": duration}, "Subjects": {"M1": {}}}
    (folder / "experiment.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


# ---------------------------------------------------------------- console
def test_experiment_run_stderr_has_no_pymmcore_colour_line(tmp_path):
    # the slow secondary camera is cancelled when the primary has its frames
    proc = cli(
        "record",
        "--experiment",
        str(rig(tmp_path / "rig")),
        "--out",
        str(tmp_path / "o"),
    )
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-2000:]
    assert "run folder:" in out
    assert "MDA Canceled" not in err and "\x1b[" not in err, err


# ---------------------------------------------------------------- interrupted
def test_ctrl_c_of_a_planned_cli_run_leaves_an_incomplete_manifest(tmp_path):
    proc = cli(
        "record", "--out", str(tmp_path), "--frames", "100000", "--exposure", "5",
        "--size", "32x32", "--json",
    )  # fmt: skip
    try:
        wait_until(lambda: journal_frames(tmp_path) >= 10, TIMEOUT, what="10 frames")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    manifest = manifest_of(tmp_path)
    assert manifest["acquisition_complete"] is False, err[-2000:]
    reason = ours(manifest)["interrupted"]
    assert reason.startswith("interrupted after ") and "of 100000 planned" in reason
    assert json.loads(out)["interrupted"] == reason


def test_ctrl_c_of_an_until_stop_run_is_its_normal_end(tmp_path):
    proc = cli(
        "record", "--out", str(tmp_path), "--frames", "0", "--exposure", "5",
        "--size", "32x32", "--json",
    )  # fmt: skip
    try:
        wait_until(lambda: journal_frames(tmp_path) >= 10, TIMEOUT, what="10 frames")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    manifest = manifest_of(tmp_path)
    assert manifest["acquisition_complete"] is True
    assert ours(manifest)["interrupted"] is None


def test_stop_of_a_planned_recorder_run_is_incomplete(sim_core, tmp_path):
    sim_core.setExposure(2.0)
    settings = RecorderSettings(root=str(tmp_path), frames=5000)
    session = RecordingSession(sim_core, settings)
    session.start()
    wait_until(lambda: session.status().frames_acquired >= 10)
    session.stop()
    assert session.wait(60)
    (outcome,) = session.outcomes
    assert outcome.ok  # nothing failed ...
    manifest = manifest_of(tmp_path)
    assert manifest["acquisition_complete"] is False  # ... but it is not complete
    reason = (
        f"stopped by the user after {outcome.frames_written} of 5000 planned frames"
    )
    assert ours(manifest)["interrupted"] == reason
    summary = summarize_run(tmp_path)  # what `inspect` prints
    assert not summary["complete"] and f"interrupted: {reason}" in summary["errors"]


def test_a_recorder_run_that_reaches_its_duration_is_complete(sim_core, tmp_path):
    sim_core.setExposure(5.0)
    session = RecordingSession(
        sim_core, RecorderSettings(root=str(tmp_path), duration_s=0.3)
    )
    session.start()
    assert session.wait(60)
    assert manifest_of(tmp_path)["acquisition_complete"] is True


def test_stopping_an_experiment_early_is_incomplete(tmp_path):
    run = ExperimentRun(
        load_experiment(rig(tmp_path / "rig", duration=600)), out=tmp_path / "exp"
    )
    run.start()
    wait_until(lambda: run.status()["devices"]["mesoscope"]["frames"] >= 3)
    assert run.stop(timeout=TIMEOUT)
    result = run.result()
    assert result["ok"], result["errors"]
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert manifest["acquisition_complete"] is False
    reason = ours(manifest)["interrupted"]
    assert reason.startswith("stopped by the user after ") and " of 600 s " in reason
    assert "(mesoscope: " in reason and " of 12000 planned frames)" in reason
    assert result["interrupted"] == reason


# ---------------------------------------------------------------- folder deleted
def test_deleting_the_run_folder_stops_a_cli_run(tmp_path):
    # planned for ~8 minutes: noticed only at the end, this would time out
    proc = cli(
        "record", "--out", str(tmp_path), "--frames", "100000", "--exposure", "5",
        "--size", "32x32",
    )  # fmt: skip
    try:
        wait_until(lambda: journal_frames(tmp_path) >= 10, TIMEOUT, what="10 frames")
        (session,) = (tmp_path / "data").glob("sub-*/ses-*")
        shutil.rmtree(session)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode != 0
    first = err.strip().splitlines()[0]
    assert first.startswith("mesofield-napari record: error: "), err[-2000:]
    assert_deleted_message(first.split(": error: ", 1)[1], session)


def assert_deleted_message(message: str, run_dir: Path) -> None:
    """The guard names the folder (or, mid-removal, a file of it) that went."""
    assert message.endswith(" was deleted while recording; the run was stopped")
    assert message.startswith((f"the run folder {run_dir} ", f"{run_dir}/")), message


def test_deleting_the_run_folder_stops_an_experiment(tmp_path):
    run = ExperimentRun(
        load_experiment(rig(tmp_path / "rig", duration=600)), out=tmp_path / "exp"
    )
    run.start()
    wait_until(lambda: run.status()["devices"]["mesoscope"]["frames"] >= 3)
    t0 = time.monotonic()
    shutil.rmtree(run.run_dir)
    assert run.wait(TIMEOUT), "the run went on after its folder was deleted"
    print(f"stopped {time.monotonic() - t0:.2f} s after the folder was deleted")
    result = run.result()
    assert not result["ok"]
    assert_deleted_message(result["errors"][0], run.run_dir)


@pytest.mark.parametrize("what", ["func", "notes"])
def test_deleting_a_data_folder_or_run_file_stops_the_run(tmp_path, what):
    run = ExperimentRun(
        load_experiment(rig(tmp_path / "rig", duration=600)), out=tmp_path / "exp"
    )
    run.start()
    wait_until(lambda: run.status()["devices"]["mesoscope"]["frames"] >= 3)
    target = run.run_dir / "func" if what == "func" else run.run.notes_path
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert run.wait(TIMEOUT)
    assert run.result()["errors"][0] == (
        f"{target} was deleted while recording; the run was stopped"
    )
