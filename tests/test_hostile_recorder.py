"""The recorder widget over many runs in one napari session (issue 21).

50 short runs in one real napari viewer (Xvfb), on a real simulated core: open files
stay flat (a finished run's layers hold no file open, so deleting them or starting
the next run leaves nothing behind) and memory growth stays bounded.
"""

from __future__ import annotations

import gc

import psutil
import pytest

from _helpers import accept_console_pushes
from mesofield_napari._widgets import recorder as recorder_mod
from mesofield_napari._widgets.recorder import RecorderWidget
from mesofield_napari.devices.sim_camera import create_sim_core

RUNS = 50
FINISH_MS = 60_000


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv(recorder_mod.SETTINGS_ENV, str(tmp_path / "settings.ini"))


def _open_under(root) -> list[str]:
    proc = psutil.Process()
    return sorted(f.path for f in proc.open_files() if f.path.startswith(str(root)))


def _mapped_under(root) -> list[str]:
    proc = psutil.Process()
    return sorted({m.path for m in proc.memory_maps() if m.path.startswith(str(root))})


@pytest.mark.parametrize(
    ("delete_layers", "runs"), [(True, RUNS), (False, 20)], ids=["deleted", "kept"]
)
def test_many_runs_leave_no_open_files_and_bounded_memory(
    make_napari_viewer, qtbot, tmp_path, delete_layers, runs
):
    viewer = accept_console_pushes(make_napari_viewer())
    core = create_sim_core((32, 32), exposure_ms=0.0)
    rec = RecorderWidget(viewer, core=core)
    viewer.window.add_dock_widget(rec, name="Recorder", area="right")
    rec.root_edit.setText(str(tmp_path / "exp"))
    rec.frames_spin.setValue(3)
    rss: list[int] = []
    open_counts: list[int] = []
    for i in range(runs):
        with qtbot.waitSignal(rec.finished, timeout=FINISH_MS) as blocker:
            rec.record_button.click()
        assert blocker.args[0].ok and blocker.args[0].frames_written == 3
        layers = [lyr for lyr in viewer.layers if "mesofield" in lyr.metadata]
        assert len(layers) == (1 if delete_layers else i + 1)
        assert layers[-1].data.shape == (3, 32, 32)
        if delete_layers:
            viewer.layers.clear()
        gc.collect()
        open_counts.append(len(_open_under(tmp_path)))
        rss.append(psutil.Process().memory_info().rss)
    held = _open_under(tmp_path)
    assert held == [], f"{len(held)} files still open, e.g. {held[:2]}"
    assert max(open_counts) == 0, open_counts
    # kept layers still show their frames: read on demand, mapped only meanwhile
    assert _mapped_under(tmp_path) == []
    if delete_layers:  # (50 kept layers cost napari's own widgets and textures)
        growth = (rss[-1] - rss[9]) / 2**20  # after a warm-up of 10 runs
        print(f"RSS growth over runs 10..{runs}: {growth:.1f} MiB")
        assert growth < 25, f"RSS grew {growth:.1f} MiB over {runs - 10} runs"
    rec.shutdown()
