"""Release a pymmcore-plus core we created, so the interpreter can exit cleanly.

Every ``CMMCorePlus`` registers a callback with MMCore, which then runs a native
notification thread that calls back into Python. While the core object is alive that
thread lives on; a notification it delivers while the interpreter is being torn down
tries to take the GIL, CPython ends the thread with ``pthread_exit``, and the forced
unwind meets MMCore's ``catch (...)`` around the callback: glibc aborts the whole
process ("FATAL: exception not rethrown", exit 134) after every file was written.
pymmcore-plus unregisters the callback in ``__del__``, which a core still referenced
at exit (a script's ``run`` global) never reaches. Unregistering it here, on our own
thread while the interpreter is whole, joins that thread.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["release_core"]


def release_core(core: Any) -> None:
    """Unload ``core``'s devices and stop its native notification thread.

    For cores this package created and nobody else uses: the core delivers no event
    afterwards. Never raises (a core already released stays released).
    """
    from pymmcore_plus import CMMCorePlus

    with contextlib.suppress(Exception):
        core.unloadAllDevices()
    if isinstance(core, CMMCorePlus):
        with contextlib.suppress(Exception):
            # pymmcore-plus forbids registerCallback on its cores; its own __del__
            # unregisters through the base class, as here
            super(CMMCorePlus, core).registerCallback(None)
