"""Every path of a run, computed from one place (docs/design.md §5, mesokit-schema).

    <experiment>/data/sub-<subject>/ses-<session>/
        <stamp>_sub-<subject>_ses-<session>_task-<task>_<suffix>.<ext>

The session folder is ``mesokit_schema.bids_session_dir`` and file names are
``mesokit_schema.bids_stream_filename`` with our stamp, so mesofield's datakit and
mesokit's discovery find them. ``func/`` holds imaging, ``beh/`` behaviour cameras,
encoders and the data-queue log. Names never collide with existing files: a counter goes
before the (compound) extension.

Two processes may start runs of one session in the same second. The stamp is claimed
atomically when the run's first file is created (:meth:`RunPaths.claim`), so the second
run moves to the next free second instead of failing on an existing file.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass, field
from datetime import datetime as _DateTime
from datetime import timedelta as _timedelta
from pathlib import Path
from typing import IO

from mesokit_schema import bids_session_dir, bids_stream_filename

from ..._platform import system
from ..._platform.paths import MAX_NAME, max_path_length
from ..formats.names import unique_path

_LABEL = re.compile(r"^[A-Za-z0-9]+$")
MAX_LABEL_LENGTH = 64  # file names stay well under the 255-byte limit
STAMP_FORMAT = "%Y%m%d_%H%M%S"
_MAX_CLAIM_TRIES = 3600  # an hour of seconds: more runs in one second is a bug
# what a run adds to a data file's name: a name counter and the sidecar's temp file
# (``.<name>_99_frame_metadata.json.<12 hex>.tmp``)
DERIVED_NAME_MARGIN = len("._99_frame_metadata.json.000000000000.tmp")


PROCESSED_DIR = "processed"  # export outputs (datakit prefers them to its own)


def session_folder(data_file: str | os.PathLike[str]) -> Path:
    """The session (run) folder of a data file: the parent of ``func/``/``beh/``."""
    folder = Path(data_file).parent
    return folder.parent if folder.name in ("func", "beh") else folder


def processed_folder(session: str | os.PathLike[str]) -> Path:
    """Where the exports of a session's recordings go, where datakit looks.

    ``<experiment>/data/sub-<s>/ses-<n>/`` exports to
    ``<experiment>/processed/sub-<s>/ses-<n>/``; a folder outside that layout (run
    folders written before it) to ``<folder>/processed``.
    """
    session = Path(session)
    sub = session.parent
    if (
        session.name.startswith("ses-")
        and sub.name.startswith("sub-")
        and sub.parent.name == "data"
    ):
        return sub.parent.parent / PROCESSED_DIR / sub.name / session.name
    return session / PROCESSED_DIR


def is_processed(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies in a ``processed/`` folder below ``folder`` (exports,
    never recordings)."""
    try:
        parts = Path(path).relative_to(folder).parts[:-1]
    except ValueError:
        return False
    return PROCESSED_DIR in parts


def validate_label(what: str, value: object) -> str:
    """A BIDS label: ASCII letters and digits only (no separators, no ``..``)."""
    text = str(value).strip()
    if not text:
        raise ValueError(f"{what} must not be empty")
    if len(text) > MAX_LABEL_LENGTH:
        raise ValueError(
            f"{what} is {len(text)} characters long; use at most {MAX_LABEL_LENGTH}"
        )
    if not _LABEL.match(text):
        raise ValueError(
            f"invalid {what} {text!r}: BIDS labels use ASCII letters A-Z, a-z and "
            "digits only (no accents, spaces, '_', '-', '/', '\\' or '..'), e.g. 'M042'"
        )
    return text


def normalize_session(value: object) -> str:
    """Numeric sessions are zero-padded to two digits (``1`` -> ``01``)."""
    text = validate_label("session", value)
    return f"{int(text):02d}" if text.isdigit() else text


