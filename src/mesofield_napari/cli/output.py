"""What the commands print to the terminal: single lines, library chatter hidden."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from ..acquisition.console_log import ConsoleFilter, quiet_pymmcore_console


def configure_output() -> None:
    """Warnings and log records as single lines; library chatter below WARNING hidden.

    pymmcore-plus's own coloured console handler is raised to CRITICAL, so its
    records only reach the terminal through our one-line handler (filtered above).
    """
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.addFilter(ConsoleFilter())
    logging.getLogger().addHandler(handler)
    quiet_pymmcore_console()

    def one_line(
        message: Warning | str, category: type[Warning], *_: Any, **__: Any
    ) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line
