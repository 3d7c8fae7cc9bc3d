"""Crash-safe frame journal and recovery of recordings whose process died.

While recording, every written frame appends one JSON line to
``<data file>_frame_metadata.jsonl`` *after* its pixels were handed to the OS, so
``lines in the journal == frames really written``. The line reaches the OS at once
(a killed process loses nothing) and is fsync'ed on the writer's flush interval (an OS
crash loses at most ~1 s). A TIFF writer also journals one ``layout`` line per file it
creates (:class:`~.tiff_layout.TiffLayout`): what ``recover`` needs to rewrite that
file's headers to the frames really written.

At the end the legacy JSON sidecar is *streamed* from the journal
(:func:`write_sidecar_from_journal`: memory does not grow with the run's length) and
written atomically; only then is the journal removed. :func:`recover` does the same
for a journal left behind by a crash, after making its TIFFs exact.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .clock import local_iso
from .errors import RecordingError
from .safe_open import bounded_lines, open_regular
from .sidecar import (
    _fsync_dir,
    journal_path,
    recording_path,
    sidecar_path,
    write_json_atomic,
)
from .tiff_layout import TiffLayout, finish_exact, pause_point
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
            "started": local_iso(),
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

    def append_layout(self, layout: dict[str, Any], position: str) -> None:
        """Record how a data file was laid out (before its first frame)."""
        self._write({"layout": layout, "pos": position})

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
    layouts: dict[str, dict[str, Any]] = field(default_factory=dict)  # pos -> layout


def iter_journal(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """Stream a journal as ``(kind, obj)``: "header", "frame", "layout" or "bad".

    Tolerates a line cut short by a crash ("bad"); raises ValueError when the first
    line is not a journal header. One line in memory at a time, and a line longer
    than ``MAX_LINE_BYTES`` is "bad" without being held; a FIFO or device raises
    ``NotRegularFileError`` (an ``OSError``) instead of blocking.
    """
    with open_regular(path) as fh:  # never a FIFO or device
        for n, raw in enumerate(bounded_lines(fh)):
            line = raw.decode("utf-8", "replace").strip() if raw is not None else "-"
            if not line:
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                obj = None  # (a line too long to be ours is "-": bad, too)
            if n == 0:
                if not (isinstance(obj, dict) and obj.get("format") == JOURNAL_FORMAT):
                    raise ValueError(
                        f"{path} is not a mesofield frame journal (no header line)"
                    )
                yield "header", obj
            elif not isinstance(obj, dict):
                yield "bad", None
            elif isinstance(obj.get("meta"), dict):
                yield "frame", obj
            elif isinstance(obj.get("layout"), dict):
                yield "layout", obj
            else:
                yield "bad", None


def read_journal(path: str | os.PathLike[str]) -> JournalContents:
    """Parse a whole journal into memory (small journals; see :func:`iter_journal`)."""
    contents = JournalContents({}, [])
    for kind, obj in iter_journal(path):
        if kind == "header":
            contents.header = obj
        elif kind == "frame":
            contents.entries.append(obj)
        elif kind == "layout":
            contents.layouts[str(obj.get("pos", "p0"))] = obj["layout"]
        else:
            contents.bad_lines += 1
    if not contents.header:
        raise ValueError(f"{path} is not a mesofield frame journal (no header line)")
    return contents


@dataclass
class JournalSummary:
    """One streaming pass over a journal: what it holds, without the frames."""

    header: dict[str, Any]
    frames: dict[str, int]  # pos -> frames journaled, in first-seen order
    last_flat: dict[str, int]  # pos -> highest storage index written
    layouts: dict[str, TiffLayout]
    bad_lines: int = 0


def summarize_journal(path: str | os.PathLike[str]) -> JournalSummary:
    summary = JournalSummary({}, {}, {}, {})
    for kind, obj in iter_journal(path):
        if kind == "header":
            summary.header = obj
        elif kind == "bad":
            summary.bad_lines += 1
        elif kind == "layout":
            try:
                layout = TiffLayout.from_json(obj["layout"])
            except (TypeError, ValueError, KeyError):
                summary.bad_lines += 1
                continue
            summary.layouts[str(obj.get("pos", "p0"))] = layout
        else:
            pos = str(obj.get("pos", "p0"))
            n = summary.frames.get(pos, 0)
            summary.frames[pos] = n + 1
            layout = summary.layouts.get(pos)
            flat = n  # until Stop: frames in arrival order
            if layout is not None and not layout.growing:
                event = obj["meta"].get("mda_event")
                try:
                    flat = layout.flat_index(event if isinstance(event, dict) else {})
                except (ValueError, TypeError):
                    flat = n
            summary.last_flat[pos] = max(summary.last_flat.get(pos, -1), flat)
    return summary


def write_sidecar_from_journal(
    journal: str | os.PathLike[str],
    sidecar: str | os.PathLike[str],
    positions: list[str] | None = None,
) -> dict[str, int]:
    """Stream the legacy MDA sidecar ``{"p0": [...], ...}`` from a journal.

    Byte for byte what ``json.dump(payload, fh)`` of the whole in-memory payload
    wrote before (compact, ``", "``/``": "`` separators), but one frame in memory at
    a time: one pass over the journal per position key (runs have a few). Written
    atomically (temp file, fsync, rename). Returns frames per position.
    """
    sidecar = Path(sidecar)
    if positions is None:
        positions = list(summarize_journal(journal).frames)
    tmp = sidecar.with_name(f".{sidecar.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    counts: dict[str, int] = {}
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("{")
            for p, pos in enumerate(positions):
                fh.write((", " if p else "") + json.dumps(pos) + ": [")
                n = 0
                for kind, obj in iter_journal(journal):
                    if kind == "frame" and str(obj.get("pos", "p0")) == pos:
                        fh.write((", " if n else "") + json.dumps(obj["meta"]))
                        n += 1
                fh.write("]")
                counts[pos] = n
            fh.write("}")
            fh.flush()
            pause_point("sidecar_tmp")
            os.fsync(fh.fileno())
        os.replace(tmp, sidecar)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(sidecar.parent)
    return counts


def finish_tiffs(data: Path, summary: JournalSummary) -> list[str]:
    """Rewrite every TIFF the journal laid out to the frames it journaled.

    Idempotent (see ``tiff_layout``). Returns notes for the report; a file that is
    missing or not the one journaled is left alone and noted.
    """
    notes: list[str] = []
    for pos, layout in summary.layouts.items():
        path = data.parent / layout.file
        pages = layout.pages_for(summary.last_flat.get(pos, -1))
        if pages < 1:
            notes.append(f"{layout.file}: no frame was written; file left as is")
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            notes.append(f"{layout.file} is missing; only its metadata was recovered")
            continue
        try:
            head = os.pread(fd, 16, 0)
            size = os.fstat(fd).st_size
            if head[:4] != b"II+\0" or size < layout.data_offset + pages * (
                layout.frame_bytes
            ):
                notes.append(f"{layout.file} is not the file journaled; left as is")
                continue
            finish_exact(fd, layout, pages)
        finally:
            os.close(fd)
        notes.append(f"{layout.file}: {pages} frame(s)")
    return notes


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
    manifest: Path | None = None  # the run manifest updated with what was recovered

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


def recover(path: str | os.PathLike[str]) -> RecoveryReport:
    """Finish a recording whose process died, from the journal it left behind.

    ``path`` may be the data file, its journal or its sidecar. Rewrites each TIFF's
    headers to the frames really written (one journal line each; idempotent, no
    pixel is copied), then streams the legacy JSON sidecar from the journal and
    removes the journal. A video keeps only the frames that decode (``VideoLostError``
    when none does). A recording that finished normally is left untouched and
    reported as complete; a corrupt sidecar is rebuilt when a journal exists. The
    run's AcquisitionManifest then records the recovered frames (``run_recovery``).
    """
    report = _recover_files(path)
    from .run_recovery import complete_run_manifest

    report.manifest = complete_run_manifest(
        report.data_path, report.frames, report.message
    )
    return report


def _recover_files(path: str | os.PathLike[str]) -> RecoveryReport:
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
    # the TIFFs first: a sidecar is only ever written after its data file is exact
    notes = finish_tiffs(data, summary)
    if final is not None:
        # The process died after the atomic rename but before removing the journal:
        # the sidecar is complete; the journal is redundant.
        report.frames_by_position = _count_frames(final)
        jpath.unlink()
        report.message = "sidecar was complete; removed leftover journal"
        return report

    note = ""
    direct = summary.header.get("mode") == "direct"
    if direct or is_video(data):
        contents = read_journal(jpath)
        extra = None
        if direct:  # keep what the header journaled (codec, fps) as finish() does
            own = {"format", "version", "mode", "data_file", "started"}
            extra = {k: v for k, v in contents.header.items() if k not in own}
            extra["recovered_from_journal"] = True
        payload = legacy_payload("direct" if direct else "mda", contents.entries, extra)
        if is_video(data):  # keep only the frames that decode (or raise)
            payload, note = trim_to_decodable(data, payload)
        write_json_atomic(spath, payload)
        report.frames_by_position = _count_frames(payload)
    else:
        report.frames_by_position = write_sidecar_from_journal(
            jpath, spath, list(summary.frames)
        )
    jpath.unlink()
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
