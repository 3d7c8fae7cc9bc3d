"""Run-level recovery (``data/run_recovery.py``) and the data queue's one finishing
function (``finish_dataqueue``), on real files: a child process that starts a run,
pushes rows and dies without stopping it, then ``finish_run`` as ``recover`` calls
it. docs/design.md §6."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import tifffile

from _helpers import wait_until
from mesofield_napari.data.manager.dataqueue import finish_dataqueue
from mesofield_napari.data.run_recovery import finish_run, is_running_manifest

DIES_MID_RUN = """
import os, sys, time
from mesofield_napari.data.manager import RunManager
run = RunManager(sys.argv[1], "M1", 1, "crash").start()
run.add_note("before the crash")
for i in range(5):
    run.push("treadmill", {"distance": i * 1.5, "speed": 0.5, "device_us": i * 1000})
run.push("wheel", 3)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:  # the queue reaches the OS within a second
    if open(run.dataqueue_path).read().count(chr(10)) >= 8:
        break
    time.sleep(0.01)
# a half-written fan-out and a half-written timestamps file, as a kill leaves them
name = run.dataqueue_path.name
(run.dataqueue_path.parent / f".{name}.0123456789ab.tmp").write_text("half")
(run.timestamps_path.parent / f".{run.timestamps_path.name}.tmp").write_text("x")
print(run.manifest_path, flush=True)
os._exit(0)  # the process dies: no stop
"""


def crashed_run(root: Path) -> Path:
    res = subprocess.run(
        [sys.executable, "-c", DIES_MID_RUN, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return Path(res.stdout.strip().splitlines()[-1])


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_finish_run_brings_a_dead_run_to_a_stopped_one_once(tmp_path):
    manifest = crashed_run(tmp_path)
    assert is_running_manifest(manifest)
    session = manifest.parent
    assert list(session.rglob(".*.tmp"))

    result = finish_run(manifest)

    assert result is not None and result.complete
    assert result.temp_files_removed == 2
    assert not list(session.rglob("*.tmp"))
    (queue,) = session.glob("beh/*_dataqueue.csv")
    table = rows(queue)
    assert [r["device_id"] for r in table] == ["notes"] + ["treadmill"] * 5 + ["wheel"]
    assert [r["distance"] for r in table[1:6]] == ["0.0", "1.5", "3.0", "4.5", "6.0"]
    assert table[6]["payload"] == "3" and table[6]["distance"] == ""
    raw = json.loads(manifest.read_text(encoding="utf-8"))
    ours = raw["extra"]["mesofield_napari"]
    assert ours["state"] == "stopped" and ours["recovered"] is True
    assert ours["dataqueue_rows"] == 7 and ours["notes"] == 1
    assert raw["ended_at"] is not None and raw["acquisition_complete"] is True
    (stamps,) = session.glob("*_timestamps.csv")
    (run_row,) = [r for r in rows(stamps) if r["device_id"] == "run"]
    assert run_row["stopped"] == table[-1]["packet_ts"]  # the last row's time

    # a second recover finds a stopped run and changes nothing
    before = {p: p.read_bytes() for p in session.rglob("*") if p.is_file()}
    assert finish_run(manifest) is None
    assert not is_running_manifest(manifest)
    assert {p: p.read_bytes() for p in session.rglob("*") if p.is_file()} == before


def test_finish_dataqueue_trims_fans_out_and_is_idempotent(tmp_path):
    path = tmp_path / "q_dataqueue.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["queue_elapsed", "packet_ts", "device_ts", "device_id", "payload"])
        for i in range(6):
            w.writerow([f"{i}.0", f"t{i}", "", "cam", i])
            w.writerow([f"{i}.5", f"u{i}", "", "enc", json.dumps({"speed": i})])
    counts = finish_dataqueue(path, {"cam": 4})
    assert dict(counts.rows_by_device) == {"cam": 4, "enc": 6}
    assert dict(counts.trimmed) == {"cam": 2}
    assert (counts.first_ts["cam"], counts.last_ts["cam"]) == ("t0", "t3")
    table = rows(path)
    assert [r["payload"] for r in table if r["device_id"] == "cam"] == list("0123")
    assert [r["speed"] for r in table if r["device_id"] == "enc"] == list("012345")
    once = path.read_bytes()
    again = finish_dataqueue(path, {"cam": 4})
    assert path.read_bytes() == once  # nothing left to change
    assert dict(again.rows_by_device) == {"cam": 4, "enc": 6}
    assert not list(tmp_path.glob(".*.tmp"))


def journal_lines(root: Path) -> int:
    return sum(
        max(0, len(j.read_bytes().splitlines()) - 1)
        for j in root.rglob("*_frame_metadata.jsonl")
    )


def test_recover_leaves_a_run_that_is_still_recording_alone(tmp_path):
    out = tmp_path / "exp"
    argv = [
        sys.executable, "-m", "mesofield_napari", "record", "--out", str(out),
        "--frames", "0", "--exposure", "5", "--size", "32x32", "--json",
        "--stop-file", str(tmp_path / "stop"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: journal_lines(out) >= 10, 120, what="10 frames")
        res = subprocess.run(
            [sys.executable, "-m", "mesofield_napari", "recover", str(out), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        (tmp_path / "stop").write_text("stop")  # ends the run like Ctrl-C
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert res.returncode == 2 and "still being written" in res.stderr, res.stderr
    assert json.loads(res.stdout)["runs"] == []  # nothing of the live run touched
    assert proc.returncode == 0, stderr[-2000:]
    payload = json.loads(stdout)
    n = payload["frames_written"]
    (tiff,) = out.rglob("*.ome.tiff")
    with tifffile.TiffFile(tiff) as tf:
        assert len(tf.pages) == n
    (queue,) = out.rglob("*_dataqueue.csv")
    assert len([r for r in rows(queue) if r["device_id"] == "mesoscope"]) == n
    (manifest,) = out.rglob("*_manifest.json")
    ours = json.loads(manifest.read_text(encoding="utf-8"))["extra"]["mesofield_napari"]
    assert ours["state"] == "stopped" and "recovered" not in ours
