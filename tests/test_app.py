"""The ``mesofield-napari gui`` app: argument checks in-process, one real scripted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tifffile

from mesofield_napari.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gui", "--record-frames", "5"], "--record-frames needs --out DIR"),
        (["gui", "--quit"], "--quit only makes sense with --record-frames"),
        (["gui", "--record-frames", "0", "--out", "x"], "must be at least 1"),
        (
            ["gui", "--record-frames", "5", "--out", "{tmp}", "--screenshot", "a.jpg"],
            "--screenshot must be a .png file",
        ),
        (["gui", "--config", "{tmp}/missing.cfg"], "configuration not found"),
    ],
)
def test_bad_gui_arguments_are_one_line_errors(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_scripted_gui_records_through_the_widget_and_saves_a_screenshot(tmp_path):
    out, shot = tmp_path / "runs", tmp_path / "shot.png"
    # the user left the recorder in experiment mode last time
    settings = tmp_path / "settings.ini"
    settings.write_text("[General]\nmode=experiment\n")
    env = {
        **os.environ,
        # offline: fail icon downloads at once (connection refused) instead of DNS
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "MESOFIELD_NAPARI_SETTINGS": str(settings),
    }
    cmd = [
        sys.executable, "-m", "mesofield_napari", "gui",
        "--record-frames", "25", "--out", str(out), "--size", "64x80",
        "--screenshot", str(shot), "--quit", "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert result["ok"] and result["frames"] == 25 and result["errors"] == []
    (tiff,) = out.rglob("*.ome.tiff")
    assert tifffile.imread(tiff).shape == (25, 64, 80)
    (manifest,) = out.rglob("*_manifest.json")
    assert json.loads(manifest.read_text())["acquisition_complete"] is True
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 400
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # a real window, not blank
    # a scripted demo never changes the user's saved settings
    assert settings.read_text() == "[General]\nmode=experiment\n"


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "experiment")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gui", "--experiment", "{tmp}/nowhere"], "nowhere: no such file or folder"),
        (["gui", "--experiment", "{tmp}"], "no hardware.yaml in this folder"),
        (
            ["gui", "--experiment", EXAMPLE, "--subject", "M999", "--quit"],
            "unknown subject 'M999' (Subjects has: M042)",
        ),
        (
            ["gui", "--experiment", EXAMPLE, "--record-frames", "5", "--out", "{tmp}"],
            "--experiment and --record-frames are two modes; give one",
        ),
        (
            ["gui", "--experiment", EXAMPLE, "--config", "{tmp}/x.cfg"],
            "--config is for the single-camera recorder",
        ),
        (["gui", "--duration", "3"], "--duration needs --experiment"),
        (["gui", "--experiment", EXAMPLE, "--duration", "0"], "must be > 0, got 0"),
        (["gui", "--experiment", "{tmp}/bad/hardware.yaml"], "invalid YAML"),
    ],
)
def test_bad_gui_experiment_arguments_are_one_line_errors(
    argv, message, tmp_path, capsys
):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "hardware.yaml").write_text("cameras: [\n")
    (tmp_path / "bad" / "experiment.json").write_text('{"Subjects": {"A": {}}}')
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_scripted_gui_records_an_experiment_through_the_panel(tmp_path):
    out, shot = tmp_path / "demo-output", tmp_path / "demo-output" / "experiment.png"
    env = {
        **os.environ,
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "MESOFIELD_NAPARI_SETTINGS": str(tmp_path / "settings.ini"),
    }
    cmd = [
        sys.executable, "-m", "mesofield_napari", "gui",
        "--experiment", EXAMPLE, "--duration", "1", "--out", str(out),
        "--screenshot", str(shot), "--quit", "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert result["ok"] and result["errors"] == [] and result["subject"] == "M042"
    frames = {f["device_id"]: f["frames"] for f in result["files"]}
    assert frames["mesoscope"] == 50 and frames["thorcam"] == 30  # 1 s at 50 / 30 fps
    assert frames["encoder"] > 0
    (tiff,) = out.rglob("*_meso.ome.tiff")
    assert tifffile.imread(tiff).shape == (50, 512, 512)
    (manifest,) = out.rglob("*_manifest.json")
    assert json.loads(manifest.read_text())["acquisition_complete"] is True
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 400
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # a real window, not blank
    assert result["screenshot"] == str(shot)
