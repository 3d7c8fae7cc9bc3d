"""Recording inspector: summary and frame timing of the active mesofield layer.

A thin Qt view over :mod:`mesofield_napari.models.inspector`. It follows
``viewer.layers.selection.events.active``: for a layer opened by this plugin (one with
``metadata["mesofield"]``) it shows frames, duration, fps, dropped frames, codec,
sidecar state, notes and warnings, and plots the inter-frame interval (ms) against the
frame index with the median and the gaps where frames were dropped (red); for any other
layer, or none, it asks for a mesofield recording layer.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFormLayout, QLabel, QVBoxLayout, QWidget

from ..models.inspector import DROP_FACTOR, Inspection, inspect_layer
from ._plot import (
    LINE_COLOR,
    make_plot,
    placeholder,
    style_axes,
    theme_colors,
    top_legend,
)

if TYPE_CHECKING:
    import napari.viewer
    from matplotlib.lines import Line2D

NO_RECORDING = "Select a mesofield recording layer to inspect its frame timing."
GAP_COLOR = "#e0393e"


class RecordingInspector(QWidget):
    """Dock widget: what a recording holds and whether frames were dropped.

    Attributes useful to scripts and tests: ``inspection`` (the current
    :class:`~mesofield_napari.models.inspector.Inspection` or None), ``message``
    (QLabel), ``values`` (summary QLabels by row label), ``canvas`` (the matplotlib
    ``FigureCanvasQTAgg``) and the plot's ``interval_line``, ``gap_line`` and
    ``median_line`` (``Line2D``; None when nothing is plotted).
    """

    def __init__(
        self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._viewer = napari_viewer
        self.inspection: Inspection | None = None
        self.interval_line: Line2D | None = None
        self.gap_line: Line2D | None = None
        self.median_line: Line2D | None = None
        self._bg, self._fg = theme_colors(napari_viewer)

        layout = QVBoxLayout(self)
        self.message = QLabel(NO_RECORDING)
        self.message.setObjectName("inspectorMessage")
        self.message.setWordWrap(True)
        layout.addWidget(self.message)

        self.summary = QWidget()
        form = QFormLayout(self.summary)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.values: dict[str, QLabel] = {}
        for label, _ in Inspection(
            "", None, 0, np.zeros(0), None, 0, None, None
        ).rows():
            value = QLabel()
            value.setObjectName(f"inspector_{label.replace(' ', '_').lower()}")
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            form.addRow(f"{label}:", value)
            self.values[label] = value
        layout.addWidget(self.summary)

        self.figure, self.axes, self.canvas = make_plot(self._bg, 2.6, 220)
        layout.addWidget(self.canvas, stretch=1)

        self._events = napari_viewer.layers.selection.events.active
        self._events.connect(self._on_active)
        self._connected = True
        self.destroyed.connect(self._disconnect_static(self._events, self._on_active))
        self.refresh()

    # ------------------------------------------------------------ lifecycle
    @staticmethod
    def _disconnect_static(events: Any, callback: Any) -> Any:
        # a slot that does not touch the (already deleted) widget and does not keep
        # the Python wrapper alive
        ref = weakref.WeakMethod(callback)

        def disconnect(*_: Any) -> None:
            if (cb := ref()) is not None:
                with contextlib.suppress(Exception):
                    events.disconnect(cb)

        return disconnect

    def disconnect_viewer(self) -> None:
        """Stop following the viewer's layer selection (on close/destroy)."""
        if self._connected:
            self._connected = False
            with contextlib.suppress(Exception):
                self._events.disconnect(self._on_active)

    def closeEvent(self, event: Any) -> None:
        self.disconnect_viewer()
        super().closeEvent(event)

    def _on_active(self, event: Any = None) -> None:
        try:
            self.refresh()
        except RuntimeError:  # the C++ widget is gone (deleted before disconnecting)
            self.disconnect_viewer()

    # ------------------------------------------------------------ view
    def refresh(self) -> None:
        """Show the viewer's active layer."""
        self.show_inspection(inspect_layer(self._viewer.layers.selection.active))

    def show_inspection(self, insp: Inspection | None) -> None:
        self.inspection = insp
        self.summary.setVisible(insp is not None)
        if insp is None:
            self.message.setText(NO_RECORDING)
            for value in self.values.values():
                value.clear()
        else:
            self.message.setText(f"<b>{insp.name}</b>")
            self.message.setToolTip(insp.source or "")
            for label, text in insp.rows():
                self.values[label].setText(text)
            self.values["Warnings"].setStyleSheet(
                f"color: {GAP_COLOR};" if insp.warnings else ""
            )
            self.values["Missing frames"].setStyleSheet(
                f"color: {GAP_COLOR};" if insp.dropped_frames else ""
            )
            self.values["Late frames"].setStyleSheet(
                f"color: {GAP_COLOR};" if insp.late_frames else ""
            )
        self._plot(insp)

    def _plot(self, insp: Inspection | None) -> None:
        ax = self.axes
        ax.clear()
        self.interval_line = self.gap_line = self.median_line = None
        style_axes(ax, self._bg, self._fg)
        ax.set_xlabel("frame index", fontsize=9)
        ax.set_ylabel("inter-frame interval (ms)", fontsize=9)
        intervals = insp.intervals_ms if insp is not None else np.zeros(0)
        if insp is None or not np.isfinite(intervals).any():
            text = "no recording" if insp is None else "no frame timestamps"
            placeholder(ax, text, self._fg)
            self.canvas.draw_idle()
            return
        x = insp.interval_frames
        (self.interval_line,) = ax.plot(
            x, intervals, color=LINE_COLOR, lw=1.0, label="interval"
        )
        med = insp.median_interval_ms
        if med is not None:
            self.median_line = ax.axhline(
                med, color=self._fg, lw=0.8, ls="--", label=f"median {med:.2f} ms"
            )
        gaps = insp.gap_intervals
        (self.gap_line,) = ax.plot(
            x[gaps],
            intervals[gaps],
            ls="none",
            marker="o",
            ms=6,
            color=GAP_COLOR,
            label=f"interval > {DROP_FACTOR:g}x median (missing or late): {len(gaps)}",
        )
        if x.size == 1:
            ax.set_xlim(x[0] - 1, x[0] + 1)
        finite = intervals[np.isfinite(intervals)]
        top = float(finite.max())
        ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
        top_legend(ax, self._fg)  # above the axes: never hides a gap
        self.canvas.draw_idle()
