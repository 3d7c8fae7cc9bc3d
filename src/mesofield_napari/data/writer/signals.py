"""Connect handlers to pymmcore-plus signals so they run on the emitting thread.

A core created after the ``QApplication`` exists uses Qt signals. A plain Python
callable connected to a Qt signal with the default (auto) connection runs later on the
main thread, through Qt's unbounded event queue: the GUI would do the enqueueing and a
busy GUI would let frames pile up in memory unseen. Writers must instead run on the
acquisition thread, where their byte-bounded queue pushes back on the acquisition, so
Qt signals are connected with ``DirectConnection``. psygnal signals already call
handlers on the emitting thread. Qt is imported only when a Qt signal is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


def is_qt_signal(signal: Any) -> bool:
    module = type(signal).__module__
    return module.startswith(("PyQt5", "PyQt6", "PySide2", "PySide6"))


def connect_direct(signal: Any, slot: Callable[..., Any]) -> None:
    """``signal.connect(slot)``, forcing a direct (same-thread) call for Qt signals."""
    # pymmcore-plus wraps some core signals in a DeprecatedSignalProxy (argument
    # shims); the connection type has to be set on the Qt signal inside it
    inner = getattr(signal, "_signal", None)
    if inner is not None and is_qt_signal(inner):
        signal = inner
    if is_qt_signal(signal):
        from qtpy.QtCore import Qt

        signal.connect(slot, Qt.ConnectionType.DirectConnection)
    else:
        signal.connect(slot)


def disconnect_quietly(signal: Any, slot: Callable[..., Any]) -> None:
    """Disconnect ``slot`` if connected (Qt raises, psygnal may warn, otherwise)."""
    with contextlib.suppress(TypeError, RuntimeError, ValueError):
        signal.disconnect(slot)
