"""Exceptions raised by the data layer."""

from __future__ import annotations


class RecordingError(RuntimeError):
    """A recording could not be written completely.

    Raised (or reported through ``writer.error``) when the writer thread fails, e.g.
    because the disk is full. What was written before the failure stays readable and
    its per-frame metadata is in the sidecar.
    """
