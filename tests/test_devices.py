"""Devices of an experiment run: OpenCV/simulated pupil camera and encoders."""

from __future__ import annotations

import csv
import json
import threading
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from _helpers import read_video, wait_until
from mesofield_napari.data import CV2Writer
from mesofield_napari.devices import DeviceError
from mesofield_napari.devices.encoder import Encoder
from mesofield_napari.devices.opencv_camera import DirectCamera, OpenCVSource
from mesofield_napari.devices.sim_behavior import SimulatedPupilSource
from mesofield_napari.experiment.config import EncoderSpec, Output


def encoder_spec(
    kind: str = "wheel", port: str | None = "loop://", **kw
) -> EncoderSpec:
    values = {
        "id": "encoder" if kind == "wheel" else "treadmill",
        "type": kind,
        "port": port,
        "baudrate": 57600,
        "cpr": 2400,
        "diameter_mm": 80.0,
        "sample_interval_ms": 20.0,
        "development_mode": port is None,
        "primary": False,
        "output": Output("beh", "csv", kind),
    }
    values.update(kw)
    return EncoderSpec(**values)


class Pushes:
    """Collects what a device pushes to the data queue (thread-safe)."""

    def __init__(self) -> None:
        self.rows: list[tuple[object, object]] = []
        self._lock = threading.Lock()

    def __call__(self, payload: object, device_ts: object) -> None:
        with self._lock:
            self.rows.append((payload, device_ts))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def make_video(path: Path, frames: int, size=(40, 32)) -> list[np.ndarray]:
    """A short MJPG video standing in for a camera that stops after ``frames``."""
    rng = np.random.default_rng(1)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30, size)
    assert out.isOpened()
    images = [
        rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        for _ in range(frames)
    ]
    for img in images:
        out.write(img)
    out.release()
    return images


# ---------------------------------------------------------------- cameras
def test_simulated_pupil_frames_are_deterministic_and_pupil_like():
    a, b = SimulatedPupilSource(96, 64, seed=3), SimulatedPupilSource(96, 64, seed=3)
    assert a.open() == (96, 64)
    first = a.read()
    assert first.dtype == np.uint8 and first.shape == (64, 96)
    assert np.array_equal(first, b.frame(0))
    assert np.array_equal(a.read(), b.frame(1))
    assert not np.array_equal(b.frame(0), b.frame(40))  # the pupil moves
    centre = first[28:36, 44:52]
    assert centre.mean() < 40 < first.mean()  # a dark pupil on a brighter eye


def test_direct_camera_records_every_frame_of_the_simulated_pupil(tmp_path):
    source = SimulatedPupilSource(64, 48)
    writer = CV2Writer(tmp_path / "eye.mp4", fps=200, fourcc="mp4v", bit_depth=8)
    seen: list[int] = []
    writer.frame_listener = lambda index, ts: seen.append(index)
    done = threading.Event()
    cam = DirectCamera(
        "eye", source, 200, writer=writer, max_frames=12, on_done=lambda _id: done.set()
    )
    cam.open()
    cam.start()
    assert done.wait(30)
    cam.stop()
    frames, fps, _ = read_video(tmp_path / "eye.mp4")
    assert len(frames) == 12 and fps == 200
    expected = [SimulatedPupilSource(64, 48).frame(i) for i in range(12)]
    for got, want in zip(frames, expected, strict=True):
        assert np.abs(got[..., 0].astype(int) - want).mean() < 4  # mp4v is lossy
    side = json.loads((tmp_path / "eye.mp4_frame_metadata.json").read_text())
    assert next(iter(side)) == "frame_metadatas"
    assert [e["index"] for e in side["frame_metadatas"]] == list(range(12))
    assert all("runner_time_ms" in e for e in side["frame_metadatas"])
    assert side["device_id"] == "eye" and seen == list(range(12))
    assert cam.status()["frames"] == 12 and cam.status()["error"] is None


@pytest.mark.parametrize("device", [99, "missing/camera.avi"])
def test_opencv_camera_that_cannot_open_fails_before_recording(tmp_path, device):
    if isinstance(device, str):
        device = str(tmp_path / device)
    with pytest.raises(DeviceError, match=r"cannot open OpenCV camera .*") as info:
        OpenCVSource(device).open()
    assert str(device) in str(info.value) and "\n" not in str(info.value)


