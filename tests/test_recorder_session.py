"""The recorder's Qt-free model on a real UniMMCore: time-lapse, armed MDAs, stop, notes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from _helpers import SHAPE, manifest_view, read_json, timelapse, wait_until
from mesofield_napari.data.reader.recording import open_recording
from mesofield_napari.models.recorder import (
    RecorderSettings,
    RecordingSession,
    folder_problem,
)


def settings(root: Path, **kwargs) -> RecorderSettings:
    return RecorderSettings(root=str(root), **kwargs)


def manifest_of(run_dir: Path) -> dict:
    (path,) = run_dir.glob("*_manifest.json")
    return manifest_view(path)


def tiff_frames(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tf:
        return tf.series[0].asarray()


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"root": ""}, "choose an output folder"),
        ({"subject": "M 42"}, "invalid subject"),
        ({"task": "a/b"}, "invalid task"),
        ({"session": "../1"}, "invalid session"),
        ({"writers": "zarr"}, "writers must be one of"),
        ({"frames": 0}, "at least 1 frame"),
        ({"duration_s": 0.0}, "duration must be more than 0"),
        ({"fps": -1.0}, "fps must be more than 0"),
        ({"contrast": (10.0, 5.0)}, "low must be below high"),
    ],
)
def test_settings_problems_say_why(tmp_path, change, message):
    s = (
        settings(tmp_path, **change)
        if "root" not in change
        else RecorderSettings(**change)
    )
    problems = s.problems()
    assert len(problems) == 1
    assert message in problems[0]


def test_output_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert "is under a file" in folder_problem(blocker / "runs")
    assert folder_problem(tmp_path / "new" / "deeper") is None
    with pytest.raises(ValueError, match="under a file"):
        RecordingSession(None, settings(blocker / "runs"))  # type: ignore[arg-type]


def test_duration_plans_enough_frames_for_full_rate():
    s = RecorderSettings(root="x", duration_s=2.0, interval_s=0.0)
    assert s.planned_frames(exposure_ms=10.0) == 201
    assert RecorderSettings(root="x", frames=7).planned_frames(10.0) == 7


# ---------------------------------------------------------------- time-lapse
def test_timelapse_writes_a_complete_run(sim_core, camera, tmp_path):
    session = RecordingSession(sim_core, settings(tmp_path, frames=25, writers="both"))
    run = session.start()
    assert session.wait(30)
    (outcome,) = session.outcomes
    assert outcome.ok and outcome.frames_written == 25
    assert outcome.run_dir == run.run_dir
    tiff = next(p for p in outcome.data_files if p.name.endswith(".ome.tiff"))
    frames = tiff_frames(tiff)
    assert frames.shape == (25, *SHAPE)
    np.testing.assert_array_equal(frames[7], camera.frame(7))
    sidecar = read_json(f"{tiff}_frame_metadata.json")
    assert sum(len(v) for v in sidecar.values()) == 25
    manifest = manifest_of(outcome.run_dir)
    assert manifest["complete"] is True
    assert {f["kind"] for f in manifest["files"]} >= {"tiff", "mp4"}
    assert session.mode == "stopped" and not session.recording


def test_stop_mid_run_keeps_every_acquired_frame(sim_core, tmp_path):
    sim_core.setExposure(2.0)
    session = RecordingSession(sim_core, settings(tmp_path, frames=5000))
    session.start()
    wait_until(lambda: session.status().frames_acquired >= 10)
    session.add_note("stimulus on")
    session.stop()
    assert session.wait(30)
    (outcome,) = session.outcomes
    assert 10 <= outcome.frames_written < 5000
    (tiff,) = outcome.data_files
    # the preallocated file is trimmed to what was written when it is reopened
    assert open_recording(tiff).frames == outcome.frames_written
    notes = next(outcome.run_dir.glob("*_notes.txt")).read_text()
    assert "stimulus on" in notes
    # stopped before its plan: not a complete acquisition, and the manifest says why
    manifest = manifest_of(outcome.run_dir)
    assert manifest["complete"] is False and outcome.ok
    assert manifest["interrupted"] == (
        f"stopped by the user after {outcome.frames_written} of 5000 planned frames"
    )


@pytest.mark.parametrize("writers", ["tiff", "both"])
def test_until_stop_records_until_stop_and_files_hold_exactly_that(
    sim_core, camera, tmp_path, writers
):
    """No planned length: the files grow, Stop ends the run, nothing is padded."""
    sim_core.setExposure(1.0)
    session = RecordingSession(
        sim_core, settings(tmp_path, until_stop=True, writers=writers)
    )
    session.start()
    wait_until(lambda: session.status().frames_written >= 300, what="300 frames")
    st = session.status()
    assert st.frames_planned == 0 and st.run_time_left_s is None
    assert st.disk_time_left_s is not None  # what matters when nothing is planned
    session.stop()
    assert session.wait(60)
    (outcome,) = session.outcomes
    assert outcome.ok, outcome.errors
    n = outcome.frames_written
    assert n >= 300
    tiff = next(p for p in outcome.data_files if p.name.endswith(".ome.tiff"))
    data = tifffile.memmap(tiff)  # any reader sees exactly the frames recorded
    assert data.shape == (n, *SHAPE)
    first = read_json(f"{tiff}_frame_metadata.json")["p0"][0]
    offset = int(first["camera_metadata"]["SimFrameIndex"])
    for i in (0, n // 2, n - 1):
        np.testing.assert_array_equal(data[i], camera.frame(offset + i))
    # the frames plus one BigTIFF page header each (~300 B), nothing planned
    assert tiff.stat().st_size < n * (data[0].nbytes + 400) + 2**16
    if writers == "both":
        (mp4,) = [p for p in outcome.data_files if p.suffix == ".mp4"]
        assert open_recording(mp4).frames == n
    assert manifest_of(outcome.run_dir)["complete"] is True
    assert session.status().state == "stopped"


def test_duration_stops_the_run_by_itself(sim_core, tmp_path):
    sim_core.setExposure(5.0)
    session = RecordingSession(sim_core, settings(tmp_path, duration_s=0.3))
    session.start()
    assert session.wait(30)
    (outcome,) = session.outcomes
    planned = session.settings.planned_frames(5.0)
    assert 0 < outcome.frames_written < planned
    sidecar = read_json(f"{outcome.data_files[0]}_frame_metadata.json")
    assert sum(len(v) for v in sidecar.values()) == outcome.frames_written


def test_status_while_recording(sim_core, tmp_path):
    sim_core.setExposure(2.0)
    session = RecordingSession(sim_core, settings(tmp_path, frames=5000))
    assert session.status().state == "idle"
    session.start()
    wait_until(lambda: session.status().frames_acquired >= 20)
    st = session.status()
    assert st.state == "recording" and st.frames_planned == 5000
    assert st.acquisition_fps is not None and st.acquisition_fps > 0
    assert st.free_bytes is not None and st.free_bytes > 0
    assert 0.0 <= st.queue_fill <= 1.0
    assert st.run_time_left_s is not None and st.run_time_left_s > 0
    session.stop()
    assert session.wait(30)
    assert session.status().state == "stopped"


def test_notes_need_a_running_run(sim_core, tmp_path):
    session = RecordingSession(sim_core, settings(tmp_path))
    with pytest.raises(RuntimeError, match="no run in progress"):
        session.add_note("too early")


def test_shutdown_mid_run_finalizes_files(sim_core, tmp_path):
    sim_core.setExposure(2.0)
    session = RecordingSession(sim_core, settings(tmp_path, frames=5000))
    session.start()
    wait_until(lambda: session.status().frames_acquired >= 5)
    session.shutdown(timeout=30)
    (outcome,) = session.outcomes
    tiff = outcome.data_files[0]
    assert Path(f"{tiff}_frame_metadata.json").exists()
    assert not Path(f"{tiff}_frame_metadata.jsonl").exists()  # journal folded in
    manifest = manifest_of(outcome.run_dir)
    assert manifest["complete"] is False  # closed before its plan: interrupted
    assert manifest["interrupted"].startswith("the recorder was closed after ")
    assert not sim_core.mda.is_running()


def test_a_busy_core_is_refused(sim_core, tmp_path):
    sim_core.setExposure(2.0)
    thread = sim_core.run_mda(timelapse(5000))
    try:
        wait_until(sim_core.mda.is_running)
        session = RecordingSession(sim_core, settings(tmp_path))
        with pytest.raises(RuntimeError, match="busy"):
            session.start()
        assert not list(tmp_path.iterdir())  # nothing created
    finally:
        sim_core.mda.cancel()
        thread.join(30)


# ---------------------------------------------------------------- armed
def test_armed_session_records_each_mda_into_its_own_run(sim_core, camera, tmp_path):
    session = RecordingSession(sim_core, settings(tmp_path))
    session.arm()
    sim_core.mda.run(timelapse(6))
    sim_core.mda.run(timelapse(4))
    assert [o.frames_written for o in session.outcomes] == [6, 4]
    first, second = (o.data_files[0] for o in session.outcomes)
    assert first != second
    np.testing.assert_array_equal(tiff_frames(second)[0], camera.frame(6))
    session.stop()
    assert session.mode == "stopped"
    sim_core.mda.run(timelapse(3))  # disarmed: not recorded
    assert len(session.outcomes) == 2
    manifests = sorted(tmp_path.rglob("*_manifest.json"))
    assert len(manifests) == 2
    assert all(manifest_view(p)["complete"] for p in manifests)


def test_status_warns_before_the_disk_fills(sim_core, tmp_path, monkeypatch):
    import mesofield_napari.models.recorder as recorder_mod

    sim_core.setExposure(2.0)
    # pretend the disk is small: the warning threshold above the free space
    monkeypatch.setattr(recorder_mod, "LOW_DISK_BYTES", 2**62)
    session = RecordingSession(sim_core, settings(tmp_path, frames=5000))
    session.start()
    wait_until(lambda: session.status().frames_acquired >= 5)
    st = session.status()
    session.stop()
    assert session.wait(30)
    assert any("disk nearly full" in w and "GiB free" in w for w in st.warnings)


# ---------------------------------------------------------------- honest outcomes
def failing_after(camera, k: int) -> None:
    """Make the real simulated camera raise from its k-th frame on."""
    snap = type(camera).snap

    def failing_snap(buffer):
        if camera._frame_index >= k:
            raise RuntimeError("camera fell over")
        return snap(camera, buffer)

    camera.snap = failing_snap


def test_camera_failing_mid_run_is_an_error_in_the_outcome(sim_core, camera, tmp_path):
    failing_after(camera, 30)
    session = RecordingSession(sim_core, settings(tmp_path, frames=100))
    session.start()
    assert session.wait(30)
    outcome = session.outcomes[-1]
    assert outcome.frames_written == 30
    (error,) = outcome.errors
    assert "camera failed after 30 of 100 frames" in error
    assert "camera fell over" in error and "30 frames written" in error
    manifest = manifest_of(outcome.run_dir)
    assert manifest["complete"] is False and manifest["errors"] == [error]
    assert session.last_error is None


def test_status_after_the_run_reports_its_final_numbers(sim_core, tmp_path):
    session = RecordingSession(sim_core, settings(tmp_path, frames=25))
    session.start()
    assert session.wait(30)
    st = session.status()
    assert st.state == "stopped"
    assert st.run_name == session.outcomes[-1].name
    assert (st.frames_planned, st.frames_acquired, st.frames_written) == (25, 25, 25)
    assert st.frames_lost == 0 and st.warnings == []
    assert st.free_bytes is not None and st.free_bytes > 0


def test_buffer_overflow_keeps_frames_and_says_why(sim_core, tmp_path, monkeypatch):
    """Camera faster than the disk: a 1 MB camera buffer and a slowed writer."""
    import time

    from mesofield_napari.data.writer import tiff as writer

    write = writer.CustomWriter.write_frame

    def slow_write(self, ary, index, frame):
        time.sleep(0.005)
        return write(self, ary, index, frame)

    monkeypatch.setattr(writer.CustomWriter, "write_frame", slow_write)
    sim_core.setCircularBufferMemoryFootprint(1)
    session = RecordingSession(
        sim_core, settings(tmp_path, frames=2000, max_queue_mb=1)
    )
    session.start()
    assert session.wait(60)
    session._thread.join(30)
    outcome = session.outcomes[-1]
    (error,) = outcome.errors
    assert "buffer overflowed" in error and "the disk sustained" in error
    assert f"stopped after {outcome.frames_written} of 2000 frames" in error
    assert 0 < outcome.frames_written < 2000
    sidecar = read_json(f"{outcome.data_files[0]}_frame_metadata.json")
    assert len(sidecar["p0"]) == outcome.frames_written
    assert isinstance(session.last_error, MemoryError)  # caught, not a traceback
    assert session.status().warnings == [error]
