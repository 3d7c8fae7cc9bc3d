"""Loading mesofield's experiment files: hardware.yaml + experiment.json (issue 13)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mesofield_napari.experiment import (
    ExperimentError,
    load_experiment,
    record_experiment,
)

SAMPLE = Path(__file__).parent / "data" / "mesofield_sample"

CONFIG = {
    "Configuration": {"experimenter": "JG", "protocol": "P1", "duration": 1},
    "Subjects": {"M1": {"session": "2", "task": "wf", "sex": "F"}},
}
TWO_CAMERAS = """\
cameras:
  - id: mesoscope
    name: meso
    backend: micromanager
    primary: {p1}
  - id: pupil
    backend: opencv
    device: sim
    primary: {p2}
"""


def write(
    folder: Path,
    hardware: str,
    config: dict | str = CONFIG,
    name: str = "experiment.json",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hardware.yaml").write_text(hardware, encoding="utf-8")
    text = config if isinstance(config, str) else json.dumps(config, indent=2)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def error_of(target: Path) -> str:
    with pytest.raises(ExperimentError) as info:
        load_experiment(target)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_mesofield_sample_names_both_cameras_sharing_an_id():
    message = error_of(SAMPLE)
    assert str(SAMPLE / "hardware.yaml") in message
    assert "cameras[0] (name 'devcam1')" in message
    assert "cameras[1] (name 'devcam2')" in message
    assert "both have id 'dev'" in message


def test_mesofield_sample_loads_once_ids_are_unique(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "rig")
    hw = tmp_path / "rig" / "hardware.yaml"
    text = hw.read_text().replace(
        'id: "dev"\n    name: "devcam2"', 'id: "dev2"\n    name: "devcam2"'
    )
    hw.write_text(text)
    exp = load_experiment(tmp_path / "rig")  # a folder: the JSON is devcfg.json
    assert exp.json_path.name == "devcfg.json"
    assert [c.id for c in exp.cameras] == ["dev", "dev2"]
    assert [c.primary for c in exp.cameras] == [True, False]  # primary: "true"
    assert exp.primary.id == "dev"
    assert [c.output.kind for c in exp.cameras] == ["tiff", "mp4"]
    assert [c.output.suffix for c in exp.cameras] == ["devcam1", "devcam2"]
    assert all(c.simulated for c in exp.cameras)  # no configuration_path
    assert exp.cameras[0].extra == {"auto_contrast": True}
    enc = exp.encoder
    assert enc is not None
    assert (enc.type, enc.port, enc.baudrate, enc.cpr) == ("wheel", "COM4", 57600, 2400)
    assert (enc.diameter_mm, enc.sample_interval_ms) == (80.0, 20.0)
    assert enc.development_mode is False and enc.id == "encoder"
    assert exp.duration_s == 10
    subject, meta = exp.subject()
    assert subject == "STREHAB07" and meta["session"] == "10"
    params = exp.parameters("STREHAB09")
    assert params["sex"] == "M" and params["DOS"] == "2025-06-21"
    assert params["weight"] == "25.94" and params["experimenter"] == "developer"
    assert params["hardware.memory_buffer_size"] == 10000
    assert params["hardware.viewer_type"] == "static"
    assert "session" not in params and "task" not in params


@pytest.mark.parametrize(
    ("p1", "p2", "primaries"),
    [
        ("true", '"false"', ["mesoscope"]),
        ('"False"', '"yes"', ["pupil"]),
        ("True", "false", ["mesoscope"]),
    ],
)
def test_primary_strings_are_booleans(tmp_path, p1, p2, primaries):
    exp = load_experiment(write(tmp_path, TWO_CAMERAS.format(p1=p1, p2=p2)))
    assert [c.id for c in exp.cameras if c.primary] == primaries


def test_missing_and_double_primaries(tmp_path):
    none = error_of(write(tmp_path / "a", TWO_CAMERAS.format(p1="false", p2='"false"')))
    assert "hardware.yaml: no device has 'primary: true'" in none
    two = error_of(write(tmp_path / "b", TWO_CAMERAS.format(p1="true", p2='"true"')))
    assert (
        "several devices have 'primary: true': cameras[0] (mesoscope), cameras[1] (pupil)"
        in two
    )


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        (
            "cameras:\n  - {id: a, backend: pylon, primary: true}\n",
            "cameras[0] (a).backend must be one of micromanager, opencv, got 'pylon'",
        ),
        (
            "cameras:\n  - {id: a, backend: micromanager, primary: maybe}\n",
            "cameras[0] (a).primary must be true or false, got 'maybe'",
        ),
        (
            "cameras:\n  - {id: a, backend: micromanager, primary: true, fps: fast}\n",
            "cameras[0] (a).fps must be a positive number, got 'fast'",
        ),
        (
            "cameras:\n  - {id: a, backend: micromanager, primary: true,"
            " output: {file_type: gif}}\n",
            "cameras[0] (a).output.file_type must be ome.tiff, mp4 or avi, got 'gif'",
        ),
        ("cameras: {id: a}\n", "'cameras' must be a list of cameras"),
        (
            "cameras:\n  - {id: encoder, backend: micromanager, primary: true}\n",
            "cameras[0].id 'encoder' is reserved",
        ),
        (
            "cameras:\n  - {id: a, backend: micromanager, primary: true}\n"
            "encoder: {type: odometer, development_mode: true}\n",
            "encoder.type must be one of wheel, treadmill, got 'odometer'",
        ),
        (
            "cameras:\n  - {id: a, backend: micromanager, primary: true}\n"
            "encoder: {type: wheel}\n",
            "encoder.port is required unless development_mode is true",
        ),
    ],
)
def test_bad_hardware_values_name_file_and_key(tmp_path, hardware, expected):
    message = error_of(write(tmp_path, hardware))
    assert message.startswith(str(tmp_path / "hardware.yaml") + ": ")
    assert expected in message


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({**CONFIG, "Subjects": {}}, "'Subjects' must be an object with at least one"),
        (
            {**CONFIG, "Configuration": {"duration": "ten"}},
            "Configuration.duration must be a positive number of seconds, got 'ten'",
        ),
        (
            {**CONFIG, "Subjects": {"M1": {"session": [1]}}},
            "Subjects.M1.session must be a string or number, got [1]",
        ),
        ({**CONFIG, "DisplayKeys": "subject"}, "'DisplayKeys' must be a list of names"),
    ],
)
def test_bad_experiment_json_values(tmp_path, config, expected):
    hw = TWO_CAMERAS.format(p1="true", p2="false")
    message = error_of(write(tmp_path, hw, config))
    assert message.startswith(str(tmp_path / "experiment.json") + ": ")
    assert expected in message


def test_bad_syntax_names_file_and_line(tmp_path):
    hw = TWO_CAMERAS.format(p1="true", p2="false")
    bad_yaml = hw.replace("backend: opencv", "backend: [opencv")
    message = error_of(write(tmp_path / "y", bad_yaml))
    assert message.startswith(f"{tmp_path / 'y' / 'hardware.yaml'} line ")
    assert "invalid YAML" in message
    bad_json = json.dumps(CONFIG, indent=2).replace('"JG",', '"JG"')
    message = error_of(write(tmp_path / "j", hw, bad_json))
    assert message.startswith(
        f"{tmp_path / 'j' / 'experiment.json'} line 4: invalid JSON"
    )


def test_unknown_subject_lists_the_known_ones(tmp_path):
    exp = load_experiment(write(tmp_path, TWO_CAMERAS.format(p1="true", p2="false")))
    with pytest.raises(
        ExperimentError,
        match=r"experiment.json: unknown subject 'M9' \(Subjects has: M1\)",
    ):
        exp.subject("M9")


def test_launch_targets(tmp_path):
    hw = TWO_CAMERAS.format(p1="true", p2="false")
    folder = write(tmp_path / "rig", hw, name="experiment.json")
    (folder / "other.json").write_text(json.dumps(CONFIG))  # experiment.json wins
    for target in (folder, folder / "hardware.yaml", folder / "experiment.json"):
        exp = load_experiment(target)
        assert exp.json_path == folder / "experiment.json"
        assert exp.hardware_path == folder / "hardware.yaml"
    two = write(tmp_path / "two", hw, name="a.json")
    (two / "b.json").write_text(json.dumps(CONFIG))
    (two / "settings.json").write_text("{}")  # not an experiment: ignored
    assert "several experiment JSON files (a.json, b.json)" in error_of(two)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "experiment.json").write_text(json.dumps(CONFIG))
    assert error_of(lonely) == f"{lonely}: no hardware.yaml in this folder"
    assert error_of(lonely / "experiment.json") == (
        f"{lonely / 'experiment.json'}: no hardware.yaml next to it"
    )
    assert (
        error_of(tmp_path / "nowhere")
        == f"{tmp_path / 'nowhere'}: no such file or folder"
    )


def test_unknown_keys_are_kept(tmp_path):
    hw = "rig_name: bench-2\n" + TWO_CAMERAS.format(p1="true", p2="false").replace(
        "backend: opencv", "backend: opencv\n    gain_db: 3"
    )
    config = {**CONFIG, "procedure_file": "procedure.py"}
    config["Configuration"] = {**CONFIG["Configuration"], "led": "470nm"}
    exp = load_experiment(write(tmp_path, hw, config))
    assert exp.cameras[1].extra == {"gain_db": 3}
    params = exp.parameters("M1")
    assert params["led"] == "470nm" and params["procedure_file"] == "procedure.py"
    assert params["hardware.rig_name"] == "bench-2" and params["sex"] == "F"


def test_record_experiment_rejects_bad_files_before_writing(tmp_path):
    folder = write(tmp_path / "rig", TWO_CAMERAS.format(p1="true", p2="true"))
    with pytest.raises(ExperimentError, match="several devices have 'primary: true'"):
        record_experiment(folder, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_experiment_directory_is_relative_to_the_json(tmp_path):
    hw = TWO_CAMERAS.format(p1="true", p2="false")
    exp = load_experiment(
        write(tmp_path, hw, {**CONFIG, "experiment_directory": "runs"})
    )
    assert exp.experiment_directory == tmp_path / "runs"
    assert "experiment_directory" not in exp.parameters("M1")
