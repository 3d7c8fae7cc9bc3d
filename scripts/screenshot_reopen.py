"""Make the README screenshots of the reopen workflow.

Records the demo run (simulated camera), reopens its run folder through the plugin's
reader in a real viewer, docks the Recording inspector and saves::

    docs/images/reopen.png     the whole viewer window
    docs/images/inspector.png  the inspector dock widget

Needs a display; headless::

    xvfb-run -a python scripts/screenshot_reopen.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

MAX_BYTES = 300_000


def _save(image: object, path: Path, max_width: int) -> None:
    """Save a QImage/QPixmap as PNG, scaled down until it is under MAX_BYTES."""
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[1] / "docs" / "images"
    p.add_argument("--out", type=Path, default=default)
    p.add_argument("--frame", type=int, default=60, help="time point to show")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    from mesofield_napari._sample_data import record_demo_run

    run_dir = record_demo_run()
    try:
        viewer = napari.Viewer(title="mesofield: reopen a run", show=True)
        viewer.window._qt_window.resize(1280, 800)
        layers = viewer.open(run_dir, plugin="mesofield-napari")
        _, inspector = viewer.window.add_plugin_dock_widget(
            "mesofield-napari", "Recording inspector"
        )
        viewer.dims.set_current_step(0, min(args.frame, layers[0].data.shape[0] - 1))
        for _ in range(20):
            QApplication.processEvents()
        viewer.reset_view()
        inspector.canvas.draw()
        for _ in range(20):
            QApplication.processEvents()
        shot = viewer.screenshot(canvas_only=False, flash=False)  # renders the canvas
        _save(_qimage(shot), args.out / "reopen.png", max_width=1280)
        _save(inspector.grab(), args.out / "inspector.png", max_width=600)
        viewer.close()
    finally:
        shutil.rmtree(run_dir.parents[1], ignore_errors=True)  # the demo root
    return 0


if __name__ == "__main__":
    sys.exit(main())
