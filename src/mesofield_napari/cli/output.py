"""What the commands print to the terminal: single lines, library chatter hidden."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any


class _ConsoleFilter(logging.Filter):
    """What reaches the terminal as ``LEVEL: message``.

    pymmcore-plus's records below CRITICAL are dropped (a run's camera trouble is
    collected by :class:`~mesofield_napari.acquisition.run_watch.RunWatch` and reported once, in
    the run's errors), and so are our own ERROR records: every failure they describe
    is in ``run.errors`` and printed once at the end.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        if record.name.startswith("pymmcore-plus"):
            return False
        return not (
            record.name.startswith("mesofield_napari")
            and record.levelno >= logging.ERROR
        )


def quiet_pymmcore() -> None:
    """Raise pymmcore-plus's coloured console handler to CRITICAL (its records still
    reach our one-line handler, filtered). It exists only once pymmcore-plus is
    imported, so this runs again after the core is made."""
    for h in logging.getLogger("pymmcore-plus").handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(
            h, logging.FileHandler
        ):
            h.setLevel(logging.CRITICAL)


def configure_output() -> None:
    """Warnings and log records as single lines; library chatter below WARNING hidden.

    pymmcore-plus's own coloured console handler is raised to CRITICAL, so its
    records only reach the terminal through our one-line handler (filtered above).
    """
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.addFilter(_ConsoleFilter())
    logging.getLogger().addHandler(handler)
    quiet_pymmcore()

    def one_line(
        message: Warning | str, category: type[Warning], *_: Any, **__: Any
    ) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line  # type: ignore[assignment]
