"""Exact BigTIFFs: a run that ends early, runs until Stop, a kill while finishing.

Every file must hold and declare exactly the frames written (readable with
``tifffile.imread``, mappable with ``tifffile.memmap`` at (n, y, x), no larger on disk
than those frames plus headers), whatever ended the run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tifffile
import useq

from _helpers import (
    SHAPE,
    arrival_indices,
    disk_limit_env,
    journal_entry_lines,
    kill_after_journal,
    kill_hard,
    limit_prologue,
    read_json,
    sim_index,
    timelapse,
    wait_until,
)
from mesofield_napari._platform import system
from mesofield_napari.acquisition import endless_timelapse
from mesofield_napari.data import (
    CustomWriter,
    journal_path,
    recover,
    sidecar_path,
)
from mesofield_napari.data.formats.journal import legacy_payload, read_journal
from mesofield_napari.data.writer.signals import connect_direct
from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pymmcore_plus.experimental.unicore import UniMMCore

FRAME_BYTES = SHAPE[0] * SHAPE[1] * 2
HEADER_BOUND = 8192  # header page + first IFD + description (+ alignment)
IFD_BOUND = 256  # bytes per page's IFD


def _size_bound(frames: int, frame_bytes: int = FRAME_BYTES, planned: int = 0) -> int:
    """Frames plus headers; a planned file keeps its planned chain's IFDs before the
    frames (``tiff_layout``: written first, so NTFS never zero-fills ahead)."""
    return frames * (frame_bytes + IFD_BOUND) + planned * IFD_BOUND + HEADER_BOUND


def _run_until(
    core: UniMMCore,
    writer: CustomWriter,
    events: useq.MDASequence | Iterable[useq.MDAEvent],
    stop_after: int | None,
) -> None:
    """Run ``events`` with ``writer`` attached; press Stop after ``stop_after``."""
    seen = [0]

    def count(*_: Any) -> None:
        seen[0] += 1
        if stop_after is not None and seen[0] == stop_after:
            core.mda.cancel()

    with writer.attached(core):
        connect_direct(core.mda.events.frameReady, count)
        try:
            core.mda.run(events)
        finally:
            core.mda.events.frameReady.disconnect(count)


def _check_frames(
    path: Path, entries: list[dict[str, Any]], camera: SimulatedMesoscopeCamera
) -> np.ndarray:
    data = tifffile.imread(path)
    if data.ndim == 2:  # one frame: tifffile drops the axis, as for upstream's files
        data = data[None]
    for n, entry in enumerate(entries):
        t = entry["mda_event"].get("t", n)
        np.testing.assert_array_equal(data[t], camera.frame(sim_index(entry)))
    return data


def _declared(path: Path) -> str:
    with tifffile.TiffFile(path) as tif:
        return tif.pages.first.description


# ----------------------------------------------------------------- stop early
@pytest.mark.parametrize("ext", [".ome.tiff", ".tif"])
@pytest.mark.parametrize("stop_after", [1, 7, 49])
def test_stopped_run_leaves_exact_file(
    sim_core: UniMMCore,
    camera: SimulatedMesoscopeCamera,
    tmp_path: Path,
    ext: str,
    stop_after: int,
) -> None:
    path = tmp_path / f"stopped{ext}"
    writer = CustomWriter(path)
    _run_until(sim_core, writer, timelapse(50), stop_after)
    writer.raise_if_failed()
    n = writer.frames_written["p0"]
    assert stop_after <= n < 50
    entries = read_json(sidecar_path(path))["p0"]
    assert [e["mda_event"]["t"] for e in entries] == list(range(n))

    _check_frames(path, entries, camera)
    expected = (n, *SHAPE) if n > 1 else SHAPE
    assert tifffile.imread(path).shape == expected
    assert tifffile.memmap(path).shape == expected
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        assert len(tif.pages) == n
        assert tif.is_ome == (".ome." in ext)
    if ".ome." in ext:
        desc = _declared(path)
        assert f'SizeT="{n}"' in desc
        assert f'PlaneCount="{n}"' in desc
    else:
        assert json.loads(_declared(path))["shape"] == list(expected)
    assert n * FRAME_BYTES < path.stat().st_size <= _size_bound(n, planned=50)
    assert writer.position_arrays["p0"].shape[0] == n  # no map past the end


def test_complete_run_is_left_as_planned(sim_core: UniMMCore, tmp_path: Path) -> None:
    path = tmp_path / "full.ome.tiff"
    writer = CustomWriter(path)
    sim_core.mda.run(timelapse(5), output=writer)
    assert tifffile.memmap(path).shape == (5, *SHAPE)
    assert path.stat().st_size <= _size_bound(5, planned=5)


def test_stopped_tz_run_keeps_whole_time_points(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    """t/z: stop inside time point 2 -> 3 whole time points; unacquired planes are
    zeros, and the sidecar says which planes were acquired."""
    path = tmp_path / "tz.ome.tiff"
    writer = CustomWriter(path)
    seq = timelapse(6, z_plan={"range": 2, "step": 1})  # 6 t x 3 z
    _run_until(sim_core, writer, seq, 7)  # t0 z0-2, t1 z0-2, t2 z0 (+ maybe z1)
    n = writer.frames_written["p0"]
    assert 7 <= n < 9
    payload = read_json(sidecar_path(path))
    order = arrival_indices(payload)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "TZYX"
        data = tif.series[0].asarray()
        assert len(tif.pages) == 9
    assert data.shape == (3, 3, *SHAPE)
    assert 'SizeT="3"' in _declared(path) and 'SizeZ="3"' in _declared(path)
    written = set()
    for entry in payload["p0"]:
        ev = entry["mda_event"]
        written.add((ev["t"], ev["z"]))
        np.testing.assert_array_equal(
            data[ev["t"], ev["z"]], camera.frame(order[id(entry)])
        )
    for z in range(3):
        if (2, z) not in written:
            assert not data[2, z].any()
    assert path.stat().st_size <= _size_bound(9, planned=18)


def test_stopped_multi_position_run(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    path = tmp_path / "multi.ome.tiff"
    writer = CustomWriter(path)
    seq = timelapse(10, stage_positions=[useq.Position(z=0), useq.Position(z=5)])
    _run_until(sim_core, writer, seq, 7)  # p0: t0-3, p1: t0-2 (+ maybe t3)
    payload = read_json(sidecar_path(path))
    order = arrival_indices(payload)
    for key in ("p0", "p1"):
        n = writer.frames_written[key]
        file = tmp_path / f"multi_{key}.ome.tiff"
        data = tifffile.imread(file)
        assert data.shape == (n, *SHAPE)
        assert tifffile.memmap(file).shape == (n, *SHAPE)
        for entry in payload[key]:
            np.testing.assert_array_equal(
                data[entry["mda_event"]["t"]], camera.frame(order[id(entry)])
            )
        assert file.stat().st_size <= _size_bound(n, planned=10)


# ----------------------------------------------------------------- until Stop
def test_until_stop_records_until_cancel(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path
) -> None:
    path = tmp_path / "endless.ome.tiff"
    writer = CustomWriter(path)
    _run_until(sim_core, writer, endless_timelapse(core=sim_core), 3000)
    writer.raise_if_failed()
    assert writer.until_stop
    n = writer.frames_written["p0"]
    assert 3000 <= n < 3010
    assert writer.frame_metadatas == {}  # memory does not grow with the run
    entries = read_json(sidecar_path(path))["p0"]
    assert len(entries) == n
    data = _check_frames(path, entries, camera)
    assert data.shape == (n, *SHAPE)
    assert tifffile.memmap(path).shape == (n, *SHAPE)
    assert f'SizeT="{n}"' in _declared(path)
    assert path.stat().st_size <= _size_bound(n)
    assert not journal_path(path).exists()


@pytest.mark.parametrize("ext", [".tif", ".ome.tiff"])
def test_until_stop_option_with_a_planned_sequence(
    sim_core: UniMMCore, camera: SimulatedMesoscopeCamera, tmp_path: Path, ext: str
) -> None:
    """``until_stop=True`` grows the file instead of reserving the whole plan."""
    path = tmp_path / f"grow{ext}"
    writer = CustomWriter(path, until_stop=True)
    _run_until(sim_core, writer, timelapse(100_000), 40)
    n = writer.frames_written["p0"]
    assert 40 <= n < 50
    data = _check_frames(path, read_json(sidecar_path(path))["p0"], camera)
    assert data.shape == (n, *SHAPE)
    assert path.stat().st_size <= _size_bound(n)


def test_until_stop_single_frame(sim_core: UniMMCore, tmp_path: Path) -> None:
    """Stopped after the first snap: a one-page file (unsequenced events)."""
    path = tmp_path / "one.tif"
    writer = CustomWriter(path)
    _run_until(sim_core, writer, endless_timelapse(), 1)
    assert writer.frames_written == {"p0": 1}
    assert tifffile.imread(path).shape == SHAPE
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1
    assert path.stat().st_size <= _size_bound(1)


def test_endless_timelapse_events() -> None:
    events = endless_timelapse(0.5)
    first = [next(events) for _ in range(3)]
    assert [e.index["t"] for e in first] == [0, 1, 2]
    assert [e.min_start_time for e in first] == [0.0, 0.5, 1.0]


# ----------------------------------------------------------------- sidecar
def test_sidecar_streamed_with_the_legacy_layout(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    """Streamed from the journal, byte for byte what ``json.dump`` of the whole
    payload gave: ``{"p0": [...], "p1": [...]}``, default separators, no indent."""
    path = tmp_path / "layout.ome.tiff"
    writer = CustomWriter(path)
    seq = timelapse(3, stage_positions=[useq.Position(z=0), useq.Position(z=5)])
    sim_core.mda.run(seq, output=writer)
    raw = sidecar_path(path).read_text(encoding="utf-8")
    payload = json.loads(raw)
    assert list(payload) == ["p0", "p1"]
    assert raw == json.dumps(payload)
    assert writer.frame_metadatas == {}


def test_sidecar_equals_the_journal_payload(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    src = tmp_path / "src.ome.tiff"
    writer = CustomWriter(src)
    kept: list[bytes] = []

    def copy_journal(*_: Any) -> None:
        if writer.stats.frames_received == 8:
            wait_until(lambda: writer.stats.frames_written >= 8, 10)
            kept.append(journal_path(src).read_bytes())

    with writer.attached(sim_core):
        connect_direct(sim_core.mda.events.frameReady, copy_journal)
        try:
            sim_core.mda.run(timelapse(8))
        finally:
            sim_core.mda.events.frameReady.disconnect(copy_journal)
    (tmp_path / "j.jsonl").write_bytes(kept[0])
    contents = read_journal(tmp_path / "j.jsonl")
    assert list(contents.layouts) == ["p0"]
    expected = json.dumps(legacy_payload("mda", contents.entries))
    assert sidecar_path(src).read_text(encoding="utf-8") == expected


# ----------------------------------------------------------------- recover
@pytest.mark.parametrize("content", ["[]", '"x"', "3"])
def test_recover_sidecar_that_is_not_an_object(
    sim_core: UniMMCore, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "odd.ome.tiff"
    writer = CustomWriter(path)
    sim_core.mda.run(timelapse(3), output=writer)
    good = sidecar_path(path).read_bytes()
    # no journal: a clear one-line error naming the file
    sidecar_path(path).write_text(content, encoding="utf-8")
    with pytest.raises(FileNotFoundError) as info:
        recover(path)
    assert str(info.value) == (
        "no frame journal for odd.ome.tiff and its sidecar "
        "odd.ome.tiff_frame_metadata.json is corrupt (not a JSON object); "
        "nothing to recover"
    )
    # with a journal: rebuilt from it
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    journal_path(rebuilt / path.name).write_text(
        '{"format":"mesofield-frame-journal","version":1,"mode":"mda"}\n'
        + "".join(
            json.dumps({"meta": e, "pos": "p0"}) + "\n" for e in json.loads(good)["p0"]
        ),
        encoding="utf-8",
    )
    sidecar_path(rebuilt / path.name).write_text(content, encoding="utf-8")
    report = recover(rebuilt / path.name)
    assert report.recovered
    assert report.frames == 3
    assert read_json(sidecar_path(rebuilt / path.name)) == json.loads(good)


def test_recover_message_without_sidecar_or_journal(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        recover(tmp_path / "ghost.ome.tiff")
    assert str(info.value) == (
        "no frame journal for ghost.ome.tiff and no sidecar "
        "ghost.ome.tiff_frame_metadata.json; nothing to recover"
    )


# ----------------------------------------------------------------- killed while finishing
FINISH_CHILD = """
import sys, useq
from mesofield_napari.devices.sim_camera import create_sim_core
from mesofield_napari.data import CustomWriter
from mesofield_napari.acquisition import endless_timelapse
path, mode, stop = sys.argv[1], sys.argv[2], int(sys.argv[3])
core = create_sim_core((48, 64), exposure_ms=0)
writer = CustomWriter(path)
seen = [0]
def count(*_):
    seen[0] += 1
    if seen[0] == stop:
        core.mda.cancel()
