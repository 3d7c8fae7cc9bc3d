"""Make the README screenshots of the reopen workflow.

Records the demo run (simulated camera), reopens its run folder through the plugin's
reader in a real viewer, docks the Recording inspector and saves::

    docs/images/reopen.png     the whole viewer window
    docs/images/inspector.png  the inspector dock widget

Needs a display; headless::

    xvfb-run -a python scripts/screenshot_reopen.py [--out docs/images]
"""

from __future__ import annotations

import shutil
import sys

from _screens import parse_args, parser, pump_events, save, save_window


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--frame", type=int, default=60, help="time point to show")
    args = parse_args(p, argv)

    import napari

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
        pump_events()
        viewer.reset_view()
        inspector.canvas.draw()
        pump_events()
        save_window(viewer, args.out / "reopen.png", max_width=1280)
        save(inspector.grab(), args.out / "inspector.png", max_width=600)
        viewer.close()
    finally:
        shutil.rmtree(run_dir.parents[1], ignore_errors=True)  # the demo root
    return 0


if __name__ == "__main__":
    sys.exit(main())
