"""The recorder dock widget: a thin Qt view over :mod:`mesofield_napari.models.recorder`.

It finds the core napari-micromanager drives in this viewer (or opens
napari-micromanager, or falls back to a simulated camera of its own), records runs on
it, streams the newest frame into a layer at most ~30 times a second, and, when a run
ends, replaces that layer with the recording reopened lazily through the reader.
Every way out (Stop, an MDA error, closing the dock, closing napari) finalizes files.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..models.recorder import (
    RecorderSettings,
    RecorderStatus,
    RecordingSession,
    RunOutcome,
    describe_outcome,
)
from ._live import (
    LIVE_INTERVAL_MS,
    FinalizeOnClose,
    LivePacer,
    absolute_path,
    settings_store,
    show_live,
)
from ._live import SETTINGS_ENV as SETTINGS_ENV  # re-exported: where settings go
from ._micromanager import (
    display_suppressed,
    find_main_window,
    micromanager_available,
    open_main_window,
)
from .live_traces import LiveTracesPanel

if TYPE_CHECKING:
    import napari
    from pymmcore_plus import CMMCorePlus

STATUS_INTERVAL_MS = 500
WRITER_LABELS = {
    "tiff": "OME-TIFF (BigTIFF)",
    "mp4": "MP4 video",
    "both": "OME-TIFF + MP4",
}


def _fmt_bytes(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def parse_contrast(text: str) -> tuple[float, float] | None:
    """``'auto'``/empty -> None, ``'100, 4000'`` -> (100.0, 4000.0); ValueError else."""
    text = text.strip().lower()
    if text in ("", "auto"):
        return None
    parts = text.replace(",", " ").split()
    if len(parts) != 2:
        raise ValueError("contrast: 'auto' or two numbers 'low, high'")
    lo, hi = (float(p) for p in parts)
    return lo, hi


class RecorderWidget(FinalizeOnClose, QWidget):
    """Set up a run, Record, watch frames arrive, add notes, Stop."""

    finished = Signal(object)  # RunOutcome, on the GUI thread, after layers are swapped
    _run_finished = Signal(object)  # RunOutcome, emitted from the acquisition thread
    _run_failed = Signal(object)  # exception from an armed run that could not start

    def __init__(
        self, napari_viewer: napari.Viewer, core: CMMCorePlus | None = None
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._given_core = core
        self._own_core: CMMCorePlus | None = None
        self._core: CMMCorePlus | None = None
        self.session: RecordingSession | None = None
        self.live_layer: Any = None
        self.live_updates = 0  # how often the live layer was refreshed (benchmark)
        self._shown_index = 0
        self._suppress = contextlib.ExitStack()
        from .._reader_preference import prefer_mesofield_reader

        prefer_mesofield_reader()  # reopened/dropped runs use our reader, no dialog
        self._settings = settings_store()
        self._build_ui()
        self._load_settings()
        self._run_finished.connect(self._on_run_finished)
        self._run_failed.connect(self._on_run_failed)

        self._live_timer = QTimer(self)
        self._live_timer.setInterval(LIVE_INTERVAL_MS)
        self._live_timer.timeout.connect(self._update_live_layer)
        self._live_pacer = LivePacer(self._live_timer)
        self._status_timer = QTimer(self)
        self._status_timer.setInterval(STATUS_INTERVAL_MS)
        self._status_timer.timeout.connect(self._tick)
        self._status_timer.start()

        self._finalize_on_close()  # whichever way napari or the dock closes
        self._rebind_core()
        self._describe_core()
        self._validate()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.core_label = QLabel()
        self.core_label.setWordWrap(True)
        self.open_mm_button = QPushButton("Open napari-micromanager")
        self.open_mm_button.clicked.connect(self.open_micromanager)

        self.root_edit = QLineEdit()
        self.root_edit.setPlaceholderText("folder that holds the runs")
        browse = QPushButton("…")
        browse.setToolTip("choose the output folder")
        browse.clicked.connect(self._browse_root)
        root_row = QHBoxLayout()
        root_row.addWidget(self.root_edit)
        root_row.addWidget(browse)

        self.subject_edit = QLineEdit("sim")
        self.session_edit = QLineEdit("1")
        self.task_edit = QLineEdit("rec")
        self.writers_combo = QComboBox()
        for key, label in WRITER_LABELS.items():
            self.writers_combo.addItem(label, key)
        self.compression_combo = QComboBox()
        for label, key in (
            ("none", ""),
            ("deflate (lossless, every reader)", "deflate"),
            ("zstd (lossless)", "zstd"),
            ("JPEG XL (lossless, fastest, tifffile/GDAL)", "jpegxl"),
        ):
            self.compression_combo.addItem(label, key)
        self.compression_combo.setToolTip(
            "lossless compression of the TIFF on all cores (README: Compression)"
        )

        self.fps_spin = QDoubleSpinBox()
        self.fps_spin.setRange(0.0, 1000.0)
        self.fps_spin.setDecimals(2)
        self.fps_spin.setSpecialValueText("auto (1000 / exposure)")
        self.codec_combo = QComboBox()
        self.codec_combo.setEditable(True)
        self.codec_combo.addItems(["H264", "h264-lossless", "mp4v", "MJPG", "FFV1"])
        self.contrast_edit = QLineEdit("auto")
        self.contrast_edit.setToolTip("'auto' (camera bit depth) or 'low, high'")
        video = QGroupBox("Video")
        video_form = QFormLayout(video)
        video_form.addRow("fps", self.fps_spin)
        video_form.addRow("codec", self.codec_combo)
        video_form.addRow("contrast", self.contrast_edit)
        self.video_box = video

        self.stop_combo = QComboBox()
        self.stop_combo.addItem("after frames", "frames")
        self.stop_combo.addItem("after seconds", "duration")
        self.stop_combo.addItem("until Stop", "until_stop")
        self.frames_spin = QSpinBox()
        self.frames_spin.setRange(1, 100_000_000)
        self.frames_spin.setValue(1000)
        self.duration_spin = QDoubleSpinBox()
        self.duration_spin.setRange(0.1, 7 * 24 * 3600.0)
        self.duration_spin.setValue(60.0)
        self.duration_spin.setSuffix(" s")
        stop_row = QHBoxLayout()
        stop_row.addWidget(self.stop_combo)
        stop_row.addWidget(self.frames_spin)
        stop_row.addWidget(self.duration_spin)

        self.follow_check = QCheckBox("record napari-micromanager MDAs instead")
        self.follow_check.setToolTip(
            "arm the recorder: every MDA started from napari-micromanager's MDA "
            "widget is written into a new run"
        )

        form = QFormLayout()
        form.addRow("output", root_row)
        form.addRow("subject", self.subject_edit)
        form.addRow("session", self.session_edit)
        form.addRow("task", self.task_edit)
        form.addRow("writers", self.writers_combo)
        form.addRow("TIFF compression", self.compression_combo)
        form.addRow("stop", stop_row)

        self.record_button = QPushButton("Record")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.record_button.clicked.connect(self.record)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.record_button)
        buttons.addWidget(self.stop_button)

        self.problem_label = QLabel()
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet("color: #e8a33d")
        self.status_label = QLabel("idle")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )

        self.note_edit = QPlainTextEdit()
        self.note_edit.setPlaceholderText("note for the running run")
        self.note_edit.setMaximumHeight(60)
        self.note_button = QPushButton("Add note")
        self.note_button.setEnabled(False)
        self.note_button.clicked.connect(self.add_note)
        self.notes_label = QLabel()
        self.notes_label.setWordWrap(True)

        # the mode switch: today's single-camera recorder, or the experiment panel
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("single camera", "single")
        self.mode_combo.addItem("experiment (hardware.yaml)", "experiment")
        self.mode_combo.currentIndexChanged.connect(self._mode_chosen)
        self.experiment_panel: Any = None  # created when first shown
        outer = QVBoxLayout(self)
        mode_row = QHBoxLayout()
        mode_row.addWidget(QLabel("mode"))
        mode_row.addWidget(self.mode_combo, 1)
        outer.addLayout(mode_row)
        self.single_panel = QWidget()
        outer.addWidget(self.single_panel)
        self._outer = outer

        layout = QVBoxLayout(self.single_panel)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.core_label)
        layout.addWidget(self.open_mm_button)
        layout.addLayout(form)
        layout.addWidget(self.video_box)
        layout.addWidget(self.follow_check)
        layout.addLayout(buttons)
        layout.addWidget(self.problem_label)
        layout.addWidget(self.status_label)
        layout.addWidget(self.note_edit)
        layout.addWidget(self.note_button)
        layout.addWidget(self.notes_label)
        self.live_traces_panel = LiveTracesPanel(  # live ROI traces (live_traces.py)
            self.viewer, lambda: self.live_layer, self._frame_shape
        )
        layout.addWidget(self.live_traces_panel)
        layout.addStretch()

        for edit in (
            self.root_edit,
            self.subject_edit,
            self.session_edit,
            self.task_edit,
            self.contrast_edit,
        ):
            edit.textChanged.connect(self._validate)
        for combo in (self.writers_combo, self.stop_combo):
            combo.currentIndexChanged.connect(self._validate)
        self.codec_combo.currentTextChanged.connect(self._validate)
        self.fps_spin.valueChanged.connect(self._validate)

    def _mode_chosen(self) -> None:
        self.set_mode(str(self.mode_combo.currentData()))

    def set_mode(self, mode: str) -> None:
        """Show the single-camera recorder (``"single"``) or the experiment panel."""
        if mode not in ("single", "experiment"):
            raise ValueError(f"unknown recorder mode {mode!r}")
        busy = (self.session is not None and self.session.recording) or (
            self.experiment_panel is not None and self.experiment_panel.busy
        )
        current = "experiment" if self.single_panel.isHidden() else "single"
        if busy and mode != current:  # never hide a running run's controls
            self.mode_combo.setCurrentIndex(self.mode_combo.findData(current))
            return
        if mode == "experiment" and self.experiment_panel is None:
            from .experiment import ExperimentPanel

            self.experiment_panel = ExperimentPanel(self.viewer, self._settings)
            self._outer.addWidget(self.experiment_panel)
        self.single_panel.setVisible(mode == "single")
        if self.experiment_panel is not None:
            self.experiment_panel.setVisible(mode == "experiment")
        if self.mode_combo.currentData() != mode:
            self.mode_combo.setCurrentIndex(self.mode_combo.findData(mode))
        self._settings.setValue("mode", mode)

    def _browse_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Output folder", self.root_edit.text()
        )
        if folder:
            self.root_edit.setText(folder)

    def _load_settings(self) -> None:
        s = self._settings
        if s.value("mode", "single", type=str) == "experiment":
            self.set_mode("experiment")
        self.root_edit.setText(str(s.value("output_root", "", type=str)))
        for key, edit in (
            ("subject", self.subject_edit),
            ("session", self.session_edit),
            ("task", self.task_edit),
        ):
            if value := s.value(key, "", type=str):
                edit.setText(str(value))

    def _save_settings(self) -> None:
        s = self._settings
        s.setValue("output_root", absolute_path(self.root_edit.text()))
        s.setValue("subject", self.subject_edit.text())
        s.setValue("session", self.session_edit.text())
        s.setValue("task", self.task_edit.text())
        s.sync()

    # ------------------------------------------------------------------ settings
    def current_settings(self) -> RecorderSettings:
        """The fields as :class:`RecorderSettings` (ValueError for unparsable ones)."""
        duration = (
            self.duration_spin.value()
            if self.stop_combo.currentData() == "duration"
            else None
        )
        return RecorderSettings(
            root=self.root_edit.text().strip(),
            subject=self.subject_edit.text().strip(),
            session=self.session_edit.text().strip(),
            task=self.task_edit.text().strip(),
            writers=str(self.writers_combo.currentData()),
            compression=str(self.compression_combo.currentData() or ""),
            frames=self.frames_spin.value(),
            duration_s=duration,
            until_stop=self.stop_combo.currentData() == "until_stop",
            fps=self.fps_spin.value() or None,
            fourcc=self.codec_combo.currentText().strip() or "H264",
            contrast=parse_contrast(self.contrast_edit.text()),
        )

    def problems(self) -> list[str]:
        """Why Record is disabled (empty when it is enabled)."""
        try:
            settings = self.current_settings()
        except ValueError as exc:
            return [str(exc)]
        return settings.problems()

    def _validate(self) -> None:
        stop_mode = self.stop_combo.currentData()
        self.frames_spin.setVisible(stop_mode == "frames")
        self.duration_spin.setVisible(stop_mode == "duration")
        self.video_box.setVisible(self.writers_combo.currentData() != "tiff")
        busy = self.session is not None and self.session.mode in ("timelapse", "armed")
        for field in self._run_fields():
            field.setEnabled(not busy)  # a run's settings are fixed once it starts
        problems = self.problems()
        self.record_button.setEnabled(not busy and not problems)
        self.record_button.setToolTip("\n".join(problems))
        self.problem_label.setText("\n".join(problems))
        self.problem_label.setVisible(bool(problems))

    def _run_fields(self) -> list[QWidget]:
        return [
            self.root_edit,
            self.subject_edit,
            self.session_edit,
            self.task_edit,
            self.writers_combo,
            self.video_box,
            self.stop_combo,
            self.frames_spin,
            self.duration_spin,
        ]

    # ------------------------------------------------------------------ core
    @property
    def core(self) -> CMMCorePlus:
        """The core the next run records on (created on first use if need be)."""
        core = self._find_core()
        if core is None:
            core = self._sim_core()
        return core

    def _find_core(self) -> CMMCorePlus | None:
        if self._given_core is not None:
            return self._given_core
        win = find_main_window(self.napari_window())
        if win is not None:
            return win.core
        return self._own_core

    def _sim_core(self) -> CMMCorePlus:
        if self._own_core is None:
            from ..devices.sim_camera import create_sim_core

            self._own_core = create_sim_core((512, 512), exposure_ms=10.0)
        return self._own_core

    def open_micromanager(self) -> Any:
        """Dock napari-micromanager (on the simulated camera unless one is there)."""
        win = find_main_window(self.napari_window())
        if win is None:
            win = open_main_window(self.viewer, self._sim_core())
        self._rebind_core()
        return win

    def _rebind_core(self) -> None:
        """Follow napari-micromanager swapping its core (another configuration)."""
        core = self._find_core()
        if core is self._core:
            return
        self._core = core
        session = self.session
        if session is not None and session.mode == "armed" and not session.recording:
            session.shutdown()
            self.session = None
            if core is not None:
                self._arm(core)
        self._describe_core()

    def _describe_core(self) -> None:
        core = self._core
        has_mm = find_main_window(self.napari_window()) is not None
        self.open_mm_button.setVisible(micromanager_available() and not has_mm)
        if core is None:
            self.core_label.setText(
                "Microscope: none open — Record uses the built-in simulated camera"
            )
            self.follow_check.setEnabled(False)
            return
        try:
            camera = core.getCameraDevice() or "no camera"
            w, h = core.getImageWidth(), core.getImageHeight()
            what = f"{camera} {w}×{h}"
        except Exception:
            what = "no camera"
        origin = "napari-micromanager" if has_mm else "built-in"
        self.core_label.setText(f"Microscope: {what} ({origin})")
        self.follow_check.setEnabled(has_mm or self._given_core is not None)

    # ------------------------------------------------------------------ actions
    def record(self) -> None:
        """Start a time-lapse run, or arm for napari-micromanager's MDAs."""
        if problems := self.problems():
            self.status_label.setText("cannot record: " + "; ".join(problems))
            return
        self._save_settings()
        core = self.core
        self._core = core
        self._describe_core()
        if self.follow_check.isChecked() and self.follow_check.isEnabled():
            self._arm(core)
        else:
            self._start_timelapse(core)
        self._validate()

    def _new_session(self, core: CMMCorePlus) -> RecordingSession:
        session = RecordingSession(
            core,
            self.current_settings(),
            on_run_finished=self._run_finished.emit,
            on_error=self._run_failed.emit,
        )
        session.live_traces = self.live_traces_panel.model_for_run()
        return session

    def _frame_shape(self) -> tuple[int, int] | None:
        core = self._core
        return None if core is None else (core.getImageHeight(), core.getImageWidth())

    def _start_timelapse(self, core: CMMCorePlus) -> None:
        session = self._new_session(core)
        self._suppress.enter_context(display_suppressed(self.napari_window(), core))
        try:
            run = session.start()
        except Exception as exc:
            self._suppress.close()
            self.status_label.setText(f"could not start: {exc}")
            return
        self.session = session
        self._start_live()
        self.stop_button.setEnabled(True)
        self.note_button.setEnabled(True)
        self.status_label.setText(f"recording into {run.run_dir}")

    def _arm(self, core: CMMCorePlus) -> None:
        session = self._new_session(core)
        session.arm()
        self.session = session
        self.stop_button.setEnabled(True)
        self.status_label.setText("armed: napari-micromanager MDAs are recorded")

    def stop(self) -> None:
        """Stop the run (files are finalized when the acquisition ends)."""
        if self.session is None:
            return
        self.session.stop()
        if not self.session.recording:
            self._session_over()

    def shutdown(self) -> None:
        """Finalize everything now (closing the dock or napari)."""
        session, self.session = self.session, None
        if session is not None:
            session.shutdown()
        if self.experiment_panel is not None:
            self.experiment_panel.shutdown()
        self._suppress.close()
        with contextlib.suppress(RuntimeError):  # Qt side already deleted at exit
            self._live_timer.stop()

    def add_note(self) -> None:
        text = self.note_edit.toPlainText().strip()
        if not text or self.session is None or not self.session.recording:
            return
        try:
            line = self.session.add_note(text)
        except (RuntimeError, OSError) as exc:
            self.status_label.setText(f"note not saved: {exc}")
            return
        self.note_edit.clear()
        self.notes_label.setText(f"{self.notes_label.text()}\n{line}".strip())

    # ------------------------------------------------------------------ live layer
    def _start_live(self) -> None:
        self._shown_index = 0
        self._live_timer.setInterval(LIVE_INTERVAL_MS)
        self._live_pacer.tick()
        self.live_layer = None
        self._live_timer.start()

    def _update_live_layer(self) -> None:
        """Show the newest frame: decimated, in place, never hogging the GUI (see
        ``_live.py``)."""
        session = self.session
        latest = session.latest_frame if session is not None else None
        self._live_pacer.tick()
        if latest is None or latest[0] == self._shown_index:
            return
        index, frame = latest
        self._shown_index = index
        name = session.run.paths.prefix if session and session.run else "live"
        self.live_layer = show_live(
            self.viewer, self.live_layer, frame, name, {"mesofield_live": True}
        )
        self.live_updates += 1
        self._live_pacer.updated()

    # ------------------------------------------------------------------ run end
    def _on_run_finished(self, outcome: RunOutcome) -> None:
        self._replace_live_layer(outcome)
        prefix = "done: " if outcome.ok else ""
        self.status_label.setText(prefix + describe_outcome(outcome))
        if self.session is not None and self.session.mode == "armed":
            self._live_timer.stop()
            self.live_layer = None
        else:
            self._session_over()
        self.finished.emit(outcome)

    def _on_run_failed(self, exc: BaseException) -> None:
        self.status_label.setText(f"run could not start: {exc}")

    def _session_over(self) -> None:
        self.live_traces_panel.session_over()
        self._live_timer.stop()
        self._suppress.close()
        self.live_layer = None
        self.stop_button.setEnabled(False)
        self.note_button.setEnabled(False)
        if self.session is not None and not self.session.recording:
            self.session = None
        self._validate()

    def _replace_live_layer(self, outcome: RunOutcome) -> None:
        """Swap the live frame for the whole run, reopened lazily through the reader."""
        from napari.layers import Layer

        from .._reader import read_recordings

        if self.live_layer is not None and self.live_layer in self.viewer.layers:
            self.viewer.layers.remove(self.live_layer)
        files = [p for p in outcome.data_files if p.exists()]
        if not files or outcome.frames_written == 0:
            return
        try:
            layers = read_recordings(files)
        except Exception as exc:  # the files are on disk; say why they did not open
            self.status_label.setText(f"recorded, but could not reopen: {exc}")
            return
        for data, kwargs, kind in layers:
            self.viewer.add_layer(Layer.create(data, kwargs, kind))

    # ------------------------------------------------------------------ status
    def _tick(self) -> None:
        session = self.session
        if session is None or not session.recording:
            self._rebind_core()
        if session is None:
            return
        if session.recording and not self._live_timer.isActive():
            # an armed run began (napari-micromanager started an MDA)
            self._start_live()
        self.note_button.setEnabled(session.recording)
        self.show_status(session.status())

    def show_status(self, st: RecorderStatus) -> None:
        if st.state != "recording":
            return
        fps = f"{st.acquisition_fps:.1f}" if st.acquisition_fps else "?"
        until_stop = not st.frames_planned
        of = " (until Stop)" if until_stop else f" of {st.frames_planned}"
        left = "" if until_stop else f"run left {_fmt_seconds(st.run_time_left_s)}  ·  "
        lines = [
            f"{st.run_name}",
            f"frames {st.frames_acquired} acquired, {st.frames_written} written"
            f"{of}  ·  {fps} fps",
            f"writer queue {st.queue_fill:.0%}  ·  back-pressure {st.backpressure_events}"
            f"  ·  lost {st.frames_lost}  ·  missing {st.frames_missing}",
            f"disk {_fmt_bytes(st.free_bytes)} free  ·  {left}disk full in"
            f" {_fmt_seconds(st.disk_time_left_s)}",
        ]
        lines += [f"⚠ {w}" for w in st.warnings]
        text = "\n".join(lines)
        if text != self.status_label.text():
            self.status_label.setText(text)

    # ------------------------------------------------------------------ Qt
    def busy_closing(self) -> bool:
        return self.session is not None or (
            self.experiment_panel is not None and self.experiment_panel.busy
        )

    def _watch_napari_window(self) -> None:
        super()._watch_napari_window()
        self._rebind_core()  # napari-micromanager may be docked in that window
