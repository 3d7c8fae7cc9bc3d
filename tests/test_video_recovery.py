"""Videos that survive a kill, and honest frame counts after a full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from _helpers import (
    disk_limit_env,
    limit_prologue,
    read_json,
    read_video,
    record_then_kill,
)
from _helpers import sim_index as _sim_index
from mesofield_napari.data import CV2Writer, journal_path, recover, sidecar_path
from mesofield_napari.data.formats.video_check import VideoLostError, decodable_frames
from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

SIDE = 64
FPS = 30  # keyframe (and fragment) every 30 frames


def _uint8(frame: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frame.astype(np.float64) * 255.0 / 4095.0), 0, 255)


def _psnr(got: np.ndarray, want: np.ndarray) -> float:
    mse = float(np.mean((got.astype(np.float64) - want) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _av_gray(path: Path) -> list[np.ndarray]:
    """Frames PyAV decodes, up to the first undecodable packet."""
    out: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                out += [f.to_ndarray(format="gray") for f in packet.decode()]
        except av.FFmpegError:
            return out  # a killed file ends mid-packet: the frames before it count
    return out


# ----------------------------------------------------------------- SIGKILL
KILL_CHILD = """
import sys, useq
from mesofield_napari.devices.sim_camera import create_sim_core
from mesofield_napari.data import CV2Writer
path, fps, fourcc = sys.argv[1], float(sys.argv[2]), sys.argv[3]
core = create_sim_core((64, 64), exposure_ms=2)
writer = CV2Writer(path, fps=fps, fourcc=fourcc, bit_depth=12)
core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 5000}), output=writer)
print("FINISHED", flush=True)
"""


def _record_and_kill(path: Path, frames: int, fps: float, fourcc: str) -> int:
    """Record in a child, SIGKILL it after ``frames`` journaled; journaled count."""
    n = record_then_kill(KILL_CHILD, path, str(fps), fourcc, frames=frames)
    assert not sidecar_path(path).exists()
    return n


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [40, 75, 150])
def test_killed_h264_recording_is_recovered_and_decodes(
    tmp_path: Path, kill_at: int
) -> None:
    path = tmp_path / "pupil.mp4"
    journaled = _record_and_kill(path, kill_at, FPS, "H264")
    assert journaled >= kill_at

    report = recover(path)
    decoded = decodable_frames(path)
    assert decoded >= journaled - FPS  # at most one second (one fragment) lost
    assert report.recovered
    assert report.frames == min(decoded, journaled)
    if decoded < journaled:
        assert (
            f"pupil.mp4: {decoded} of {journaled} frame(s) decode: sidecar trimmed "
            "to the decodable frames" in report.message
        )
    entries = read_json(sidecar_path(path))["p0"]
    assert len(entries) == report.frames
    assert [e["mda_event"]["t"] for e in entries] == list(range(report.frames))

    cv_frames, _, _ = read_video(path)  # plain OpenCV
    av_frames = _av_gray(path)  # plain PyAV
    assert len(cv_frames) == len(av_frames) == decoded
    camera = SimulatedMesoscopeCamera((SIDE, SIDE), 0, 12)  # the child's scene
    for entry, cv_frame, av_frame in zip(entries, cv_frames, av_frames, strict=False):
        want = _uint8(camera.frame(_sim_index(entry)))
        assert _psnr(cv_frame[..., 0], want) >= 35
        assert _psnr(av_frame, want) >= 35

    from mesofield_napari.data import open_recording

    rec = open_recording(path)  # our reader agrees
    assert rec.frames == report.frames
    np.testing.assert_array_equal(
        np.asarray(rec.data[rec.frames - 1]), cv_frames[rec.frames - 1][..., 0]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fps", "fourcc"),
    [(1000, "H264"), (30, "mp4v")],
    ids=["before-first-fragment", "opencv-mp4v"],
)
def test_killed_video_with_nothing_decodable_is_reported_lost(
    tmp_path: Path, fps: float, fourcc: str
) -> None:
    """H.264 killed before its first fragment (1000 frames at 1000 fps) and OpenCV's
    mp4v (index written only at close): recover says the video is lost."""
    path = tmp_path / "pupil.mp4"
    journaled = _record_and_kill(path, 20, fps, fourcc)
    assert 20 <= journaled < 1000
    assert decodable_frames(path) == 0

    with pytest.raises(VideoLostError, match=r"the video is lost: no frame of pupil"):
        recover(path)
    assert journal_path(path).exists()  # nothing destroyed
    assert not sidecar_path(path).exists()

    cli = subprocess.run(
        [sys.executable, "-m", "mesofield_napari", "recover", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 2
    assert "the video is lost" in cli.stderr
    assert "Traceback" not in cli.stderr


# ----------------------------------------------------------------- disk full
DISK_CHILD = (
    limit_prologue(2)
    + """
