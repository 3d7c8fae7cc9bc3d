"""Saved settings hold absolute paths; demos never change them; an experiment's output
is its JSON's ``experiment_directory`` or a clear refusal, never the config's folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mesofield_napari._widgets import _live
from mesofield_napari._widgets.experiment import ExperimentPanel, default_output
from mesofield_napari._widgets.recorder import RecorderWidget
from mesofield_napari.experiment import ExperimentError, ExperimentRun, load_experiment

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "experiment"


@pytest.fixture
def rig(tmp_path) -> Path:
    target = tmp_path / "rig"
    shutil.copytree(EXAMPLE, target)
    return target


@pytest.fixture
def settings_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "settings.ini"
    monkeypatch.setenv(_live.SETTINGS_ENV, str(path))
    return path


def test_experiment_without_a_directory_is_refused_not_written_beside_the_config(rig):
    exp = load_experiment(rig)
    assert exp.experiment_directory is None
    with pytest.raises(ExperimentError, match="experiment_directory"):
        ExperimentRun(exp, duration=1)
    assert sorted(p.name for p in rig.iterdir()) == sorted(
        p.name for p in EXAMPLE.iterdir()
    )  # nothing created beside the config files
    assert default_output(exp) is None


def test_experiment_directory_is_the_default_output(rig):
    cfg = json.loads((rig / "experiment.json").read_text())
    cfg["experiment_directory"] = "../EXP"
    (rig / "experiment.json").write_text(json.dumps(cfg))
    exp = load_experiment(rig)
    run = ExperimentRun(exp, duration=1)
    assert run.root == (rig / "../EXP").resolve() or run.root == rig / "../EXP"
    assert default_output(exp) == exp.experiment_directory


def test_panel_asks_for_an_output_when_the_json_has_none(
    make_napari_viewer, rig, settings_file
):
    panel = ExperimentPanel(make_napari_viewer())
    assert panel.load(rig)
    assert panel.output_edit.text() == ""
    problems = panel.problems()
    assert any("experiment_directory" in p for p in problems), problems
    assert not panel.record_button.isEnabled()


def test_saved_paths_are_absolute(
    make_napari_viewer, rig, settings_file, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer()
    recorder = RecorderWidget(viewer)
    recorder.root_edit.setText("demo-output")
    recorder._save_settings()
    panel = ExperimentPanel(viewer)
    panel.target_edit.setText(os.path.relpath(rig))
    panel.output_edit.setText("rel/exp")
    panel._save_settings()
    store = _live.settings_store()
    assert store.value("output_root") == str(tmp_path / "demo-output")
    assert store.value("experiment/target") == str(rig)
    assert store.value("experiment/output") == str(tmp_path / "rel" / "exp")


@pytest.mark.slow
def test_scripted_demo_leaves_the_users_settings_as_they_were(tmp_path):
    settings = tmp_path / "settings.ini"
    before = "[General]\nmode=experiment\noutput_root=/data/mine\n"
    settings.write_text(before)
    env = {
        **os.environ,
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        _live.SETTINGS_ENV: str(settings),
    }
    cmd = [
        sys.executable, "-m", "mesofield_napari", "gui", "--record-frames", "5",
        "--out", "demo-output", "--size", "32x32", "--quit", "--json",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((tmp_path / "demo-output").rglob("*.ome.tiff"))
    assert settings.read_text() == before
