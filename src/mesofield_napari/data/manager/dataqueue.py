"""The run's data queue: one clock for every device, logged to CSV as it goes.

Columns (mesofield's): ``queue_elapsed,packet_ts,device_ts,device_id,payload``.
``queue_elapsed`` is monotonic seconds since the queue started, ``packet_ts`` the wall
clock at the same instant (local time with its offset, see ``clock.py``). Both come
from one :class:`~mesofield_napari._platform.clock.RunClock` (``time.perf_counter``
plus a wall-clock anchor taken at start): fine-grained on Windows too, where
``time.monotonic``/``time.time`` tick every 15.6 ms. Every camera frame, encoder
sample and note of a run becomes one row; datakit aligns every stream of the run on
these rows.

Devices :meth:`DataQueue.push` from any thread; pushing only stamps the packet and hands
it to one logger thread (no disk work, no string formatting on the caller's thread).
Rows stream to disk in push order, so a crash keeps them. Memory does not grow with run
length: nothing is kept per row. On :meth:`DataQueue.stop` the file is rewritten once,
atomically and streaming, with mesofield's fan-out rule when any payload was a dict:
the dict's keys become their own columns and ``payload`` keeps non-dict payloads only.

A camera pushes its row when a frame reaches its writer, before the frame is on disk.
When fewer frames reached the file (a full disk, a failed write), :meth:`DataQueue.stop`
is given each camera's frames written (``limits``) and keeps only that camera's first
rows, so the queue never claims a frame that is not in the file; ``trimmed`` says how
many rows went, per device.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._platform import fileio
from ..._platform.clock import RunClock
from ..clock import local_iso
from ..formats.tiff_layout import pause_point

BASE_COLUMNS = ["queue_elapsed", "packet_ts", "device_ts", "device_id"]
FLUSH_INTERVAL_S = 1.0  # a killed process loses at most the rows of the last second
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DataPacket:
    device_id: str
    payload: Any
    device_ts: Any
    wall_s: float  # epoch seconds at push (the run clock's anchor + elapsed)
    queue_elapsed: float  # seconds since the queue started (monotonic)


class DataQueue:
    """A thread-safe, disk-streamed data queue (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rows_written = 0
        self.rows_by_device: Counter[str] = Counter()
        self.trimmed: Counter[str] = Counter()  # rows dropped at stop, per device
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[DataPacket | None] = queue.SimpleQueue()
        self.clock = RunClock()
        self._push_lock = threading.Lock()  # keeps push order == timestamp order
        self._thread: threading.Thread | None = None
        self._dict_keys: dict[str, None] = {}  # ordered set: bounded by distinct keys
        self._closed = False

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "x", newline="", encoding="utf-8")
        self._csv = csv.writer(self._fh)
        self._csv.writerow([*BASE_COLUMNS, "payload"])
        self._fh.flush()
        self.clock = RunClock()
        self._thread = threading.Thread(target=self._run, name="dataqueue", daemon=True)
        self._thread.start()

    def elapsed(self, perf_counter_s: float | None = None) -> float:
        """Queue time (s) of a ``time.perf_counter()`` reading (default: now)."""
        if perf_counter_s is None:
            return self.clock.elapsed()
        return self.clock.elapsed_at(perf_counter_s)

    def push(self, device_id: str, payload: Any, device_ts: Any = None) -> None:
        """Add a packet, stamped now. Cheap and never blocks on disk.

        Packets pushed after :meth:`stop` are ignored (a late device callback must not
        reopen a finished log).
        """
        with self._push_lock:
            if self._closed:
                return
            elapsed = self.clock.elapsed()
            self._queue.put(
                DataPacket(
                    str(device_id),
                    payload,
                    device_ts,
                    self.clock.wall(elapsed),
                    elapsed,
                )
            )

    def stop(
        self,
        timeout: float = STOP_TIMEOUT_S,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        """Write everything pushed so far, then the final (fanned-out) CSV.

        ``limits``: at most this many rows of a device are kept, its first ones
        (the frames a camera's file really holds; see the module docstring).
        """
        with self._push_lock:
            self._closed = True
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():  # pragma: no cover - a wedged disk
            self.error = self.error or TimeoutError(
                f"data queue did not finish writing within {timeout:.0f} s"
            )
            return
        self._thread = None
        self._fh.close()
        excess = {
            d: n
            for d, n in (limits or {}).items()
            if self.rows_by_device.get(d, 0) > max(int(n), 0)
        }
        if self.error is None and (self._dict_keys or excess):
            self._rewrite_fanned_out(excess)

    # ------------------------------------------------------------ logger thread
    def _run(self) -> None:
        last_flush = time.perf_counter()
        while (pkt := self._queue.get()) is not None:
            if self.error is not None:
                continue
            try:
                payload = pkt.payload
                if isinstance(payload, dict):
                    for key in map(str, payload):
                        self._dict_keys.setdefault(key)
                self._csv.writerow(
                    [
                        f"{pkt.queue_elapsed:.6f}",
                        local_iso(pkt.wall_s),
                        _cell(pkt.device_ts),
                        pkt.device_id,
                        _cell(payload),
                    ]
                )
                self.rows_written += 1
                self.rows_by_device[pkt.device_id] += 1
                now = time.perf_counter()
                if self._queue.empty() or now - last_flush >= FLUSH_INTERVAL_S:
                    self._fh.flush()
                    last_flush = now
            except OSError as exc:
                self.error = exc
        try:
            self._fh.flush()
        except OSError as exc:
            self.error = self.error or exc

    def _rewrite_fanned_out(self, limits: Mapping[str, int] | None = None) -> None:
        """The final layout (:func:`finish_dataqueue`), this queue's counts updated."""
        limits = dict(limits or {})
        result = finish_dataqueue(self.path, limits, keys=list(self._dict_keys))
        for device in limits:
            dropped = self.rows_by_device[device] - result.rows_by_device[device]
            self.trimmed[device] += dropped
            self.rows_by_device[device] = result.rows_by_device[device]
            self.rows_written -= dropped


@dataclass
class QueueCounts:
    """What a finished data-queue file holds (:func:`finish_dataqueue`)."""

    rows_by_device: Counter[str] = field(default_factory=Counter)
    trimmed: Counter[str] = field(default_factory=Counter)  # rows dropped, per device
    first_ts: dict[str, str] = field(default_factory=dict)  # device -> packet_ts
    last_ts: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.rows_by_device.values())


