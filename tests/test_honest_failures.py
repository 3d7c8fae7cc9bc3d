"""Recording tells the truth and nothing hangs (issue 10, acquisition half).

The exit code, the summary line, ``--json``'s ``ok``, the manifest and the recorder's
outcome all report what is on disk. The CLI is run as the user runs it, in a
subprocess with a time-out; a failing camera or a slow disk is simulated by patching
the real simulated camera / writer in a small launcher script before ``main`` runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tifffile
import useq

from _helpers import manifest_view
from mesofield_napari._platform import system
from mesofield_napari.acquisition.timelapse import timelapse

TIMEOUT = 90

# the camera raises from its FAIL_AT-th frame on (a real device on a real core)
FAILING_CAMERA = """
import sys
from mesofield_napari.devices import sim_camera as sim

FAIL_AT = int(sys.argv[1])
_snap = sim.SimulatedMesoscopeCamera.snap

def snap(self, buffer):
    if self._frame_index >= FAIL_AT:
        raise RuntimeError("camera fell over")
    return _snap(self, buffer)

sim.SimulatedMesoscopeCamera.snap = snap
from mesofield_napari.cli import main
sys.exit(main(sys.argv[2:]))
"""

# a camera faster than the disk: a 4 MB camera buffer and a writer that needs 5 ms
# per frame (the real writer, slowed down); the pre-run disk probe measures that same
# slow disk (256x256 uint16 in 5 ms: 26 MB/s), whatever this machine's load
SLOW_DISK = """
import sys, time
from mesofield_napari.acquisition import preflight
from mesofield_napari.devices import sim_camera as sim
from mesofield_napari.data.writer import tiff as writer

preflight.measure_write_speed = lambda folder, **kw: 256 * 256 * 2 / 0.005

_create = sim.create_sim_core

def create(*args, **kwargs):
    core = _create(*args, **kwargs)
    core.setCircularBufferMemoryFootprint(4)
    return core

sim.create_sim_core = create
_write = writer.CustomWriter.write_frame

def write_frame(self, ary, index, frame):
    time.sleep(0.005)
    return _write(self, ary, index, frame)

writer.CustomWriter.write_frame = write_frame
from mesofield_napari.cli import main
sys.exit(main(sys.argv[1:]))
"""

# the disk fills up after 3 frames
FULL_DISK = """
import errno, sys
from mesofield_napari.data.writer import tiff as writer

_write = writer.CustomWriter.write_frame
count = [0]

def write_frame(self, ary, index, frame):
    count[0] += 1
    if count[0] > 3:
        raise OSError(errno.ENOSPC, "No space left on device")
    return _write(self, ary, index, frame)

