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

import shutil
import sys
import tempfile
import time
from pathlib import Path

from _screens import parse_args, parser, pump, save_window


def main(argv: list[str] | None = None) -> int:
    args = parse_args(parser(__doc__), argv)

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
            pump(0.05)
        if widget.running:
            raise SystemExit("the batch did not finish within 60 s")
        print(widget.status.text())
        widget.add_selected_trace()
        viewer.layers.selection.active = viewer.layers[0]
        viewer.dims.set_current_step(0, 75)
        viewer.reset_view()
        widget.canvas.draw()
        pump(0.5)
        save_window(viewer, args.out / "batch-export.png", max_width=1400)
        viewer.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
