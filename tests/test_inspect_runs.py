"""``inspect`` on a session with a finished run and a crashed one: each run with its
own notes, incomplete when a recording is, a non-zero exit code then."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import kill_after_journal
from mesofield_napari.data.reader.summary import (
    EXIT_INCOMPLETE,
    inspect_exit_code,
    inspect_lines,
    summarize_recording,
    summarize_run,
)


def record(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "mesofield_napari", "record", "--out", str(out),
        "--size", "32x32", "--exposure", "5", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inspect") / "EXP"
    done = subprocess.run(
        record(out, "--frames", "10", "--note", "first run"),
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    before = set(out.glob("data/sub-sim/ses-01/func/*.jsonl"))
    proc = subprocess.Popen(
        record(out, "--frames", "2000", "--note", "crashed run"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_after_journal(
        proc,
        lambda: next(
            (
                p
                for p in out.glob("data/sub-sim/ses-01/func/*.jsonl")
                if p not in before
            ),
            None,
        ),
        frames=3,
    )
    return out / "data" / "sub-sim" / "ses-01"


def test_each_run_has_its_own_notes_and_state(session):
    summary = summarize_run(session)
    assert summary["complete"] is False
    first, crashed = summary["runs"]
    assert first["complete"] is True and crashed["complete"] is False
    assert [n.split(": ", 1)[1] for n in first["notes"]] == ["first run"]
    assert [n.split(": ", 1)[1] for n in crashed["notes"]] == ["crashed run"]
    assert len(first["recordings"]) == len(crashed["recordings"]) == 1
    assert inspect_exit_code(summary) == EXIT_INCOMPLETE != 0
    lines = inspect_lines(summary)
    i_first = lines.index(f"run {first['run']}: complete")
    i_crash = lines.index(f"run {crashed['run']}: INCOMPLETE")
    assert i_first < i_crash
    assert any("first run" in line for line in lines[i_first:i_crash])
    assert not any("crashed run" in line for line in lines[i_first:i_crash])
    assert any("crashed run" in line for line in lines[i_crash:])


def test_one_incomplete_recording_exits_non_zero(session):
    (crashed,) = session.glob("func/*.jsonl")
    data = crashed.with_name(crashed.name.removesuffix("_frame_metadata.jsonl"))
    summary = summarize_recording(data)
    assert inspect_exit_code(summary) == EXIT_INCOMPLETE
    assert any("crashed run" in line for line in inspect_lines(summary))


def test_inspect_command_exits_non_zero_for_an_incomplete_session(session):
    res = subprocess.run(
        [sys.executable, "-m", "mesofield_napari", "inspect", str(session)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == EXIT_INCOMPLETE
    assert "INCOMPLETE" in res.stdout
