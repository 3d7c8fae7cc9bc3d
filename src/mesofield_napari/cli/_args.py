"""What every ``mesofield-napari`` command shares: errors, exit codes, argument types.

A bad argument or a failure is one line on stderr and exit code 2, never a traceback:
:class:`Parser` (no abbreviations, one-line errors), :class:`CLIError` (raised by a
command, printed by ``cli.main``) and argument types that refuse what is never a
setting (``inf``, ``nan``, negative counts).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


MAX_FPS = 1000.0  # a video frame rate above this is a typo (and hangs OpenCV)


class Parser(argparse.ArgumentParser):
    """One-line errors with exit code 2; no abbreviations (``--experiment`` must not
    silently mean ``--experimenter``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def frame_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HxW like 512x512, got {text!r}"
        ) from None
    if h < 8 or w < 8 or h > 8192 or w > 8192:
        raise argparse.ArgumentTypeError(
            f"frame size must be within 8..8192, got {text!r}"
        )
    return h, w


def whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text!r}"
        ) from None
    if value < minimum:
        what = "must not be negative" if minimum == 0 else f"must be at least {minimum}"
        raise argparse.ArgumentTypeError(f"{what}, got {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


def number(text: str) -> float:
    """A finite number: ``inf`` and ``nan`` are typos, never settings."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def finite_positive(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def fps(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    if value > MAX_FPS:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_FPS:.0f} frames per second, got {value}"
        )
    return value


def prepare_out_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(
            f"cannot create output folder {out}: {exc.strerror or exc}"
        ) from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise CLIError(f"output folder is not writable: {out}")
    return out
