"""Make the README screenshot of the recorder's experiment mode.

Records the example experiment (``examples/experiment``: simulated widefield camera,
simulated pupil camera, development-mode wheel) through the recorder's experiment
panel in a real viewer and saves, mid-run (live layers side by side, the device
table counting)::

    docs/images/experiment.png   the whole viewer window

Needs a display; headless::

    xvfb-run -a python scripts/screenshot_experiment.py [--out docs/images]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _screens import parse_args, parser, pump, pump_events, save_window

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "experiment"


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--duration", type=float, default=4.0, help="run length (s)")
    p.add_argument("--at", type=float, default=1.0, help="screenshot after (s)")
    args = parse_args(p, argv)

    with tempfile.TemporaryDirectory() as tmp:
        # never touch the user's remembered recorder settings
        os.environ["MESOFIELD_NAPARI_SETTINGS"] = str(Path(tmp) / "settings.ini")
        import napari

        from mesofield_napari._widgets.recorder import RecorderWidget
        from mesofield_napari.app import side_by_side

        viewer = napari.Viewer(title="mesofield: experiment", show=True)
        viewer.window._qt_window.resize(1400, 860)
        recorder = RecorderWidget(viewer)
        recorder.set_mode("experiment")
        viewer.window.add_dock_widget(recorder, name="Recorder", area="right")
        panel = recorder.experiment_panel
        panel.load(EXAMPLE, output=str(Path(tmp) / "experiment"))
        panel.duration_spin.setValue(args.duration)
        side_by_side(viewer)
        pump_events()
        if not panel.record():
            print(f"could not record: {panel.error_label.text()}", file=sys.stderr)
            return 2
        deadline = time.monotonic() + 60.0
        while len(panel.live_layers) < 2 and time.monotonic() < deadline:
            pump(0.1)
        pump(args.at)
        viewer.reset_view()
        pump_events()
        save_window(viewer, args.out / "experiment.png", max_width=1400)
        panel.shutdown(120.0)  # finalize the run before the folder goes
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
