"""Hostile device streams (issue 21): what real firmware sends, and what it must not do.

Real serial ports throughout: pyserial's ``loop://`` for short streams, a pseudo
terminal (``os.openpty``, opened by pyserial as any ``/dev/tty*``) where volume matters.
Every line the encoder cannot read is counted and reported, never skipped silently.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest

from _helpers import wait_until
from mesofield_napari.devices.encoder import MAX_LINE_BYTES, Encoder
from mesofield_napari.experiment import ExperimentRun, load_experiment
from test_devices import Pushes, encoder_spec, read_csv


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_wheel_reads_every_line_ending_and_number_form(tmp_path, eol):
    pushes = Pushes()
    enc = Encoder(encoder_spec("wheel"), pushes, tmp_path / "wheel.csv")
    enc.start()
    values = [b"3", b"3.0", b"+4", b"-2", b"-2.0", b" 5 ", b"0", b"1e1"]
    enc.serial.write(eol.join(values) + eol)
    wait_until(lambda: enc.samples == 8, what="8 wheel samples")
    enc.stop()
    assert [p for p, _ in pushes.rows] == [3, 3, 4, -2, -2, 5, 0, 10]
    assert [r["Clicks"] for r in read_csv(tmp_path / "wheel.csv")] == [
        "3",
        "3",
        "4",
        "-2",
        "-2",
        "5",
        "0",
        "10",
    ]
    assert enc.unparsed == 0 and enc.status()["unparsed"] == 0


def test_treadmill_reads_cr_lines_and_decimal_micros(tmp_path):
    pushes = Pushes()
    enc = Encoder(encoder_spec("treadmill"), pushes, tmp_path / "treadmill.csv")
    enc.start()
    enc.serial.write(b"1000.0,1.5,20\r2000,+2.0,-1.5\r\n")
    wait_until(lambda: enc.samples == 2, what="2 treadmill samples")
    enc.stop()
    assert [p for p, _ in pushes.rows] == [
        {"distance": 1.5, "speed": 20.0, "device_us": 1000},
        {"distance": 2.0, "speed": -1.5, "device_us": 2000},
    ]


def test_unreadable_lines_are_counted_not_skipped(tmp_path):
    pushes = Pushes()
    enc = Encoder(encoder_spec("wheel"), pushes, tmp_path / "wheel.csv")
    enc.start()
    enc.serial.write(b"Wheel v3 ready\n1_0\nnan\ninf\n3.5x\n\xff\xfe\n7\n\n\r\n")
    wait_until(lambda: enc.samples == 1 and enc.unparsed == 6, what="7 lines")
    enc.stop()
    assert [p for p, _ in pushes.rows] == [7]
    status = enc.status()
    assert status["unparsed"] == status["lost"] == 6
    assert enc.lines == 7  # blank lines (and the \n of \r\n) are not lines
    assert enc.first_unparsed == "'Wheel v3 ready'"
    assert enc.stream_problem() is None  # something was read: not an empty stream


def _pty_encoder(tmp_path: Path, pushes: Pushes) -> tuple[Encoder, int]:
    """An encoder reading a pseudo terminal (a real tty); returns it and the master fd."""
    master, slave = os.openpty()
    enc = Encoder(
        encoder_spec("wheel", port=os.ttyname(slave)), pushes, tmp_path / "w.csv"
    )
    enc.open()
    os.close(slave)  # pyserial holds its own descriptor
    return enc, master


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo terminals are POSIX")
def test_a_16_mb_line_without_newline_is_counted_in_bounded_memory(tmp_path):
    pushes = Pushes()
    enc, master = _pty_encoder(tmp_path, pushes)
    data = b"4\n" + b"9" * (16 << 20) + b"\n7\r"

    def feed() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(master, view[: 1 << 16]) :]

    tracemalloc.start()
    try:
        enc.start()
        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        writer.join(120)
        wait_until(lambda: enc.samples == 2, timeout=120, what="the line after it")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        enc.stop()
        os.close(master)
    assert [p for p, _ in pushes.rows] == [4, 7]
    assert enc.unparsed == 1
    assert enc.first_unparsed == f"a line longer than {MAX_LINE_BYTES} bytes"
    # the line is dropped as it arrives: never held (the old reader held 16 MB+)
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB while reading the line"


# ---------------------------------------------------------------- whole runs
RIG = """\
encoder: {{type: {kind}, port: "loop://", baudrate: 57600}}
cameras:
  - id: mesoscope
    name: meso
    backend: micromanager
    primary: true
    fps: 20
    properties: {{width: 32, height: 32}}
"""


def _rig(folder: Path, kind: str = "wheel") -> Path:
    folder.mkdir(parents=True)
    (folder / "hardware.yaml").write_text(RIG.format(kind=kind), encoding="utf-8")
    config = {"Configuration": {"duration": 600}, "Subjects": {"M1": {}}}
    (folder / "experiment.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _run(rig: Path, lines: bytes, device: str = "encoder") -> tuple[dict, dict]:
    run = ExperimentRun(load_experiment(rig), out=rig.parent / "data")
    run.start()
    encoder = run.devices[device]
    if lines:
        encoder.serial.write(lines)
        n = lines.count(b"\r")
        wait_until(lambda: encoder.lines >= n, what=f"{n} encoder lines")
    wait_until(lambda: run.status()["devices"]["mesoscope"]["frames"] >= 2)
    assert run.stop(timeout=60)
    result = run.result()
    manifest = json.loads(Path(result["manifest"]).read_text(encoding="utf-8"))
    (enc,) = [p for p in manifest["producers"] if p["device_id"] == device]
    return result, enc["calibration"]


def test_a_cr_only_wheel_is_recorded_with_its_counts_in_the_manifest(tmp_path):
    result, calibration = _run(_rig(tmp_path / "rig"), b"5\r-2.0\rbanner\r7\r")
    assert result["ok"], result["errors"]
    wheel = pd.read_csv(next(f["path"] for f in result["files"] if f["kind"] == "csv"))
    assert wheel["Clicks"].tolist() == [5, -2, 7]
    assert calibration["samples"] == 3
    assert calibration["unparsed_lines"] == 1 and calibration["lines_received"] == 4
    assert result["devices"]["encoder"]["unparsed"] == 1


def test_a_wheel_stream_with_nothing_readable_fails_the_run(tmp_path):
    result, calibration = _run(_rig(tmp_path / "rig"), b"x=3\rx=4\r")
    assert not result["ok"]
    assert result["errors"] == [
        "encoder: none of the 2 line(s) received from 'loop://' is a wheel sample "
        "(first: 'x=3')"
    ]
    assert calibration["samples"] == 0 and calibration["unparsed_lines"] == 2
    manifest = json.loads(Path(result["manifest"]).read_text(encoding="utf-8"))
    assert manifest["acquisition_complete"] is False


def test_a_silent_serial_port_fails_the_run(tmp_path):
    result, _ = _run(_rig(tmp_path / "rig", "treadmill"), b"", "treadmill")
    assert not result["ok"]
    assert result["errors"] == [
        "treadmill: no data received from serial port 'loop://'"
    ]
