"""``mesofield-napari export``: in-process through ``main`` plus one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _synthetic import traced_stack, write_recording
from mesofield_napari.cli import main


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    func = tmp_path / "run" / "func"
    for i in range(2):
        write_recording(func / f"cam{i}.ome.tiff", traced_stack(16, seed=i))
    return tmp_path / "run"


def test_export_dff_folder_exit_0(run_dir: Path, capsys) -> None:
    code = main(
        ["export", "dff", str(run_dir), "--method", "pixelwise", "--n-f0-samples", "5"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    files = sorted((run_dir / "processed").iterdir())
    assert [f.name for f in files] == [
        f"cam{i}_meso-pixelwise-trace.csv" for i in range(2)
    ]
    assert "2 of 2 recording(s) exported" in out
    assert "Traceback" not in err


def test_export_mean_trace_json_roi(run_dir: Path, tmp_path: Path, capsys) -> None:
    target = run_dir / "func" / "cam0.ome.tiff"
    code = main(
        [
            "export",
            "mean-trace",
            str(target),
            "--roi",
            "0",
            "10",
            "5",
            "20",
            "--out",
            str(tmp_path / "o"),
            "--json",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    summary = json.loads(out)
    assert summary["ok"] and len(summary["outputs"]) == 1
    rows = np.loadtxt(summary["outputs"][0], delimiter=",", skiprows=1)
    expected = traced_stack(16, seed=0)[:, 0:10, 5:20].astype(float).mean(axis=(1, 2))
    np.testing.assert_allclose(rows[:, 1], expected, rtol=1e-8)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["export", "video", "{run}", "--method", "pixelwise"],
            "--method does not apply",
        ),
        (["export", "dff", "{run}/nothing"], "no such file or folder"),
        (["export", "video", "{run}", "--contrast", "5", "1"], "LOW < HIGH"),
        (["export", "dff", "{run}", "--bogus"], "unrecognized arguments"),
        (["export", "dff", "{run}", "--workers", "0"], "at least 1"),
        (["export", "dff", "{run}", "--percentile", "120"], "0..100"),
        (["export", "zip", "{run}"], "invalid choice"),
    ],
)
def test_bad_arguments_one_line_exit_2(run_dir: Path, capsys, argv, message) -> None:
    argv = [a.replace("{run}", str(run_dir)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mesofield-napari") and "error:" in lines[0]
    assert message in err


def test_failure_reported_others_written(run_dir: Path, capsys) -> None:
    bad = run_dir / "func" / "bad.ome.tiff"
    bad.write_bytes(b"not a tiff at all")
    (run_dir / "func" / "bad.ome.tiff_frame_metadata.json").write_text("{}")
    code = main(["export", "mean-trace", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 2 and "2 of 3 recording(s) exported" in out
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "bad.ome.tiff" in errors[0]
    assert "Traceback" not in err
    assert len(list((run_dir / "processed").iterdir())) == 2
    # a second run refuses to overwrite; --overwrite replaces
    assert main(["export", "mean-trace", str(run_dir / "func" / "cam0.ome.tiff")]) == 2
    assert "already exists" in capsys.readouterr().err
    code = main(
        ["export", "mean-trace", str(run_dir / "func" / "cam0.ome.tiff"), "--overwrite"]
    )
    assert code == 0


@pytest.mark.slow
def test_python_m_export_video(run_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mesofield_napari",
            "export",
            "video",
            str(run_dir),
            "--ext",
            ".avi",
            "--fourcc",
            "MJPG",
            "--out",
            str(tmp_path / "v"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert sorted(Path(p).name for p in summary["outputs"]) == ["cam0.avi", "cam1.avi"]
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- 8-bit sources
@pytest.fixture
def mp4_run(tmp_path: Path) -> Path:
    """A run with an 8-bit MP4 (what ``record --writer mp4`` makes), values ~120..200."""
    from mesofield_napari.data import CV2Writer

    path = tmp_path / "run" / "beh" / "pupil.mp4"
    path.parent.mkdir(parents=True)
    writer = CV2Writer(path, fps=20, fourcc="mp4v")
    writer.begin(64, 48, is_color=False)
    rng = np.random.default_rng(0)
    for i in range(12):
        frame = np.full((48, 64), 120 + 6 * i, np.uint8)
        frame[8:24, 8:24] += rng.integers(0, 10, (16, 16), dtype=np.uint8)
        writer.add_frame(frame)
    writer.finish()
    return path


def test_video_contrast_outside_8bit_range_skips_it(mp4_run, tmp_path, capsys):
    """A contrast outside the source's dtype skips that recording (nothing else to
    export here: exit 2) and the JSON summary says why."""
    out = tmp_path / "v"
    argv = ["export", "video", str(mp4_run), "--contrast", "100", "4000"]
    code = main([*argv, "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    (skipped,) = json.loads(captured.out)["skipped"]
    assert skipped["path"] == str(mp4_run)
    assert skipped["reason"] == (
        "pupil.mp4: contrast 100..4000 is outside its uint8 range (0..255)"
    )
    assert not out.exists() or not any(out.iterdir())
    # within the range it works
    argv = ["export", "video", str(mp4_run), "--contrast", "100", "250"]
    code = main([*argv, "--fourcc", "mp4v", "--fps", "20", "--out", str(out)])
    assert code == 0, capsys.readouterr().err


def test_video_contrast_outside_8bit_range_is_one_stderr_line(
    mp4_run, tmp_path, capsys
):
    out = tmp_path / "v"
    argv = ["export", "video", str(mp4_run), "--contrast", "100", "4000"]
    main([*argv, "--out", str(out)])
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if "4000" in line]
    assert len(lines) == 1, err
    assert "pupil.mp4: contrast 100..4000 is outside its uint8 range (0..255)" in err


def read_dff(path: Path) -> np.ndarray:
    # Slice,Mean,time_s: Mean is the ΔF/F
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=1)


def test_dff_on_8bit_video_does_not_subtract_the_16bit_offset(
    mp4_run, tmp_path, capsys
):
    def dff(*extra: str) -> tuple[np.ndarray, str]:
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        code = main(["export", "dff", str(mp4_run), "--out", str(out), *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        (csv,) = out.glob("*.csv")
        return read_dff(csv), captured.out

    default, said = dff()
    assert "warning: pupil.mp4: 8-bit source, camera offset not applied" in said
    zero, said0 = dff("--camera-offset", "0")
    assert "camera offset" not in said0
    np.testing.assert_allclose(default, zero)
    hundred, said100 = dff("--camera-offset", "100")  # given explicitly: applied
    assert "camera offset" not in said100
    assert not np.allclose(hundred, zero)


def test_no_progress_bar_when_stderr_is_not_a_terminal(run_dir: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mesofield_napari",
            "export",
            "mean-trace",
            str(run_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and proc.stderr == ""
