"""Experiment runs: mesofield's ``hardware.yaml`` + ``experiment.json`` recorded as one
run — several cameras and an encoder on one clock. Qt-free.

``load_experiment(target)`` reads and checks the files; ``ExperimentRun`` records one
session (``start``/``stop``/``wait``/``status``/``result``); ``record_experiment``
does all of it headless with bounded waits.
"""

from __future__ import annotations

from .config import (
    CameraSpec,
    EncoderSpec,
    Experiment,
    ExperimentError,
    load_experiment,
    resolve_target,
)
from .record import record_experiment
from .run import ExperimentRun, lendable_cores

__all__ = [
    "CameraSpec",
    "EncoderSpec",
    "Experiment",
    "ExperimentError",
    "ExperimentRun",
    "lendable_cores",
    "load_experiment",
    "record_experiment",
    "resolve_target",
]
