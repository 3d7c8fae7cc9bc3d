"""Which recordings a batch takes, and how their outputs are named.

A run recorded with ``--writer both`` holds the scientific data (the 16-bit TIFF) and
an 8-bit, lossy preview of the same camera (the MP4). Analysis must come from the
TIFF: a folder search takes the TIFF cameras and reports every video it passes over
(:class:`Skipped`), unless ``include_videos`` is asked for. A file named explicitly
is taken whatever its kind: naming it is asking for it.

Output names keep datakit's contract for the TIFFs (``<stem>_meso-<quantity>-trace.csv``,
matched by its ``*_meso-mean-trace.csv`` / ``*_meso-<method>-trace.csv`` globs) and name
every other output after its own camera and kind (``<stem>_mp4-mean-trace.csv`` for
``…_pupil.mp4``), so no downstream glob takes a video's trace for the widefield one.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..formats.names import VIDEO_EXTENSIONS, is_video, split_extension
from ..formats.payloads import SkippedPayload
from ..manager.paths import is_processed

if TYPE_CHECKING:
    from ..reader.recording import Recording

__all__ = [
    "UNFINISHED_REASON",
    "VIDEO_EXTENSIONS",
    "DoesNotFit",
    "Selection",
    "Skipped",
    "camera_name",
    "check_camera",
    "is_video",
    "select_recordings",
    "trace_name",
]

VIDEO_SKIP_REASON = (
    "a video (a lossy 8-bit preview); the batch takes the TIFF cameras — pass "
    "include_videos=True (--include-videos, the widget's 'Include videos') to "
    "export videos too"
)


class DoesNotFit(ValueError):
    """An option that does not fit this recording (an ROI outside its frame, a
    contrast range outside its dtype, an ROI of another camera): the batch skips the
    recording with this message instead of failing."""


UNFINISHED_REASON = (
    "is still being written (or its run crashed: run `mesofield-napari recover` "
    "first); not exported"
)


@dataclass(frozen=True)
class Skipped:
    """A recording the batch did not export, and why (not a failure, except an
    ``unfinished`` one: its metadata is still the journal of a recording in
    progress or of a crash, so nothing final can be exported from it)."""

    path: Path
    reason: str
    unfinished: bool = False

    def as_dict(self) -> SkippedPayload:
        out: SkippedPayload = {"path": os.fspath(self.path), "reason": self.reason}
        if self.unfinished:
            out["unfinished"] = True
        return out


@dataclass
class Selection:
    """The recordings to export, in order, and those passed over."""

    paths: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def select_recordings(
    paths: Iterable[str | os.PathLike[str]],
    pattern: str | None = None,
    include_videos: bool = False,
) -> Selection:
    """Files as given; folders searched recursively for recordings.

    In a folder every recording is found once (by its data file), except under
    ``processed/`` folders (our own outputs); ``pattern`` (``fnmatch`` on the file
    name) narrows the search, and videos are passed over (and listed in
    ``skipped``) unless ``include_videos``. A missing path is kept, so its job
    reports it.
    """
    from ..reader.recording import find_recording_paths

    out: dict[Path, None] = {}
    skipped: dict[Path, Skipped] = {}
    for given in paths:
        p = Path(given)
        if not p.is_dir():
            out.setdefault(p)
            continue
        for found in find_recording_paths(p):
            if is_processed(found, p):
                continue
            if pattern and not fnmatch.fnmatch(found.name, pattern):
                continue
            if not include_videos and is_video(found):
                skipped.setdefault(found, Skipped(found, VIDEO_SKIP_REASON))
                continue
            out.setdefault(found)
    return Selection(list(out), [s for path, s in skipped.items() if path not in out])


def camera_name(path: str | os.PathLike[str]) -> str:
    """The camera a data file belongs to: its name's last part in our layout.

    ``<stamp>_sub-X_ses-Y_task-Z_meso.ome.tiff`` -> ``meso``; a file outside that
    layout is its own camera (its stem). A position suffix (``_p1``) is not part of
    the name here: the recording's own path is the base file.
    """
    stem = Path(split_extension(Path(path).name)[0]).name
    return stem.rsplit("_", 1)[-1] if "_task-" in stem else stem


def check_camera(rec: Recording, camera: str | None) -> None:
    """Refuse (:class:`DoesNotFit`) a recording of another camera than ``camera``."""
    if camera is None:
        return
    own = camera_name(rec.path)
    if own != camera:
        raise DoesNotFit(
            f"{rec.path.name}: the ROI was drawn on camera {camera!r}, this "
            f"recording is camera {own!r}"
        )


def trace_name(stem: str, rec: Recording, quantity: str) -> str:
    """A trace's file name: ``<stem>_meso-<quantity>-trace.csv`` for a TIFF (datakit's
    widefield trace), ``<stem>-<quantity>-trace.csv`` for a video, whose ``stem``
    already ends with its camera and kind (``…_pupil_mp4``)."""
    if rec.kind == "tiff":
        return f"{stem}_meso-{quantity}-trace.csv"
    return f"{stem}-{quantity}-trace.csv"
