"""Hostile experiment files (issue 21): non-finite and insane values, YAML alias bombs,
deep nesting, output folders pointing out of the experiment.

Every problem is one :class:`ExperimentError` line naming the file and the key. What
could hang or exhaust memory runs the real CLI in a subprocess with a time-out, so a
regression fails instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mesofield_napari.data.manager.paths import RunPaths
from mesofield_napari.experiment import ExperimentError, ExperimentRun, load_experiment

CONFIG = {"Configuration": {"duration": 1}, "Subjects": {"M1": {}}}
CAMERA = """\
cameras:
  - id: mesoscope
    backend: micromanager
    primary: true
{extra}
"""


def write(folder: Path, hardware: str, config: dict | str = CONFIG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hardware.yaml").write_text(hardware, encoding="utf-8")
    text = config if isinstance(config, str) else json.dumps(config)
    (folder / "experiment.json").write_text(text, encoding="utf-8")
    return folder


def error_of(target: Path) -> str:
    with pytest.raises(ExperimentError) as info:
        load_experiment(target)
    message = str(info.value)
    assert "\n" not in message
    return message


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run(
        [sys.executable, "-m", "mesofield_napari", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ("    fps: .nan", "fps", "a finite number in (0, 1000], got nan"),
        ("    fps: .inf", "fps", "a finite number in (0, 1000], got inf"),
        ("    fps: 1e9", "fps", "a finite number in (0, 1000], got 1000000000.0"),
        ("    width: .inf", "width", "a finite number in (0, 65536], got inf"),
        ("    height: 1e12", "height", "a finite number in (0, 65536], got"),
        (
            "    properties: {width: .nan}",
            "properties.width",
            "a finite number in (0, 65536], got nan",
        ),
        (
            "    properties: {exposure_ms: -.inf}",
            "properties.exposure_ms",
            "a finite number in (0, 3600000], got -inf",
        ),
        (
            "    properties: {exposure_ms: .nan}",
            "properties.exposure_ms",
            "a finite number in (0, 3600000], got nan",
        ),
    ],
)
def test_camera_numbers_must_be_finite_and_sane(tmp_path, line, key, expected):
    message = error_of(write(tmp_path, CAMERA.format(extra=line)))
    assert message.startswith(f"{tmp_path / 'hardware.yaml'}: cameras[0] (mesoscope)")
    assert f".{key} must be {expected}" in message


@pytest.mark.parametrize(
    ("block", "key", "expected"),
    [
        ("sample_interval_ms: .nan", "sample_interval_ms", "(0, 60000], got nan"),
        ("diameter_mm: .inf", "diameter_mm", "(0, 10000], got inf"),
        ("cpr: 1e30", "cpr", "(0, 1000000000], got 1e+30"),
        ("baudrate: .inf", "baudrate", "(0, 100000000], got inf"),
    ],
)
def test_encoder_numbers_must_be_finite_and_sane(tmp_path, block, key, expected):
    hw = CAMERA.format(extra="") + (
        f"encoder: {{type: wheel, development_mode: true, {block}}}\n"
    )
    message = error_of(write(tmp_path, hw))
    assert f"hardware.yaml: encoder.{key} must be a finite number in {expected}" in (
        message
    )


@pytest.mark.parametrize(
    ("duration", "shown"),
    [
        ("NaN", "nan"),
        ("Infinity", "inf"),
        ("-Infinity", "-inf"),
        ("1e12", "1000000000000.0"),
    ],
)
def test_json_duration_must_be_finite_and_sane(tmp_path, duration, shown):
    text = '{"Configuration": {"duration": ' + duration + '}, "Subjects": {"M1": {}}}'
    message = error_of(write(tmp_path, CAMERA.format(extra=""), text))
    assert message == (
        f"{tmp_path / 'experiment.json'}: Configuration.duration must be a positive "
        f"number of seconds up to 604800 (7 days), got {shown}"
    )


@pytest.mark.parametrize("duration", [float("nan"), float("inf"), 1e12])
def test_a_given_duration_must_be_finite_and_sane(tmp_path, duration):
    exp = load_experiment(write(tmp_path, CAMERA.format(extra="")))
    with pytest.raises(ExperimentError, match="duration must be positive seconds"):
        ExperimentRun(exp, duration=duration, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    rig = write(tmp_path / "rig", BOMB + CAMERA.format(extra=""))
    proc = cli("record", "--experiment", str(rig), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert str(rig / "hardware.yaml") in line
    assert "expands to more than 100000 values (aliases)" in line
    assert not any((tmp_path / "out").rglob("*"))  # nothing recorded


def test_yaml_anchors_within_bounds_still_work(tmp_path):
    hw = """\
