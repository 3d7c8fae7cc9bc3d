"""Hostile files in a run folder (issue 21): FIFOs, devices, endless and huge files.

A run folder is input like any other. A FIFO in place of a sidecar, journal, notes
file, manifest or video must not block ``inspect``, ``open_recording`` or the napari
reader (``npe2.read``); a notes file or journal linked to ``/dev/zero`` must not eat
memory; a huge line must not be read whole. Whatever could hang runs in a subprocess
with a time-out, so a regression fails instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.data import journal_path, open_recording, sidecar_path
from mesofield_napari.data.formats.frameindex import scan_journal, scan_sidecar
from mesofield_napari.data.formats.journal import iter_journal
from mesofield_napari.data.formats.safe_open import (
    MAX_FILE_BYTES,
    MAX_LINE_BYTES,
    FileTooLargeError,
    NotRegularFileError,
    bounded_lines,
    open_regular,
    read_text,
)
from mesofield_napari.data.manager import RunManager

if TYPE_CHECKING:
    from pymmcore_plus.experimental.unicore import UniMMCore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs are POSIX")
SRC = str(Path(__file__).parents[1] / "src")
FRAMES = 3

PROBE = r"""
import json, sys, warnings
op, path = sys.argv[1], sys.argv[2]
out = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        if op == "open":
            from mesofield_napari.data import open_recording
            rec = open_recording(path)
            out = {"frames": rec.frames, "warnings": rec.warnings, "notes": rec.notes}
        elif op == "reader":
            import npe2
            npe2.PluginManager.instance().discover()
            layers = npe2.read([path], plugin_name="mesofield-napari", stack=False)
            meta = [m["metadata"]["mesofield"] for _, m, _ in layers]
            out = {"layers": len(layers), "warnings": [w for m in meta for w in m["warnings"]]}
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC}


