"""Child processes of an emulated test run start emulated too (see
``tests/_emulate_os.py``): pytest puts this folder first on ``PYTHONPATH``."""

import os
import sys

# a pytest process (an xdist worker) installs it itself once pytest is set up
if os.environ.get("MESOFIELD_EMULATE_OS") and not os.environ.get(
    "MESOFIELD_EMULATE_OS_PYTEST"
):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import _emulate_os

    _emulate_os.emulation.install(os.environ["MESOFIELD_EMULATE_OS"])
    if os.environ["MESOFIELD_EMULATE_OS"] == "windows" and not (
        os.environ.get("PYTHONIOENCODING") or os.environ.get("PYTHONUTF8") == "1"
    ):
        # a pipe gets the ANSI code page, as Python on Windows does (stdout strict,
        # stderr backslashreplace)
        for stream, errors in (
            (sys.stdout, "strict"),
            (sys.stderr, "backslashreplace"),
        ):
            if stream is not None and not stream.isatty():
                stream.reconfigure(encoding="cp1252", errors=errors)
    del sys.path[0]
