"""npe2 sample data: a short run recorded live on the simulated camera.

``File > Open Sample > mesofield > Mesofield demo recording`` runs the same pipeline
as ``mesofield-napari record`` (``RunManager`` + ``CustomWriter`` on the simulated
mesoscope camera), then opens the run folder with this plugin's reader, so the layer
is exactly what reopening a real run gives: lazy pixels plus ``metadata["mesofield"]``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

DEMO_FRAMES = 120
DEMO_SHAPE = (256, 256)
DEMO_EXPOSURE_MS = 10.0
DEMO_NOTE = "demo run on the simulated mesoscope camera"

LayerData = tuple[Any, dict[str, Any], str]


def record_demo_run(
    root: str | Path | None = None,
    frames: int = DEMO_FRAMES,
    shape: tuple[int, int] = DEMO_SHAPE,
    exposure_ms: float = DEMO_EXPOSURE_MS,
) -> Path:
    """Record a run of ``frames`` frames on the simulated camera; its run folder.

    ``root`` defaults to a new ``mesofield-demo-*`` folder in the temp directory.
    Raises :class:`~mesofield_napari.data.RecordingError` if the recording failed.
    """
    from .acquisition.timelapse import record, timelapse
    from .data import RecordingError
    from .data.manager.run_manager import RunManager
    from .devices.sim_camera import create_sim_core

    if root is None:
        root = tempfile.mkdtemp(prefix="mesofield-demo-")
    params = {
        "frames": frames,
        "exposure_ms": exposure_ms,
        "camera": "meso",
        "config": "simulated camera",
    }
    core = create_sim_core(shape, exposure_ms=exposure_ms)
    try:
        run = RunManager(root, "demo", 1, "widefield", params).start()
        try:
            run.add_note(DEMO_NOTE)
            writer = run.writer_for("meso", "tiff")
            result = record(core, [writer], timelapse(frames))
        except BaseException as exc:
            run.stop(error=exc, raise_errors=False)
            raise
        run.stop()  # raises RecordingError if finalizing failed
    finally:
        core.unloadAllDevices()
    if not result.ok:
        raise RecordingError("; ".join(result.errors))
    return run.run_dir


def demo_recording() -> list[LayerData]:
    """npe2 sample data: record a 120-frame 256x256 run (10 ms exposure) and open it.

    Takes about 1.5 s. The run is written to a new ``mesofield-demo-*`` folder in the
    system temp directory and is **kept** (the layer's pixels are memory-mapped from
    it, lazily); delete those folders when you no longer need them. The layer's
    ``metadata["mesofield"]["source"]`` is the recording's path.
    """
    from ._reader import read_recordings

    return read_recordings(record_demo_run())