def probe(op: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, op, str(path)],
        capture_output=True,
        text=True,
        timeout=120,  # a FIFO opened for reading blocks forever: this fails instead
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def inspect(path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "mesofield_napari", "inspect", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    summary = json.loads(proc.stdout)
    # inspect's exit code says whether what it read is complete
    assert proc.returncode == (0 if summary["complete"] else 2), proc.stderr[-3000:]
    return summary


def recorded_run(core: UniMMCore, root: Path) -> RunManager:
    """A real finished run: a TIFF, an MP4 (both with sidecars), notes, manifest."""
    from mesofield_napari.data import CV2Writer

    run = RunManager(root, "M1", 1, "wf").start()
    run.add_note("hello")
    tiff = run.writer_for("meso", "tiff")
    video = run.writer_for("pupil", "mp4", fourcc="mp4v", fps=20, bit_depth=12)
    assert isinstance(video, CV2Writer)
    assert record(core, [tiff, video], timelapse(FRAMES)).ok
    run.stop()
    return run


def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def data_files(run: RunManager) -> tuple[Path, Path]:
    tiff, video = (w.files[0] for w in run.writers)
    return tiff, video


# ---------------------------------------------------------------- FIFOs
def test_a_fifo_sidecar_opens_from_the_data_file_with_a_warning(sim_core, tmp_path):
    run = recorded_run(sim_core, tmp_path)
    tiff, _ = data_files(run)
    fifo(sidecar_path(tiff))
    reason = (
        f"cannot read sidecar {sidecar_path(tiff).name}: not a regular file (a FIFO)"
    )
    opened = probe("open", tiff)
    assert opened["frames"] == FRAMES and reason in opened["warnings"]
    read = probe("reader", tiff)
    assert read["layers"] == 1 and reason in read["warnings"]
    (summary,) = [
        r for r in inspect(run.run_dir)["recordings"] if r["path"] == str(tiff)
    ]
    assert summary["complete"] is False and reason in summary["problems"]


def test_a_fifo_journal_is_a_clear_problem(sim_core, tmp_path):
    run = recorded_run(sim_core, tmp_path)
    tiff, _ = data_files(run)
    sidecar_path(tiff).unlink()
    fifo(journal_path(tiff))
    reason = (
        f"unreadable journal: {journal_path(tiff).name}: not a regular file (a FIFO)"
    )
    assert reason in probe("open", tiff)["warnings"]
    assert reason in probe("reader", tiff)["warnings"]
    (summary,) = [
        r for r in inspect(run.run_dir)["recordings"] if r["path"] == str(tiff)
    ]
    assert reason in summary["problems"]


def test_a_fifo_notes_file_is_said_not_read(sim_core, tmp_path):
    run = recorded_run(sim_core, tmp_path)
    tiff, _ = data_files(run)
    fifo(run.notes_path)
    reason = f"cannot read notes {run.notes_path.name}: not a regular file (a FIFO)"
    opened = probe("open", tiff)
    assert opened["notes"] == [] and reason in opened["warnings"]
    assert probe("reader", tiff)["layers"] == 1
    summary = inspect(run.run_dir)
    assert reason in summary["errors"] and summary["frames"] == 2 * FRAMES


def test_a_fifo_video_is_refused_at_once(sim_core, tmp_path):
    run = recorded_run(sim_core, tmp_path)
    _, video = data_files(run)
    fifo(video)
    error = f"NotRegularFileError: {video}: not a regular file (a FIFO)"
    assert probe("open", video) == {"error": error}
    assert probe("reader", video) == {"error": error}
    summary = inspect(run.run_dir)
    (rec,) = [r for r in summary["recordings"] if r["path"] == str(video)]
    assert (
        rec["frames"] == 0
        and f"{video}: not a regular file (a FIFO)" in (rec["problems"])
    )
    assert summary["frames"] == FRAMES  # the TIFF still counts


def test_a_fifo_manifest_is_a_corrupt_manifest(sim_core, tmp_path):
    run = recorded_run(sim_core, tmp_path)
    fifo(run.manifest_path)
    summary = inspect(run.run_dir)
    assert summary["complete"] is False
    assert (
        f"corrupt manifest {run.manifest_path.name}: {run.manifest_path}: not a "
        "regular file (a FIFO)" in summary["errors"]
    )


# ---------------------------------------------------------------- endless files
def test_notes_and_journal_linked_to_dev_zero(sim_core, tmp_path):
    run = recorded_run(sim_core, tmp_path)
    tiff, _ = data_files(run)
    run.notes_path.unlink()
    run.notes_path.symlink_to("/dev/zero")
    sidecar_path(tiff).unlink()
    journal_path(tiff).symlink_to("/dev/zero")
    opened = probe("open", tiff)
    assert (
        f"cannot read notes {run.notes_path.name}: not a regular file "
        "(a character device)" in opened["warnings"]
    )
    assert (
        f"unreadable journal: {journal_path(tiff).name}: not a regular file "
        "(a character device)" in opened["warnings"]
    )
    assert opened["frames"] == FRAMES  # frames from the file itself


def test_an_oversized_notes_file_is_refused(sim_core, tmp_path):
    run = recorded_run(sim_core, tmp_path)
    tiff, _ = data_files(run)
    with open(run.notes_path, "r+b") as fh:  # sparse: no disk used
        fh.truncate(MAX_FILE_BYTES + 1)
    rec = open_recording_quietly(tiff)
    assert (
        f"cannot read notes {run.notes_path.name}: {MAX_FILE_BYTES + 1} bytes is too "
        f"large for a metadata file (at most {MAX_FILE_BYTES})" in rec.warnings
    )


def open_recording_quietly(path: Path):
    with pytest.warns(UserWarning):
        return open_recording(path)


def _journal_with_a_huge_line(path: Path, size: int) -> None:
    header = {"format": "mesofield-frame-journal", "version": 1, "mode": "mda"}
    with open(path, "wb") as fh:
        fh.write(json.dumps(header).encode() + b"\n")
        fh.write(b'{"meta": {"runner_time_ms": 0.0}}\n')
        fh.seek(fh.tell() + size)  # a hole of NUL bytes: one line, no newline
        fh.write(b'\n{"meta": {"runner_time_ms": 5.0}}\n')


@pytest.mark.parametrize("reader", ["scan_journal", "iter_journal"])
def test_a_huge_journal_line_is_skipped_in_bounded_memory(tmp_path, reader):
    path = tmp_path / "x.ome.tiff_frame_metadata.jsonl"
    _journal_with_a_huge_line(path, 6 * MAX_LINE_BYTES)
    tracemalloc.start()
    try:
        if reader == "scan_journal":
            index = scan_journal(path)
            frames, bad = index.counts["p0"], index.bad_lines
        else:
            kinds = [kind for kind, _ in iter_journal(path)]
            frames, bad = kinds.count("frame"), kinds.count("bad")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (frames, bad) == (2, 1)
    # one bounded piece at a time (the line is 6 x the cap; it was read whole)
    assert peak < 2.5 * MAX_LINE_BYTES, f"peak {peak / 2**20:.0f} MiB"


def test_a_huge_sidecar_value_is_a_clear_error(tmp_path):
    path = tmp_path / "x.ome.tiff_frame_metadata.json"
    path.write_text('{"p0": [{"x": "' + "a" * (MAX_LINE_BYTES + 2**20) + '"}]}')
    with pytest.raises(ValueError, match="a value longer than"):
        scan_sidecar(path)


# ---------------------------------------------------------------- the helper
def test_safe_open_refuses_what_is_not_a_regular_file(tmp_path):
    for target, kind in [
        (fifo(tmp_path / "f"), "a FIFO"),
        (Path("/dev/null"), "a character device"),
        (tmp_path, "a folder"),
    ]:
        with pytest.raises(NotRegularFileError) as info:
            open_regular(target)
        assert str(info.value) == f"{target}: not a regular file ({kind})"
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 11)
    with pytest.raises(
        FileTooLargeError,
        match=r"11 bytes is too large for a metadata file \(at most 10\)$",
    ):
        read_text(big, 10)
    assert read_text(big, 11) == "x" * 11
    lines = tmp_path / "lines"
    lines.write_bytes(b"a\n" + b"b" * 25 + b"\nc")
    with open_regular(lines) as fh:
        assert list(bounded_lines(fh, 10)) == [b"a\n", None, b"c"]


def test_recover_of_a_fifo_journal_is_a_prompt_error(sim_core, tmp_path):
    run = recorded_run(sim_core, tmp_path)
    tiff, _ = data_files(run)
    sidecar_path(tiff).unlink()
    fifo(journal_path(tiff))
    proc = subprocess.run(
        [sys.executable, "-m", "mesofield_napari", "recover", str(tiff)],
        capture_output=True,
        text=True,
        timeout=120,  # the journal readers used to block on the FIFO forever
        env=_env(),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"mesofield-napari recover: error: {journal_path(tiff)}: not a regular file "
        "(a FIFO)"
    )
