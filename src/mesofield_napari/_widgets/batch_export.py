"""Batch export dock widget: traces, ΔF/F, videos and montages of many recordings.

A thin Qt view over :mod:`mesofield_napari.data.batch` (the same library as
``mesofield-napari export``). Inputs are files, a folder searched recursively (file
names matching a glob pattern) and/or open layers of this plugin's reader (their
``metadata["mesofield"]["source"]``). The parameters of the chosen operation are
validated by :func:`~mesofield_napari.models.batch_export.build_request`; *Run* then
calls :func:`~mesofield_napari.models.batch_export.execute` in a napari worker thread
(all file work happens there), with a napari progress bar in frames (polled from the
worker's thread-safe progress callback by a GUI timer) and *Cancel* setting the
``threading.Event`` the library checks between blocks (a cancelled job writes
nothing). When it is done, the results table lists every recording (ok / failed /
cancelled, with its output or error), trace operations are plotted, and *Add trace to
viewer* draws the selected trace as a Shapes path over its recording (the numbers are
in the layer's ``metadata["mesofield_trace"]``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    Select,
    SpinBox,
)
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..data.batch import DFF_METHODS
from ..data.batch.selection import camera_name
from ..data.formats.names import DATA_EXTENSIONS, VIDEO_EXTENSIONS
from ..models.batch_export import (
    DEFAULT_PATTERN,
    OPERATION_CHOICES,
    BatchOutcome,
    BatchRequest,
    LatestProgress,
    RequestError,
    Trace,
    build_request,
    execute,
    labels_mask,
    layer_sources,
    option_defaults,
    rect_roi,
    trace_matches,
    trace_path,
)
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

WHOLE_FRAME = ""  # value of the ROI combo's "whole frame" entry
POLL_MS = 100  # how often the GUI reads the worker's progress
STATUS_COLORS = {
    "ok": "#3fb950",
    "failed": "#e0393e",
    "cancelled": "#d29922",
    "skipped": "#8b949e",
}
TRACE_COLORS = ("#4aa3df", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#edc948")
INT_MAX = 2**31 - 1
LEGEND_ROWS = 3  # legend entries per column that fit in the canvas' top margin
LEGEND_CHARS = 44
RECORDING_FILTER = (
    "Recordings (" + " ".join(f"*{e}" for e in DATA_EXTENSIONS) + ");;All files (*)"
)


def _short(text: str, limit: int = LEGEND_CHARS) -> str:
    """``text`` elided in the middle to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 3
    return text[:head] + "…" + text[-(limit - 1 - head) :]


def _float(
    label: str, value: float, lo: float, hi: float, decimals: int = 3, tooltip: str = ""
) -> FloatSpinBox:
    w = FloatSpinBox(value=value, min=lo, max=hi, label=label, tooltip=tooltip)
    w.native.setDecimals(decimals)
    w.value = value  # again: the decimals were set after the first value
    return w