@dataclass
class RunPaths:
    """The session folder and every file name of one run."""

    root: Path  # the experiment folder
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
        self._skip_used_stamps()

    def _skip_used_stamps(self) -> None:
        while self._prefix_in_use():
            self._next_stamp()

    def _next_stamp(self) -> None:
        # keep the stamp format downstream code parses; move to the next second
        stamp = _DateTime.strptime(self.stamp, STAMP_FORMAT)
        self.stamp = (stamp + _timedelta(seconds=1)).strftime(STAMP_FORMAT)
        self._taken.clear()

    def _prefix_in_use(self) -> bool:
        pattern = f"{self.prefix}_*"
        return any(
            next(folder.glob(pattern), None) is not None
            for folder in (self.run_dir, self.run_dir / "func", self.run_dir / "beh")
            if folder.is_dir()
        )

    @property
    def run_dir(self) -> Path:
        """The session folder: ``<experiment>/data/sub-<s>/ses-<n>``."""
        folder: Path = bids_session_dir(self.root, self.subject, self.session)
        return folder

    @property
    def prefix(self) -> str:
        return f"{self.stamp}_sub-{self.subject}_ses-{self.session}_task-{self.task}"

    def name(self, suffix: str, ext: str) -> str:
        """``<stamp>_sub-…_ses-…_task-…_<suffix><ext>`` as mesokit builds it."""
        filename: str = bids_stream_filename(
            subject=self.subject,
            session=self.session,
            task=self.task,
            suffix=suffix,
            extension=ext.lstrip("."),
            timestamp=self.stamp,
        )
        return filename

    def file(self, suffix: str, ext: str, kind: str | None = None) -> Path:
        """A fresh path ``[kind/]<prefix>_<suffix><ext>`` (collision-safe)."""
        suffix = validate_label("file suffix", suffix)
        if kind:  # one folder name: '../..' or '/x' would leave the session folder
            kind = validate_label("bids_type", kind)
        folder = self.run_dir / kind if kind else self.run_dir
        path = unique_path(folder / self.name(suffix, ext), self._taken)
        self._taken.add(path)
        return path

    def check_length(self, suffix: str, ext: str, kind: str | None = None) -> None:
        """Raise ``ValueError`` (one line) when ``[kind/]<prefix>_<suffix><ext>``, or
        the files a run derives from it, would be longer than this system allows
        (Windows: 259 characters unless long paths are enabled)."""
        folder = self.run_dir / kind if kind else self.run_dir
        path = Path(os.path.abspath(folder / self.name(suffix, ext)))
        text = os.fspath(path)
        length = len(text) if system() == "windows" else len(text.encode("utf-8"))
        length += DERIVED_NAME_MARGIN
        limit = max_path_length()
        if length > limit:
            raise ValueError(
                f"the run's file paths would be {length} characters long, and this "
                f"system allows {limit}: use shorter subject/session/task labels or "
                f"a shorter output folder ({path})"
                + (" or enable Windows' long paths" if system() == "windows" else "")
            )
        if len(path.name.encode("utf-8")) + DERIVED_NAME_MARGIN > MAX_NAME:
            raise ValueError(
                f"the run's file names would be longer than {MAX_NAME} bytes: use "
                f"shorter subject/session/task labels ({path.name})"
            )

    def claim(self, suffix: str, ext: str) -> tuple[Path, IO[str]]:
        """Create the run's first file exclusively, moving the stamp on until it can.

        Returns the path and the open file. Creating it with ``O_EXCL`` is the claim:
        of two processes that picked the same second, exactly one creates it, and
        the other takes the next free second (never an ``EEXIST`` failure).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(_MAX_CLAIM_TRIES):
            self._skip_used_stamps()
            path = self.run_dir / self.name(validate_label("file suffix", suffix), ext)
            try:
                fh = open(path, "x", newline="", encoding="utf-8")
            except FileExistsError:
                self._next_stamp()
                continue
            self._taken.add(path)
            return path, fh
        raise RuntimeError(f"no free run stamp in {self.run_dir}")  # pragma: no cover