def test_opencv_camera_that_stops_delivering_reports_an_error(tmp_path):
    make_video(tmp_path / "short.avi", 5)
    writer = CV2Writer(tmp_path / "cam.avi", fps=100, fourcc="MJPG", bit_depth=8)
    failed: list[tuple[str, BaseException]] = []
    event = threading.Event()

    def on_error(device_id, exc):
        failed.append((device_id, exc))
        event.set()

    source = OpenCVSource(str(tmp_path / "short.avi"))
    cam = DirectCamera("side", source, 100, writer=writer, on_error=on_error)
    cam.open()
    cam.start()
    assert event.wait(30)
    cam.stop()
    ((device_id, exc),) = failed
    assert device_id == "side"
    assert str(exc) == (
        f"side: OpenCV camera {str(tmp_path / 'short.avi')!r} stopped delivering frames after 5 frame(s)"
    )
    frames, _, _ = read_video(tmp_path / "cam.avi")
    assert len(frames) == 5  # what arrived before the failure is kept
    side = json.loads((tmp_path / "cam.avi_frame_metadata.json").read_text())
    assert len(side["frame_metadatas"]) == 5


# ---------------------------------------------------------------- encoders
def test_wheel_encoder_reads_click_lines_from_a_serial_port(tmp_path):
    pushes = Pushes()
    enc = Encoder(encoder_spec("wheel"), pushes, tmp_path / "beh" / "wheel.csv")
    enc.open()
    assert enc.serial is not None  # pyserial's loop:// port: what we write comes back
    enc.start()
    enc.serial.write(b"12\n-3\nhello\n0\n")
    enc.serial.write(b"4")  # a line arriving in two pieces
    enc.serial.write(b"8\n")
    wait_until(lambda: enc.samples == 4, what="4 wheel samples")
    enc.stop()
    rows = read_csv(tmp_path / "beh" / "wheel.csv")
    assert list(rows[0]) == ["Clicks", "Time", "Speed"]
    assert [int(r["Clicks"]) for r in rows] == [12, -3, 0, 48]
    times = [float(r["Time"]) for r in rows]
    assert times == sorted(times) and times[0] >= 0
    speeds = [float(r["Speed"]) for r in rows]
    assert speeds[0] > 0 > speeds[1] and speeds[2] == 0
    # the first sample's speed uses the nominal interval: 12 clicks of pi*80/2400 mm
    assert speeds[0] == pytest.approx(12 * np.pi * 80 / 2400 / 0.020, rel=1e-3)
    assert [p for p, _ in pushes.rows] == [12, -3, 0, 48]
    stamps = [datetime.fromisoformat(str(ts)) for _, ts in pushes.rows]
    assert stamps == sorted(stamps) and stamps[0].utcoffset() is not None


def test_treadmill_encoder_pushes_dict_samples(tmp_path):
    pushes = Pushes()
    enc = Encoder(encoder_spec("treadmill"), pushes, tmp_path / "treadmill.csv")
    enc.start()
    enc.serial.write(b"Teensy treadmill v2\n1000,1.5,20.25\n2000,2.0,25.0\n3.5,30\n")
    wait_until(lambda: enc.samples == 3, what="3 treadmill samples")
    enc.stop()
    payloads = [p for p, _ in pushes.rows]
    assert payloads[:2] == [
        {"distance": 1.5, "speed": 20.25, "device_us": 1000},
        {"distance": 2.0, "speed": 25.0, "device_us": 2000},
    ]
    assert payloads[2]["distance"] == 3.5 and payloads[2]["device_us"] >= 0
    rows = read_csv(tmp_path / "treadmill.csv")
    assert [r["distance"] for r in rows] == ["1.5", "2.0", "3.5"]


def test_development_mode_simulates_samples(tmp_path):
    pushes = Pushes()
    enc = Encoder(encoder_spec("wheel", port=None), pushes, tmp_path / "wheel.csv")
    enc.start()
    wait_until(lambda: enc.samples >= 5, what="simulated samples")
    enc.stop()
    rows = read_csv(tmp_path / "wheel.csv")
    assert len(rows) == enc.samples == len(pushes.rows)
    assert [int(r["Clicks"]) for r in rows] == [p for p, _ in pushes.rows]


def test_serial_port_that_cannot_open(tmp_path):
    enc = Encoder(encoder_spec("wheel", port=str(tmp_path / "ttyNOPE")), Pushes())
    with pytest.raises(DeviceError) as info:
        enc.open()
    message = str(info.value)
    assert message.startswith(
        f"encoder: cannot open serial port {str(tmp_path / 'ttyNOPE')!r}: "
    )
    assert "\n" not in message
