"""Crash safety: the frame journal, ``recover()``, a killed process and a full disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tifffile
import useq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import (
    disk_limit_env,
    journal_entry_lines,
    limit_prologue,
    read_json,
    record_then_kill,
    sim_index,
    timelapse,
    wait_until,
)
from mesofield_napari._platform import system
from mesofield_napari.data import (
    CustomWriter,
    CV2Writer,
    journal_path,
    recover,
    sidecar_path,
)
from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

if TYPE_CHECKING:
    from pymmcore_plus.experimental.unicore import UniMMCore


# ----------------------------------------------------------------- journal snapshots
@pytest.fixture
def crashed_mda(sim_core: UniMMCore, tmp_path: Path) -> tuple[Path, int]:
    """What a crash mid-run leaves: the TIFF and the journal of its first frames.

    A real recording runs; while its 8th frame arrives (its first 7 are on disk and
    journaled) the journal is copied aside under another recording's name, next to a
    copy of the TIFF. Returns that data path and the frames in the copied journal.
    """
    src = tmp_path / "live" / "run.ome.tiff"
    src.parent.mkdir()
    crash = tmp_path / "crash" / "run.ome.tiff"
    crash.parent.mkdir()
    writer = CustomWriter(src)

    def snapshot(frame: np.ndarray, event: useq.MDAEvent, meta: Any) -> None:
        if event.index.get("t") == 7:
            # journal lines trail the frames written by at most one batch, and catch
            # up as soon as the writer's queue runs empty; on a loaded machine the
            # writer thread may not even have opened the journal yet
            journal = journal_path(src)
            wait_until(
                lambda: journal.exists() and journal_entry_lines(journal) >= 7, 10
            )
            shutil.copyfile(journal_path(src), journal_path(crash))
            # the writer thread may be mid-line during the copy: cut at the last
            # complete line (a torn line is covered by its own test below)
            raw = journal_path(crash).read_bytes()
            journal_path(crash).write_bytes(raw[: raw.rfind(b"\n") + 1])

    with writer.attached(sim_core):
        sim_core.mda.events.frameReady.connect(snapshot)
        try:
            sim_core.mda.run(timelapse(10))
        finally:
            sim_core.mda.events.frameReady.disconnect(snapshot)
    writer.raise_if_failed()
    shutil.copyfile(src, crash)
    n = journal_entry_lines(journal_path(crash))
    assert 7 <= n <= 8
    return crash, n


def test_recover_rebuilds_legacy_sidecar_from_journal(
    crashed_mda: tuple[Path, int], camera: SimulatedMesoscopeCamera
) -> None:
    path, n = crashed_mda
    assert not sidecar_path(path).exists()
    report = recover(path)
    assert report.recovered
    assert report.frames == n
    assert report.frames_by_position == {"p0": n}
    assert report.bad_lines == 0
    assert report.data_path == path
    assert report.sidecar == sidecar_path(path)
    assert f"recovered {n} frame" in report.message
    assert not journal_path(path).exists()
    payload = read_json(sidecar_path(path))
    assert list(payload) == ["p0"]
    assert [e["mda_event"] for e in payload["p0"]] == [{"t": t} for t in range(n)]
    data = tifffile.imread(path)
    for entry in payload["p0"]:
        np.testing.assert_array_equal(
            data[entry["mda_event"]["t"]], camera.frame(sim_index(entry))
        )
    # a second call finds a complete recording
    again = recover(path)
    assert not again.recovered
    assert again.frames == n


@pytest.mark.parametrize("which", ["journal", "sidecar"])
def test_recover_accepts_journal_or_sidecar_path(
    crashed_mda: tuple[Path, int], which: str
) -> None:
    path, n = crashed_mda
    given_path = journal_path(path) if which == "journal" else sidecar_path(path)
    report = recover(given_path)
    assert report.data_path == path
    assert report.frames == n
    assert sidecar_path(path).exists()


def test_truncated_last_journal_line_is_skipped(crashed_mda: tuple[Path, int]) -> None:
    path, n = crashed_mda
    jpath = journal_path(path)
    raw = jpath.read_bytes()
    last_start = raw.rstrip(b"\n").rfind(b"\n") + 1
    jpath.write_bytes(raw[: last_start + (len(raw) - last_start) // 2])  # cut mid-line
    report = recover(path)
    assert report.recovered
    assert report.bad_lines == 1
    assert report.frames == n - 1
    assert "1 unreadable line" in report.message
    assert len(read_json(sidecar_path(path))["p0"]) == n - 1


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_cut_inside_the_last_line_loses_only_that_frame(
    crashed_mda: tuple[Path, int], data: st.DataObject
) -> None:
    path, n = crashed_mda
    raw = journal_path(path).read_bytes()  # never modified here: read-only fixture
    last_start = raw.rstrip(b"\n").rfind(b"\n") + 1
    last_end = raw.rstrip(b"\n").__len__()
    cut = data.draw(st.integers(last_start + 1, last_end - 1), label="cut")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / path.name
        journal_path(target).write_bytes(raw[:cut])
        report = recover(target)
        assert report.frames == n - 1
        assert report.bad_lines == 1
        assert len(read_json(sidecar_path(target))["p0"]) == n - 1


def test_recover_complete_recording_changes_nothing(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    path = tmp_path / "done.ome.tiff"
    writer = CustomWriter(path)
    sim_core.mda.run(timelapse(5), output=writer)
    writer.raise_if_failed()
    before = {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()
    }
    report = recover(path)
    assert not report.recovered
    assert report.frames == 5
    assert report.frames_by_position == {"p0": 5}
    assert "complete" in report.message
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert after == before


def test_leftover_journal_beside_complete_sidecar_is_removed(
    crashed_mda: tuple[Path, int], sim_core: UniMMCore, tmp_path: Path
) -> None:
    """Died after the atomic rename, before deleting the journal."""
    path = tmp_path / "done.ome.tiff"
    writer = CustomWriter(path)
    sim_core.mda.run(timelapse(4), output=writer)
    writer.raise_if_failed()
    sidecar_bytes = sidecar_path(path).read_bytes()
    shutil.copyfile(journal_path(crashed_mda[0]), journal_path(path))
    report = recover(path)
    assert not report.recovered
    assert report.frames == 4  # the sidecar wins: it was complete
    assert not journal_path(path).exists()
    assert sidecar_path(path).read_bytes() == sidecar_bytes


def test_corrupt_sidecar_is_rebuilt_from_journal(crashed_mda: tuple[Path, int]) -> None:
    path, n = crashed_mda
    sidecar_path(path).write_text('{"p0": [{"format": "frame-d', encoding="utf-8")
    report = recover(path)
    assert report.recovered
    assert report.frames == n
    assert len(read_json(sidecar_path(path))["p0"]) == n


def test_recover_with_nothing_to_recover(tmp_path: Path) -> None:
    path = tmp_path / "ghost.ome.tiff"
    with pytest.raises(
        FileNotFoundError, match=r"ghost\.ome\.tiff.*nothing to recover"
    ):
        recover(path)
    sidecar_path(path).write_text("{not json", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="corrupt"):
        recover(path)
    assert sidecar_path(path).read_text(encoding="utf-8") == "{not json"


def test_recover_rejects_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "x.ome.tiff"
    journal_path(path).write_text('{"meta": {}}\n', encoding="utf-8")  # no header
    with pytest.raises(ValueError, match="not a mesofield frame journal"):
        recover(path)
    assert journal_path(path).exists()  # left alone
    assert not sidecar_path(path).exists()


def test_recover_direct_mode_video_journal(tmp_path: Path) -> None:
    live = tmp_path / "live.avi"
    crash = tmp_path / "crash.avi"
    writer = CV2Writer(live, fps=25, fourcc="MJPG", contrast_limits=(0, 4095))
    writer.begin(32, 24, is_color=False)
    for v in range(5):
        writer.add_frame(np.full((24, 32), v * 100, np.uint16))
    wait_until(lambda: writer.stats.frames_written == 5, 10)
    shutil.copyfile(journal_path(live), journal_path(crash))
    writer.finish()
    shutil.copyfile(live, crash)  # recover() checks the frames decode

    report = recover(crash)
    assert report.recovered
    assert report.frames == 5
    payload = read_json(sidecar_path(crash))
    assert next(iter(payload)) == "frame_metadatas"
    assert [m["index"] for m in payload["frame_metadatas"]] == list(range(5))
    assert all("runner_time_ms" in m for m in payload["frame_metadatas"])
    assert payload["recovered_from_journal"] is True
    assert payload["codec"] == "MJPG"
    assert payload["fps"] == 25


# ----------------------------------------------------------------- a real crash
CRASH_CHILD = """
import sys, useq
from mesofield_napari.devices.sim_camera import create_sim_core
from mesofield_napari.data import CustomWriter
core = create_sim_core((64, 64), exposure_ms=2)
writer = CustomWriter(sys.argv[1])
core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 2000}), output=writer)
print("FINISHED", flush=True)
"""


@pytest.mark.slow
def test_sigkill_mid_recording_then_recover(tmp_path: Path) -> None:
    path = tmp_path / "killed.ome.tiff"
    jpath = journal_path(path)
    n = record_then_kill(CRASH_CHILD, path, frames=20)

    # what the crash left behind
    assert path.exists()
    assert jpath.exists()
    assert not sidecar_path(path).exists()
    assert 20 <= n < 2000

    report = recover(path)
    assert report.recovered
    assert report.frames == n
    assert report.frames_by_position == {"p0": n}
    assert not jpath.exists()
    entries = read_json(sidecar_path(path))["p0"]
    assert len(entries) == n
    assert [e["mda_event"]["t"] for e in entries] == list(range(n))

    camera = SimulatedMesoscopeCamera((64, 64), 0, 12)  # same scene (seed 0)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        assert tif.series[0].shape == (n, 64, 64)  # exact, no longer the plan's 2000
        data = tif.series[0].asarray()
    assert tifffile.memmap(path).shape == (n, 64, 64)
    # the frames, their headers, and the unused IFDs of the plan's 2000 (before them)
    assert path.stat().st_size <= n * 64 * 64 * 2 + 8192 + 256 * n + 256 * 2000
    for entry in entries:
        np.testing.assert_array_equal(
            data[entry["mda_event"]["t"]], camera.frame(sim_index(entry))
        )


# ----------------------------------------------------------------- a full disk
DISK_CHILD = (
    limit_prologue(1)
    + """
