"""The ``mesofield-napari`` app: napari + napari-micromanager + the recorder.

By default the microscope is the built-in simulated camera; ``--config`` loads a
Micro-Manager configuration instead. The scripted mode (``--record-frames N --out DIR
--screenshot FILE --quit``) records N frames through the recorder widget exactly as a
user would, saves a screenshot of the window and exits: it is how the README's main
job runs on a machine without a screen (under Xvfb) and in CI.

``--experiment TARGET`` opens the recorder in its experiment mode instead (a whole rig
from ``hardware.yaml`` + ``experiment.json``; every camera on its own core, so no
napari-micromanager); with ``--quit`` it loads the target, presses Record, saves the
screenshot once every camera's file is reopened, and exits (``make demo``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import napari
    from pymmcore_plus import CMMCorePlus

    from ._widgets.recorder import RecorderWidget
    from .data.formats.payloads import ExperimentPayload
    from .models.recorder import RunOutcome


@dataclass
class AppOptions:
    config: Path | None = None
    size: tuple[int, int] = (512, 512)
    exposure_ms: float = 10.0
    record_frames: int | None = None
    out: Path | None = None
    screenshot: Path | None = None
    quit: bool = False
    writers: str = "tiff"
    subject: str = "sim"
    session: str = "1"
    task: str = "rec"
    timeout_s: float = 600.0
    experiment: Path | None = None  # a launch target: experiment mode
    duration_s: float | None = None  # experiment mode: run length (default: JSON's)


@dataclass
class AppResult:
    outcome: RunOutcome | None = None
    screenshot: Path | None = None
    errors: list[str] = field(default_factory=list)
    experiment: ExperimentPayload | None = None  # ExperimentRun.result() (experiment)


def build_window(
    viewer: napari.Viewer, core: CMMCorePlus
) -> tuple[RecorderWidget, Any | None]:
    """Dock napari-micromanager (when installed) on ``core`` and the recorder."""
    from ._widgets._micromanager import micromanager_available, open_main_window
    from ._widgets.recorder import RecorderWidget

    main_window = None
    if micromanager_available():
        main_window = open_main_window(viewer, core)
        recorder = RecorderWidget(viewer)
    else:
        recorder = RecorderWidget(viewer, core=core)
    viewer.window.add_dock_widget(recorder, name="Recorder", area="right")
    return recorder, main_window


def build_experiment_window(viewer: napari.Viewer) -> RecorderWidget:
    """Dock the recorder in its experiment mode (the rig brings its own cores)."""
    from ._widgets.recorder import RecorderWidget

    recorder = RecorderWidget(viewer)
    recorder.set_mode("experiment")
    viewer.window.add_dock_widget(recorder, name="Recorder", area="right")
    return recorder


def side_by_side(viewer: napari.Viewer, enabled: bool = True) -> None:
    """napari's grid mode (``viewer.canvas.grid`` since 0.6.3, ``viewer.grid`` before)."""
    canvas = getattr(viewer, "canvas", None)
    grid = getattr(canvas, "grid", None) if canvas is not None else None
    (grid if grid is not None else viewer.grid).enabled = enabled


def _screenshot_then_quit(
    viewer: napari.Viewer, opts: AppOptions, result: AppResult
) -> None:
    """Save the window (after the reopened layers drew), then close if asked."""
    from qtpy.QtCore import QTimer

    def take() -> None:
        assert opts.screenshot is not None
        opts.screenshot.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(os.fspath(opts.screenshot), canvas_only=False, flash=False)
        result.screenshot = opts.screenshot
        if opts.quit:
            QTimer.singleShot(0, viewer.close)

    if opts.screenshot is not None:
        QTimer.singleShot(500, take)
    elif opts.quit:
        QTimer.singleShot(0, viewer.close)


def script_experiment(
    viewer: napari.Viewer, recorder: RecorderWidget, opts: AppOptions, result: AppResult
) -> None:
    """Load the experiment into the panel; with ``quit``, press Record as a user would."""
    from qtpy.QtCore import QTimer

    panel = recorder.experiment_panel
    assert panel is not None and opts.experiment is not None
    panel.load(opts.experiment, output=os.fspath(opts.out) if opts.out else None)
    if panel.experiment is not None:
        if opts.subject:
            panel.select_subject(opts.subject)
        if opts.session:
            panel.session_edit.setText(opts.session)
        if opts.task:
            panel.task_edit.setText(opts.task)
        if opts.duration_s is not None:
            panel.duration_spin.setValue(opts.duration_s)
    if not opts.quit:
        return  # the user presses Record

    def finished(payload: ExperimentPayload) -> None:
        result.experiment = payload
        result.errors.extend(payload.get("errors") or [])
        side_by_side(viewer, len(viewer.layers) > 1)  # every camera at once
        viewer.reset_view()
        _screenshot_then_quit(viewer, opts, result)

    def start() -> None:
        if problems := panel.problems():
            result.errors.extend(problems)
            viewer.close()
            return
        if not panel.record():
            result.errors.append(panel.error_label.text() or "could not record")
            viewer.close()

    def failed(message: str) -> None:  # the devices could not open (one line)
        result.errors.append(message)
        viewer.close()

    def give_up() -> None:
        result.errors.append(f"no result after {opts.timeout_s:.0f} s")
        recorder.shutdown()
        viewer.close()

    panel.finished.connect(finished)
    panel.failed.connect(failed)
    QTimer.singleShot(500, start)  # after the window is shown
    timer = QTimer(recorder)
    timer.setSingleShot(True)
    timer.timeout.connect(give_up)
    timer.start(int(opts.timeout_s * 1000))