import json
import numpy as np
path, limit = sys.argv[1], int(sys.argv[2])
from mesofield_napari.data import CV2Writer, RecordingError
rng = np.random.default_rng(7)
writer = CV2Writer(path, fps=10)
writer.begin(128, 128, is_color=False)
for _ in range(200):  # noise: ~16 kB a frame, the video hits the limit first
    writer.add_frame(rng.integers(0, 256, (128, 128), dtype=np.uint8))
try:
    writer.finish({"camera": "pupil"})
    raised = None
except RecordingError as exc:
    raised = str(exc)
print(json.dumps({
    "error": None if writer.error is None else str(writer.error),
    "is_recording_error": isinstance(writer.error, RecordingError),
    "raised": raised,
    "frames_written": writer.frames_written,
    "stats": writer.stats.as_dict(),
}))
"""
)


def _run_disk_child(path: Path, limit: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", DISK_CHILD, str(path), str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=path.parent,
        env={
            **os.environ,
            "PYMM_LOG_FILE": str(path.parent.parent / "pymm.log"),
            **disk_limit_env(limit, ffmpeg=True),
        },
        check=False,
    )
    print(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_disk_full_during_h264_encoding(tmp_path: Path) -> None:
    folder = tmp_path / "beh"
    folder.mkdir()
    path = folder / "pupil.mp4"
    out = _run_disk_child(path, 300_000)

    assert out["is_recording_error"], out
    assert "pupil.mp4" in out["error"]
    assert "File too large" in out["error"]
    decoded = decodable_frames(path)
    assert 0 < decoded < 200
    assert out["frames_written"] == {"frame_metadatas": decoded}
    stats = out["stats"]
    assert stats["frames_received"] == 200
    assert stats["frames_written"] == decoded
    assert stats["frames_lost"] == 200 - decoded
    assert out["raised"] == (
        f"{out['error']} ({decoded} frame(s) decodable in the file; "
        f"{200 - decoded} of 200 received not saved)"
    )

    payload = read_json(sidecar_path(path))
    assert len(payload["frame_metadatas"]) == decoded
    assert payload["codec"] == "h264"
    assert not journal_path(path).exists()

    rng = np.random.default_rng(7)  # the child's frames, regenerated
    source = [rng.integers(0, 256, (128, 128), dtype=np.uint8) for _ in range(200)]
    cv_frames, _, _ = read_video(path)
    av_frames = _av_gray(path)
    assert len(cv_frames) == len(av_frames) == decoded
    for got_cv, got_av, want in zip(cv_frames, av_frames, source, strict=False):
        assert _psnr(got_cv[..., 0], want) >= 20  # pure noise at CRF 23
        np.testing.assert_array_equal(got_cv[..., 0], got_av)

    report = recover(path)  # the sidecar already tells the truth
    assert report.frames == decoded
    assert report.message == "recording is complete; nothing to recover"


def test_recover_trims_a_complete_sidecar_to_what_decodes(tmp_path: Path) -> None:
    """An old disk-full video whose sidecar claims more frames than decode."""
    path = tmp_path / "old.avi"
    writer = CV2Writer(path, fps=10, fourcc="MJPG")
    writer.begin(32, 24, is_color=False)
    for v in range(4):
        writer.add_frame(np.full((24, 32), v * 50, np.uint8))
    writer.finish()
    payload = read_json(sidecar_path(path))
    payload["frame_metadatas"] += [dict(m) for m in payload["frame_metadatas"]]
    sidecar_path(path).write_text(json.dumps(payload), encoding="utf-8")

    report = recover(path)
    assert report.frames == 4
    assert report.message == (
        "old.avi: 4 of 8 frame(s) decode; sidecar trimmed to the decodable frames"
    )
    assert len(read_json(sidecar_path(path))["frame_metadatas"]) == 4
