"""What the README screenshot scripts share: the output folder, Qt pumping, PNGs.

Not a script: ``screenshot_*.py`` import it (run as ``python scripts/…``, this folder
is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

MAX_BYTES = 300_000
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by ``doc``'s first line, with ``--out DIR``."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p


def parse_args(
    p: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """Parse ``argv`` and create the ``--out`` folder."""
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def save(image: object, path: Path, max_width: int) -> None:
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


def qimage(rgba: object) -> object:
    """A QImage (own copy) of an RGBA array, e.g. ``viewer.screenshot()``."""
    import numpy as np
    from qtpy.QtGui import QImage

    arr = np.ascontiguousarray(rgba)
    h, w = arr.shape[:2]
    fmt = QImage.Format.Format_RGBA8888
    return QImage(arr.data, w, h, arr.strides[0], fmt).copy()


def save_window(viewer: object, path: Path, max_width: int) -> None:
    """Save the whole viewer window (renders the canvas) as PNG."""
    shot = viewer.screenshot(canvas_only=False, flash=False)
    save(qimage(shot), path, max_width=max_width)


def pump(seconds: float = 0.3) -> None:
    """Process Qt events for ``seconds``."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def pump_events(times: int = 20) -> None:
    """Process Qt events ``times`` times, without waiting."""
    from qtpy.QtWidgets import QApplication

    for _ in range(times):
        QApplication.processEvents()
