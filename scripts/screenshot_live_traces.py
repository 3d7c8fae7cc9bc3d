"""Make the README screenshot of the recorder's Live traces panel.

Records on the simulated camera (512², 10 ms frames) through the single-camera
recorder in a real viewer, with three ROIs drawn on a Shapes layer over the camera's
calcium-like regions and a running ΔF/F, and saves, mid-run (the live layer, the ROIs
and their traces growing in the panel)::

    docs/images/live-traces.png   the whole viewer window

Needs a display; headless::

    xvfb-run -a python scripts/screenshot_live_traces.py [--out docs/images]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _screens import parse_args, parser, pump, pump_events, save_window


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--at", type=float, default=6.0, help="screenshot after (s)")
    args = parse_args(p, argv)

    with tempfile.TemporaryDirectory() as tmp:
        # never touch the user's remembered recorder settings
        os.environ["MESOFIELD_NAPARI_SETTINGS"] = str(Path(tmp) / "settings.ini")
        import napari

        from mesofield_napari._widgets.recorder import RecorderWidget
        from mesofield_napari.devices.sim_camera import create_sim_core, sim_camera

        viewer = napari.Viewer(title="mesofield: live traces", show=True)
        viewer.window._qt_window.resize(1300, 860)
        core = create_sim_core((512, 512), exposure_ms=10.0)
        recorder = RecorderWidget(viewer, core=core)
        recorder.set_mode("single")
        viewer.window.add_dock_widget(recorder, name="Recorder", area="right")
        recorder.root_edit.setText(str(Path(tmp) / "experiment"))
        recorder.stop_combo.setCurrentIndex(recorder.stop_combo.findData("until_stop"))
        # three ROIs: the camera's brightest transient region and two others
        cam = sim_camera(core)
        assert cam is not None
        masks = [mask for mask, _ in cam._regions]
        rects = []
        for mask in masks:
            y, x = np.unravel_index(int(np.argmax(mask)), mask.shape)
            rects.append([[y - 30, x - 30], [y + 30, x + 30]])
        rects.append([[20, 20], [80, 80]])  # background
        viewer.add_shapes(
            rects,
            shape_type="rectangle",
            name="ROIs",
            edge_width=5,
            edge_color="yellow",
            face_color=[0.0] * 4,
        )
        panel = recorder.live_traces_panel
        panel.enable_check.setChecked(True)
        panel.dff_check.setChecked(True)
        panel.window_spin.setValue(2.0)
        pump_events()
        recorder.record_button.click()
        deadline = time.monotonic() + args.at
        while time.monotonic() < deadline:
            pump(0.1)
        rois = viewer.layers["ROIs"]  # above the live layer, which came later
        viewer.layers.move(viewer.layers.index(rois), len(viewer.layers))
        viewer.layers.selection.active = rois
        viewer.reset_view()
        pump(0.5)
        save_window(viewer, args.out / "live-traces.png", max_width=1400)
        recorder.shutdown()
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
