"""Devices an experiment run drives besides Micro-Manager cores: OpenCV cameras (and
the simulated pupil camera that stands in for one), wheel and treadmill encoders.

Each lives in its own module and depends only on the data layer's public writers;
``experiment/`` wires them into a run. Qt-free.
"""

from __future__ import annotations


class DeviceError(RuntimeError):
    """A device could not be opened or stopped delivering data (one line)."""


__all__ = ["DeviceError"]
