"""What Windows and macOS do differently, proven here (run under ``--emulate-os``).

Each test holds on every system; the ones marked ``emulated`` need the emulation's
counters or its Windows/macOS file semantics and skip without them. Under
``--emulate-os=windows`` or ``macos`` each of them failed before the ``_platform``
layer (see ``docs/design.md`` §8).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tifffile

import _emulate_os
from _helpers import SHAPE, read_json, timelapse, wait_until
from mesofield_napari._platform import fileio, system
from mesofield_napari._platform.clock import RunClock
from mesofield_napari.data import CustomWriter, sidecar_path
from mesofield_napari.data.formats.sidecar import write_json_atomic
from mesofield_napari.data.manager import RunManager
from mesofield_napari.data.manager.dataqueue import DataQueue
from mesofield_napari.data.writer.signals import connect_direct

if TYPE_CHECKING:
    from pymmcore_plus.experimental.unicore import UniMMCore

EM = _emulate_os.emulation


def _emulating(name: str) -> None:
    """Skip unless this session emulates ``name`` (decided at run time: the
    emulation is installed after collection)."""
    if EM.system != name:
        pytest.skip(f"needs --emulate-os={name} (its counters)")


def _run_until(core: UniMMCore, writer: CustomWriter, seq: Any, stop: int) -> None:
    seen = [0]

    def count(*_: Any) -> None:
        seen[0] += 1
        if seen[0] == stop:
            core.mda.cancel()

    with writer.attached(core):
        connect_direct(core.mda.events.frameReady, count)
        try:
            core.mda.run(seq)
        finally:
            core.mda.events.frameReady.disconnect(count)


# ---------------------------------------------------------------- the emulation
def test_emulated_windows_is_what_the_product_must_survive(tmp_path: Path) -> None:
    """The emulation itself: a text-mode fd corrupts, ftruncate writes zeros, a
    mapped file cannot be cut, an open one cannot be removed, monotonic is coarse."""
    _emulating("windows")
    path = tmp_path / "x.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)  # no O_BINARY: text mode
    os.write(fd, b"a\nb")
    os.close(fd)
    assert path.read_bytes() == b"a\r\nb"
    assert not hasattr(os, "pwrite") and not hasattr(os, "fdatasync")
    fd = os.open(path, os.O_RDWR | os.O_BINARY)
    os.ftruncate(fd, 1000)
    assert EM.chsize_zeros(path) == 1000 - 4
    mapped = np.memmap(path, mode="r")
    with pytest.raises(PermissionError) as refused:
        os.ftruncate(fd, 10)
    assert refused.value.winerror == _emulate_os.ERROR_USER_MAPPED_FILE
    del mapped
    os.ftruncate(fd, 10)
    with pytest.raises(PermissionError):  # still open (fd)
        path.unlink()
    os.close(fd)
    path.unlink()
    ticks = {time.monotonic() for _ in range(2000)}
    assert all(round(t / 0.015625, 6).is_integer() for t in ticks)
    assert len({time.perf_counter() for _ in range(100)}) > 50  # QPC stays fine
    # reading a text-mode fd: CR-LF -> LF, CTRL+Z ends the file
    path.write_bytes(b"x\r\ny\x1az")
    fd = os.open(path, os.O_RDONLY)
    assert os.read(fd, 100) == b"x\ny" and os.read(fd, 100) == b""
    os.close(fd)
    (tmp_path / "t.txt").write_text("a\n", encoding="utf-8")  # os.linesep is \r\n
    assert (tmp_path / "t.txt").read_bytes() == b"a\r\n"
    with open(path, "rb"), pytest.raises(PermissionError) as denied:
        os.replace(tmp_path / "t.txt", path)  # onto a file that is open
    assert denied.value.winerror == _emulate_os.ERROR_ACCESS_DENIED
    import signal

    assert not hasattr(signal, "SIGKILL") and not hasattr(signal, "SIGHUP")
    assert signal.SIGBREAK and not hasattr(os, "fork") and not hasattr(os, "getuid")
    for module in ("resource", "fcntl"):
        with pytest.raises(ImportError):
            __import__(module)


def test_emulated_macos_preallocates_and_full_fsyncs(tmp_path: Path) -> None:
    _emulating("macos")
    import fcntl
    import struct

    assert not hasattr(os, "fdatasync") and not hasattr(os, "posix_fallocate")
    path = tmp_path / "x.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    store = struct.pack("=Iiqqq", fcntl.F_ALLOCATEALL, fcntl.F_PEOFPOSMODE, 0, 2**20, 0)
    out = fcntl.fcntl(fd, fcntl.F_PREALLOCATE, store)
    assert struct.unpack("=Iiqqq", out)[4] == 2**20  # fst_bytesalloc
    assert os.fstat(fd).st_size == 0 and os.fstat(fd).st_blocks * 512 >= 2**20
    fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
    assert EM.full_fsyncs(path) == 1
    os.close(fd)


# ---------------------------------------------------------------- file layer
def test_positional_writes_keep_every_byte(tmp_path: Path) -> None:
    """0x0A bytes (a text-mode fd would make them 0x0D 0x0A) at offsets, from two
    threads sharing the fd (the Windows path seeks under the fd's lock)."""
    path = tmp_path / "data.bin"
    fd = fileio.open_binary(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    chunk = 4096
    blocks = {i: bytes([10, i % 256]) * (chunk // 2) for i in range(64)}

    def write(keys: list[int]) -> None:
        for i in keys:
            fileio.pwrite_all(fd, blocks[i], i * chunk)

    threads = [
        threading.Thread(target=write, args=(list(range(k, 64, 2)),)) for k in (0, 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, block in blocks.items():
        assert fileio.pread(fd, chunk, i * chunk) == block
    fileio.close(fd)
    assert path.stat().st_size == 64 * chunk


def test_text_files_are_byte_identical_on_every_system(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    """JSON, journal lines and notes end lines with \\n; CSVs with csv's \\r\\n —
    never Windows' \\r\\r\\n or a stray \\r."""
    with RunManager(tmp_path, "M1", 1, "rec") as run:
        writer = run.writer_for("mesoscope", "tiff", suffix="meso")
        run.add_note("two\nlines")
        sim_core.mda.run(timelapse(5), output=writer)
    manifest = run.manifest_path.read_bytes()
    assert b"\r" not in manifest and manifest.count(b"\n") > 10
    sidecar = sidecar_path(writer._filename).read_bytes()
    assert b"\r" not in sidecar
    assert run.notes_path.read_bytes().endswith(b": two\\nlines\n")
    assert b"\r" not in run.notes_path.read_bytes()
    for path in (run.dataqueue_path, run.timestamps_path, run.configuration_path):
        raw = path.read_bytes()
        assert b"\r\r" not in raw
        assert raw.count(b"\r\n") == raw.count(b"\n") > 1, path.name


def test_a_file_held_open_is_named_when_it_cannot_be_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows refuses to replace a file another handle holds (a sidecar open in a
    viewer): retried briefly, then one error naming the file; nothing is lost."""
    monkeypatch.setattr(fileio, "RETRY_S", 0.2)
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})
    with open(target, "rb"):
        if system() == "windows":
            with pytest.raises(
                fileio.FileInUseError, match=r"cannot replace .*x\.json"
            ):
                write_json_atomic(target, {"a": 2})
        else:
            write_json_atomic(target, {"a": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp left
    write_json_atomic(target, {"a": 3})
    assert read_json(target) == {"a": 3}


# ---------------------------------------------------------------- planned TIFFs
def test_planned_tiff_is_reserved_and_never_zero_filled(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    """The whole planned size is reserved before the first frame (so a full disk
    fails at the start), and nothing is written ahead of the frames: NTFS would
    zero-fill everything below a write far past the data written so far."""
    path = tmp_path / "plan.ome.tiff"
    writer = CustomWriter(path)
    frames, frame_bytes = 400, SHAPE[0] * SHAPE[1] * 2
    allocated: list[int] = []

    write_frame = writer.write_frame

    def first_frame(*args: Any) -> None:  # writer thread: the file is made by now
        if not allocated:
            allocated.append(os.stat(path).st_blocks * 512)
        write_frame(*args)

    writer.write_frame = first_frame  # type: ignore[method-assign]
    _run_until(sim_core, writer, timelapse(frames), 120)
    writer.raise_if_failed()
    assert allocated and allocated[0] >= frames * frame_bytes
    n = writer.frames_written["p0"]
    assert tifffile.memmap(path).shape == (n, *SHAPE)
    if EM.system == "windows":
        assert EM.zero_filled(path) == 0
        assert EM.chsize_zeros(path) == 0  # no os.ftruncate (_chsize_s) extension


def test_until_stop_tiff_grows_without_ftruncate(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    _emulating("windows")
    from mesofield_napari.acquisition import endless_timelapse

    path = tmp_path / "grow.tif"
    writer = CustomWriter(path)
    _run_until(sim_core, writer, endless_timelapse(), 50)
    assert writer.frames_written["p0"] >= 50
    assert EM.chsize_zeros(path) == 0
    assert EM.zero_filled(path) == 0


def test_macos_full_fsync_at_the_ordering_points(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    """fsync does not reach the drive on macOS: finishing a file (tail, header switch,
    cut), the sidecar and the manifest go through F_FULLFSYNC."""
    _emulating("macos")
    with RunManager(tmp_path, "M1", 1, "rec") as run:
        writer = run.writer_for("mesoscope", "tiff", suffix="meso")
        _run_until(sim_core, writer, timelapse(200), 20)
    data = Path(writer._filename)
    assert EM.full_fsyncs(data) >= 3
    assert EM.full_fsyncs(sidecar_path(data)) >= 1
    assert EM.full_fsyncs(run.manifest_path) >= 1


def test_macos_volume_refusing_full_fsync_falls_back(
    sim_core: UniMMCore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _emulating("macos")
    monkeypatch.setattr(EM, "refuse_full_fsync", True)
    path = tmp_path / "nas.ome.tiff"
    writer = CustomWriter(path)
    _run_until(sim_core, writer, timelapse(100), 10)
    writer.raise_if_failed()
    n = writer.frames_written["p0"]
    assert len(read_json(sidecar_path(path))["p0"]) == n
    assert EM.full_fsyncs(path) == 0


# ---------------------------------------------------------------- the clock
def test_run_clock_is_fine_grained_and_anchored() -> None:
    clock = RunClock()
    readings = [clock.elapsed() for _ in range(200)]
    assert readings == sorted(readings) and len(set(readings)) > 150
    assert abs(clock.wall(0.0) - time.time()) < 5.0


def test_100hz_camera_rows_get_distinct_increasing_times(tmp_path: Path) -> None:
    """time.monotonic/time.time tick every 15.6 ms on Windows: a 100 Hz stream of
    rows must still get one instant each, in order, on both columns."""
    queue = DataQueue(tmp_path / "dq.csv")
    queue.start()
    for n in range(100):
        queue.push("mesoscope", n)
        time.sleep(0.01)
    queue.stop()
    with open(tmp_path / "dq.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    elapsed = [float(r["queue_elapsed"]) for r in rows]
    assert len(elapsed) == 100 and len(set(elapsed)) == 100
    assert elapsed == sorted(elapsed)
    stamps = [r["packet_ts"] for r in rows]
    assert len(set(stamps)) == 100 and stamps == sorted(stamps)


def test_200hz_wheel_speeds_use_real_intervals(tmp_path: Path) -> None:
    """Speed = clicks over the interval since the previous sample: on a 15.6 ms
    clock most intervals of a 200 Hz wheel were 0, and their speeds 0."""
    from mesofield_napari.devices.encoder import Encoder
    from mesofield_napari.experiment.config import EncoderSpec, Output

    spec = EncoderSpec(
        "encoder", "wheel", "loop://", 57600, 2400, 80.0, 5.0, False, False,
        Output("beh", "csv", "wheel"),
    )  # fmt: skip
    pushes: list[Any] = []
    enc = Encoder(spec, lambda p, ts: pushes.append((p, ts)), tmp_path / "wheel.csv")
    enc.start()
    for _ in range(100):
        enc.serial.write(b"3\n")
        time.sleep(0.005)
    wait_until(lambda: enc.samples == 100, what="100 wheel samples")
    enc.stop()
    with open(tmp_path / "wheel.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    times = [float(r["Time"]) for r in rows]
    speeds = [float(r["Speed"]) for r in rows]
    assert times == sorted(times)
    assert all(s > 0 for s in speeds), f"{speeds.count(0.0)} of 100 speeds are 0"
    mm = 3 * np.pi * 80 / 2400
    for k in range(1, 100):
        dt = times[k] - times[k - 1]
        if dt > 1e-4:  # printed with 6 decimals
            assert speeds[k] == pytest.approx(mm / dt, rel=0.05)


# ---------------------------------------------------------------- the command line
def test_help_prints_on_a_cp1252_console() -> None:
    """Windows pipes are cp1252, which has no "Δ" ("ΔF/F" in the command list)."""
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    res = subprocess.run(
        [sys.executable, "-m", "mesofield_napari", "--help"],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode("cp1252", "replace")
    assert b"F/F" in res.stdout and b"Traceback" not in res.stderr


def test_labels_too_long_for_the_system_are_refused_up_front(tmp_path: Path) -> None:
    label = "A" * 64
    with pytest.raises(ValueError, match=r"would be .* long|longer than 255") as exc:
        RunManager(tmp_path, label, label, label)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "data").exists()  # nothing made


def test_record_refuses_a_too_long_path_in_one_line(tmp_path: Path) -> None:
    """Windows (without long paths) allows 259 characters: ~400 are refused before
    anything is made, in one line; elsewhere (4095/1023 bytes) the run records."""
    from mesofield_napari._platform.paths import max_path_length

    deep = tmp_path / ("x" * 60)
    res = subprocess.run(
        [sys.executable, "-m", "mesofield_napari", "record", "--out", str(deep),
         "--subject", "S" * 40, "--task", "T" * 40, "--frames", "2"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if max_path_length() < 400:
        assert res.returncode == 2
        (line,) = res.stderr.strip().splitlines()
        assert "characters long" in line and "shorter" in line
        assert not list(deep.rglob("*.csv"))
    else:
        assert res.returncode == 0, res.stderr


def test_stop_file_ends_an_experiment_run_cleanly(tmp_path: Path) -> None:
    """A SIGTERM-free way for another program to stop a run (any system)."""
    exp = Path(__file__).resolve().parents[1] / "examples" / "experiment"
    stop = tmp_path / "STOP"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesofield_napari", "record", "--experiment", str(exp),
         "--out", str(tmp_path / "out"), "--duration", "120", "--json",
         "--stop-file", str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: next((tmp_path / "out").rglob("*_dataqueue.csv"), None),
            timeout=120,
            what="the run to start",
        )
        time.sleep(1.0)
        stop.touch()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    payload = json.loads(stdout)
    assert payload["ok"] is True
    assert all(f["frames"] for f in payload["files"] if f.get("frames") is not None)
    assert any(f.get("frames") for f in payload["files"])


def test_the_os_calls_that_differ_live_only_in_the_platform_layer() -> None:
    """Positional I/O, syncs, reservations, opens, renames and truncation differ
    between the systems (``_platform/fileio.py``): none is called anywhere else."""
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "mesofield_napari"
    call = re.compile(
        r"\bos\.(pwrite|pread|fdatasync|fsync|posix_fallocate|open|replace|ftruncate)\("
    )
    offenders = [
        f"{path.relative_to(src)}:{n}: {line.strip()}"
        for path in sorted(src.rglob("*.py"))
        if "_platform" not in path.parts
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if call.search(line)
    ]
    assert offenders == []
