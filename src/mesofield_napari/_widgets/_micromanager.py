"""Finding (or opening) napari-micromanager in a viewer, without depending on it.

napari-micromanager offers ``get_core()``/``get_main_window()`` for the *current*
viewer; we look in *our* viewer's window instead, so several viewers (tests, scripts)
do not see each other's microscopes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import napari
    from pymmcore_plus import CMMCorePlus
    from qtpy.QtWidgets import QWidget


def micromanager_available() -> bool:
    try:
        import napari_micromanager  # noqa: F401
    except ImportError:
        return False
    return True


def find_main_window(qt_window: QWidget | None) -> Any | None:
    """napari-micromanager's ``MainWindow`` docked in napari's ``qt_window``, if any.

    Widgets find ``qt_window`` as their own ``window()`` once docked: plugin widgets
    get a viewer proxy without access to napari's private Qt window.
    """
    if qt_window is None or not micromanager_available():
        return None
    from napari_micromanager import MainWindow

    return qt_window.findChild(MainWindow)


def open_main_window(viewer: napari.Viewer, core: CMMCorePlus) -> Any:
    """Dock napari-micromanager on ``core`` (the caller keeps owning the core)."""
    from napari_micromanager import MainWindow

    win = MainWindow(viewer, mmcore=core)
    viewer.window.add_dock_widget(win, name="Micro-Manager", area="top")
    return win


@contextlib.contextmanager
def display_suppressed(qt_window: QWidget | None, core: CMMCorePlus) -> Iterator[None]:
    """Keep napari-micromanager from also storing our own time-lapse.

    Its MDA handler copies every frame of every MDA on its core into a temporary zarr
    layer through an unbounded deque: for our time-lapse that would write the run to
    disk twice and let memory grow with the backlog. The recorder shows its own live
    layer instead, so the handler is disconnected for the duration of our run (only
    when it is attached to this very core), and reconnected after.
    """
    win = find_main_window(qt_window)
    link = getattr(win, "_core_link", None) if win is not None else None
    handler = getattr(link, "_mda_handler", None)
    pairs = list(getattr(handler, "_connections", []) or [])
    if win is None or win.core is not core or not pairs:
        yield
        return
    for sig, slot in pairs:
        with contextlib.suppress(Exception):
            sig.disconnect(slot)
    try:
        yield
    finally:
        for sig, slot in pairs:
            with contextlib.suppress(Exception):
                sig.connect(slot)