writer.CustomWriter.write_frame = write_frame
from mesofield_napari.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_script(
    tmp_path: Path, source: str, *args: object, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "launch.py"
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli(*args: object, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesofield_napari", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(res: subprocess.CompletedProcess[str], warnings: int = 0) -> str:
    """The one error line on stderr, after exactly ``warnings`` warning lines."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert "\x1b[" not in res.stderr  # no coloured pymmcore-plus log line
    lines = res.stderr.strip().splitlines()
    assert len(lines) == warnings + 1, res.stderr
    assert all(w.startswith("warning: ") for w in lines[:warnings]), res.stderr
    assert lines[-1].startswith("mesofield-napari"), res.stderr
    return lines[-1]


def tiff_frames(payload: dict) -> int:
    (entry,) = [f for f in payload["files"] if f["kind"] == "tiff"]
    with tifffile.TiffFile(entry["path"]) as tif:
        return int(tif.series[0].shape[0])


# ---------------------------------------------------------------- 1. camera failure
def test_camera_failing_mid_run_is_a_failure(tmp_path):
    out = tmp_path / "data"
    common = ["record", "--out", out, "--frames", 400, "--size", "32x32"]
    res = run_script(tmp_path, FAILING_CAMERA, 150, *common, "--exposure", 0, "--json")
    line = one_error_line(res)
    assert "camera failed after 150 of 400 frames" in line
    assert "camera fell over" in line and "150 frames written" in line
    payload = json.loads(res.stdout)
    assert payload["ok"] is False
    assert payload["frames_written"] == 150
    assert payload["errors"] == [line.split("error: ", 1)[1]]
    assert payload["files"][0]["frames"] == 150
    manifest = manifest_view(payload["manifest"])
    assert manifest["complete"] is False
    assert manifest["errors"] == payload["errors"]
    # the summary line prints what was written, not the plan
    res = run_script(tmp_path, FAILING_CAMERA, 150, *common, "--exposure", 0)
    assert "recorded 150 frames of 400 planned" in res.stdout
    assert res.returncode == 2


def test_camera_failing_on_single_snaps_is_a_failure(tmp_path):
    """With an interval, pymmcore-plus logs "Failed to snap image" and goes on."""
    res = run_script(
        tmp_path,
        FAILING_CAMERA,
        2,
        *["record", "--out", tmp_path / "d", "--frames", 5, "--size", "16x16"],
        *["--exposure", 1, "--interval", 0.001, "--json"],
    )
    line = one_error_line(res)
    assert "camera delivered 2 of 5 frames" in line
    assert "camera fell over" in line
    payload = json.loads(res.stdout)
    # the file holds exactly the frames written (not the 5 planned)
    assert payload["ok"] is False and tiff_frames(payload) == 2
    assert payload["files"][0]["frames"] == 2


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--exposure", "inf", "expected a finite number, got 'inf'"),
        ("--exposure", "nan", "expected a finite number, got 'nan'"),
        ("--interval", "nan", "expected a finite number, got 'nan'"),
        ("--fps", "0", "must be > 0"),
        ("--fps", "inf", "expected a finite number, got 'inf'"),
        ("--fps", "100000", "must be at most 1000 frames per second"),
        ("--contrast", "nan", "expected a finite number"),
    ],
)
def test_non_finite_or_absurd_numbers_are_refused(tmp_path, option, value, message):
    extra = [option, value] + (["4000"] if option == "--contrast" else [])
    res = cli("record", "--out", tmp_path, "--writer", "mp4", "--frames", 2, *extra)
    line = one_error_line(res)
    assert option in line and message in line
    assert not list(tmp_path.rglob("sub-*"))


# ---------------------------------------------------------------- 2. hangs
def test_huge_frame_count_is_refused_before_anything_is_built(tmp_path):
    res = cli("record", "--out", tmp_path, "--frames", 10**12, timeout=60)
    line = one_error_line(res)
    assert "not enough disk space for 1000000000000 frames" in line
    assert "free on" in line
    assert not list(tmp_path.rglob("sub-*"))


def test_timelapse_events_are_made_lazily(tmp_path):
    """useq builds the whole time axis before the first event (10**9: out of memory);
    ours makes one event at a time (checked in a memory-capped subprocess)."""
    if system() == "windows":
        pytest.skip("caps memory with RLIMIT_AS (POSIX resource); Windows has none")
    code = textwrap.dedent(
        """
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
        from mesofield_napari.acquisition.timelapse import timelapse
        seq = timelapse(10**12)
        it = iter(seq)
        print(seq.sizes["t"], next(it).index["t"], next(it).index["t"])
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1000000000000", "0", "1"]


@pytest.mark.parametrize("keep_open", [(), ("t",)])
@pytest.mark.parametrize("interval", [0.0, 0.25])
def test_lazy_timelapse_makes_the_events_useq_makes(interval, keep_open):
    ours = list(timelapse(5, interval, keep_shutter_open_across=keep_open))
    ref = useq.MDASequence(
        time_plan={"interval": interval, "loops": 5},
        keep_shutter_open_across=keep_open,
    )
    assert [e.model_dump() for e in ours] == [e.model_dump() for e in ref]
    assert timelapse(5, interval).sizes["t"] == 5


# ---------------------------------------------------------------- 3. slow disk
def test_camera_faster_than_disk_keeps_the_frames_and_says_so(tmp_path):
    res = run_script(
        tmp_path,
        SLOW_DISK,
        *["record", "--out", tmp_path / "d", "--frames", 1000, "--size", "256x256"],
        *["--exposure", 0, "--max-queue-mb", 1, "--json"],
    )
    line = one_error_line(res, warnings=1)  # warned before, failed after: both said
    assert "sustained 26 MB/s in a quick write test" in res.stderr.splitlines()[0]
    assert "the disk sustained" in line and "the camera produced" in line
    assert "buffer overflowed" in line and "all written" in line
    payload = json.loads(res.stdout)
    written = payload["frames_written"]
    assert 0 < written < 1000
    assert f"stopped after {written} of 1000 frames" in line
    assert payload["ok"] is False and payload["files"][0]["frames"] == written
    sidecar = json.loads(Path(payload["files"][0]["sidecar"]).read_text())
    assert len(sidecar["p0"]) == written
    data = tifffile.imread(payload["files"][0]["path"])
    assert data[:written].any(axis=(1, 2)).all()  # every counted frame is real
    manifest = manifest_view(payload["manifest"])
    assert manifest["complete"] is False and manifest["errors"] == [
        line.split("error: ", 1)[1]
    ]


def test_warns_before_a_run_the_disk_cannot_take(tmp_path):
    # 2048x2048 uint16 at exposure 0: planned as 1000 fps = 8.4 GB/s
    res = cli(
        *["record", "--out", tmp_path, "--frames", 1, "--size", "2048x2048"],
        *["--exposure", 0],
    )
    assert res.returncode == 0, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("warning: the camera will produce up to 8389 MB/s")
    assert "quick write test" in line
    assert not list(tmp_path.glob(".mesofield-speed-*"))  # the probe cleans up


# ---------------------------------------------------------------- 4. smaller issues
def test_a_writer_failure_is_printed_once(tmp_path):
    res = run_script(
        tmp_path,
        FULL_DISK,
        *["record", "--out", tmp_path / "d", "--frames", 50, "--size", "16x16"],
        *["--exposure", 1],
    )
    line = one_error_line(res)
    assert "No space left on device" in line and "3 frame(s) written" in line
    assert "recorded 3 frames of 50 planned" in res.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["record", "--experime", "X"],  # once silently --experimenter
        ["record", "--exp", "1"],
        ["export", "dff", "somewhere", "--overwr"],
    ],
    ids=["experiment", "exp", "export"],
)
def test_abbreviated_options_are_unknown(tmp_path, argv):
    res = cli(
        *argv[:1], *(["--out", tmp_path] if argv[0] == "record" else []), *argv[1:]
    )
    line = one_error_line(res)
    assert "unrecognized arguments" in line
    assert not list(tmp_path.rglob("sub-*"))
