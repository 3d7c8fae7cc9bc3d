"""Crash-safe frame journal and recovery of recordings whose process died.

While recording, every written frame appends one JSON line to
``<data file>_frame_metadata.jsonl`` *after* its pixels were handed to the OS, so
``lines in the journal == frames really written``. The line reaches the OS at once
(a killed process loses nothing) and is fsync'ed on the writer's flush interval (an OS
crash loses at most ~1 s). At the end the legacy JSON sidecar is written atomically
and only then is the journal removed. :func:`recover` rebuilds the legacy JSON from a
journal left behind by a crash.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import RecordingError
from .sidecar import (
    JOURNAL_SUFFIX,
    SIDECAR_SUFFIX,
    data_path_for,
    journal_path,
    sidecar_path,
    utc_now_iso,
    write_json_atomic,
)
from .video_recovery import is_video, trim_to_decodable

JOURNAL_FORMAT = "mesofield-frame-journal"
Mode = Literal["mda", "direct"]


class FrameJournal:
    """Append-only JSON-lines log: a header line, then one line per written frame."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: Mode,
        data_file: str | os.PathLike[str],
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.lines = 0
        # "x": a journal we did not create is never truncated
        self._fh = open(self.path, "x", encoding="utf-8")
        header = {
            "format": JOURNAL_FORMAT,
            "version": 1,
            "mode": mode,
            "data_file": Path(data_file).name,
            "started": utc_now_iso(),
            **(extra or {}),
        }
        self._write(header)

    def append(self, meta: dict[str, Any], position: str | None = None) -> None:
        """Record one written frame (``position`` is the MDA position key)."""
        entry: dict[str, Any] = {"meta": meta}
        if position is not None:
            entry["pos"] = position
        self._write(entry)
        self.lines += 1

    def _write(self, obj: dict[str, Any]) -> None:
        try:
            self._fh.write(json.dumps(obj, separators=(",", ":")) + "\n")
            self._fh.flush()  # into the OS page cache: survives a killed process
        except OSError as exc:  # e.g. disk full: say which file, as RecordingError
            raise RecordingError(
                f"cannot write frame journal {self.path.name}: {exc.strerror or exc}"
            ) from exc

    def sync(self) -> None:
        """Make the journal durable against an OS crash (called on the flush timer)."""
        if not self._fh.closed:
            os.fsync(self._fh.fileno())

    def close(self, *, remove: bool = False) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        if remove:
            self.path.unlink(missing_ok=True)


@dataclass
class JournalContents:
    header: dict[str, Any]
    entries: list[dict[str, Any]]
    bad_lines: int = 0  # unparseable lines (a crash mid-line leaves one at the end)


def read_journal(path: str | os.PathLike[str]) -> JournalContents:
    """Parse a journal, tolerating a line cut short by a crash."""
    header: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, raw in enumerate(fh):
            line = raw.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(obj, dict):
                bad += 1
            elif n == 0 and obj.get("format") == JOURNAL_FORMAT:
                header = obj
            elif isinstance(obj.get("meta"), dict):
                entries.append(obj)
            else:
                bad += 1
    if not header:
        raise ValueError(f"{path} is not a mesofield frame journal (no header line)")
    return JournalContents(header, entries, bad)


def legacy_payload(
    mode: Mode, entries: list[dict[str, Any]], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build the legacy sidecar dict from journal entries (DESIGN.md §3)."""
    if mode == "direct":
        return {"frame_metadatas": [e["meta"] for e in entries], **(extra or {})}
    payload: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        payload.setdefault(str(e.get("pos", "p0")), []).append(e["meta"])
    return payload


@dataclass
class RecoveryReport:
    """What :func:`recover` found and did."""

    data_path: Path
    sidecar: Path
    frames_by_position: dict[str, int] = field(default_factory=dict)
    recovered: bool = False  # True when a journal was turned into the sidecar
    bad_lines: int = 0
    message: str = ""

    @property
    def frames(self) -> int:
        return sum(self.frames_by_position.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_path": str(self.data_path),
            "sidecar": str(self.sidecar),
            "frames": self.frames,
            "frames_by_position": self.frames_by_position,
            "recovered": self.recovered,
            "bad_lines": self.bad_lines,
            "message": self.message,
        }


def _count_frames(payload: dict[str, Any]) -> dict[str, int]:
    if isinstance(payload.get("frame_metadatas"), list):
        return {"frame_metadatas": len(payload["frame_metadatas"])}
    return {k: len(v) for k, v in payload.items() if isinstance(v, list)}


def _resolve_data_path(path: Path) -> Path:
    if path.name.endswith((JOURNAL_SUFFIX, SIDECAR_SUFFIX)):
        return data_path_for(path)
    return path


def recover(path: str | os.PathLike[str]) -> RecoveryReport:
    """Rebuild the legacy JSON sidecar from the journal a crashed run left behind.

    ``path`` may be the data file, its journal or its sidecar. Reports how many frames
    were really written (one journal line each). A recording that finished normally
    is left untouched and reported as complete.
    """
    data = _resolve_data_path(Path(path))
    jpath, spath = journal_path(data), sidecar_path(data)
    report = RecoveryReport(data_path=data, sidecar=spath)

    final: dict[str, Any] | None = None
    if spath.exists():
        try:
            final = json.loads(spath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            final = None  # corrupt: rebuild from the journal if there is one

    if not jpath.exists():
        if final is None:
            what = "is corrupt" if spath.exists() else "was found"
            raise FileNotFoundError(
                f"no frame journal for {data.name}, and no readable sidecar {what}; "
                "nothing to recover"
            )
        report.message = "recording is complete; nothing to recover"
        if is_video(data):  # video branch: a sidecar can list frames that never decode
            final, note = trim_to_decodable(data, final)
            if note:
                write_json_atomic(spath, final)
                report.message = f"{note}; sidecar trimmed to the decodable frames"
        report.frames_by_position = _count_frames(final)
        return report

    contents = read_journal(jpath)
    report.bad_lines = contents.bad_lines
    if final is not None:
        # The process died after the atomic rename but before removing the journal:
        # the sidecar is complete; the journal is redundant.
        report.frames_by_position = _count_frames(final)
        jpath.unlink()
        report.message = "sidecar was complete; removed leftover journal"
        return report

    mode: Mode = "direct" if contents.header.get("mode") == "direct" else "mda"
    extra = None
    if mode == "direct":  # keep what the header journaled (codec, fps) as finish() does
        own = {"format", "version", "mode", "data_file", "started"}
        extra = {k: v for k, v in contents.header.items() if k not in own}
        extra["recovered_from_journal"] = True
    payload = legacy_payload(mode, contents.entries, extra)
    note = ""
    if is_video(data):  # video branch: keep only the frames that decode (or raise)
        payload, note = trim_to_decodable(data, payload)
    write_json_atomic(spath, payload)
    jpath.unlink()
    report.frames_by_position = _count_frames(payload)
    report.recovered = True
    report.message = f"recovered {report.frames} frame(s) from the journal" + (
        f"; ignored {report.bad_lines} unreadable line(s)" if report.bad_lines else ""
    )
    if note:
        report.message += f"; {note}: sidecar trimmed to the decodable frames"
    return report