class BatchExportWidget(QWidget):
    """Dock widget: run one export over many recordings without blocking napari.

    Attributes useful to scripts and tests: the magicgui input widgets (``files``,
    ``folder``, ``pattern``, ``layers``, ``operation``, ``roi``, ``label``, the
    per-operation ones named as the library's parameters, ``max_frames``,
    ``out_dir``, ``overwrite``, ``workers``, ``scheduler``), ``param_boxes`` (one
    Container per operation), ``run_button``, ``cancel_button``, ``add_button``,
    ``status`` (QLabel), ``results`` (QTableWidget), ``canvas``/``axes`` with
    ``trace_lines`` (one ``Line2D`` per trace), ``outcome`` (the last
    :class:`~mesofield_napari.models.batch_export.BatchOutcome`), ``progress_bar``
    (the napari progress while running), ``worker`` and :attr:`running`.
    """

    def __init__(
        self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._viewer = napari_viewer
        self._bg, self._fg = theme_colors(napari_viewer)
        self.outcome: BatchOutcome | None = None
        self.trace_lines: list[Line2D] = []
        self.worker: Any = None
        self.progress_bar: Any = None
        self._cancel: threading.Event | None = None
        self._progress = LatestProgress()
        self._row_traces: list[list[Trace]] = []
        d = option_defaults()

        # ---- inputs
        self.files = FileEdit(
            mode=FileDialogMode.EXISTING_FILES, label="Files", filter=RECORDING_FILTER
        )
        self.folder = FileEdit(
            mode=FileDialogMode.EXISTING_DIRECTORY, nullable=True, label="Folder"
        )
        self.pattern = LineEdit(
            value=DEFAULT_PATTERN,
            label="Pattern",
            tooltip="file names to take in the folder (searched recursively); "
            "empty = every recording",
        )
        self.include_videos = CheckBox(
            value=False,
            label="Include videos",
            tooltip="also export the videos found in the folder (the MP4/AVI "
            "previews); off = the TIFF cameras only, the videos listed as skipped",
        )
        self.layers = Select(
            choices=self._layer_choices,
            label="Open layers",
            tooltip="recordings opened with the mesofield reader",
        )
        self.layers.native.setMaximumHeight(90)
        self.operation = ComboBox(
            choices=OPERATION_CHOICES, value="mean-trace", label="Operation"
        )
        self.inputs = Container(
            widgets=[
                self.files,
                self.folder,
                self.pattern,
                self.include_videos,
                self.layers,
                self.operation,
            ],
            labels=True,
        )

        # ---- per-operation parameters
        self.roi = ComboBox(
            choices=self._roi_choices,
            label="ROI",
            tooltip="whole frame, the selected (or first) shape's bounding box in a "
            "Shapes layer, or the labelled pixels of a Labels layer",
        )
        self.label = SpinBox(
            value=0, min=0, max=INT_MAX, label="Label", tooltip="0 = every label"
        )
        self.method = ComboBox(choices=DFF_METHODS, value=d["method"], label="Method")
        self.camera_offset = _float("Camera offset", d["camera_offset"], -1e6, 1e6, 2)
        self.fs = _float(
            "fs (Hz)", d["fs"], 0, 1e6, tooltip="0 = from the sidecar clock"
        )
        self.percentile = _float("Percentile", d["percentile"], 0, 100, 2)
        self.window_seconds = _float("Window (s)", d["window_seconds"], 0.001, 1e6)
        self.f0_floor = _float("F0 floor", d["f0_floor"], 0, 1e9)
        self.n_f0_samples = SpinBox(
            value=d["n_f0_samples"], min=1, max=INT_MAX, label="F0 samples"
        )
        self.chunk_frames = SpinBox(
            value=d["chunk_frames"], min=1, max=INT_MAX, label="Chunk frames"
        )
        self.fix_first_frame = CheckBox(
            value=d["fix_first_frame"], label="Fix first frame"
        )
        self.ext = ComboBox(choices=VIDEO_EXTENSIONS, value=d["ext"], label="Format")
        self.fps = _float("fps", d["fps"], 0, 1e5, tooltip="0 = from the sidecar")
        self.fourcc = LineEdit(
            value=d["fourcc"], label="FourCC", tooltip="empty = default codec"
        )
        self.contrast_low = _float(
            "Contrast low", d["contrast_low"], -1e9, 1e9, 2, tooltip="0, 0 = auto"
        )
        self.contrast_high = _float(
            "Contrast high", d["contrast_high"], -1e9, 1e9, 2, tooltip="0, 0 = auto"
        )
        self.frame = ComboBox(choices=("mean", "frame"), value=d["frame"], label="Tile")
        self.frame_index = SpinBox(
            value=d["frame_index"],
            min=-INT_MAX,
            max=INT_MAX,
            label="Frame index",
            tooltip="negative counts from the end",
        )
        self.columns = SpinBox(
            value=d["columns"], min=0, max=1000, label="Columns", tooltip="0 = auto"
        )
        self.name = LineEdit(value=d["name"], label="File name")
        self.param_boxes: dict[str, Container] = {
            "mean-trace": Container(widgets=[self.roi, self.label], labels=True),
            "dff": Container(
                widgets=[
                    self.method,
                    self.camera_offset,
                    self.fs,
                    self.percentile,
                    self.window_seconds,
                    self.f0_floor,
                    self.n_f0_samples,
                    self.chunk_frames,
                    self.fix_first_frame,
                ],
                labels=True,
            ),
            "video": Container(
                widgets=[
                    self.ext,
                    self.fps,
                    self.fourcc,
                    self.contrast_low,
                    self.contrast_high,
                ],
                labels=True,
            ),
            "montage": Container(
                widgets=[self.frame, self.frame_index, self.columns, self.name],
                labels=True,
            ),
        }

        # ---- output and execution
        self.max_frames = SpinBox(
            value=0, min=0, max=INT_MAX, label="Max frames", tooltip="0 = all"
        )
        self.out_dir = FileEdit(
            mode=FileDialogMode.EXISTING_DIRECTORY,
            nullable=True,
            label="Output folder",
            tooltip="empty = <run folder>/processed of each recording",
        )
        self.overwrite = CheckBox(value=False, label="Overwrite existing outputs")
        self.workers = SpinBox(value=1, min=1, max=os.cpu_count() or 1, label="Workers")
        self.scheduler = LineEdit(
            value="",
            label="Scheduler",
            tooltip="dask.distributed scheduler address (tcp://host:8786); "
            "empty = this computer",
        )
        self.outputs = Container(
            widgets=[
                self.max_frames,
                self.out_dir,
                self.overwrite,
                self.workers,
                self.scheduler,
            ],
            labels=True,
        )

        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("batchRun")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("batchCancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        self.status = QLabel("Choose recordings and an operation, then Run.")
        self.status.setObjectName("batchStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )

        self.results = QTableWidget(0, 3)
        self.results.setObjectName("batchResults")
        self.results.setHorizontalHeaderLabels(
            ["Status", "Recording", "Output / error"]
        )
        rows = self.results.verticalHeader()
        assert rows is not None  # Qt's stubs allow None; a table has its headers
        rows.setVisible(False)
        self.results.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.results.setSelectionBehavior(
            QAbstractItemView.SelectionBehavior.SelectRows
        )
        self.results.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.results.horizontalHeader()
        assert header is not None
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.results.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.results.setWordWrap(False)
        self.results.setMinimumHeight(120)
        self.results.itemSelectionChanged.connect(self._on_row_selected)

        self.figure, self.axes, self.canvas = make_plot(self._bg, 2.4, 200)

        self.add_button = QPushButton("Add trace to viewer")
        self.add_button.setObjectName("batchAddTrace")
        self.add_button.setEnabled(False)
        self.add_button.setToolTip(
            "draw the selected recording's trace as a Shapes path over its frame "
            "(values and times in the layer's metadata['mesofield_trace'])"
        )
        self.add_button.clicked.connect(self.add_selected_trace)

        layout = QVBoxLayout(self)
        layout.addWidget(self.inputs.native)
        for box in self.param_boxes.values():
            layout.addWidget(box.native)
        layout.addWidget(self.outputs.native)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.results, stretch=1)
        layout.addWidget(self.canvas, stretch=2)
        layout.addWidget(self.add_button)

        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll_progress)

        self.operation.changed.connect(self._on_operation)
        self.roi.changed.connect(self._on_roi)
        self.frame.changed.connect(self._on_frame)
        self.scheduler.changed.connect(self._on_scheduler)
        self._on_operation()
        self._on_roi()
        self._on_frame()
        self._plot([])

        events = napari_viewer.layers.events
        self._layer_events = [
            events.inserted,
            events.removed,
            events.reordered,
            events.renamed,
        ]
        for emitter in self._layer_events:
            emitter.connect(self._on_layers_changed)
        self._connected = True

    # ------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self.worker is not None

    def disconnect_viewer(self) -> None:
        """Stop following the viewer's layer list (on close)."""
        if self._connected:
            self._connected = False
            for emitter in self._layer_events:
                with contextlib.suppress(Exception):
                    emitter.disconnect(self._on_layers_changed)

    def closeEvent(self, event: Any) -> None:
        self.cancel()
        self.disconnect_viewer()
        super().closeEvent(event)

    def _on_layers_changed(self, event: Any = None) -> None:
        try:
            self.refresh_layers()
        except RuntimeError:  # the C++ widget is gone
            self.disconnect_viewer()

    def refresh_layers(self) -> None:
        """Re-read the open mesofield layers and the Shapes/Labels ROI layers."""
        self.layers.reset_choices()
        self.roi.reset_choices()

    # ------------------------------------------------------------ choices
    def _layer_choices(self, widget: Any = None) -> list[tuple[str, str]]:
        sources = layer_sources(self._viewer.layers)
        return [(name, os.fspath(src)) for name, src in sources.items()]

    def _roi_choices(self, widget: Any = None) -> list[tuple[str, str]]:
        from napari.layers import Labels, Shapes

        out = [("whole frame", WHOLE_FRAME)]
        for layer in self._viewer.layers:
            if isinstance(layer, Shapes):
                out.append((f"{layer.name} (shapes)", layer.name))
            elif isinstance(layer, Labels):
                out.append((f"{layer.name} (labels)", layer.name))
        return out

    def _on_operation(self, *_: Any) -> None:
        for name, box in self.param_boxes.items():
            box.native.setVisible(name == self.operation.value)

    def _on_roi(self, *_: Any) -> None:
        from napari.layers import Labels

        layer = self._layer(self.roi.value)
        self.label.native.setEnabled(isinstance(layer, Labels))

    def _on_frame(self, *_: Any) -> None:
        self.frame_index.native.setEnabled(self.frame.value == "frame")

    def _on_scheduler(self, *_: Any) -> None:
        self.workers.native.setEnabled(not self.scheduler.value.strip())

    def _layer(self, name: str | None) -> Any:
        if not name:
            return None
        try:
            return self._viewer.layers[name]
        except KeyError:
            return None

    # ------------------------------------------------------------ the request
    def _reference_layer(self) -> Any:
        """The image layer whose pixels a drawn ROI refers to (the first chosen)."""
        chosen = set(self.layers.value)
        candidates = []
        for layer in self._viewer.layers:
            src = layer_sources([layer]).get(layer.name)
            if src is not None:
                candidates.append((os.fspath(src) not in chosen, layer))
        candidates.sort(key=lambda c: c[0])  # stable: chosen ones first
        return candidates[0][1] if candidates else None

    def _roi_value(self) -> Any:
        from napari.layers import Labels, Shapes

        name = self.roi.value
        if self.operation.value != "mean-trace" or not name:
            return None
        layer = self._layer(name)
        if isinstance(layer, Labels):
            return labels_mask(layer.data)
        if not isinstance(layer, Shapes):
            raise RequestError(f"ROI layer {name!r} is no longer in the viewer")
        if not len(layer.data):
            raise RequestError(f"draw a rectangle in the Shapes layer {name!r}")
        selected = sorted(layer.selected_data)
        vertices = layer.data[selected[0] if selected else 0]
        ref = self._reference_layer()
        kwargs: dict[str, Any] = {
            "scale": tuple(layer.scale),
            "translate": tuple(layer.translate),
        }
        if ref is not None:
            shape = ref.data.shape
            kwargs.update(
                frame_shape=shape[-3:-1] if getattr(ref, "rgb", False) else shape[-2:],
                image_scale=tuple(ref.scale),
                image_translate=tuple(ref.translate),
            )
        return rect_roi(vertices, **kwargs)

    def _roi_camera(self) -> str | None:
        """The camera a drawn ROI belongs to: the reference layer's recording's."""
        if self.operation.value != "mean-trace" or not self.roi.value:
            return None
        ref = self._reference_layer()
        src = layer_sources([ref]).get(ref.name) if ref is not None else None
        return camera_name(src) if src is not None else None

    def make_request(self) -> BatchRequest:
        """The current values as a validated request (``RequestError`` if invalid)."""
        return build_request(
            self.operation.value,
            # magicgui types every mode's value alike: "rm" gives a tuple, "d" a path
            files=cast("tuple[Path, ...]", self.files.value) or (),
            folder=cast("Path | None", self.folder.value),
            pattern=self.pattern.value,
            layer_paths=self.layers.value,
            out_dir=cast("Path | None", self.out_dir.value),
            overwrite=self.overwrite.value,
            workers=self.workers.value,
            scheduler=self.scheduler.value,
            max_frames=self.max_frames.value,
            roi=self._roi_value(),
            label=self.label.value,
            roi_camera=self._roi_camera(),
            include_videos=self.include_videos.value,
            options={name: getattr(self, name).value for name in option_defaults()},
        )

    # ------------------------------------------------------------ running
    def run(self) -> None:
        """Validate, then export in a worker thread (the GUI stays responsive)."""
        if self.running:
            return
        try:
            request = self.make_request()
        except RequestError as exc:
            self._set_status(str(exc), error=True)
            return
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self._cancel = threading.Event()
        self._progress = LatestProgress()
        self.progress_bar = progress(total=0, desc=f"Batch export: {request.operation}")
        self.outcome = None
        self._show_rows(None)
        self._plot([])
        self._set_status(f"Running {request.operation}…")
        worker = create_worker(
            execute,
            request,
            self._progress,
            self._cancel,
            _start_thread=False,
        )
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.add_button.setEnabled(False)
        self._timer.start()
        worker.start()

    def cancel(self) -> None:
        """Ask the running batch to stop at its next block (nothing partial stays)."""
        if self._cancel is not None and self.running:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self._set_status("Cancelling…")

    def _poll_progress(self) -> None:
        value = self._progress.take()
        pbar = self.progress_bar
        if value is None or pbar is None:
            return
        done, total = value
        if pbar.total != total:
            pbar.total = total
        if done != pbar.n:
            pbar.update(done - pbar.n)
        cancelling = self._cancel is not None and self._cancel.is_set()
        if self.outcome is None and not cancelling:  # never over the final status
            self._set_status(f"Running… {done} of {total} frames")

    def _on_returned(self, outcome: BatchOutcome) -> None:
        self._poll_progress()
        self.outcome = outcome
        if outcome.summary is None:
            self._set_status(outcome.error or "the batch did not run", error=True)
            return
        rows = outcome.rows
        counts = {s: sum(r.status == s for r in rows) for s in STATUS_COLORS}
        text = (
            f"{outcome.summary.operation}: {counts['ok']} ok, {counts['failed']} "
            f"failed, {counts['cancelled']} cancelled, {counts['skipped']} skipped "
            f"in {outcome.summary.elapsed_s:.1f} s"
        )
        if outcome.error:
            text += f" ({outcome.error})"
        self._set_status(text, error=bool(counts["failed"] or outcome.error))
        self._show_rows(outcome)
        self._plot(outcome.traces)

    def _on_errored(self, exc: BaseException) -> None:  # execute() does not raise
        self._set_status(f"{type(exc).__name__}: {exc}", error=True)

    def _on_finished(self) -> None:
        self._timer.stop()
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None
        self.worker = None
        self._cancel = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._on_row_selected()

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {STATUS_COLORS['failed']};" if error else "")

    # ------------------------------------------------------------ results
    def _show_rows(self, outcome: BatchOutcome | None) -> None:
        table = self.results
        table.setRowCount(0)
        self._row_traces = []
        if outcome is None:
            return
        for i, row in enumerate(outcome.rows):
            table.insertRow(i)
            status = QTableWidgetItem(row.status)
            status.setForeground(QColor(STATUS_COLORS[row.status]))
            name = QTableWidgetItem(row.recording.name)
            name.setToolTip(os.fspath(row.recording))
            detail = QTableWidgetItem(
                ", ".join(p.name for p in row.outputs) if row.outputs else row.detail
            )
            tip = row.detail
            if row.warnings:
                tip += "\n" + "\n".join(f"warning: {w}" for w in row.warnings)
            detail.setToolTip(tip)
            for col, item in enumerate((status, name, detail)):
                table.setItem(i, col, item)
            self._row_traces.append(
                [t for t in outcome.traces if t.path in set(row.outputs)]
            )
        if any(self._row_traces):
            first = next(i for i, t in enumerate(self._row_traces) if t)
            table.selectRow(first)

    def selected_traces(self) -> list[Trace]:
        """The traces of the selected results row (all positions of a recording)."""
        selection = self.results.selectionModel()
        assert selection is not None  # Qt's stubs allow None; a view has its model
        rows = {i.row() for i in selection.selectedRows()}
        return [t for r in sorted(rows) for t in self._row_traces[r]]

    def _on_row_selected(self) -> None:
        chosen = {str(t.path) for t in self.selected_traces()}
        self.add_button.setEnabled(bool(chosen) and not self.running)
        for line in self.trace_lines:
            line.set_linewidth(2.2 if line.get_gid() in chosen else 1.0)
        if self.trace_lines:
            self.canvas.draw_idle()

    def _plot(self, traces: list[Trace]) -> None:
        ax = self.axes
        ax.clear()
        self.trace_lines = []
        style_axes(ax, self._bg, self._fg)
        if not traces:
            placeholder(
                ax,
                "traces appear here after a mean-trace or dff run",
                self._fg,
                fontsize=8,
            )
            self.canvas.draw_idle()
            return
        xlabels = set()
        for i, trace in enumerate(traces):
            x, y, xlabel = trace.xy()
            xlabels.add(xlabel)
            (line,) = ax.plot(
                x,
                y,
                lw=1.0,
                color=TRACE_COLORS[i % len(TRACE_COLORS)],
                label=_short(trace.label),
            )
            line.set_gid(str(trace.path))  # matplotlib's gid is a str
            self.trace_lines.append(line)
        ax.set_xlabel(" / ".join(sorted(xlabels)), fontsize=9)
        ax.set_ylabel(traces[0].quantity, fontsize=9)
        if len(traces) <= 2 * LEGEND_ROWS:  # above the axes, in the top margin
            top_legend(ax, self._fg, ncols=1 if len(traces) <= LEGEND_ROWS else 2)
        self._on_row_selected()
        self.canvas.draw_idle()

    # ------------------------------------------------------------ to the viewer
    def _source_layer(self, trace: Trace) -> Any:
        for layer in self._viewer.layers:
            meta = layer.metadata.get("mesofield")
            if not isinstance(meta, dict) or not meta.get("source"):
                continue
            if trace_matches(trace, meta["source"], meta.get("position")):
                return layer
        return None

    def add_selected_trace(self) -> list[Any]:
        """Add the selected trace(s) as Shapes path layers; the new layers.

        The path is drawn over the recording's frame if its layer is open (else in a
        200 x 100 box at the origin): time left to right, larger values higher. The
        layer's ``metadata["mesofield_trace"]`` holds the trace itself (``time_s``,
        ``values``, ``quantity``, ``csv``, ``recording``).
        """
        added = []
        for trace in self.selected_traces():
            ref = self._source_layer(trace)
            extent = origin = None
            if ref is not None:
                world = np.asarray(ref.extent.world)
                lo, hi = world[0, -2:], world[1, -2:]
                extent, origin = tuple(hi - lo), tuple(lo)
            try:
                verts = trace_path(trace, extent, origin or (0.0, 0.0))
            except RequestError as exc:
                self._set_status(str(exc), error=True)
                continue
            size = extent if extent is not None else (100.0, 200.0)
            layer = self._viewer.add_shapes(
                [verts],
                shape_type="path",
                name=f"{trace.label} trace",
                edge_color=LINE_COLOR,
                edge_width=max(size) / 150,
                metadata={
                    "mesofield_trace": {
                        "quantity": trace.quantity,
                        "time_s": np.asarray(trace.time_s, dtype=float),
                        "values": np.asarray(trace.values, dtype=float),
                        "csv": os.fspath(trace.path),
                        "recording": os.fspath(trace.recording),
                        "position": trace.position,
                    }
                },
            )
            added.append(layer)
        if added:
            self._set_status(f"added {', '.join(layer.name for layer in added)}")
        return added
