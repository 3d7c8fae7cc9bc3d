"""Make the README screenshot of the Batch export widget after a run.

Records three short runs on the simulated camera into one folder, opens the first
through the plugin's reader, docks *Batch export* (File > IO Utilities), runs a mean
trace over the folder in the widget's worker thread, adds the first trace to the
viewer and saves::

    docs/images/batch-export.png   the viewer window with the widget docked

Needs a display; headless::

    xvfb-run -a python scripts/screenshot_batch.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

MAX_BYTES = 300_000


def _save(image: object, path: Path, max_width: int) -> None:
    """Save a QImage as PNG, scaled down until it is under MAX_BYTES."""
    from qtpy.QtCore import Qt

    width = min(image.width(), max_width)
    while True:
        scaled = image.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
        scaled.save(str(path), "PNG")
        if path.stat().st_size < MAX_BYTES or width < 400:
            break
        width = int(width * 0.85)
    print(f"{path}: {scaled.width()}x{scaled.height()}, {path.stat().st_size} bytes")


def _qimage(rgba: object) -> object:
    import numpy as np
    from qtpy.QtGui import QImage

    arr = np.ascontiguousarray(rgba)
    h, w = arr.shape[:2]
    fmt = QImage.Format.Format_RGBA8888
    return QImage(arr.data, w, h, arr.strides[0], fmt).copy()


def _pump(seconds: float = 0.3) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[1] / "docs" / "images"
    p.add_argument("--out", type=Path, default=default)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import napari

    from mesofield_napari._sample_data import record_demo_run

    root = Path(tempfile.mkdtemp(prefix="mesofield-batch-shot-"))
    try:
        runs = [
            record_demo_run(root / f"session-{i}", frames=150, shape=(192, 192))
            for i in (1, 2, 3)
        ]
        viewer = napari.Viewer(title="mesofield: batch export", show=True)
        viewer.window._qt_window.resize(1400, 980)
        viewer.open(runs[0], plugin="mesofield-napari")
        _, widget = viewer.window.add_plugin_dock_widget(
            "mesofield-napari", "Batch export"
        )
        widget.folder.value = root
        widget.run()
        deadline = time.monotonic() + 60
        while widget.running and time.monotonic() < deadline:
            _pump(0.05)
        if widget.running:
            raise SystemExit("the batch did not finish within 60 s")
        print(widget.status.text())
        widget.add_selected_trace()
        viewer.layers.selection.active = viewer.layers[0]
        viewer.dims.set_current_step(0, 75)
        viewer.reset_view()
        widget.canvas.draw()
        _pump(0.5)
        shot = viewer.screenshot(canvas_only=False, flash=False)
        _save(_qimage(shot), args.out / "batch-export.png", max_width=1400)
        viewer.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
