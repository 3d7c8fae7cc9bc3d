"""What reaches the terminal from the libraries we drive (one place for the rule).

pymmcore-plus installs its own coloured console handler on its logger; the CLI prints
one line per problem instead (collected into the run's errors and printed once at the
end), so that handler is raised to CRITICAL once a core exists. The single-camera path
of the CLI did this after making its core; experiment runs make their cores later, in
:class:`~mesofield_napari.experiment.ExperimentRun`, so a cancelled secondary camera's
coloured ``MDA Canceled`` warning reached stderr. :func:`quiet_pymmcore_for_cli` is
called there, and only acts when the CLI's one-line console handler is installed (a
library user's own logging is left alone).
"""

from __future__ import annotations

import logging

PYMM_LOGGER = "pymmcore-plus"


class ConsoleFilter(logging.Filter):
    """What the CLI lets reach the terminal as ``LEVEL: message``.

    pymmcore-plus's records below CRITICAL are dropped (a run's camera trouble is
    collected by :class:`~.run_watch.RunWatch` and reported once, in the run's
    errors), and so are our own ERROR records: every failure they describe is in
    ``run.errors`` and printed once at the end.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        if record.name.startswith(PYMM_LOGGER):
            return False
        return not (
            record.name.startswith("mesofield_napari")
            and record.levelno >= logging.ERROR
        )


def quiet_pymmcore_console() -> None:
    """Raise pymmcore-plus's coloured console handler(s) to CRITICAL; its records
    still reach the root logger's handlers. A no-op before pymmcore-plus is imported."""
    for h in logging.getLogger(PYMM_LOGGER).handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(
            h, logging.FileHandler
        ):
            h.setLevel(logging.CRITICAL)


def cli_console_active() -> bool:
    """True when the CLI's one-line console handler is on the root logger."""
    return any(
        isinstance(f, ConsoleFilter)
        for h in logging.getLogger().handlers
        for f in h.filters
    )


def quiet_pymmcore_for_cli() -> None:
    """:func:`quiet_pymmcore_console` when running under the CLI (see the module)."""
    if cli_console_active():
        quiet_pymmcore_console()