events = (useq.MDASequence(time_plan={"interval": 0, "loops": 400})
          if mode == "planned" else endless_timelapse(core=core))
with writer.attached(core):
    core.mda.events.frameReady.connect(count)
    core.mda.run(events)
print("FINISHED", flush=True)
"""

POINTS = [
    "tail_started",
    "tail_synced",
    "switched",
    "truncated",
    "sidecar_tmp",
    "sidecar_written",
]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["planned", "until_stop"])
@pytest.mark.parametrize("point", POINTS)
def test_kill_while_finishing_then_recover(
    tmp_path: Path, point: str, mode: str
) -> None:
    path = tmp_path / "kill.ome.tiff"
    marker = tmp_path / "paused"
    env = {
        **os.environ,
        "MESOFIELD_NAPARI_FINISH_PAUSE": f"{point}:{marker}",
        "PYMM_SIGNALS_BACKEND": "psygnal",
    }
    log = tmp_path / "child.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", FINISH_CHILD, str(path), mode, "150"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=tmp_path,
            env=env,
        )
        try:
            wait_until(
                lambda: marker.exists() or proc.poll() is not None, 60, what=point
            )
            assert proc.poll() is None, log.read_text()
            kill_hard(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    jpath = journal_path(path)
    assert jpath.exists()  # killed before the journal went
    n = journal_entry_lines(jpath)
    assert 150 <= n < 400

    report = recover(path)
    assert report.frames == n
    assert not jpath.exists()
    entries = read_json(sidecar_path(path))["p0"]
    assert [e["mda_event"]["t"] for e in entries] == list(range(n))
    camera = SimulatedMesoscopeCamera(SHAPE, 0, 12)  # same scene (seed 0)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.is_ome
        assert len(tif.pages) == n
        assert re.search(rf'SizeT="{n}"', tif.pages.first.description)
    data = _check_frames(path, entries, camera)
    assert data.shape == (n, *SHAPE)
    assert tifffile.memmap(path).shape == (n, *SHAPE)
    assert path.stat().st_size <= _size_bound(
        n, planned=400 if mode == "planned" else 0
    )
    # a second recover finds a complete recording and changes nothing
    before = path.read_bytes()
    assert "complete" in recover(path).message
    assert path.read_bytes() == before


# ----------------------------------------------------------------- a full disk
DISK_CHILD = (
    limit_prologue(1)
    + """
