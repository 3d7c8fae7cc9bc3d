"""Batched journal lines and the one-pass frame-metadata encoder (issue 20).

The journal may trail the frames written (lines are batched), never lead them; a
killed writer leaves lines <= frames on disk, and ``recover`` keeps exactly the
journaled frames with the right pixels. The encoder gives what ``to_jsonable`` +
``json.dumps`` gave, so the legacy sidecar stays byte for byte the same.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import useq

from _helpers import journal_entry_lines, read_json, record_then_kill, wait_until
from mesofield_napari.data import CustomWriter, journal_path, recover, sidecar_path
from mesofield_napari.data.formats.frame_json import frame_meta_json
from mesofield_napari.data.formats.journal import FrameJournal
from mesofield_napari.data.formats.sidecar import to_jsonable
from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera

PropertyValue = namedtuple("PropertyValue", "dev prop val")


def _old_line(meta: Any, index: dict[str, int], extra: dict[str, Any]) -> str:
    """What store_frame_metadata journaled before the encoder (the reference)."""
    entry = to_jsonable(dict(meta or {}))
    entry["mda_event"] = index
    entry.update(extra)
    return json.dumps({"meta": entry, "pos": "p0"}, separators=(",", ":"))


METAS = [
    {},
    {
        "format": "frame-dict",
        "version": "1.0",
        "runner_time_ms": 12.5,
        "camera_device": "Camera",
        "property_values": (PropertyValue("Camera", "Exposure", "10.0"),),
        "exposure_ms": np.float64(10.0),
        "pixel_size_um": 0.0,
        "position": {"x": np.float32(1.5), "y": -2.0, "z": None},
        "mda_event": useq.MDAEvent(index={"t": 3, "c": 1}),
        "camera_metadata": {"ImageNumber": np.int64(7), "TimeReceivedByCore": "x"},
        "hardware_triggered": False,
        "images_remaining_in_buffer": np.uint16(3),
    },
    {"array": np.arange(3), "when": dt.datetime(2026, 1, 2, 3, 4, 5), "p": Path("a")},
    {"nan": float("nan"), "inf": float("inf"), "big": 2**70, "uni": "µm ✓"},
    {"nested": {2: "int key", True: "bool key", None: "none key"}},  # slow path
    {"nested": [{"deep": {(1, 2): "tuple key"}}]},  # slow path
    {"seq": useq.MDASequence(time_plan={"interval": 0, "loops": 2})},
]


@pytest.mark.parametrize("meta", METAS, ids=range(len(METAS)))
@pytest.mark.parametrize("extra", [{}, {"sim": 1}], ids=["plain", "extra"])
def test_encoder_matches_the_old_conversion(meta: Any, extra: dict[str, Any]) -> None:
    event = useq.MDAEvent(index={"t": 3, "c": 1})
    index = {k: int(v) for k, v in event.index.items()}  # keys: useq's str enums
    want = _old_line(meta, index, extra)
    got = '{"meta":' + frame_meta_json(meta, index, extra) + ',"pos":"p0"}'
    # the sidecar is json.dumps of the parsed line: equal parses, equal sidecars
    assert json.dumps(json.loads(got)) == json.dumps(json.loads(want))
    assert got == want  # and in fact the same bytes


def test_batched_lines_reach_the_file_on_flush(tmp_path: Path) -> None:
    jpath = tmp_path / "x.tif_frame_metadata.jsonl"
    journal = FrameJournal(jpath, mode="mda", data_file="x.tif", batch_s=3600)
    for t in range(3):
        journal.append_json(frame_meta_json({}, {"t": t}), "p0")
    assert journal.lines == 3
    assert journal_entry_lines(jpath) == 0  # batched: not handed to the OS yet
    journal.flush()
    assert journal_entry_lines(jpath) == 3
    journal.append_layout({"file": "x.tif"}, "p0")  # ordered after the batch
    journal.append_json(frame_meta_json({}, {"t": 3}), "p0")
    journal.close()
    lines = jpath.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line).get("meta", {}).get("mda_event") for line in lines] == [
        None,
        {"t": 0},
        {"t": 1},
        {"t": 2},
        None,
        {"t": 3},
    ]


def test_a_full_batch_is_written_without_a_flush(tmp_path: Path) -> None:
    from mesofield_napari.data.formats.journal import _MAX_BATCH_LINES

    jpath = tmp_path / "x.tif_frame_metadata.jsonl"
    journal = FrameJournal(jpath, mode="mda", data_file="x.tif", batch_s=3600)
    for t in range(_MAX_BATCH_LINES + 5):
        journal.append_json(frame_meta_json({}, {"t": t}), "p0")
    assert journal_entry_lines(jpath) == _MAX_BATCH_LINES
    journal.close(remove=True)


def _drive(writer: CustomWriter, frames: list[np.ndarray], n: int) -> None:
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": n})
    writer.sequenceStarted(seq)
    for i, event in enumerate(seq):
        meta = {"runner_time_ms": float(i), "camera_metadata": {"Sim": str(i)}}
        writer.frameReady(frames[i % len(frames)], event, meta)
    writer.sequenceFinished(seq)


def test_journal_never_leads_the_frames_and_catches_up(tmp_path: Path) -> None:
    path = tmp_path / "run.ome.tif"
    camera = SimulatedMesoscopeCamera((128, 128), 0, 12)
    frames = [camera.frame(i) for i in range(4)]
    writer = CustomWriter(path, max_queue_bytes=8 * frames[0].nbytes)
    n = 400
    done = threading.Event()
    samples: list[tuple[int, int]] = []

    def sample() -> None:
        jpath = journal_path(path)
        while not done.is_set():
            try:
                lines = journal_entry_lines(jpath)  # lines first, then frames
            except FileNotFoundError:  # not created yet, or removed at the end
                continue
            samples.append((lines, sum(writer.frames_written.values())))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _drive(writer, frames, n)
    finally:
        done.set()
        sampler.join(30)
    writer.raise_if_failed()
    assert samples, "the journal was never sampled"
    assert all(lines <= written for lines, written in samples), samples[:20]
    entries = read_json(sidecar_path(path))["p0"]
    assert [e["mda_event"]["t"] for e in entries] == list(range(n))


def test_finish_journals_every_frame_before_the_file_is_finished(
    tmp_path: Path,
) -> None:
    """A finish right behind the frames (no idle moment) still journals them first."""
    from mesofield_napari.data.writer import _pipeline

    path = tmp_path / "tight.ome.tif"
    writer = CustomWriter(path)
    writer._journal_batch_s = 3600.0
    lines_at_finish: list[int] = []
    handle = writer._handle

    def spy(kind: str, args: tuple[Any, ...]) -> None:
        if kind == "finish":
            lines_at_finish.append(journal_entry_lines(journal_path(path)))
        handle(kind, args)

    writer._pipeline._handle = spy
    assert isinstance(writer._pipeline, _pipeline.FramePipeline)
    _drive(writer, [np.full((16, 16), 3, np.uint16)], 50)
    writer.raise_if_failed()
    assert lines_at_finish == [50]
    assert len(read_json(sidecar_path(path))["p0"]) == 50


def test_writer_idle_flushes_the_batch(tmp_path: Path) -> None:
    """A paused acquisition leaves no frame unjournaled for long."""
    path = tmp_path / "idle.ome.tif"
    frames = [np.full((32, 32), 7, np.uint16)]
    writer = CustomWriter(path)
    writer._journal_batch_s = 3600.0  # only an empty queue can end the batch
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 10})
    writer.sequenceStarted(seq)
    events = list(seq)
    for event in events[:5]:
        writer.frameReady(frames[0], event, {"runner_time_ms": 0.0})
    jpath = journal_path(path)
    wait_until(lambda: jpath.exists() and journal_entry_lines(jpath) == 5, 30)
    for event in events[5:]:
        writer.frameReady(frames[0], event, {"runner_time_ms": 0.0})
    writer.sequenceFinished(seq)
    writer.raise_if_failed()
    assert len(read_json(sidecar_path(path))["p0"]) == 10


BUSY_CHILD = """
import sys, useq
from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera
from mesofield_napari.data import CustomWriter
camera = SimulatedMesoscopeCamera((256, 256), 0, 12)
frames = [camera.frame(i) for i in range(8)]
writer = CustomWriter(sys.argv[1])
seq = useq.MDASequence(time_plan={"interval": 0, "loops": 200000})
writer.sequenceStarted(seq)
for i, event in enumerate(seq):  # as fast as it goes: the writer never idles
    meta = {"runner_time_ms": float(i), "camera_metadata": {"SimFrameIndex": str(i % 8)}}
    writer.frameReady(frames[i % 8], event, meta)
print("FINISHED", flush=True)
"""


@pytest.mark.slow
def test_sigkill_while_the_writer_is_busy_then_recover(tmp_path: Path) -> None:
    path = tmp_path / "busy.ome.tiff"
    n = record_then_kill(BUSY_CHILD, path, frames=200)
    assert n >= 200

    report = recover(path)
    assert report.recovered
    assert report.frames_by_position == {"p0": n}
    entries = read_json(sidecar_path(path))["p0"]
    assert [e["mda_event"]["t"] for e in entries] == list(range(n))
    camera = SimulatedMesoscopeCamera((256, 256), 0, 12)
    frames = [camera.frame(i) for i in range(8)]
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].shape == (n, 256, 256)  # exact: the journaled frames
        data = tif.series[0].asarray(out="memmap")
        for t, entry in enumerate(entries):
            assert entry["camera_metadata"]["SimFrameIndex"] == str(t % 8)
            np.testing.assert_array_equal(data[t], frames[t % 8])
