"""Crash-safe frame journal: one JSON line per frame really written.

While recording, every written frame appends one JSON line to
``<data file>_frame_metadata.jsonl`` *after* its pixels were handed to the OS, so
``lines in the journal <= frames really written`` (equal once the writer caught up).
A line reaches the OS at once, or -- with ``batch_s`` -- together with the other
lines of that batch: when the writer's queue runs empty, or ``batch_s`` after the
batch's first line, whichever comes first (a killed process loses at most those
frames, and ``recover`` then keeps exactly the frames journaled). It is fsync'ed on
the writer's flush interval (an OS crash loses at most ~1 s). A TIFF writer also journals one ``layout`` line per file it
creates (:class:`~.tiff_layout.TiffLayout`): what ``recover`` needs to rewrite that
file's headers to the frames really written.

At the end the legacy JSON sidecar is *streamed* from the journal
(:func:`write_sidecar_from_journal`: memory does not grow with the run's length) and
written atomically; only then is the journal removed. ``data/recovery.py`` does the
same for a journal left behind by a crash, after making its TIFFs exact.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..._platform import fileio
from ..clock import local_iso
from ..errors import RecordingError
from .safe_open import bounded_lines, open_regular
from .sidecar import atomic_text
from .tiff_layout import TiffLayout

JOURNAL_FORMAT = "mesofield-frame-journal"
Mode = Literal["mda", "direct"]
_MAX_BATCH_LINES = 4096  # a batch also ends here (bounds its memory)


class JournalWriteError(RecordingError):
    """Frame lines could not be written (e.g. disk full); ``frames_lost`` of them,
    the frames that will not count as recorded (``recover`` keeps the journaled)."""

    def __init__(self, message: str, frames_lost: int) -> None:
        super().__init__(message)
        self.frames_lost = frames_lost


class FrameJournal:
    """Append-only JSON-lines log: a header line, then one line per written frame.

    ``batch_s`` > 0 collects frame lines and writes them in one call per batch (see
    the module docstring); the owner calls :meth:`flush` when it runs out of work.
    Not thread-safe: one thread appends and flushes; another may only :meth:`sync`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: Mode,
        data_file: str | os.PathLike[str],
        extra: dict[str, Any] | None = None,
        batch_s: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.lines = 0
        self._batch_s = float(batch_s)
        self._batch: list[str] = []
        self._batch_started = 0.0
        # "x": a journal we did not create is never truncated; unbuffered bytes, so
        # a failed write says how much of it reached the file
        self._fh = open(self.path, "xb", buffering=0)
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
        self._frame_line(json.dumps(entry, separators=(",", ":")) + "\n")

    def append_json(
        self,
        meta_json: str,
        position: str | None = None,
        strip: tuple[int, int] | None = None,
    ) -> None:
        """:meth:`append` for metadata already encoded (``frame_json``): same line.

        ``strip``: (offset, bytes) of a compressed frame (``tiff_compressed``).
        """
        pos = "" if position is None else ',"pos":' + json.dumps(position)
        if strip is not None:
            pos += f',"strip":[{int(strip[0])},{int(strip[1])}]'
        self._frame_line('{"meta":' + meta_json + pos + "}\n")

    def append_layout(self, layout: dict[str, Any], position: str) -> None:
        """Record how a data file was laid out (before its first frame)."""
        self._write({"layout": layout, "pos": position})

    def _frame_line(self, line: str) -> None:
        self.lines += 1
        if not self._batch_s:
            self._write_text(line)
            return
        batch = self._batch
        now = time.monotonic()
        if not batch:
            self._batch_started = now
        batch.append(line)
        if len(batch) >= _MAX_BATCH_LINES or now - self._batch_started >= self._batch_s:
            self.flush()

    def flush(self) -> None:
        """Hand the batched lines to the OS (one write): a killed process keeps them."""
        if self._batch:
            text, self._batch = "".join(self._batch), []
            self._write_text(text)

    def _write(self, obj: dict[str, Any]) -> None:
        self.flush()  # keep the order of the lines
        self._write_text(json.dumps(obj, separators=(",", ":")) + "\n", frames=False)

    def _write_text(self, text: str, *, frames: bool = True) -> None:
        """Write whole lines into the OS page cache (survives a killed process)."""
        data = memoryview(text.encode("utf-8"))
        done = 0
        try:
            while done < len(data):
                done += self._fh.write(data[done:]) or 0
        except OSError as exc:  # e.g. disk full: say which file, and what is lost
            lost = bytes(data).count(b"\n", done) if frames else 0
            raise JournalWriteError(
                f"cannot write frame journal {self.path.name}: {exc.strerror or exc}",
                lost,
            ) from exc

    def sync(self) -> None:
        """Make what reached the OS durable against an OS crash (the flush timer's
        thread calls this; lines still batched are the appending thread's)."""
        if not self._fh.closed:
            fileio.sync(self._fh.fileno())

    def close(self, *, remove: bool = False) -> None:
        if not self._fh.closed:
            try:
                self.flush()
                fileio.sync(self._fh.fileno())
            finally:
                self._fh.close()
        if remove:
            fileio.unlink(self.path)


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
            known = summary.layouts.get(pos)
            flat = n  # until Stop: frames in arrival order
            if known is not None and not known.growing:
                event = obj["meta"].get("mda_event")
                try:
                    flat = known.flat_index(event if isinstance(event, dict) else {})
                except (ValueError, TypeError):
                    flat = n
            summary.last_flat[pos] = max(summary.last_flat.get(pos, -1), flat)
    return summary


