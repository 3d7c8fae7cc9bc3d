"""Recovery of one recording whose process died: its files and its sidecar.

A crash leaves each recording's frame journal (``formats/journal.py``): one line per
frame really written, plus, for a TIFF, the layout its headers were made from.
:func:`recover_file` then

1. rewrites each TIFF's headers to the frames journaled (:func:`finish_tiffs`,
   idempotent: ``formats/tiff_layout.py``; never a pixel copied) -- only files the
   layout names in the journal's own folder (the data file or its ``_<pos>``
   variant, a regular file, never through a symlink);
2. keeps, for a video, only the frames that really decode (a fragmented MP4 loses
   up to its last fragment; a file whose index was never written holds nothing
   decodable): they are counted first, then the sidecar is streamed from the
   journal up to that count, one entry in memory at a time;
3. streams the legacy sidecar from the journal and only then removes the journal.

A video journal whose data file is gone is an error naming the file (a TIFF's
metadata is still recovered, with a note); the journal is set aside (``…_frame_metadata.orphaned.jsonl``) so the name is free again. The run as
a whole (manifest, data queue, timestamps) is finished by ``data/run_recovery.py``
(docs/design.md §6).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._platform import fileio
from .formats.journal import (
    JournalSummary,
    summarize_journal,
    write_direct_sidecar,
    write_sidecar_from_journal,
)
from .formats.names import is_video, unique_path, with_name_suffix
from .formats.payloads import RecoveryPayload
from .formats.sidecar import (
    journal_path,
    recording_path,
    sidecar_path,
    write_json_atomic,
)
from .formats.tiff_compressed import recover_compressed
from .formats.tiff_layout import finish_exact
from .formats.video_check import VideoLostError, decodable_frames

__all__ = ["RecoveryReport", "finish_tiffs", "recover_file"]

ORPHANED_SUFFIX = "_frame_metadata.orphaned.jsonl"
_JOURNAL_OWN = {"format", "version", "mode", "data_file", "started"}


def layout_target(data: Path, name: object, pos: str) -> Path | None:
    """The file a journal's ``layout.file`` may name, or None when it names anything
    else: a bare name, the data file's own or its ``_<pos>`` variant (a crafted or
    corrupt journal must never make recover rewrite a file outside its recording)."""
    if not isinstance(name, str) or "/" in name or "\\" in name:
        return None
    if name not in {data.name, with_name_suffix(data, f"_{pos}").name}:
        return None
    return data.parent / name


def _open_regular_rw(path: Path) -> int:
    """``path`` opened read-write, never through a symlink, only a regular file."""
    fd = fileio.open_binary(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fileio.close(fd)
        raise IsADirectoryError(f"{path.name} is not a regular file")
    return fd


def finish_tiffs(data: Path, summary: JournalSummary) -> list[str]:
    """Rewrite every TIFF the journal laid out to the frames it journaled.

    Idempotent (see ``tiff_layout``). Returns notes for the report; a file that is
    missing or not the one journaled is left alone and noted.
    """
    notes: list[str] = []
    for pos, layout in summary.layouts.items():
        path = layout_target(data, layout.file, pos)
        if path is None:
            notes.append(
                f"the layout names a file outside this recording ({layout.file!r}); "
                "left as is"
            )
            continue
        if layout.compression:  # strips appended: their index is in the journal
            notes.append(recover_compressed(path, layout, journal_path(data), pos))
            continue
        pages = layout.pages_for(summary.last_flat.get(pos, -1))
        if pages < 1:
            notes.append(f"{layout.file}: no frame was written; file left as is")
            continue
        try:
            fd = _open_regular_rw(path)
        except FileNotFoundError:
            notes.append(f"{layout.file} is missing; only its metadata was recovered")
            continue
        except OSError as exc:  # a symlink (ELOOP), a directory, a device
            notes.append(f"{layout.file} is not a regular file ({exc}); left as is")
            continue
        try:
            head = fileio.pread(fd, 16, 0)
            size = os.fstat(fd).st_size
            if head[:4] != b"II+\0" or size < layout.data_offset + pages * (
                layout.frame_bytes
            ):
                notes.append(f"{layout.file} is not the file journaled; left as is")
                continue
            finish_exact(fd, layout, pages)
        finally:
            fileio.close(fd)
        notes.append(f"{layout.file}: {pages} frame(s)")
    return notes


@dataclass
class RecoveryReport:
    """What :func:`recover` found and did."""

    data_path: Path
    sidecar: Path
    frames_by_position: dict[str, int] = field(default_factory=dict)
    recovered: bool = False  # True when a journal was turned into the sidecar
    bad_lines: int = 0
    message: str = ""
    manifest: Path | None = None  # the run manifest updated with what was recovered

    @property
    def frames(self) -> int:
        return sum(self.frames_by_position.values())

    def as_dict(self) -> RecoveryPayload:
        return {
            "data_path": str(self.data_path),
            "sidecar": str(self.sidecar),
            "frames": self.frames,
            "frames_by_position": self.frames_by_position,
            "recovered": self.recovered,
            "bad_lines": self.bad_lines,
            "message": self.message,
            "manifest": str(self.manifest) if self.manifest else None,
        }


def _count_frames(payload: dict[str, Any]) -> dict[str, int]:
    if isinstance(payload.get("frame_metadatas"), list):
        return {"frame_metadatas": len(payload["frame_metadatas"])}
    return {k: len(v) for k, v in payload.items() if isinstance(v, list)}


def _read_sidecar(spath: Path) -> tuple[dict[str, Any] | None, str]:
    """The final sidecar if it is a readable JSON object, else (None, why not)."""
    if not spath.exists():
        return None, "missing"
    try:
        final = json.loads(spath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None, "not valid JSON"
    if not isinstance(final, dict):  # valid JSON, but `[]` or `"x"` is no sidecar
        return None, "not a JSON object"
    return final, "ok"


def recover_file(path: str | os.PathLike[str]) -> RecoveryReport:
    """Finish one recording whose process died, from the journal it left behind.

    ``path`` may be the data file, its journal or its sidecar. Rewrites each TIFF's
    headers to the frames really written (one journal line each; idempotent, no
    pixel is copied), then streams the legacy JSON sidecar from the journal and
    removes the journal. A video keeps only the frames that decode
    (``VideoLostError`` when none does). A recording that finished normally is left
    untouched and reported as complete; a corrupt sidecar is rebuilt when a journal
    exists. Raises ``FileNotFoundError`` naming the data file when it is gone.
    """
    data = recording_path(path)
    jpath, spath = journal_path(data), sidecar_path(data)
    report = RecoveryReport(data_path=data, sidecar=spath)
    final, state = _read_sidecar(spath)

    if not jpath.exists():
        if final is None:
            what = (
                f"and no sidecar {spath.name}"
                if state == "missing"
                else f"and its sidecar {spath.name} is corrupt ({state})"
            )
            raise FileNotFoundError(
                f"no frame journal for {data.name} {what}; nothing to recover"
            )
        report.message = "recording is complete; nothing to recover"
        if is_video(data):  # a sidecar can list frames that never decode
            final, note = trim_to_decodable(data, final)
            if note:
                write_json_atomic(spath, final)
                report.message = f"{note}; sidecar trimmed to the decodable frames"
        report.frames_by_position = _count_frames(final)
        return report

    summary = summarize_journal(jpath)
    report.bad_lines = summary.bad_lines
    if final is None and is_video(data) and not _any_data_file(data, summary):
        aside = unique_path(jpath.with_name(data.name + ORPHANED_SUFFIX))
        fileio.replace(jpath, aside)  # the recording's name is free again
        raise FileNotFoundError(
            f"{data.name} is missing: nothing to recover (its journal was set aside "
            f"as {aside.name})"
        )
    # the TIFFs first: a sidecar is only ever written after its data file is exact
    notes = finish_tiffs(data, summary)
    if final is not None:
        # The process died after the atomic rename but before removing the journal:
        # the sidecar is complete; the journal is redundant.
        report.frames_by_position = _count_frames(final)
        fileio.unlink(jpath, missing_ok=False)
        report.message = "sidecar was complete; removed leftover journal"
        return report

    note = ""
    if summary.header.get("mode") == "direct":
        # the header's extra fields (codec, fps), as finish() keeps them
        fields = {k: v for k, v in summary.header.items() if k not in _JOURNAL_OWN}
        fields["recovered_from_journal"] = True
        limit = sum(summary.frames.values())
        if is_video(data):  # keep only the frames that decode (or raise)
            limit, note = _decodable_limit(data, limit)
        n = write_direct_sidecar(jpath, spath, limit, fields)
        report.frames_by_position = {"frame_metadatas": n}
    else:
        limits: dict[str, int] | None = None
        if is_video(data):  # keep only the frames that decode (or raise)
            limits, note = _decodable_limits(data, summary.frames)
        report.frames_by_position = write_sidecar_from_journal(
            jpath, spath, list(summary.frames), limits
        )
    fileio.unlink(jpath, missing_ok=False)
    report.recovered = True
    report.message = f"recovered {report.frames} frame(s) from the journal" + (
        f"; ignored {report.bad_lines} unreadable line(s)" if report.bad_lines else ""
    )
    if summary.layouts:
        report.message += "; data rewritten to the frames written (" + (
            "; ".join(notes) + ")"
        )
    if note:
        report.message += f"; {note}: sidecar trimmed to the decodable frames"
    return report


# ---------------------------------------------------------------- videos
def position_file(data: Path, key: str, keys: list[str]) -> Path:
    """The video holding position ``key`` (``<stem>_<key><ext>`` when several)."""
    if len(keys) > 1 or not data.exists():
        candidate = with_name_suffix(data, f"_{key}")
        if candidate.exists() or len(keys) > 1:
            return candidate
    return data


def _any_data_file(data: Path, summary: JournalSummary) -> bool:
    """Whether the data file, or one of its per-position files, is there."""
    keys = {*summary.frames, *summary.layouts}
    return data.exists() or any(
        with_name_suffix(data, f"_{key}").exists() for key in keys
    )


def _lost(names: str) -> VideoLostError:
    return VideoLostError(
        f"the video is lost: no frame of {names} decodes "
        "(killed before its first fragment reached the disk, or an MP4 written "
        "without a crash-safe index)"
    )


def _decodable_limit(video: Path, journaled: int) -> tuple[int, str]:
    """Frames of ``video`` to keep (those that decode, at most ``journaled``) and a
    note when fewer than journaled; raises when none decodes."""
    found = decodable_frames(video) if video.exists() else 0
    if found == 0 and journaled:
        raise _lost(video.name)
    if found < journaled:
        return found, f"{video.name}: {found} of {journaled} frame(s) decode"
    return journaled, ""


def _decodable_limits(data: Path, frames: dict[str, int]) -> tuple[dict[str, int], str]:
    """Per position: the frames that decode in its video, and a note."""
    keys = list(frames)
    limits: dict[str, int] = {}
    notes: list[str] = []
    for key in keys:
        video = position_file(data, key, keys)
        found = decodable_frames(video) if video.exists() else 0
        limits[key] = min(found, frames[key])
        if found < frames[key]:
            notes.append(f"{video.name}: {found} of {frames[key]} frame(s) decode")
    if keys and not any(limits.values()) and any(frames.values()):
        raise _lost(", ".join(sorted(position_file(data, k, keys).name for k in keys)))
    return limits, "; ".join(notes)


def trim_to_decodable(
    data: Path, payload: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """``payload`` with each frame list cut to the frames that decode, and a note
    saying what was cut ("" when nothing was). Raises :class:`VideoLostError` when
    no frame decodes anywhere."""
    if isinstance(payload.get("frame_metadatas"), list):
        lists = {"frame_metadatas": data}
    else:
        keys = [k for k, v in payload.items() if isinstance(v, list)]
        lists = {k: position_file(data, k, keys) for k in keys}
    notes: list[str] = []
    total = listed_total = 0
    for key, video in lists.items():
        listed = len(payload[key])
        found = decodable_frames(video) if video.exists() else 0
        total += found
        listed_total += listed
        if found < listed:
            payload[key] = payload[key][:found]
            notes.append(f"{video.name}: {found} of {listed} frame(s) decode")
    if total == 0 and listed_total:
        names = ", ".join(sorted({p.name for p in lists.values()})) or data.name
        raise VideoLostError(
            f"the video is lost: no frame of {names} decodes "
            "(killed before its first fragment reached the disk, or an MP4 written "
            "without a crash-safe index)"
        )
    return payload, "; ".join(notes)
