"""The writers and the run manager on both of pymmcore-plus's signal backends.

Inside napari a core made after the QApplication gets Qt signals; in a script,
psygnal's. The difference that matters to us: a Qt signal emitted on the acquisition
thread is *queued* to the receiver's thread unless connected directly, so a writer
connected the ordinary way would see no frame until the Qt event loop runs -- and
this test's main thread never spins it. ``connect_direct`` must make every frame
arrive on the acquisition thread, whatever the backend (docs/design.md §4).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile

from _helpers import SHAPE, read_json, read_video, sim_index, timelapse
from mesofield_napari.acquisition import add_writers, record
from mesofield_napari.data import CustomWriter, CV2Writer, RunManager
from mesofield_napari.data.writer.signals import connect_direct, is_qt_signal
from mesofield_napari.devices.sim_camera import create_sim_core, sim_camera

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from pymmcore_plus.experimental.unicore import UniMMCore

N = 12


@pytest.fixture(params=["psygnal", "qt"])
def backend_core(
    request: pytest.FixtureRequest, qapp: object, monkeypatch: pytest.MonkeyPatch
) -> Iterator[UniMMCore]:
    """A fresh simulated core whose MDA signals are psygnal's or Qt's."""
    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", request.param)
    core = create_sim_core(SHAPE, exposure_ms=0)
    assert is_qt_signal(core.mda.events.frameReady) == (request.param == "qt")
    yield core
    core.unloadAllDevices()


def _run_in_thread(core: UniMMCore, loops: int) -> None:
    """The MDA on its own thread; the main thread only waits (no Qt event loop)."""
    worker = threading.Thread(target=core.mda.run, args=(timelapse(loops),))
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "the acquisition did not end"


def test_custom_writer_gets_every_frame(
    backend_core: UniMMCore, tmp_path: Path
) -> None:
    path = tmp_path / "cam.ome.tiff"
    writer = CustomWriter(path)
    threads: set[str] = set()

    def where(*_: object) -> None:
        threads.add(threading.current_thread().name)

    connect_direct(backend_core.mda.events.frameReady, where)
    with writer.attached(backend_core):
        _run_in_thread(backend_core, N)
    backend_core.mda.events.frameReady.disconnect(where)

    assert threading.main_thread().name not in threads  # ran where it was emitted
    assert writer.frames_written == {"p0": N}
    stack = tifffile.imread(path)
    assert stack.shape == (N, *SHAPE)
    entries = read_json(writer.sidecar_path)["p0"]
    assert len(entries) == N
    cam = sim_camera(backend_core)
    assert cam is not None
    for frame, entry in zip(stack, entries, strict=True):
        np.testing.assert_array_equal(frame, cam.frame(sim_index(entry)))


def test_video_writer_gets_every_frame(backend_core: UniMMCore, tmp_path: Path) -> None:
    path = tmp_path / "cam.mp4"
    writer = CV2Writer(path, fps=30, contrast_limits=(0, 4095))
    with writer.attached(backend_core):
        _run_in_thread(backend_core, N)
    frames, _fps, _ = read_video(path)
    assert len(frames) == N
    assert len(read_json(writer.sidecar_path)["p0"]) == N


def test_run_gets_one_queue_row_per_frame(
    backend_core: UniMMCore, tmp_path: Path
) -> None:
    with RunManager(tmp_path / "exp", "M1", 1, "t") as run:
        writers = add_writers(
            run, backend_core, "mesoscope", "both", suffix="meso", max_queue_bytes=2**26
        )
        result = record(backend_core, writers, timelapse(N))
    assert result.errors == []
    assert result.frames_written == N
    rows = run.dataqueue_path.read_text(encoding="utf-8").splitlines()[1:]
    assert sum(",mesoscope," in r for r in rows) == N