def write_sidecar_from_journal(
    journal: str | os.PathLike[str],
    sidecar: str | os.PathLike[str],
    positions: list[str] | None = None,
    limits: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Stream the legacy MDA sidecar ``{"p0": [...], ...}`` from a journal.

    Byte for byte what ``json.dump(payload, fh)`` of the whole in-memory payload
    wrote before (compact, ``", "``/``": "`` separators), but one frame in memory at
    a time: one pass over the journal per position key (runs have a few). Written
    atomically (temp file, fsync, rename). ``limits`` keeps at most that many first
    frames of a position (a video's decodable ones). Returns frames per position.
    """
    if positions is None:
        positions = list(summarize_journal(journal).frames)
    counts: dict[str, int] = {}
    with atomic_text(sidecar, pause="sidecar_tmp") as fh:
        fh.write("{")
        for p, pos in enumerate(positions):
            fh.write((", " if p else "") + json.dumps(pos) + ": [")
            n = 0
            limit = (limits or {}).get(pos)
            for kind, obj in iter_journal(journal):
                if limit is not None and n >= limit:
                    break
                if kind == "frame" and str(obj.get("pos", "p0")) == pos:
                    fh.write((", " if n else "") + json.dumps(obj["meta"]))
                    n += 1
            fh.write("]")
            counts[pos] = n
        fh.write("}")
    return counts


DIRECT_KEY = "frame_metadatas"


def write_direct_sidecar(
    journal: str | os.PathLike[str],
    sidecar: str | os.PathLike[str],
    limit: int,
    fields: Mapping[str, Any],
) -> int:
    """Stream the direct-mode sidecar ``{"frame_metadatas": [<the first limit
    journal entries>], **fields}`` (``CV2Writer.begin/add_frame/finish``) atomically,
    one entry in memory at a time -- byte for byte what ``json.dump`` of the whole
    payload wrote. Returns the entries written."""
    n = 0
    with atomic_text(sidecar, pause="sidecar_tmp") as fh:
        fh.write("{" + json.dumps(DIRECT_KEY) + ": [")
        for kind, obj in iter_journal(journal):
            if n >= limit:
                break
            if kind == "frame":
                fh.write((", " if n else "") + json.dumps(obj["meta"]))
                n += 1
        fh.write("]")
        for key, value in fields.items():
            if key != DIRECT_KEY:
                fh.write(f", {json.dumps(str(key))}: {json.dumps(value)}")
        fh.write("}")
    return n


def legacy_payload(
    mode: Mode, entries: list[dict[str, Any]], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build the legacy sidecar dict from journal entries (docs/design.md §5)."""
    if mode == "direct":
        return {"frame_metadatas": [e["meta"] for e in entries], **(extra or {})}
    payload: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        payload.setdefault(str(e.get("pos", "p0")), []).append(e["meta"])
    return payload