common: &common {backend: micromanager, fps: 20}
cameras:
  - {<<: *common, id: mesoscope, primary: true}
  - {<<: *common, id: pupil}
"""
    exp = load_experiment(write(tmp_path, hw))
    assert [(c.id, c.backend, c.fps) for c in exp.cameras] == [
        ("mesoscope", "micromanager", 20.0),
        ("pupil", "micromanager", 20.0),
    ]


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_one_line(tmp_path, depth):
    text = json.dumps(CONFIG)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    message = error_of(write(tmp_path, CAMERA.format(extra=""), text))
    assert message == (
        f"{tmp_path / 'experiment.json'}: nested deeper than 32 levels (at 'x')"
    )


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_yaml_is_one_line(tmp_path, depth):
    hw = CAMERA.format(extra="") + "x: " + "[" * depth + "]" * depth + "\n"
    message = error_of(write(tmp_path, hw))
    assert message.startswith(f"{tmp_path / 'hardware.yaml'}")
    assert "nested deeper than 32 levels" in message


def test_an_oversized_experiment_file_is_refused(tmp_path):
    hw = CAMERA.format(extra="") + "# " + "x" * (2 << 20) + "\n"
    message = error_of(write(tmp_path, hw))
    assert message == (
        f"{tmp_path / 'hardware.yaml'}: {len(hw.encode())} bytes is too large for "
        f"a metadata file (at most 1048576)"
    )


@pytest.mark.parametrize(
    "value", ["../..", "..", "/tmp/elsewhere", "beh/../../x", "a/b", "C:\\\\x", "."]
)
@pytest.mark.parametrize("key", ["bids_type", "suffix"])
def test_output_folders_stay_inside_the_experiment(tmp_path, key, value):
    extra = f'    output: {{{key}: "{value}"}}'
    message = error_of(write(tmp_path, CAMERA.format(extra=extra)))
    assert message.startswith(
        f"{tmp_path / 'hardware.yaml'}: cameras[0] (mesoscope).output.{key} "
    )
    assert "letters and digits" in message


def test_encoder_output_folder_stays_inside_the_experiment(tmp_path):
    hw = CAMERA.format(extra="") + (
        'encoder: {type: wheel, development_mode: true, output: {bids_type: "/etc"}}\n'
    )
    message = error_of(write(tmp_path, hw))
    assert "hardware.yaml: encoder.output.bids_type " in message


def test_a_camera_name_that_cannot_be_a_file_suffix_is_refused_at_load(tmp_path):
    hw = CAMERA.format(extra='    name: "../../evil"')
    message = error_of(write(tmp_path, hw))
    assert "cameras[0] (mesoscope).output.suffix" in message


@pytest.mark.parametrize("kind", ["../..", "/abs", "..", "a/b"])
def test_run_paths_refuse_a_folder_outside_the_session(tmp_path, kind):
    paths = RunPaths(tmp_path, "M1", "1", "rec")
    with pytest.raises(ValueError, match="letters"):
        paths.file("meso", ".ome.tiff", kind)
    assert paths.file("meso", ".ome.tiff", "func").parent == paths.run_dir / "func"


def test_a_fifo_in_place_of_an_experiment_file_is_refused(tmp_path):
    folder = write(tmp_path / "rig", CAMERA.format(extra=""))
    (folder / "hardware.yaml").unlink()
    os.mkfifo(folder / "hardware.yaml")
    target = str(folder / "hardware.yaml")
    proc = cli("record", "--experiment", target, "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(f"{target}: not a regular file (a FIFO)")


def test_a_fifo_json_beside_the_experiment_is_skipped(tmp_path):
    folder = write(tmp_path / "rig", CAMERA.format(extra=""))
    (folder / "experiment.json").rename(folder / "mine.json")
    os.mkfifo(folder / "a_fifo.json")  # sorted first: it would be read first
    code = (
        "from mesofield_napari.experiment import load_experiment; "
        f"print(load_experiment({str(folder)!r}).json_path.name)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.stdout.strip() == "mine.json", proc.stderr[-2000:]
