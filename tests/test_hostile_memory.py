"""Memory per frame is zero for every writer (issue 21): the direct-mode CV2Writer.

The direct mode (OpenCV and simulated pupil cameras, ``begin/add_frame/finish``) kept
every frame's metadata dict for the whole run (~370 bytes a frame); the journal on disk
is the store, and the sidecar is streamed from it at the end.
"""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest

from _helpers import read_video, wait_until
from mesofield_napari.data import CV2Writer
from mesofield_napari.devices.opencv_camera import DirectCamera
from mesofield_napari.devices.sim_behavior import SimulatedPupilSource

WARMUP, FRAMES = 2_000, 20_000


def _drained(writer: CV2Writer, n: int) -> bool:
    return writer.stats.frames_written >= n


def test_direct_mode_memory_is_flat_over_20000_frames(tmp_path):
    writer = CV2Writer(tmp_path / "eye.avi", fps=1000, fourcc="MJPG", bit_depth=8)
    frame = np.full((8, 8), 7, dtype=np.uint8)
    writer.begin(8, 8, is_color=False)
    tracemalloc.start()
    try:
        for i in range(FRAMES):
            writer.add_frame(frame)
            if i + 1 == WARMUP:
                wait_until(lambda: _drained(writer, WARMUP), what="warm-up frames")
                time.sleep(0.2)
                before, _ = tracemalloc.get_traced_memory()
        wait_until(lambda: _drained(writer, FRAMES), timeout=120, what="all frames")
        time.sleep(0.2)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    writer.finish({"device_id": "eye"})
    per_frame = (after - before) / (FRAMES - WARMUP)
    print(f"{per_frame:.1f} bytes per frame")
    assert per_frame < 20, f"{per_frame:.0f} bytes kept per frame"
    text = (tmp_path / "eye.avi_frame_metadata.json").read_text()
    side = json.loads(text)
    assert text == json.dumps(side)  # byte for byte what json.dump of it wrote
    assert list(side)[:3] == ["frame_metadatas", "codec", "fps"]
    assert (
        side["device_id"] == "eye" and side["codec"] == "MJPG" and side["fps"] == 1000
    )
    assert [e["index"] for e in side["frame_metadatas"]] == list(range(FRAMES))
    times = [e["runner_time_ms"] for e in side["frame_metadatas"]]
    assert times == sorted(times)
    assert not writer.journal_path.exists()


@pytest.mark.parametrize("fourcc", ["MJPG", "H264"])
def test_direct_sidecar_from_the_journal_matches_the_file(tmp_path, fourcc):
    ext = "avi" if fourcc == "MJPG" else "mp4"
    writer = CV2Writer(tmp_path / f"eye.{ext}", fps=100, fourcc=fourcc, bit_depth=8)
    cam = DirectCamera(
        "eye", SimulatedPupilSource(32, 24), 100, writer=writer, max_frames=40
    )
    cam.start()
    wait_until(lambda: not cam.running, what="40 frames")
    cam.stop()
    frames, _, _ = read_video(tmp_path / f"eye.{ext}")
    side = json.loads((tmp_path / f"eye.{ext}_frame_metadata.json").read_text())
    assert len(frames) == len(side["frame_metadatas"]) == 40
    assert side["device_id"] == "eye" and side["source"].startswith("simulated")
    assert writer.frames_written == {"frame_metadatas": 40}
