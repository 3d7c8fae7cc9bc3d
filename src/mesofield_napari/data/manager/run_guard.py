"""Notice, within a second, that a run's folder or files were deleted mid-run.

A writer keeps writing into an unlinked file without an error: a run folder removed
by mistake (a cleanup script, a user in the file manager) was noticed only when the
run ended, after minutes or hours recorded into files nobody can open. The guard
checks a few times a second that the run folder is still the one created (same
device and inode) and that no file of the run that existed has gone, and reports
the first problem once, on its own thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

CHECK_INTERVAL_S = 0.25


class RunGuard:
    """Watch ``run_dir`` and ``paths()`` until :meth:`stop`; call ``on_lost(message)``
    once when the folder or a file that existed is gone (or replaced)."""

    def __init__(
        self,
        run_dir: Path,
        paths: Callable[[], Iterable[Path]],
        on_lost: Callable[[str], None],
        interval: float = CHECK_INTERVAL_S,
    ) -> None:
        self.run_dir = Path(run_dir)
        self._paths = paths
        self._on_lost = on_lost
        self._interval = interval
        self._stop = threading.Event()
        self._seen: set[Path] = set()
        st = os.stat(self.run_dir)
        self._identity = (st.st_dev, st.st_ino)
        self._thread = threading.Thread(
            target=self._loop, name="run-guard", daemon=True
        )
        self.problem: str | None = None

    def start(self) -> RunGuard:
        self.check()  # what exists now is watched from now on
        self._thread.start()
        return self

    def watch(self) -> None:
        """Note the paths that exist now (call after creating files or folders, so
        one deleted before the next tick is still noticed)."""
        self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def check(self) -> str | None:
        """The first problem now (None when the run's files are where they were)."""
        try:
            st = os.stat(self.run_dir)
        except FileNotFoundError:
            return f"the run folder {self.run_dir} was deleted while recording"
        except OSError as exc:
            return (
                f"the run folder {self.run_dir} is unreachable: {exc.strerror or exc}"
            )
        if (st.st_dev, st.st_ino) != self._identity:
            return f"the run folder {self.run_dir} was replaced while recording"
        try:
            paths = list(self._paths())
        except RuntimeError:  # a writer's dict changed meanwhile: next time
            return None
        for path in paths:
            if os.path.lexists(path):
                self._seen.add(path)
            elif path in self._seen:
                return f"{path} was deleted while recording"
        return None

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            problem = self.check()
            if problem is not None and not self._stop.wait(self._interval):
                # a folder being removed loses its files first: look once more,
                # so the message names the folder when that is what went
                problem = self.check() or problem
                self.problem = problem
                self._on_lost(problem)
                return