def script_recording(
    viewer: napari.Viewer, recorder: RecorderWidget, opts: AppOptions, result: AppResult
) -> None:
    """Fill the recorder's fields, press Record, and on the end save + maybe quit."""
    from qtpy.QtCore import QTimer

    assert opts.record_frames is not None and opts.out is not None
    recorder.set_mode("single")  # whatever mode the user left the recorder in
    recorder.root_edit.setText(os.fspath(opts.out))
    recorder.subject_edit.setText(opts.subject)
    recorder.session_edit.setText(opts.session)
    recorder.task_edit.setText(opts.task)
    recorder.writers_combo.setCurrentIndex(
        recorder.writers_combo.findData(opts.writers)
    )
    recorder.stop_combo.setCurrentIndex(recorder.stop_combo.findData("frames"))
    recorder.frames_spin.setValue(opts.record_frames)
    recorder.follow_check.setChecked(False)

    def finished(outcome: RunOutcome) -> None:
        result.outcome = outcome
        result.errors.extend(outcome.errors)
        if opts.screenshot is not None:
            # let the reopened layer draw before the picture is taken
            QTimer.singleShot(300, take_screenshot)
        elif opts.quit:
            QTimer.singleShot(0, viewer.close)

    def take_screenshot() -> None:
        assert opts.screenshot is not None
        opts.screenshot.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(os.fspath(opts.screenshot), canvas_only=False, flash=False)
        result.screenshot = opts.screenshot
        if opts.quit:
            QTimer.singleShot(0, viewer.close)

    def start() -> None:
        if problems := recorder.problems():
            result.errors.extend(problems)
            viewer.close()
            return
        recorder.record()
        if recorder.session is None:
            result.errors.append(recorder.status_label.text())
            viewer.close()

    def give_up() -> None:
        result.errors.append(f"no result after {opts.timeout_s:.0f} s")
        recorder.shutdown()
        viewer.close()

    recorder.finished.connect(finished)
    QTimer.singleShot(500, start)  # after the window is shown
    if opts.quit:
        timer = QTimer(recorder)
        timer.setSingleShot(True)
        timer.timeout.connect(give_up)
        timer.start(int(opts.timeout_s * 1000))


def is_scripted(opts: AppOptions) -> bool:
    """A demo / scripted run (records by itself, or quits): not the user's session."""
    return opts.record_frames is not None or opts.quit


@contextlib.contextmanager
def scratch_settings(enabled: bool) -> Iterator[None]:
    """While ``enabled``, the recorder remembers its fields in a throw-away file.

    A demo fills the fields itself (``--out demo-output``, the example experiment):
    saving them would replace what the user chose for their own runs.
    """
    from ._widgets._live import SETTINGS_ENV

    if not enabled:
        yield
        return
    before = os.environ.get(SETTINGS_ENV)
    with tempfile.TemporaryDirectory(prefix="mesofield-demo-settings-") as folder:
        os.environ[SETTINGS_ENV] = os.path.join(folder, "settings.ini")
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(SETTINGS_ENV, None)
            else:
                os.environ[SETTINGS_ENV] = before


def run_app(opts: AppOptions) -> AppResult:
    """Open the app; returns when the window closes.

    A scripted run (``--record-frames``, ``--quit``: the demos) never changes the
    user's saved recorder settings (see :func:`scratch_settings`).
    """
    with scratch_settings(is_scripted(opts)):
        return _run_app(opts)


def _run_app(opts: AppOptions) -> AppResult:
    import warnings

    import napari

    from .acquisition.timelapse import make_core

    # napari-micromanager's icons come from iconify.design; offline, superqt falls
    # back to plain icons after one warning per icon, which would bury our output
    warnings.filterwarnings(
        "ignore", message="Error fetching icon", category=UserWarning
    )
    from ._reader_preference import prefer_mesofield_reader

    prefer_mesofield_reader()  # dropped recordings open without a reader dialog
    viewer = napari.Viewer(title="mesofield")
    viewer.window.resize(1500, 950)
    result = AppResult()
    if opts.experiment is not None:
        recorder = build_experiment_window(viewer)
        script_experiment(viewer, recorder, opts, result)
        napari.run()
        recorder.shutdown()
        return result
    try:
        # create the core after the QApplication (Qt signals); the app keeps a
        # configuration's own exposure
        core = make_core(
            opts.config,
            size=opts.size,
            exposure_ms=None if opts.config else opts.exposure_ms,
        )
    except Exception as exc:
        viewer.close()
        raise RuntimeError(f"cannot set up the microscope: {exc}") from exc
    recorder, _ = build_window(viewer, core)
    if opts.record_frames is not None:
        script_recording(viewer, recorder, opts, result)
    napari.run()
    recorder.shutdown()
    return result
