"""Exceptions raised by the data layer, and the wording of their one-line messages."""

from __future__ import annotations


class RecordingError(RuntimeError):
    """A recording could not be written completely.

    Raised (or reported through ``writer.error``) when the writer thread fails, e.g.
    because the disk is full. What was written before the failure stays readable and
    its per-frame metadata is in the sidecar.
    """


def short_reason(exc: BaseException, limit: int = 120) -> str:
    """An exception as one short clause of a message (its type when it says nothing)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) < limit else text[: limit - 3] + "..."


def gigabytes(nbytes: float) -> str:
    """A size as messages give it: ``"1.05 GB"`` (10^9 bytes)."""
    return f"{nbytes / 1e9:.2f} GB"
