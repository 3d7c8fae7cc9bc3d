"""Shared fixtures for the data-layer tests: a small, real simulated microscope."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from _helpers import SHAPE
from mesofield_napari.sim import create_sim_core, sim_camera

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pymmcore_plus.experimental.unicore import UniMMCore

    from mesofield_napari.sim import SimulatedMesoscopeCamera


@pytest.fixture
def sim_core() -> Iterator[UniMMCore]:
    """A fresh ``UniMMCore`` with the simulated camera (48x64, no exposure wait).

    Fresh per test, so the camera's frame counter starts at 0.
    """
    core = create_sim_core(SHAPE, exposure_ms=0)
    yield core
    core.unloadAllDevices()


@pytest.fixture
def camera(sim_core: UniMMCore) -> SimulatedMesoscopeCamera:
    cam = sim_camera(sim_core)
    assert cam is not None
    return cam
