"""A thread-safe data queue that devices push packets to, logged to CSV as it goes.

Columns (mesofield's): ``queue_elapsed,packet_ts,device_ts,device_id,payload``. Rows are
streamed to disk while the run goes on (a crash keeps them; dict payloads are stored as
JSON then). On :meth:`DataQueue.stop` the file is rewritten once, atomically, with
mesofield's fan-out rule: the keys of dict payloads become their own columns and the
``payload`` column keeps non-dict payloads only.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sidecar import utc_now_iso

BASE_COLUMNS = ["queue_elapsed", "packet_ts", "device_ts", "device_id"]


@dataclass(frozen=True)
class DataPacket:
    device_id: str
    payload: Any
    device_ts: Any
    packet_ts: str  # UTC ISO-8601, taken at push
    queue_elapsed: float  # seconds since the queue started (monotonic)


class DataQueue:
    """Devices :meth:`push` packets from any thread; one logger thread writes them."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rows_written = 0
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[DataPacket | None] = queue.SimpleQueue()
        self._t0 = time.monotonic()
        self._push_lock = threading.Lock()  # keeps push order == timestamp order
        self._thread: threading.Thread | None = None
        self._packets: list[DataPacket] = []

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "x", newline="", encoding="utf-8")
        self._csv = csv.writer(self._fh)
        self._csv.writerow([*BASE_COLUMNS, "payload"])
        self._fh.flush()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="dataqueue", daemon=True)
        self._thread.start()

    def push(self, device_id: str, payload: Any, device_ts: Any = None) -> None:
        """Add a packet, stamped now (UTC) — cheap, never blocks on disk."""
        with self._push_lock:
            self._queue.put(
                DataPacket(
                    str(device_id),
                    payload,
                    device_ts,
                    utc_now_iso(),
                    time.monotonic() - self._t0,
                )
            )

    def stop(self) -> None:
        """Write everything pushed so far, then the final fanned-out CSV."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        self._fh.close()
        if self.error is None:
            self._rewrite_fanned_out()

    def _run(self) -> None:
        while (pkt := self._queue.get()) is not None:
            self._packets.append(pkt)
            if self.error is not None:
                continue
            try:
                payload = pkt.payload
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload, default=str)
                self._csv.writerow(
                    [
                        f"{pkt.queue_elapsed:.6f}",
                        pkt.packet_ts,
                        _cell(pkt.device_ts),
                        pkt.device_id,
                        _cell(payload),
                    ]
                )
                if self._queue.empty():
                    self._fh.flush()
                self.rows_written += 1
            except OSError as exc:
                self.error = exc

    def _rewrite_fanned_out(self) -> None:
        keys: list[str] = []
        for pkt in self._packets:
            if isinstance(pkt.payload, dict):
                keys.extend(k for k in map(str, pkt.payload) if k not in keys)
        if not keys:
            return  # the streamed file already has the final layout
        # not tempfile.mkstemp: its 0600 mode would make the log unreadable to other
        # users; O_EXCL + 0666 honours the umask like every other run file
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow([*BASE_COLUMNS, "payload", *keys])
                for p in self._packets:
                    base = [
                        f"{p.queue_elapsed:.6f}",
                        p.packet_ts,
                        _cell(p.device_ts),
                        p.device_id,
                    ]
                    if isinstance(p.payload, dict):
                        d = {str(k): v for k, v in p.payload.items()}
                        w.writerow([*base, "", *(_cell(d.get(k, "")) for k in keys)])
                    else:
                        w.writerow([*base, _cell(p.payload), *("" for _ in keys)])
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):  # JSON, as streamed (not Python's repr)
        return json.dumps(value, default=str)
    return "" if value is None else value
