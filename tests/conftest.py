"""Shared fixtures for the data-layer tests: a small, real simulated microscope."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

import _emulate_os
from _emulate_os import pytest_addoption, pytest_configure, pytest_report_header
from _helpers import SHAPE
from mesofield_napari.devices.sim_camera import create_sim_core, sim_camera

if TYPE_CHECKING:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from mesofield_napari.devices.sim_camera import SimulatedMesoscopeCamera


__all__ = ["pytest_addoption", "pytest_configure", "pytest_report_header"]


@pytest.fixture(autouse=True, scope="session")
def _emulated_os(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_emulate_os.Emulation]:
    """``--emulate-os=windows|macos``: the whole session runs with that system's
    ``os`` surface and file semantics (``_emulate_os.py``)."""
    tmp_path_factory.getbasetemp()  # pytest's own set-up asks for os.getuid()
    yield from _emulate_os.install_for_session(pytestconfig)


@pytest.fixture(autouse=True, scope="session")
def _icons_offline():
    """Fail icon downloads at once instead of waiting on DNS (CI has no internet).

    napari-micromanager's widgets fetch their icons from iconify.design through
    pyconify; offline, each icon costs a DNS time-out before superqt falls back to
    a plain icon. Only the network call is replaced; the widgets are real.
    """
    try:
        import pyconify.api as api
        import requests
    except ImportError:  # pragma: no cover
        yield
        return

    class _Offline(requests.Session):
        def request(self, *args, **kwargs):
            raise requests.ConnectionError("no network in the test-suite")

    original = api._session
    api._session = _Offline
    yield
    api._session = original


@pytest.fixture(autouse=True)
def _signals_backend_as_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing mesofield (its datakit, in the pipeline-contract tests) runs
    ``os.environ.setdefault("PYMM_SIGNALS_BACKEND", "psygnal")``, which would make
    every later core psygnal-signalled — the GUI tests need Qt signals for real."""
    monkeypatch.delenv("PYMM_SIGNALS_BACKEND", raising=False)


@pytest.fixture
def sim_core(monkeypatch: pytest.MonkeyPatch) -> Iterator[UniMMCore]:
    """A fresh ``UniMMCore`` with the simulated camera (48x64, no exposure wait).

    Fresh per test, so the camera's frame counter starts at 0. Its signals are
    psygnal's whatever ran before: once a GUI test has made a QApplication, cores get
    Qt signals, and pymmcore-plus's relay thread (``core.mda.run(seq, output=w)``)
    then loses a run's events now and then (seen 1 run in 60; the README says so).
    The GUI tests make their own cores, with Qt signals, for our direct connections.
    """
    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", "psygnal")
    core = create_sim_core(SHAPE, exposure_ms=0)
    yield core
    core.unloadAllDevices()


@pytest.fixture
def camera(sim_core: UniMMCore) -> SimulatedMesoscopeCamera:
    cam = sim_camera(sim_core)
    assert cam is not None
    return cam
