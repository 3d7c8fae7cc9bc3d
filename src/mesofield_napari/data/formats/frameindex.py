"""Frame counts and frame clocks of a sidecar or journal, in bounded memory (no Qt).

Opening a recording needs, per position, only how many frames were written, their
times and the camera's frame numbers. Building one Python dict per frame for that
cost ~2.7 KiB a frame (a 5-million-line journal took 3.3 GB). Here the file is
streamed: each entry is parsed, its three numbers are appended to compact arrays and
the entry is dropped. Per-frame dicts are built again only when asked for
(:func:`load_entries`), so memory is ~16 bytes a frame plus one read buffer.

The results are those of ``json.loads`` on the whole file followed by
``summary.frame_entries``: the same positions, order, counts and validity rules.
"""

from __future__ import annotations

import codecs
import json
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .journal import iter_journal
from .safe_open import MAX_LINE_BYTES, open_regular

__all__ = [
    "FrameIndex",
    "NotAnObjectError",
    "PositionIndex",
    "load_entries",
    "scan_journal",
    "scan_sidecar",
]

_READ = 1 << 20  # bytes read at a time
_LOOKAHEAD = 1 << 16  # chars kept ahead of the parser, so a value is never cut short
_WS = " \t\n\r"
_DIRECT = "frame_metadatas"


@dataclass
class PositionIndex:
    """One position's frames: counts, clock and camera frame numbers."""

    count: int = 0  # entries that are JSON objects (frames)
    skipped: int = 0  # entries that are not objects (ignored, as before)
    _times: array[float] = field(default_factory=lambda: array("d"), repr=False)
    _numbers: array[int] = field(default_factory=lambda: array("q"), repr=False)
    first: dict[str, Any] | None = field(default=None, repr=False)

    def add(self, entry: Any) -> None:
        """Account for one entry and keep only its numbers."""
        if not isinstance(entry, dict):
            self.skipped += 1
            return
        if self.first is None:
            self.first = entry
        self.count += 1
        self._times.append(_frame_time_ms(entry))
        self._numbers.append(_image_number(entry))

    @property
    def times_ms(self) -> np.ndarray:
        """Raw frame clock in ms (runner_time_ms, else ElapsedTime-ms; NaN if none)."""
        return np.frombuffer(self._times, dtype=np.float64) if self.count else _EMPTY

    @property
    def image_numbers(self) -> np.ndarray:
        """The camera's ImageNumber per frame (``NO_NUMBER`` where there is none)."""
        if not self.count:
            return np.zeros(0, dtype=np.int64)
        return np.frombuffer(self._numbers, dtype=np.int64)


_EMPTY = np.zeros(0, dtype=np.float64)
NO_NUMBER = -(2**63)  # stands for a frame without a (valid) ImageNumber


class NotAnObjectError(ValueError):
    """The sidecar is JSON-ish but its top level is not an object."""


def _frame_time_ms(entry: dict[str, Any]) -> float:
    t = entry.get("runner_time_ms")
    if t is None:
        cam = entry.get("camera_metadata")
        t = cam.get("ElapsedTime-ms") if isinstance(cam, dict) else None
    try:
        return float(t)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _image_number(entry: dict[str, Any]) -> int:
    cam = entry.get("camera_metadata")
    n = cam.get("ImageNumber") if isinstance(cam, dict) else None
    try:
        value = int(n)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return NO_NUMBER
    return value if NO_NUMBER < value < 2**63 else NO_NUMBER


@dataclass
class FrameIndex:
    """What a sidecar or journal says about its frames, without the frames' dicts.

    ``positions`` follows ``summary.frame_entries``: in direct mode only
    ``frame_metadatas``, else every top-level list. ``extra`` holds the sidecar's
    other top-level values (``fps``, ``codec``...).
    """

    path: Path
    kind: str  # "sidecar" or "journal"
    positions: dict[str, PositionIndex] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    header: dict[str, Any] = field(default_factory=dict, repr=False)
    bad_lines: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {k: p.count for k, p in self.positions.items()}


