"""The recorder's *Live traces* panel: a thin view over :mod:`mesofield_napari.live`.

ROIs come from a Shapes or Labels layer (the whole frame when it has none), drawn in
world coordinates over the decimated live layer; they are mapped to full-resolution
camera pixels here (the live layer's ``scale`` is its decimation step, so a world
coordinate is a full-resolution pixel) and handed to the Qt-free
:class:`~mesofield_napari.live.LiveTraces`, which computes on its own thread. The plot
refreshes at most 10 times a second and backs off when the GUI thread is busy, like
the live layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QVBoxLayout,
)

from ..live import DffSettings, LiveTraces, Roi
from ._plot import make_plot, placeholder, style_axes, theme_colors, top_legend

if TYPE_CHECKING:
    import napari

PLOT_INTERVAL_MS = 100  # at most 10 plot refreshes a second...
PLOT_MAX_INTERVAL_MS = 2000  # ...and at least one every 2 s however busy the GUI is
# a redraw may take at most ~1/PLOT_BUSY_FACTOR of the GUI thread: matplotlib holds
# the GIL while it draws (~50 ms for axes, ticks and legend), time the acquisition
# and the simulated (Python) cameras cannot use (measured: benchmarks/results/
# bench_live_traces.md)
PLOT_BUSY_FACTOR = 10
PLOT_MAX_POINTS = 2000  # per line: more points than pixels only costs drawing time
SYNC_DELAY_MS = 250  # shapes being dragged: read the layer once they settle
WHOLE_FRAME = "(whole frame)"
COLORS = ("#4aa3df", "#e8a33d", "#6cc070", "#d9534f", "#b07cd8", "#f0c419")


class LiveTracesPanel(QGroupBox):
    """Pick the ROI layer, switch ΔF/F on, watch the traces while recording."""

    def __init__(
        self,
        viewer: napari.Viewer,
        live_layer: Callable[[], Any] | None = None,
        frame_shape: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        super().__init__("Live traces")
        self.viewer = viewer
        self._live_layer = live_layer or (lambda: None)
        self._frame_shape = frame_shape or (lambda: None)
        self.model: LiveTraces | None = None
        self._ids: dict[int, Roi] = {}
        self._watched: Any = None
        self._last_tick = 0.0
        self.plot_updates = 0
        self.lines: dict[int, Any] = {}

        self.enable_check = QCheckBox("trace ROIs while recording")
        self.layer_combo = QComboBox()
        self.dff_check = QCheckBox("ΔF/F (F0: trailing low percentile)")
        self.window_spin = QDoubleSpinBox()
        self.window_spin.setRange(0.01, 3600.0)
        self.window_spin.setValue(30.0)
        self.window_spin.setSuffix(" s")
        self.percentile_spin = QDoubleSpinBox()
        self.percentile_spin.setRange(0.0, 100.0)
        self.percentile_spin.setValue(10.0)
        self.offset_spin = QDoubleSpinBox()
        self.offset_spin.setRange(0.0, 65535.0)
        self.offset_spin.setValue(100.0)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow(self.enable_check)
        form.addRow("ROIs from", self.layer_combo)
        form.addRow(self.dff_check)
        form.addRow("F0 window", self.window_spin)
        form.addRow("F0 percentile", self.percentile_spin)
        form.addRow("camera offset", self.offset_spin)

        bg, fg = theme_colors(viewer)
        self._colors = (bg, fg)
        self.figure, self.axes, self.canvas = make_plot(bg, 2.2, 160)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.canvas)
        layout.addWidget(self.status_label)
        self._draw_empty("no live traces")

        self._sync_timer = QTimer(self)
        self._sync_timer.setSingleShot(True)
        self._sync_timer.setInterval(SYNC_DELAY_MS)
        self._sync_timer.timeout.connect(self.sync_rois)
        self._plot_timer = QTimer(self)
        self._plot_timer.setInterval(PLOT_INTERVAL_MS)
        self._plot_timer.timeout.connect(self.refresh)

        self.layer_combo.currentIndexChanged.connect(self._watch_layer)
        viewer.layers.events.inserted.connect(self._fill_layers)
        viewer.layers.events.removed.connect(self._fill_layers)
        self._fill_layers()

    # ------------------------------------------------------------ session
    def model_for_run(self) -> LiveTraces | None:
        """A fresh model for a new recording session (None when switched off)."""
        if not self.enable_check.isChecked():
            self.model = None
            return None
        dff = None
        if self.dff_check.isChecked():
            dff = DffSettings(
                camera_offset=self.offset_spin.value(),
                percentile=self.percentile_spin.value(),
                window_s=self.window_spin.value(),
            )
        self.model = LiveTraces(dff=dff)
        self._ids = {}
        self.lines = {}
        self.sync_rois()
        self._last_tick = time.perf_counter()
        self._plot_timer.setInterval(PLOT_INTERVAL_MS)
        self._plot_timer.start()
        return self.model

    def session_over(self) -> None:
        """Stop refreshing (the model keeps its last traces for the plot)."""
        self.refresh()
        self._plot_timer.stop()

    # ------------------------------------------------------------ ROI layer
    def _fill_layers(self, *_: Any) -> None:
        from napari.layers import Labels, Shapes

        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItem(WHOLE_FRAME)
        for layer in self.viewer.layers:
            if isinstance(layer, (Shapes, Labels)):
                self.layer_combo.addItem(layer.name)
        index = self.layer_combo.findText(current)
        if index <= 0 and self.layer_combo.count() > 1:
            index = self.layer_combo.count() - 1  # a ROI layer appeared: use it
        self.layer_combo.setCurrentIndex(max(0, index))
        self.layer_combo.blockSignals(False)
        self._watch_layer()

    def roi_layer(self) -> Any:
        name = self.layer_combo.currentText()
        if name == WHOLE_FRAME or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def _watch_layer(self, *_: Any) -> None:
        layer = self.roi_layer()
        if layer is self._watched:
            return
        for name in ("data", "paint"):  # shapes edited / labels painted
            if self._watched is not None and hasattr(self._watched.events, name):
                getattr(self._watched.events, name).disconnect(self._layer_changed)
            if layer is not None and hasattr(layer.events, name):
                getattr(layer.events, name).connect(self._layer_changed)
        self._watched = layer
        self._layer_changed()

    def _layer_changed(self, *_: Any) -> None:
        self._sync_timer.start()  # debounced: a drag emits many events

    def current_rois(self) -> list[Roi]:
        """The ROI layer's shapes/labels in full-resolution pixels (whole frame if none)."""
        from napari.layers import Labels

        layer = self.roi_layer()
        rois: list[Roi] = []
        problems: list[str] = []
        if isinstance(layer, Labels):
            rois = self._label_rois(layer, problems)
        elif layer is not None:
            for i, (kind, data) in enumerate(
                zip(layer.shape_type, layer.data, strict=True)
            ):
                world = np.array([layer.data_to_world(v) for v in data])
                try:
                    rois.append(
                        Roi.from_shape(
                            kind, self._to_pixels(world), f"{layer.name}[{i}]"
                        )
                    )
                except ValueError as exc:
                    problems.append(str(exc))
        self._problems = problems
        return rois or [Roi.whole_frame()]

    def _to_pixels(self, world: np.ndarray) -> np.ndarray:
        """World (row, col) → full-resolution camera pixels through the live layer."""
        live = self._live_layer()
        if live is None:
            return world[:, -2:]  # the live layer will put pixel (r, c) at world (r, c)
        data = np.array([live.world_to_data(w) for w in world])[:, -2:]
        return data * np.asarray(live.scale)[-2:]  # its scale is its decimation

    def _label_rois(self, layer: Any, problems: list[str]) -> list[Roi]:
        shape = self._frame_shape()
        if shape is None:
            problems.append("frame size unknown: labels wait for the camera")
            return []
        labels = np.asarray(layer.data)[..., :, :]
        while labels.ndim > 2:
            labels = labels[0]
        scale = np.asarray(layer.scale)[-2:]
        offset = np.asarray(layer.translate)[-2:]
        # full-res pixel (r, c) sits at world (r, c): sample the labels there
        idx = [
            np.floor((np.arange(n) - offset[a]) / scale[a] + 0.5).astype(np.int64)
            for a, n in enumerate(shape)
        ]
        valid = [(i >= 0) & (i < labels.shape[a]) for a, i in enumerate(idx)]
        full = np.zeros(shape, dtype=labels.dtype)
        rows, cols = idx[0][valid[0]], idx[1][valid[1]]
        full[np.ix_(valid[0], valid[1])] = labels[np.ix_(rows, cols)]
        return [
            Roi.from_mask(full == v, f"{layer.name} label {int(v)}")
            for v in np.unique(full)
            if v != 0
        ]

    def sync_rois(self) -> None:
        """Tell the model what changed: unchanged ROIs keep their trace."""
        model = self.model
        if model is None:
            return
        wanted = self.current_rois()
        current = model.rois()
        keep: set[int] = set()
        new: list[Roi] = []
        for roi in wanted:
            match = next(
                (k for k, r in current.items() if k not in keep and r.same_as(roi)),
                None,
            )
            if match is None:
                new.append(roi)
            else:
                keep.add(match)
        gone = [k for k in current if k not in keep]
        for k, roi in zip(gone, new, strict=False):  # a moved or reshaped ROI restarts
            model.replace_roi(k, roi)
        for k in gone[len(new) :]:
            model.remove_roi(k)
        for roi in new[len(gone) :]:
            model.add_roi(roi)

    # ------------------------------------------------------------ plot
    def refresh(self) -> None:
        """Redraw the traces; the interval backs off when the GUI thread is busy."""
        t0 = time.perf_counter()
        late_ms = max(
            0.0, (t0 - self._last_tick) * 1000.0 - self._plot_timer.interval()
        )
        self._last_tick = t0
        model = self.model
        if model is None:
            return
        views = model.traces()
        use_dff = model.dff is not None
        ax = self.axes
        bg, fg = self._colors
        if not views or not any(len(v.time_s) for v in views):
            self._draw_empty("waiting for frames")
        else:
            if set(self.lines) != {v.roi for v in views}:
                ax.clear()
                style_axes(ax, bg, fg)
                ax.set_xlabel("run time (s)", fontsize=8)
                ax.set_ylabel("ΔF/F" if use_dff else "ROI mean", fontsize=8)
                self.lines = {}
                for i, v in enumerate(views):
                    (line,) = ax.plot([], [], lw=1.0, color=COLORS[i % len(COLORS)])
                    line.set_label(v.label)
                    self.lines[v.roi] = line
                top_legend(ax, fg, ncol=min(4, len(views)))
            for v in views:
                y = v.dff if use_dff and v.dff is not None else v.mean
                n = min(len(v.time_s), len(y))
                step = max(1, -(-n // PLOT_MAX_POINTS))  # ceil: the last point stays
                first = (n - 1) % step
                self.lines[v.roi].set_data(v.time_s[first:n:step], y[first:n:step])
            ax.relim()
            ax.autoscale_view()
            # drawn now, not idle: so its cost counts in the back-off below
            self.canvas.draw()
            self.plot_updates += 1
        self._show_status(model)
        busy_ms = (time.perf_counter() - t0) * 1000.0 + late_ms
        self._plot_timer.setInterval(
            int(
                min(
                    PLOT_MAX_INTERVAL_MS,
                    max(PLOT_INTERVAL_MS, PLOT_BUSY_FACTOR * busy_ms),
                )
            )
        )

    def _draw_empty(self, text: str) -> None:
        bg, fg = self._colors if hasattr(self, "_colors") else theme_colors(None)
        self.axes.clear()
        style_axes(self.axes, bg, fg)
        placeholder(self.axes, text, fg, fontsize=8)
        self.lines = {}
        self.canvas.draw_idle()

    def _show_status(self, model: LiveTraces) -> None:
        text = (
            f"{len(model.rois())} ROI(s) · {model.samples_computed} samples of "
            f"{model.frames_offered} frames · skipped {model.samples_skipped}"
        )
        issues = list(getattr(self, "_problems", [])) + model.errors[-2:]
        text += "".join(f"\n⚠ {p}" for p in issues)
        if text != self.status_label.text():
            self.status_label.setText(text)
