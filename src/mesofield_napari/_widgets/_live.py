"""What the recorder's docks share: settings, finalizing on close, live layers.

A live layer shows a camera's newest frame only, decimated to at most
``LIVE_MAX_SIDE`` pixels (``scale`` keeps world coordinates), updated in place with
contrast limits fixed from the first frame (no flicker), at most ~30 times a second —
and the refresh interval backs off to keep the updates under ~25 % of the GUI thread,
which the acquisition and every Python camera share through the GIL. Written frames
are never affected: only display frames are skipped.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, QSettings, QTimer
from qtpy.QtWidgets import QApplication, QMainWindow, QWidget

LIVE_INTERVAL_MS = 33  # newest frame into a live layer at most ~30 times a second
LIVE_MAX_INTERVAL_MS = 1000  # ...and at least once a second however busy the GUI is
LIVE_MAX_SIDE = 512  # live previews are decimated to at most this many pixels
SETTINGS_ENV = "MESOFIELD_NAPARI_SETTINGS"  # an .ini path (tests, kiosk set-ups)


def settings_store() -> QSettings:
    """Where the recorder (both modes) remembers its fields between sessions."""
    if path := os.environ.get(SETTINGS_ENV):
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings("mesofield-napari", "recorder")


def absolute_path(text: str) -> str:
    """A path as it should be remembered: absolute (``~`` expanded); ``""`` stays.

    A relative path saved from one working directory names another folder when
    napari starts from elsewhere next time.
    """
    text = text.strip()
    return os.path.abspath(os.path.expanduser(text)) if text else ""


class CloseWatcher(QObject):
    """Calls ``callback`` when the watched window is about to close."""

    def __init__(self, callback: Any, parent: QObject) -> None:
        super().__init__(parent)
        self._callback = callback

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:
        if event is not None and event.type() == QEvent.Type.Close:
            self._callback()
        return False


class FinalizeOnClose:
    """Mixin for the docks that record: whichever way napari or the dock closes, the
    dock's ``shutdown()`` finalizes every file.

    napari quitting (``aboutToQuit``), napari's window closing (watched once the dock
    reaches it), the dock being closed (re-parented to None while ``busy_closing()``)
    and the widget's own close all call ``shutdown``. Call
    :meth:`_finalize_on_close` at the end of ``__init__``.
    """

    def _finalize_on_close(self: Any) -> None:
        self._close_watcher = CloseWatcher(self.shutdown, self)
        self._watched: QWidget | None = None
        ref = weakref.ref(self)
        if (app := QApplication.instance()) is not None:
            app.aboutToQuit.connect(lambda: (w := ref()) and w.shutdown())

    def busy_closing(self) -> bool:
        """Whether closing the dock now would lose something (default: always)."""
        return True

    def napari_window(self: Any) -> QWidget | None:
        """napari's main window once this widget is docked in it (else None)."""
        top = self.window()
        return top if isinstance(top, QMainWindow) else None

    def _watch_napari_window(self: Any) -> None:
        top = self.napari_window()
        if top is not None and top is not self._watched:
            top.installEventFilter(self._close_watcher)
            self._watched = top

    def event(self: Any, ev: QEvent | None) -> bool:
        if ev is not None and ev.type() == QEvent.Type.ParentChange:
            if self.parent() is None:
                # napari removes a closed dock by re-parenting its widget to None
                if self.busy_closing():
                    self.shutdown()
            else:  # docked: the dock may reach napari's window only a bit later
                QTimer.singleShot(0, self._watch_napari_window)
        return super().event(ev)  # type: ignore[misc, unused-ignore]

    def closeEvent(self: Any, ev: Any) -> None:
        self.shutdown()
        super().closeEvent(ev)  # type: ignore[misc, unused-ignore]


class LivePacer:
    """The live refresh timer's back-off: measure how busy the GUI is, slow down."""

    def __init__(self, timer: QTimer) -> None:
        self.timer = timer
        self._last = time.perf_counter()
        self._t0 = self._last
        self._late_ms = 0.0

    def tick(self) -> None:
        """At the start of a refresh: how late this tick is = how busy the GUI was."""
        self._t0 = time.perf_counter()
        self._late_ms = max(
            0.0, (self._t0 - self._last) * 1000.0 - self.timer.interval()
        )
        self._last = self._t0

    def updated(self) -> None:
        """After a refresh that drew something: back off by what it cost."""
        busy_ms = (time.perf_counter() - self._t0) * 1000.0 + self._late_ms
        self.timer.setInterval(
            int(min(LIVE_MAX_INTERVAL_MS, max(LIVE_INTERVAL_MS, 4 * busy_ms)))
        )


def fixed_contrast(frame: np.ndarray) -> tuple[float, float]:
    """Fixed for the run (from the first frame), so the display does not flicker."""
    lo, hi = np.percentile(frame[::4, ::4], (0.5, 99.8))
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1.0)


def show_live(
    viewer: Any,
    layer: Any,
    frame: np.ndarray,
    name: str,
    metadata: dict[str, Any],
    *,
    bgr: bool = False,
) -> Any:
    """Put ``frame`` (decimated) into ``layer``, or a new layer; returns the layer.

    ``bgr`` colour frames (OpenCV's order) are shown as RGB.
    """
    rgb = frame.ndim == 3 and frame.shape[-1] in (3, 4)
    h, w = frame.shape[:2] if rgb else frame.shape[-2:]
    step = max(1, math.ceil(max(h, w) / LIVE_MAX_SIDE))
    preview = frame[::step, ::step] if rgb else frame[..., ::step, ::step]
    if rgb and bgr:
        preview = preview[..., 2::-1]
    if layer is not None and layer in viewer.layers:
        layer.data = preview  # in place: same layer, fixed contrast limits
        return layer
    kwargs: dict[str, Any] = {"rgb": rgb}
    if not rgb:
        kwargs["contrast_limits"] = fixed_contrast(preview)
    return viewer.add_image(
        preview, name=name, scale=(step, step), metadata=metadata, **kwargs
    )
