"""Record one session of an experiment headless, start to finish, bounded waits.

What ``mesofield-napari record --experiment TARGET`` runs (``cli/record.py`` parses
the options, prints the returned object or a summary, and turns
:class:`ExperimentError` into one line and exit status 2). A run that started but
failed returns ``ok: false`` with its ``errors``, its files kept.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..data.formats.payloads import ExperimentPayload
from ..devices import DeviceError
from .config import ExperimentError, load_experiment
from .run import ExperimentRun

__all__ = ["ExperimentError", "record_experiment"]

# every wait is bounded: the run's own length plus this much to finalize files
FINALIZE_TIMEOUT_S = 300.0
_WAIT_SLICE_S = 0.2


def record_experiment(
    target: str | Path,
    subject: str | None = None,
    session: str | int | None = None,
    task: str | None = None,
    duration: float | None = None,
    out: str | Path | None = None,
    stop: threading.Event | None = None,
    on_finishing: Callable[[], None] | None = None,
) -> ExperimentPayload:
    """Record one session of the experiment at ``target`` and describe what it wrote.

    Returns ``{"ok", "files": [{path, kind, frames, sidecar, device_id, ...}],
    "run_dir", "manifest", "errors", ...}``. Raises :class:`ExperimentError` (one line
    naming the file and key, or the device) for unusable files or a device that cannot
    be opened; nothing is written then. ``stop`` set (a stop request: SIGTERM,
    Ctrl-Break, the console closing, a stop file) ends the run early, cleanly, and
    so does Ctrl-C (``KeyboardInterrupt``): either way the result says
    ``interrupted``. ``on_finishing`` is called when the files start being finished
    (the CLI then acknowledges a further Ctrl-C instead of obeying it).
    """
    experiment = load_experiment(target)
    run = ExperimentRun(
        experiment,
        subject=subject,
        session=session,
        task=task,
        duration=duration,
        out=out,
    )
    try:
        run.open()
    except DeviceError as exc:
        raise ExperimentError(f"{experiment.hardware_path}: {exc}") from None
    except PermissionError as exc:
        raise ExperimentError(str(exc)) from None
    finished = False
    try:
        run.start()
        # in slices: a long wait is not interruptible by Ctrl-C on Windows
        deadline = time.monotonic() + run.duration_s * 2 + 60.0
        while not (finished := run.wait(_WAIT_SLICE_S)):
            if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                break
    except KeyboardInterrupt:  # Ctrl-C: a stop request like the others
        finished = False
    if on_finishing is not None:
        on_finishing()
    if not finished:
        run.stop(FINALIZE_TIMEOUT_S)
    result = run.result()
    # release the devices' cores now, on this thread: left to the interpreter's
    # exit, pymmcore's C++ side could call back into a finalizing Python
    del run
    gc.collect()
    return result