# ---------------------------------------------------------------- sidecar
class _Stream:
    """Incrementally decoded UTF-8 text with a cursor; old text is dropped."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self._dec = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf = ""
        self.i = 0
        self.eof = False

    def fill(self, need: int = _LOOKAHEAD) -> None:
        if self.i > _READ:
            self.buf, self.i = self.buf[self.i :], 0
        while not self.eof and len(self.buf) - self.i < need:
            raw = self._fh.read(max(_READ, need))
            self.eof = not raw
            self.buf += self._dec.decode(raw, final=self.eof)

    def skip_ws(self) -> str:
        """The next non-blank character ('' at the end of the file)."""
        while True:
            self.fill()
            buf, i, n = self.buf, self.i, len(self.buf)
            while i < n and buf[i] in _WS:
                i += 1
            self.i = i
            if i < n:
                return buf[i]
            if self.eof:
                return ""

    def expect(self, char: str) -> None:
        if self.skip_ws() != char:
            raise ValueError(f"expected {char!r} at char {self.i}")
        self.i += 1

    def value(self, decoder: json.JSONDecoder) -> Any:
        """Parse one JSON value at the cursor (reading more if it runs past the buffer)."""
        self.skip_ws()
        need = _LOOKAHEAD
        while True:
            self.fill(need)
            try:
                obj, end = decoder.raw_decode(self.buf, self.i)
            except json.JSONDecodeError as exc:
                inside = exc.pos < len(self.buf) - 1 and not exc.msg.startswith(
                    "Unterminated string"
                )
                if self.eof or inside:
                    raise
            else:
                if end < len(self.buf) or self.eof:  # else a number may be cut short
                    self.i = end
                    return obj
            need = 2 * (len(self.buf) - self.i) + _READ
            if need > MAX_LINE_BYTES + _READ:  # one frame entry is ~1 KiB
                raise ValueError(
                    f"a value longer than {MAX_LINE_BYTES} bytes at char {self.i}"
                )


def _iter_sidecar(path: Path) -> Iterator[tuple[str, Any, bool]]:
    """(key, item, is_list_item) for a JSON object: list values item by item."""
    decoder = json.JSONDecoder()
    with open_regular(path) as fh:  # never a FIFO or device
        s = _Stream(fh)
        if s.skip_ws() != "{":  # valid JSON but no object, or not JSON at all?
            s.value(decoder)
            if s.skip_ws() != "":
                raise ValueError("extra data after the JSON value")
            raise NotAnObjectError("the sidecar does not hold a JSON object")
        s.i += 1
        if s.skip_ws() == "}":
            s.i += 1
        else:
            while True:
                key = s.value(decoder)
                if not isinstance(key, str):
                    raise ValueError("object keys must be strings")
                s.expect(":")
                if s.skip_ws() == "[":
                    s.i += 1
                    yield key, _START, True  # a list starts (a repeated key resets)
                    if s.skip_ws() == "]":
                        s.i += 1
                    else:
                        while True:
                            yield key, s.value(decoder), True
                            c = s.skip_ws()
                            s.i += 1
                            if c == "]":
                                break
                            if c != ",":
                                raise ValueError(f"expected ',' or ']' at char {s.i}")
                else:
                    yield key, s.value(decoder), False
                c = s.skip_ws()
                s.i += 1
                if c == "}":
                    break
                if c != ",":
                    raise ValueError(f"expected ',' or '}}' at char {s.i}")
        if s.skip_ws() != "":
            raise ValueError("extra data after the JSON object")


def scan_sidecar(path: str | Path) -> FrameIndex:
    """Index a legacy sidecar, streaming it.

    Raises ``ValueError`` (or ``UnicodeDecodeError``, ``RecursionError``) where
    ``json.loads`` would, and ``ValueError`` when it is not a JSON object.
    """
    path = Path(path)
    lists: dict[str, PositionIndex] = {}
    extra: dict[str, Any] = {}
    for key, item, is_list in _iter_sidecar(path):
        if not is_list:
            lists.pop(key, None)  # a repeated key: the last value wins, as in json
            extra[key] = item
        elif item is _START:  # a list starts (a repeated key starts over)
            extra.pop(key, None)
            lists[key] = PositionIndex()
        else:
            lists[key].add(item)
    if _DIRECT in lists:
        lists = {_DIRECT: lists[_DIRECT]}
    return FrameIndex(path, "sidecar", positions=lists, extra=extra)


_START = object()


# ---------------------------------------------------------------- journal
def scan_journal(path: str | Path) -> FrameIndex:
    """Index a journal line by line (a line cut short by a crash is counted as bad).

    Reads through :func:`~.journal.iter_journal`, the one journal parser: raises
    ``ValueError`` when the first line is not a journal header.
    """
    path = Path(path)
    index = FrameIndex(path, "journal")
    direct: PositionIndex | None = None
    for kind, obj in iter_journal(path):
        if kind == "frame":
            if direct is not None:
                direct.add(obj["meta"])
            else:
                key = str(obj.get("pos", "p0"))
                index.positions.setdefault(key, PositionIndex()).add(obj["meta"])
        elif kind == "header":
            index.header = obj
            if obj.get("mode") == "direct":
                direct = index.positions.setdefault(_DIRECT, PositionIndex())
        elif kind == "bad":
            index.bad_lines += 1
        # "layout": how a TIFF was laid out (for recover), not a frame
    return index


# ---------------------------------------------------------------- on demand
def load_entries(index: FrameIndex, key: str, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` frame dicts of position ``key``, read from the file again.

    Only for callers that need whole dicts (e.g. a table of one recording); what
    opening needs is already in ``index``.
    """
    out: list[dict[str, Any]] = []
    if limit <= 0 or key not in index.positions:
        return out
    if index.kind == "sidecar":  # (a key repeated in the file: its first list)
        for k, item, is_list in _iter_sidecar(index.path):
            if is_list and k == key and isinstance(item, dict):
                out.append(item)
                if len(out) >= limit:
                    break
        return out
    direct_mode = index.header.get("mode") == "direct"
    for kind, obj in iter_journal(index.path):
        if kind == "frame" and (direct_mode or str(obj.get("pos", "p0")) == key):
            out.append(obj["meta"])
            if len(out) >= limit:
                break
    return out
