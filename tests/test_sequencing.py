"""Long time-lapses are hardware-sequenced in chunks built ahead (real core, real runner)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
from pymmcore_plus.core import SequencedEvent

from _helpers import read_json, timelapse
from mesofield_napari.acquisition import sequencing
from mesofield_napari.acquisition.sequencing import (
    chunked_sequencing,
    iter_chunked_sequences,
)
from mesofield_napari.data.writer.signals import connect_direct
from mesofield_napari.models.recorder import RecorderSettings, RecordingSession


@pytest.fixture
def starts(sim_core) -> list[object]:
    """One entry per camera sequence the core starts (one per hardware chunk)."""
    started: list[object] = []
    connect_direct(sim_core.events.sequenceAcquisitionStarted, started.append)
    return started


def producer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sequence-chunks"]


def test_events_are_merged_chunk_by_chunk_in_order(sim_core):
    merged = list(iter_chunked_sequences(sim_core, timelapse(23), chunk=5))
    assert all(isinstance(e, SequencedEvent) for e in merged)
    assert [len(e.events) for e in merged] == [5, 5, 5, 5, 3]
    assert [ev.index["t"] for e in merged for ev in e.events] == list(range(23))


def test_a_recording_across_chunk_boundaries_is_complete(
    sim_core, camera, starts, tmp_path, monkeypatch
):
    monkeypatch.setattr(sequencing, "DEFAULT_CHUNK", 7)
    session = RecordingSession(
        sim_core, RecorderSettings(root=str(tmp_path), frames=25)
    )
    session.start()
    assert session.wait(60)
    (outcome,) = session.outcomes
    assert outcome.ok and outcome.frames_written == 25
    assert len(starts) == 4  # 7 + 7 + 7 + 4 frames, one camera sequence each
    (tiff,) = outcome.data_files
    with tifffile.TiffFile(tiff) as tf:
        stack = tf.series[0].asarray()
    for i in (0, 6, 7, 13, 14, 24):  # both sides of every boundary
        np.testing.assert_array_equal(stack[i], camera.frame(i))
    entries = read_json(f"{tiff}_frame_metadata.json")["p0"]
    assert [e["mda_event"]["t"] for e in entries] == list(range(25))
    # the engine's own event_iterator is back after the run
    assert "event_iterator" not in vars(sim_core.mda.engine)


def test_cancel_mid_run_lets_the_chunk_builder_go(sim_core, tmp_path, monkeypatch):
    monkeypatch.setattr(sequencing, "DEFAULT_CHUNK", 50)
    sim_core.setExposure(2.0)
    session = RecordingSession(
        sim_core, RecorderSettings(root=str(tmp_path), frames=100_000)
    )
    session.start()
    from _helpers import wait_until

    wait_until(lambda: session.status().frames_acquired >= 60)  # past one chunk
    session.stop()
    assert session.wait(60)
    assert 60 <= session.outcomes[0].frames_written < 100_000
    wait_until(lambda: not producer_threads(), timeout=10, what="the chunk builder")


def test_without_hardware_sequencing_the_engine_is_untouched(sim_core):
    engine = sim_core.mda.engine
    engine.use_hardware_sequencing = False
    try:
        with chunked_sequencing(sim_core):
            assert "event_iterator" not in vars(engine)
    finally:
        engine.use_hardware_sequencing = True


def test_record_command_restarts_the_camera_once_per_chunk(
    sim_core, camera, starts, tmp_path, monkeypatch
):
    from mesofield_napari.acquisition.timelapse import record
    from mesofield_napari.data import CustomWriter

    monkeypatch.setattr(sequencing, "DEFAULT_CHUNK", 4)
    writer = CustomWriter(tmp_path / "r.ome.tiff")
    result = record(sim_core, [writer], timelapse(10))
    assert result.ok
    assert len(starts) == 3  # 4 + 4 + 2 frames
    stack = tifffile.imread(writer.files[0])
    for i in (3, 4, 7, 8, 9):
        np.testing.assert_array_equal(stack[i], camera.frame(i))
    assert "event_iterator" not in vars(sim_core.mda.engine)