import json, os
limit, side, loops, target = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                              sys.argv[4])
import useq
from mesofield_napari.devices.sim_camera import create_sim_core
from mesofield_napari.data import CustomWriter, RecordingError
core = create_sim_core((side, side), exposure_ms=0)
writer = CustomWriter(target)
core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": loops}), output=writer)
try:
    writer.raise_if_failed()
    raised = None
except RecordingError as exc:
    raised = str(exc)
err = writer.error
print(json.dumps({
    "error": None if err is None else str(err),
    "error_type": type(err).__name__,
    "is_recording_error": isinstance(err, RecordingError),
    "raised": raised,
    "stats": writer.stats.as_dict(),
}))
"""
)


def _run_disk_child(limit: int, side: int, loops: int, target: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            DISK_CHILD,
            str(limit),
            str(side),
            str(loops),
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=target.parent,
        # pymmcore-plus's own log file would hit the size limit too; keep it apart
        env={
            **os.environ,
            "PYMM_LOG_FILE": str(target.parent.parent / "pymm.log"),
            **disk_limit_env(limit),
        },
        check=False,
    )
    print(proc.stderr)  # shown by pytest on failure
    # exits normally (no SIGXFSZ/SIGBUS crash) after reporting
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_disk_full_at_start_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    folder.mkdir()
    sentinel = folder / "yesterday.ome.tiff"
    sentinel.write_bytes(b"older data" * 1000)
    path = folder / "big.ome.tiff"
    limit = 100_000  # 50 frames of 64x64 uint16 need ~410 kB
    out = _run_disk_child(limit, 64, 50, path)

    assert out["is_recording_error"], out
    assert "big.ome.tiff" in out["error"]
    assert out["raised"] is not None
    assert "big.ome.tiff" in out["raised"]
    stats = out["stats"]
    assert stats["frames_received"] == 50
    assert stats["frames_written"] == 0
    assert stats["frames_lost"] == 50
    # nothing overwritten, no partial TIFF left, no journal claiming frames
    assert sentinel.read_bytes() == b"older data" * 1000
    assert not path.exists()
    assert not journal_path(path).exists()
    # no sidecar either: the name stays free for a retry
    assert not sidecar_path(path).exists()
    assert {p.name for p in folder.iterdir()} == {sentinel.name}


@pytest.mark.slow
def test_disk_full_mid_run_keeps_what_was_written(tmp_path: Path) -> None:
    """The TIFF fits under the limit, the growing journal does not."""
    if system() == "windows":
        pytest.skip(
            "Windows has no RLIMIT_FSIZE; the emulation's disk limit covers files "
            "opened with os.open (the TIFF), not the journal"
        )
    path = tmp_path / "small.ome.tiff"
    side, loops = 8, 400  # TIFF ~160 kB (pixels + one IFD a page); journal ~200 kB
    limit = 175_000
    out = _run_disk_child(limit, side, loops, path)

    assert path.exists()
    # the scenario we meant: the journal hit the limit (the TIFF's tiny 128-byte
    # frames leave no room for the finishing tail either; recover does it below)
    assert path.stat().st_size <= limit
    assert out["error"] is not None
    assert out["is_recording_error"], out
    assert journal_path(path).name in out["error"]
    stats = out["stats"]
    assert stats["frames_received"] == loops
    assert stats["frames_written"] < loops
    assert stats["frames_lost"] > 0
    assert stats["frames_written"] + stats["frames_lost"] == loops
    assert out["raised"] is not None

    # the final JSON could not be written (larger than the journal): recover in
    # the parent, which has no file-size limit
    assert journal_path(path).exists()
    assert not sidecar_path(path).exists()
    n = journal_entry_lines(journal_path(path))
    assert n == stats["frames_written"]
    report = recover(path)
    assert report.recovered
    assert report.frames == n
    assert report.bad_lines <= 1  # the line cut by the limit
    entries = read_json(sidecar_path(path))["p0"]
    assert [e["mda_event"]["t"] for e in entries] == list(range(n))

    camera = SimulatedMesoscopeCamera((side, side), 0, 12)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        data = tif.series[0].asarray()
    assert data.shape == (n, side, side)  # exactly the frames written
    for entry in entries:
        np.testing.assert_array_equal(
            data[entry["mda_event"]["t"]], camera.frame(sim_index(entry))
        )
