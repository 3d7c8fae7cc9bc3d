"""The recorder's experiment mode: a thin Qt view over :class:`ExperimentRun`.

Load a launch target (folder / ``hardware.yaml`` / ``experiment.json``), pick the
subject, Record: every camera and the encoder of the rig record into one run. The
panel shows one live layer per camera (newest frame only, decimated, ≤ 30 Hz with
back-off, fixed contrast — only *display* frames are skipped, never written ones), a
device table refreshed twice a second, and at the end every camera's file reopened
through the reader.

The primary camera records on the core napari-micromanager drives when that core drives
the primary's camera (same configuration file, or both the built-in simulated camera;
its MDA layer is switched off for the run, as the single-camera recorder does); every
other Micro-Manager camera gets a core of its own (:mod:`mesofield_napari.experiment.run`).
Opening, starting, stopping and finalizing the devices all happen on a worker thread,
so the GUI never waits on a device; only closing the panel (or napari) mid-run waits,
bounded, for the files to be finalized.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QSettings, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..devices import DeviceError
from ..experiment import (
    Experiment,
    ExperimentError,
    ExperimentRun,
    lendable_cores,
    load_experiment,
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
from ._micromanager import display_suppressed, find_main_window

if TYPE_CHECKING:
    import napari

    from ..data.formats.payloads import ExperimentPayload

TABLE_INTERVAL_MS = 500  # the device table refreshes at most twice a second
FINALIZE_TIMEOUT_S = 300.0  # bounded waits for devices to stop and files to finalize
COLUMNS = ("id", "kind", "state", "frames", "fps", "lost", "missing", "queue")


NO_OUTPUT = (
    "choose the experiment (output) folder: experiment.json has no experiment_directory"
)


def default_output(experiment: Experiment) -> Path | None:
    """The JSON's ``experiment_directory``; None without one (the user chooses:
    never the folder holding the config files, often a git checkout)."""
    return experiment.experiment_directory


class ExperimentPanel(FinalizeOnClose, QWidget):
    """Load an experiment, Record / Stop the whole rig, watch every device."""

    finished = Signal(object)  # run.result() dict, on the GUI thread, layers reopened
    failed = Signal(str)  # the run could not open its devices: nothing was recorded
    _run_done = Signal(object)  # (result | None, error | None) from the worker thread

    def __init__(
        self, napari_viewer: napari.Viewer, settings: QSettings | None = None
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.experiment: Experiment | None = None
        self.run: ExperimentRun | None = None
        self.load_error: str | None = None
        self.live_layers: dict[str, Any] = {}
        self.live_updates = 0  # how often a live layer was refreshed
        self.last_result: ExperimentPayload | None = None
        self._shown: dict[str, int] = {}
        self._worker: threading.Thread | None = None
        self._stop_wanted = threading.Event()
        self._closed = False
        self.lent_cores: dict[str, Any] = {}  # napari-micromanager's, for the primary
        self._suppressed = contextlib.ExitStack()  # its MDA layer off while we record
        self._settings = settings if settings is not None else settings_store()
        self._build_ui()
        self._run_done.connect(self._on_run_done)

        self._live_timer = QTimer(self)
        self._live_timer.setInterval(LIVE_INTERVAL_MS)
        self._live_timer.timeout.connect(self._update_live_layers)
        self._live_pacer = LivePacer(self._live_timer)
        self._table_timer = QTimer(self)
        self._table_timer.setInterval(TABLE_INTERVAL_MS)
        self._table_timer.timeout.connect(self._refresh_table)

        self._finalize_on_close()  # whichever way napari or the dock closes

        target = str(self._settings.value("experiment/target", "", type=str))
        output = str(self._settings.value("experiment/output", "", type=str))
        if target:
            self.target_edit.setText(target)
            self.load(target, output=output or None)
        self._validate()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.target_edit = QLineEdit()
        self.target_edit.setPlaceholderText("folder, hardware.yaml or experiment.json")
        self.target_edit.editingFinished.connect(self._target_edited)
        browse = QPushButton("…")
        browse.setToolTip("choose the experiment folder")
        browse.clicked.connect(self._browse_target)
        target_row = QHBoxLayout()
        target_row.addWidget(self.target_edit)
        target_row.addWidget(browse)

        self.subject_combo = QComboBox()
        self.subject_combo.currentIndexChanged.connect(self._subject_changed)
        self.session_edit = QLineEdit()
        self.task_edit = QLineEdit()
        self.duration_spin = QDoubleSpinBox()
        self.duration_spin.setRange(0.1, 7 * 24 * 3600.0)
        self.duration_spin.setDecimals(1)
        self.duration_spin.setSuffix(" s")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("experiment folder (runs go to data/…)")
        out_browse = QPushButton("…")
        out_browse.clicked.connect(self._browse_output)
        out_row = QHBoxLayout()
        out_row.addWidget(self.output_edit)
        out_row.addWidget(out_browse)

        form = QFormLayout()
        form.addRow("experiment", target_row)
        form.addRow("subject", self.subject_combo)
        form.addRow("session", self.session_edit)
        form.addRow("task", self.task_edit)
        form.addRow("duration", self.duration_spin)
        form.addRow("output", out_row)

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #e8a33d")
        self.error_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        self.error_label.setVisible(False)

        self.record_button = QPushButton("Record")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.record_button.clicked.connect(self.record)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.record_button)
        buttons.addWidget(self.stop_button)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        rows, columns = self.table.verticalHeader(), self.table.horizontalHeader()
        assert rows is not None and columns is not None  # Qt's stubs allow None
        rows.setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        columns.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(110)
        self.table.setToolTip("★ the primary device: its length ends the run")
        self.setMinimumWidth(440)

        self.status_label = QLabel("no experiment loaded")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        note = QLabel(
            "The primary camera records on napari-micromanager's core when that "
            "core drives it (same configuration, or both the simulated camera); "
            "every other camera on a core of its own."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: gray")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addLayout(buttons)
        layout.addWidget(self.table)
        layout.addWidget(self.status_label)
        layout.addWidget(note)
        layout.addStretch()

        for edit in (self.session_edit, self.task_edit, self.output_edit):
            edit.textChanged.connect(self._validate)

    def _target_edited(self) -> None:
        # a bound method, not a lambda: PyQt holds lambdas strongly (leaks the viewer)
        self.load(self.target_edit.text())

    def _browse_target(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Experiment folder", self.target_edit.text()
        )
        if folder:
            self.target_edit.setText(folder)
            self.load(folder)

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Experiment (output) folder", self.output_edit.text()
        )
        if folder:
            self.output_edit.setText(folder)

    # ------------------------------------------------------------------ load
    def load(self, target: str | os.PathLike[str], output: str | None = None) -> bool:
        """Load a launch target; a bad one shows its one-line error, Record off.

        ``output`` (a remembered folder) wins over the experiment's default.
        """
        if self.busy:
            return False
        text = os.fspath(target).strip()
        if self.target_edit.text() != text:
            self.target_edit.setText(text)
        self.experiment, self.load_error = None, None
        if not text:
            self.load_error = "choose an experiment (folder, hardware.yaml or JSON)"
        else:
            try:
                self.experiment = load_experiment(text)
            except ExperimentError as exc:
                self.load_error = str(exc)
            except OSError as exc:
                self.load_error = f"{text}: {exc}"
        exp = self.experiment
        self.subject_combo.blockSignals(True)
        self.subject_combo.clear()
        if exp is not None:
            self.subject_combo.addItems(list(exp.subjects))
            if exp.duration_s:
                self.duration_spin.setValue(float(exp.duration_s))
            default = default_output(exp)
            self.output_edit.setText(
                output or (os.fspath(default) if default is not None else "")
            )
            self.status_label.setText(
                f"{exp.hardware_path.parent.name}: {len(exp.cameras)} camera(s)"
                + (", 1 encoder" if exp.encoder else "")
                + f", primary {exp.primary.id}"
            )
        else:
            self.status_label.setText("no experiment loaded")
        self.subject_combo.blockSignals(False)
        self._subject_changed()
        self._fill_table(self._planned_rows())
        self._validate()
        return exp is not None

    def _subject_changed(self) -> None:
        exp = self.experiment
        sid = self.subject_combo.currentText()
        if exp is None or sid not in exp.subjects:
            return
        meta = exp.subjects[sid]
        self.session_edit.setText(str(meta.get("session", 1)))
        self.task_edit.setText(str(meta.get("task") or "rec"))

    def select_subject(self, subject: str) -> None:
        """Pick ``subject`` (fills session and task from ``Subjects``)."""
        index = self.subject_combo.findText(subject)
        if index < 0:
            raise ValueError(f"unknown subject {subject!r}")
        self.subject_combo.setCurrentIndex(index)
        self._subject_changed()

    def _planned_rows(self) -> list[dict[str, Any]]:
        exp = self.experiment
        if exp is None:
            return []
        rows: list[dict[str, Any]] = []
        specs: list[Any] = [*exp.cameras, *([exp.encoder] if exp.encoder else [])]
        for spec in specs:
            kind = (
                f"camera ({spec.backend})"
                if hasattr(spec, "backend")
                else f"encoder ({spec.type})"
            )
            rows.append(
                {
                    "id": spec.id,
                    "kind": kind + (" primary" if spec.primary else ""),
                    "state": "ready",
                    "frames": 0,
                    "fps": 0.0,
                    "lost": 0,
                    "missing": 0,
                    "queue_fill": 0.0,
                    "error": None,
                }
            )
        return rows

    # ------------------------------------------------------------------ checks
    @property
    def busy(self) -> bool:
        """True while a run is opening, recording or finalizing."""
        return self._worker is not None and self._worker.is_alive()

    def problems(self) -> list[str]:
        """Why Record is disabled (empty when it is enabled)."""
        if self.load_error:
            return [self.load_error]
        if self.experiment is None:
            return ["no experiment loaded"]
        out = []
        if not self.session_edit.text().strip():
            out.append("session is empty")
        if not self.task_edit.text().strip():
            out.append("task is empty")
        if not self.output_edit.text().strip():
            no_dir = self.experiment.experiment_directory is None
            out.append(NO_OUTPUT if no_dir else "choose an output folder")
        return out

    def _validate(self) -> None:
        problems = self.problems()
        busy = self.busy
        for w in (
            self.target_edit,
            self.subject_combo,
            self.session_edit,
            self.task_edit,
            self.duration_spin,
            self.output_edit,
        ):
            w.setEnabled(not busy)
        self.record_button.setEnabled(not busy and not problems)
        self.record_button.setToolTip("\n".join(problems))
        self.stop_button.setEnabled(busy and not self._stop_wanted.is_set())
        self.error_label.setText("\n".join(problems))
        self.error_label.setVisible(bool(problems) and not busy)

    # ------------------------------------------------------------------ actions
    def record(self) -> bool:
        """Start the whole experiment (devices open and start on a worker thread)."""
        if self.busy or self.problems():
            return False
        exp = self.experiment
        assert exp is not None
        out = Path(self.output_edit.text().strip()).expanduser()
        mm = find_main_window(self.window())
        try:
            lent = lendable_cores(exp, mm.core if mm is not None else None)
            out.mkdir(parents=True, exist_ok=True)
            run = ExperimentRun(
                exp,
                subject=self.subject_combo.currentText(),
                session=self.session_edit.text().strip(),
                task=self.task_edit.text().strip(),
                duration=self.duration_spin.value(),
                out=out,
                cores=lent,
            )
        except (ExperimentError, DeviceError, ValueError, OSError) as exc:
            self._show_error(str(exc))
            return False
        self.lent_cores = lent
        for core in lent.values():  # napari-micromanager must not copy our frames
            self._suppressed.enter_context(display_suppressed(self.window(), core))
        self._save_settings()
        self.run = run
        self.last_result = None
        self._stop_wanted.clear()
        self._remove_live_layers()
        self._shown = {}
        self._worker = threading.Thread(
            target=self._work, args=(run,), name="experiment-panel", daemon=True
        )
        self._worker.start()
        self.status_label.setText("opening devices…")
        self._live_timer.setInterval(LIVE_INTERVAL_MS)
        self._live_pacer.tick()
        self._live_timer.start()
        self._table_timer.start()
        self._validate()
        return True

    def stop(self) -> None:
        """Stop the run; devices stop and files finalize on the worker thread."""
        if self.busy:
            self._stop_wanted.set()
            self.status_label.setText("stopping: finalizing files…")
            self._validate()

    def shutdown(self, timeout: float = FINALIZE_TIMEOUT_S) -> None:
        """Closing the panel or napari: stop the run and wait (bounded) for its files."""
        self._closed = True
        self._stop_wanted.set()
        if (worker := self._worker) is not None:
            worker.join(timeout)
        with contextlib.suppress(RuntimeError):  # Qt side already deleted at exit
            self._suppressed.close()
            self._live_timer.stop()
            self._table_timer.stop()

    def _show_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setVisible(True)
        self.status_label.setText(text)

    def _save_settings(self) -> None:
        s = self._settings
        s.setValue("experiment/target", absolute_path(self.target_edit.text()))
        s.setValue("experiment/output", absolute_path(self.output_edit.text()))
        s.sync()

    # ------------------------------------------------------------------ worker
    def _work(self, run: ExperimentRun) -> None:
        """Open, start, wait (bounded), stop: the whole run, off the GUI thread."""
        try:
            run.open()
        except DeviceError as exc:
            self._emit(None, f"{run.experiment.hardware_path}: {exc}")
            return
        except Exception as exc:  # a folder we cannot write into, ...
            self._emit(
                None, str(exc).strip().splitlines()[0] if str(exc) else repr(exc)
            )
            return
        try:
            if not self._stop_wanted.is_set():
                run.start()
            deadline = time.monotonic() + 2 * run.duration_s + 60.0
            while not run.wait(0.1):
                if self._stop_wanted.is_set() or time.monotonic() > deadline:
                    run.stop(FINALIZE_TIMEOUT_S)
                    break
        except Exception as exc:
            run.errors.append(str(exc))
            run.stop(FINALIZE_TIMEOUT_S)
        self._emit(run.result(), None)

    def _emit(self, result: ExperimentPayload | None, error: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the widget is gone (app exit)
            self._run_done.emit((result, error))

    def _on_run_done(
        self, payload: tuple[ExperimentPayload | None, str | None]
    ) -> None:
        result, error = payload
        if self._worker is not None:
            self._worker.join(5.0)  # it only has to return after the emit
        self._suppressed.close()  # napari-micromanager's MDA layer back on
        self._live_timer.stop()
        self._table_timer.stop()
        if self._closed:
            return
        if error is not None:
            self._remove_live_layers()
            self._show_error(error)
            self._fill_table(self._planned_rows())
            self._validate()
            self.failed.emit(error)
            return
        assert result is not None
        self.last_result = result
        self._refresh_table()
        self._reopen(result)
        errors = result.get("errors") or []
        head = "done" if result.get("ok") else "finished with errors"
        lines = [f"{head}: {result['run_dir']}"] + [f"⚠ {e}" for e in errors]
        self.status_label.setText("\n".join(lines))
        self._validate()
        self.finished.emit(result)

    # ------------------------------------------------------------------ table
    def _refresh_table(self) -> None:
        if self.run is not None:
            self._fill_table(self.run.device_rows())
            st = self.run.status()
            if st["state"] == "running" and not self._stop_wanted.is_set():
                self.status_label.setText(
                    f"recording {st['elapsed_s']:.0f} / {st['duration_s']:.0f} s "
                    f"into {self.run.run_dir}"
                )

    def _fill_table(self, rows: list[dict[str, Any]]) -> None:
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            cells = (
                row["id"],
                _short_kind(row["kind"]),
                row["state"],
                str(row["frames"]),
                f"{row['fps']:.1f}",
                str(row["lost"]),
                str(row.get("missing", 0)),
                f"{row['queue_fill']:.0%}",
            )
            for c, text in enumerate(cells):
                item = self.table.item(r, c)
                if item is None:
                    self.table.setItem(r, c, QTableWidgetItem(text))
                elif item.text() != text:
                    item.setText(text)
            tip = row.get("error") or ""
            if (status := self.table.item(r, 2)) is not None:  # set just above
                status.setToolTip(tip)

    def table_rows(self) -> list[dict[str, str]]:
        """What the device table shows, as text (tests, screenshots)."""
        return [
            {
                col: (item.text() if (item := self.table.item(r, c)) else "")
                for c, col in enumerate(COLUMNS)
            }
            for r in range(self.table.rowCount())
        ]

    # ------------------------------------------------------------------ live
    def _update_live_layers(self) -> None:
        """Show each camera's newest frame: decimated, in place, never hogging the GUI
        (see ``_live.py``)."""
        run = self.run
        self._live_pacer.tick()
        if run is None:
            return
        updated = False
        for spec in run.experiment.cameras:
            latest = run.latest_frame(spec.id)
            if latest is None or latest[0] == self._shown.get(spec.id):
                continue
            self._shown[spec.id] = latest[0]
            self.live_layers[spec.id] = show_live(
                self.viewer,
                self.live_layers.get(spec.id),
                latest[1],
                f"{spec.name} (live)",  # the reopened file becomes "{name} (tiff)"
                {"mesofield_live": True, "device_id": spec.id},
                bgr=True,  # OpenCV cameras deliver BGR colour frames
            )
            updated = True
        if updated:
            self.live_updates += 1
            self._live_pacer.updated()

    def _remove_live_layers(self) -> None:
        for layer in self.live_layers.values():
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.live_layers = {}

    def _reopen(self, result: ExperimentPayload) -> None:
        """Swap the live frames for every camera's file, reopened through the reader."""
        from napari.layers import Layer

        from .._reader import read_recordings

        self._remove_live_layers()
        files = [
            Path(f["path"])
            for f in result.get("files", [])
            if f.get("kind") != "csv" and f.get("frames") and Path(f["path"]).exists()
        ]
        problems = []
        for path in files:
            try:
                layers = read_recordings([path])
            except Exception as exc:  # on disk; say why it did not open
                problems.append(f"{path.name}: could not reopen: {exc}")
                continue
            for data, kwargs, kind in layers:
                self.viewer.add_layer(Layer.create(data, kwargs, kind))
        if problems:
            self._show_error("\n".join(problems))

    # ------------------------------------------------------------------ Qt
    def busy_closing(self) -> bool:
        return self.busy


def _short_kind(kind: str) -> str:
    """``'camera (micromanager) primary'`` -> ``'MM camera ★'`` (a narrow dock)."""
    short = (
        kind.replace("camera (micromanager)", "MM camera")
        .replace("camera (opencv)", "OpenCV camera")
        .replace("encoder (wheel)", "wheel")
        .replace("encoder (treadmill)", "treadmill")
    )
    return short.replace(" primary", " ★")