def finish_dataqueue(
    path: str | os.PathLike[str],
    limits: Mapping[str, int] | None = None,
    keys: list[str] | None = None,
) -> QueueCounts:
    """Bring a streamed (or already finished) data-queue CSV to its final layout.

    Shared by :meth:`DataQueue.stop` and ``recover`` (docs/design.md §6): dict
    payloads (cells starting with ``{``) fan out into their keys' columns, ``payload``
    keeps the others; each device in ``limits`` keeps only its first rows (the
    frames its file holds). Streaming, one row at a time: with ``keys`` None
    (recover) a first pass finds the dict keys and returns at once when nothing
    would change; the rewrite goes to a temp file renamed over the CSV.
    Idempotent: a finished file's extra columns are kept, so a second call changes
    nothing.
    """
    path = Path(path)
    limits = {d: max(int(n), 0) for d, n in (limits or {}).items()}
    with open(path, newline="", encoding="utf-8") as src:
        header = next(csv.reader(src), [])
    extra = [c for c in header[len(BASE_COLUMNS) + 1 :] if c]
    if keys is None:
        result, keys, dicts = _scan(path, limits)
        if not dicts and not result.trimmed and set(keys) <= set(extra):
            return result  # already final: nothing to rewrite
    columns = list(dict.fromkeys([*extra, *keys]))
    at = {c: len(BASE_COLUMNS) + 1 + i for i, c in enumerate(extra)}
    result = QueueCounts()
    seen: Counter[str] = Counter()
    # not tempfile.mkstemp: its 0600 mode would make the log unreadable to other
    # users; O_EXCL + 0666 honours the umask like every other run file
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = fileio.open_binary(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with (
            os.fdopen(fd, "w", newline="", encoding="utf-8") as out,
            open(path, newline="", encoding="utf-8") as src,
        ):
            reader = csv.reader(src)
            next(reader, None)  # the header
            w = csv.writer(out)
            w.writerow([*BASE_COLUMNS, "payload", *columns])
            for row in reader:
                if len(row) < 4:
                    continue  # a blank line
                if not _count(result, seen, row, limits):
                    continue  # a frame that is not in its file
                base, cell = row[:4], row[4] if len(row) > 4 else ""
                as_dict = _json_object(cell)
                if as_dict is None:
                    old = {c: row[i] for c, i in at.items() if i < len(row)}
                    w.writerow([*base, cell, *(old.get(c, "") for c in columns)])
                else:
                    w.writerow(
                        [*base, "", *(_cell(as_dict.get(c, "")) for c in columns)]
                    )
            out.flush()
            pause_point("dataqueue_tmp")  # test hook: a kill during the fan-out
            fileio.full_sync(out.fileno())
        fileio.replace(tmp, path)
    except BaseException:
        fileio.unlink(tmp)
        raise
    return result


def _count(
    result: QueueCounts, seen: Counter[str], row: list[str], limits: Mapping[str, int]
) -> bool:
    """Account for one row; False when ``limits`` drops it."""
    device = row[3]
    seen[device] += 1
    if device in limits and seen[device] > limits[device]:
        result.trimmed[device] += 1
        return False
    result.rows_by_device[device] += 1
    result.first_ts.setdefault(device, row[1])
    result.last_ts[device] = row[1]
    return True


def _scan(path: Path, limits: Mapping[str, int]) -> tuple[QueueCounts, list[str], int]:
    """One streaming pass: the counts, the dict keys and how many dict payloads."""
    result = QueueCounts()
    keys: dict[str, None] = {}  # ordered set: bounded by distinct keys
    seen: Counter[str] = Counter()
    dicts = 0
    with open(path, newline="", encoding="utf-8") as src:
        reader = csv.reader(src)
        next(reader, None)
        for row in reader:
            if len(row) < 4 or not _count(result, seen, row, limits):
                continue
            as_dict = _json_object(row[4] if len(row) > 4 else "")
            if as_dict is not None:
                dicts += 1
                for key in map(str, as_dict):
                    keys.setdefault(key)
    return result, list(keys), dicts


def _json_object(cell: str) -> dict[str, Any] | None:
    """The dict a streamed payload cell holds, or None for any other payload."""
    if not cell.startswith("{"):
        return None
    try:
        value = json.loads(cell)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):  # JSON, as streamed (not Python's repr)
        return json.dumps(value, default=str)
    return "" if value is None else value
