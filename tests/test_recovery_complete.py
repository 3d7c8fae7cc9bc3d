"""After ``recover`` a crashed run looks like a finished one (marked recovered).

Issue 18's "Recoveries are complete" (handed on with issue 21's recovery work): these
tests state what is wanted (they were ``xfail(strict=True)`` until
``data/run_recovery.py`` and the video writer's journal made with its first frame).
Real parts: a ``record`` child
SIGKILLed mid-run, ``recover`` as users run it, the files read back with tifffile
and mesokit-schema.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from _helpers import journal_entry_lines, kill_after_journal, manifest_view


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesofield_napari", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def recovered(tmp_path_factory) -> dict:
    """A `record --writer both` killed after 5 frames, then `recover` on the folder."""
    out = tmp_path_factory.mktemp("crash") / "EXP"
    argv = [
        sys.executable, "-m", "mesofield_napari", "record", "--out", str(out),
        "--frames", "2000", "--size", "32x32", "--exposure", "5",
        "--writer", "both", "--note", "before the crash",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = kill_after_journal(
        proc, lambda: next(out.glob("data/sub-sim/ses-01/func/*.jsonl"), None), frames=5
    )
    frames = journal_entry_lines(journal)
    res = cli("recover", out, "--json")
    session = out / "data" / "sub-sim" / "ses-01"
    return {"out": out, "session": session, "frames": frames, "recover": res}


def test_manifest_is_that_of_a_finished_run_marked_recovered(recovered):
    (manifest,) = recovered["session"].glob("*_manifest.json")
    view = manifest_view(manifest)
    raw = json.loads(manifest.read_text())
    ours = raw["extra"]["mesofield_napari"]
    assert ours.get("state") != "running"
    assert ours.get("recovered") is True
    assert view["ended_at"] is not None
    tiff = next(f for f in view["files"] if f["path"].endswith(".ome.tiff"))
    assert tiff["frames"] == recovered["frames"]  # files[].frames was 0


def test_data_queue_counts_are_those_on_disk(recovered):
    (manifest,) = recovered["session"].glob("*_manifest.json")
    ours = json.loads(manifest.read_text())["extra"]["mesofield_napari"]
    (queue,) = recovered["session"].glob("beh/*_dataqueue.csv")
    with open(queue, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert ours["dataqueue_rows"] == len(rows) > 0


def test_timestamps_csv_has_stopped(recovered):
    (stamps,) = recovered["session"].glob("*_timestamps.csv")
    with open(stamps, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["stopped"] for r in rows), rows


def run_script(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )


DIES_AFTER_3 = """
import os, sys, time
import numpy as np
from mesofield_napari.data import CV2Writer
path = sys.argv[1] if len(sys.argv) > 1 else {path!r}
w = CV2Writer(path, fps=30.0)
w.begin(32, 24, is_color=False)
for i in range(3):
    w.add_frame(np.full((24, 32), i, np.uint8))
journal = path + "_frame_metadata.jsonl"
for _ in range(300):  # the journal reaches the OS within a second
    if os.path.exists(journal) and open(journal).read().count(chr(10)) >= 4:
        break
    time.sleep(0.01)
os._exit(0)  # the process dies: no finish
"""


def test_journal_without_its_data_file_is_reported_and_blocks_nothing(tmp_path):
    path = tmp_path / "pupil.mp4"
    assert run_script(DIES_AFTER_3.format(path=str(path))).returncode == 0
    journal = path.with_name(path.name + "_frame_metadata.jsonl")
    assert journal.exists()
    path.unlink()  # the video is lost
    res = cli("recover", journal)
    assert res.returncode != 0 and "pupil.mp4" in res.stderr
    assert not path.with_name(path.name + "_frame_metadata.json").exists()
    # the name is free again: the same script records
    assert run_script(DIES_AFTER_3.format(path=str(path))).returncode == 0


FAILS_AFTER_BEGIN = """
from mesofield_napari.data import CV2Writer
w = CV2Writer({path!r}, fps=30.0)
w.begin(32, 24, is_color=False)
raise RuntimeError("the script failed before its first frame")
"""


def test_a_writer_that_never_received_a_frame_leaves_nothing(tmp_path):
    path = tmp_path / "pupil.mp4"
    res = run_script(FAILS_AFTER_BEGIN.format(path=str(path)))
    assert "the script failed before its first frame" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # re-running it is not blocked by what the first attempt left
    res = run_script(FAILS_AFTER_BEGIN.format(path=str(path)))
    assert "already exists" not in res.stderr and "refus" not in res.stderr
