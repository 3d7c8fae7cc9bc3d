"""The ``mesofield-napari`` command: one module per sub-command.

``record`` (headless recording on the simulated camera, a Micro-Manager configuration
or a whole experiment), ``recover`` (finish a crashed run's recordings), ``inspect``,
``gui`` (the default) and ``export`` (batch traces, ΔF/F, videos, montages). Each
module has ``add_parser(subparsers)`` and ``cmd(args) -> exit code``; what they share
is in ``_args.py`` (errors, exit codes, argument types) and ``output.py``. Bad
arguments and failures give a one-line error and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._platform.console import safe_text_streams
from . import export, gui, inspect, record, recover
from ._args import EXIT_USAGE, CLIError, Parser
from .output import configure_output

__all__ = ["EXIT_USAGE", "CLIError", "build_parser", "main", "run"]

COMMANDS = {
    "record": record,
    "recover": recover,
    "inspect": inspect,
    "gui": gui,
    "export": export,
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mesofield-napari",
        description="Record, recover and inspect mesofield recordings.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    safe_text_streams()  # before --help: Windows' cp1252 cannot print "ΔF/F"
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_output()
    if args.command is None:  # the app, as a desktop shortcut would start it
        args = parser.parse_args(["gui"])
    try:
        return COMMANDS[args.command].cmd(args)
    except CLIError as exc:
        print(f"mesofield-napari {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:  # pragma: no cover - the process entry point
    """``mesofield-napari`` / ``python -m mesofield_napari``: :func:`main`, then exit.

    Every file is closed and synced before :func:`main` returns, and the cores this
    command made are released (``acquisition.core_release``), so the interpreter's
    own teardown is safe: no ``os._exit`` is needed.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader left; not an error of ours
        # the interpreter would complain again flushing the dead pipe at exit
        sys.stdout = open(os.devnull, "w")
        code = 0
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
