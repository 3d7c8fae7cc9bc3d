"""Every path of a run, computed once, from one place (DESIGN.md §3).

    <root>/sub-<subject>/ses-<session>/<stamp>_sub-<subject>_ses-<session>_task-<task>_<suffix>.<ext>

``func/`` holds imaging, ``beh/`` behaviour cameras and the data-queue log. Names never
collide with existing files: a counter goes before the (compound) extension.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass, field
from datetime import datetime as _DateTime
from datetime import timedelta as _timedelta
from pathlib import Path

from .paths import unique_path

_LABEL = re.compile(r"^[A-Za-z0-9]+$")
STAMP_FORMAT = "%Y%m%d_%H%M%S"


def validate_label(what: str, value: object) -> str:
    """A BIDS-style label: letters and digits only (no separators, no ``..``)."""
    text = str(value).strip()
    if not text:
        raise ValueError(f"{what} must not be empty")
    if not _LABEL.match(text):
        raise ValueError(
            f"invalid {what} {text!r}: use letters and digits only "
            "(no spaces, '_', '-', '/', '\\' or '..'), e.g. 'M042'"
        )
    return text


def normalize_session(value: object) -> str:
    """Numeric sessions are zero-padded to two digits (``1`` -> ``01``)."""
    text = validate_label("session", value)
    return f"{int(text):02d}" if text.isdigit() else text


@dataclass
class RunPaths:
    """The run folder and every file name of one run."""

    root: Path
    subject: str
    session: str
    task: str
    stamp: str = field(
        default_factory=lambda: _dt.datetime.now().strftime(STAMP_FORMAT)
    )

    def __post_init__(self) -> None:
        self.root = Path(os.path.expanduser(os.fspath(self.root)))
        self.subject = validate_label("subject", self.subject)
        self.session = normalize_session(self.session)
        self.task = validate_label("task", self.task)
        self._taken: set[Path] = set()
        while self._prefix_in_use():
            # back-to-back runs in one second (armed MDAs): keep the stamp format
            # downstream code parses and move this run's stamp to the next free second
            stamp = _DateTime.strptime(self.stamp, STAMP_FORMAT)
            self.stamp = (stamp + _timedelta(seconds=1)).strftime(STAMP_FORMAT)

    def _prefix_in_use(self) -> bool:
        pattern = f"{self.prefix}_*"
        return any(
            next(folder.glob(pattern), None) is not None
            for folder in (self.run_dir, self.run_dir / "func", self.run_dir / "beh")
            if folder.is_dir()
        )

    @property
    def run_dir(self) -> Path:
        return self.root / f"sub-{self.subject}" / f"ses-{self.session}"

    @property
    def prefix(self) -> str:
        return f"{self.stamp}_sub-{self.subject}_ses-{self.session}_task-{self.task}"

    def file(self, suffix: str, ext: str, kind: str | None = None) -> Path:
        """A fresh path ``[kind/]<prefix>_<suffix><ext>`` (collision-safe)."""
        suffix = validate_label("file suffix", suffix)
        folder = self.run_dir / kind if kind else self.run_dir
        ext = ext if ext.startswith(".") else f".{ext}"
        path = unique_path(folder / f"{self.prefix}_{suffix}{ext}", self._taken)
        self._taken.add(path)
        return path