import json, os
limit, target = int(sys.argv[1]), sys.argv[2]
from mesofield_napari.devices.sim_camera import create_sim_core
from mesofield_napari.data import CustomWriter, RecordingError
from mesofield_napari.acquisition import endless_timelapse
core = create_sim_core((48, 64), exposure_ms=0)
writer = CustomWriter(target)
with writer.attached(core):
    core.mda.events.frameReady.connect(
        lambda *a: writer.error is not None and core.mda.cancel())
    core.mda.run(endless_timelapse(core=core))
try:
    writer.raise_if_failed()
    raised = None
except RecordingError as exc:
    raised = str(exc)
print(json.dumps({"error": str(writer.error), "raised": raised,
                  "is_recording_error": isinstance(writer.error, RecordingError),
                  "written": writer.frames_written, "stats": writer.stats.as_dict()}))
"""
)


@pytest.mark.slow
def test_until_stop_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    """The TIFF reaches the size limit: a RecordingError, no SIGBUS/SIGXFSZ, every
    frame before it kept; the journal is small enough, so the run still finishes."""
    path = tmp_path / "full.ome.tiff"
    limit = 2_000_000  # ~320 frames of 48x64 uint16
    proc = subprocess.run(
        [sys.executable, "-c", DISK_CHILD, str(limit), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={
            **os.environ,
            "PYMM_LOG_FILE": str(tmp_path.parent / "pymm.log"),
            "PYMM_SIGNALS_BACKEND": "psygnal",
            **disk_limit_env(limit),
        },
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["is_recording_error"], out
    # the reservation refuses the next chunk (Linux posix_fallocate, Windows
    # FileAllocationInfo), or, where a reservation does not count against
    # RLIMIT_FSIZE (macOS F_PREALLOCATE), the write itself: one clear line either way
    assert re.match(
        r"disk full: cannot (grow|write frame \d+ of) full.ome.tiff", out["error"]
    )
    assert "full.ome.tiff" in out["raised"]
    n = out["written"]["p0"]
    assert 100 < n < 330
    assert out["stats"]["frames_written"] == n

    camera = SimulatedMesoscopeCamera(SHAPE, 0, 12)
    if system() == "macos":
        # RLIMIT_FSIZE (unlike a full disk) also refuses the finishing tail that
        # F_PREALLOCATE reserved: the journal keeps everything for recover
        assert not sidecar_path(path).exists()
        assert recover(path).frames == n
    entries = read_json(sidecar_path(path))["p0"]  # finished despite the full disk
    assert len(entries) == n
    data = _check_frames(path, entries, camera)
    assert data.shape == (n, *SHAPE)
    assert tifffile.memmap(path).shape == (n, *SHAPE)
    if system() != "macos":  # finished under the limit (macOS: by recover, above)
        assert path.stat().st_size <= limit
    assert "complete" in recover(path).message


@pytest.mark.slow
def test_until_stop_killed_mid_run_then_recover(tmp_path: Path) -> None:
    path = tmp_path / "grow.tif"
    child = FINISH_CHILD.replace("stop = sys.argv", "_ = sys.argv").replace(
        "if seen[0] == stop:", "if False:"
    )
    with open(tmp_path / "child.log", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", child, str(path), "until_stop", "0"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=tmp_path,
            env={**os.environ, "PYMM_SIGNALS_BACKEND": "psygnal"},
        )
        kill_after_journal(
            proc,
            lambda: journal_path(path) if journal_path(path).exists() else None,
            500,
        )
    assert path.stat().st_size > 500 * FRAME_BYTES  # reserved ahead, not yet exact
    n = journal_entry_lines(journal_path(path))
    report = recover(path)
    assert report.recovered and report.frames == n
    camera = SimulatedMesoscopeCamera(SHAPE, 0, 12)
    data = _check_frames(path, read_json(sidecar_path(path))["p0"], camera)
    assert data.shape == (n, *SHAPE)
    assert json.loads(_declared(path))["shape"] == [n, *SHAPE]
    assert path.stat().st_size <= _size_bound(n)
