"""The package installs as a napari plugin and exposes the writers where scripts look."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import npe2

ROOT = Path(__file__).resolve().parents[1]


def test_package_manifest_is_a_real_file_equal_to_the_top_level_one():
    """A git symlink checks out on Windows (core.symlinks=false, the default) as a
    17-byte text file, and the plugin then does not register: a real copy."""
    packaged = ROOT / "src" / "mesofield_napari" / "napari.yaml"
    assert not packaged.is_symlink()
    assert packaged.read_bytes() == (ROOT / "napari.yaml").read_bytes()
    assert b"\r" not in packaged.read_bytes()  # the same bytes from every checkout


def test_manifest_name_matches_distribution_and_validates():
    (ep,) = [
        e for e in entry_points(group="napari.manifest") if e.name == "mesofield-napari"
    ]
    manifest = npe2.PluginManifest.from_distribution("mesofield-napari")
    assert manifest.name == "mesofield-napari" == ep.name
    result = subprocess.run(
        [str(Path(sys.executable).with_name("npe2")), "validate", "mesofield-napari"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        # npe2 prints "✔", which a Windows (cp1252) pipe cannot encode
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_writers_importable_from_package_and_data():
    import mesofield_napari
    from mesofield_napari import CustomWriter, CV2Writer
    from mesofield_napari.data import CustomWriter as CW2
    from mesofield_napari.data import CV2Writer as CV2

    assert CustomWriter is CW2 and CV2Writer is CV2
    assert "CustomWriter" in mesofield_napari.__all__


def test_importing_the_package_is_lazy():
    code = (
        "import sys, mesofield_napari; "
        "print('pymmcore_plus' in sys.modules, 'cv2' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]


def test_console_script_and_module_entry_point_agree():
    script = Path(sys.executable).with_name("mesofield-napari")
    for cmd in (
        [str(script), "--help"],
        [sys.executable, "-m", "mesofield_napari", "--help"],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert result.returncode == 0
        for sub in ("record", "recover", "inspect", "gui"):
            assert sub in result.stdout
