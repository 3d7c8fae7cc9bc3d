"""Wheel and treadmill encoders: a serial port (or simulated samples) -> CSV + queue.

Protocols (mesofield's firmware):

- **wheel** — one integer per line: the clicks counted since the previous line.
  Each sample becomes a row ``Clicks,Time,Speed`` of ``beh/…_wheel.csv`` (``Time`` in
  seconds since the encoder started, ``Speed`` in mm/s from the wheel's diameter and
  counts per revolution) — what datakit's ``wheel`` source reads — and a data-queue row
  under device ``encoder`` (payload = clicks), which datakit uses to put the wheel on
  the run's clock; its ``device_ts`` is the sample's wall-clock time (local ISO with
  offset, like every stamp of the run: datakit reads it as the wheel's absolute time).
- **treadmill** — ``micros,distance_mm,speed_mm_s`` (or ``distance,speed``) per line.
  Each sample is pushed as a dict ``{distance, speed, device_us}`` under device
  ``treadmill`` (the data queue fans dicts out into columns, which datakit's
  ``treadmill`` source reads) and written to ``beh/…_treadmill.csv``. Lines without
  the firmware's microsecond clock get the host's microseconds since start, so
  datakit does not drop them.

The port is opened with ``serial.serial_for_url``: a device path (``/dev/ttyACM0``,
``COM4``) or any pyserial URL (``loop://`` in the tests). ``development_mode: true``
generates samples every ``sample_interval_ms`` instead (a smooth, seeded random run
speed), as mesofield's development mode stands in for the rig.

Firmware differs in what it sends: lines end with ``\n``, ``\r\n`` or a bare ``\r``,
and numbers come as ``3``, ``+3``, ``-3`` or ``3.0``. All are read; a line that is none
of these (a banner, garbage, a non-finite number, a line longer than
``MAX_LINE_BYTES``) is counted in :attr:`Encoder.unparsed` — in ``status()``, the
manifest and, when no line at all could be read, the run's errors — never skipped
silently. Reading is linear in the bytes received: a line is kept in a bounded buffer,
and an over-long one is dropped as it arrives.

One reader thread per encoder; the CSV is written from it through a buffered file
flushed once a second (a crash loses at most a second of samples), so memory does not
grow with run length. Sample times, intervals and speeds come from one
:class:`~mesofield_napari._platform.clock.RunClock` (``time.perf_counter``; the wall
stamps from its anchor): ``time.monotonic`` ticks every 15.6 ms on Windows, which
made most of a 200 Hz wheel's intervals zero.
"""

from __future__ import annotations

import csv
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from .._platform.clock import RunClock
from ..data.clock import local_iso
from . import DeviceError

FLUSH_INTERVAL_S = 1.0
JOIN_TIMEOUT_S = 5.0
MAX_LINE_BYTES = 4096  # firmware lines are < 100 bytes; longer is garbage
_EOL = re.compile(rb"[\r\n]")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
Push = Callable[[Any, Any], None]  # (payload, device_ts) -> data-queue row


class EncoderSettings(Protocol):
    """What an encoder needs to know (``experiment.EncoderSpec`` is one: the
    ``encoder:`` block of ``hardware.yaml``)."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...  # "wheel" or "treadmill"
    @property
    def port(self) -> str | None: ...
    @property
    def baudrate(self) -> int: ...
    @property
    def cpr(self) -> int: ...  # clicks per revolution
    @property
    def diameter_mm(self) -> float: ...
    @property
    def sample_interval_ms(self) -> float: ...
    @property
    def development_mode(self) -> bool: ...  # simulated samples, no port


class Encoder:
    """A wheel or treadmill encoder (see the module docstring).

    ``push`` receives one call per sample (the run wires it to its data queue);
    ``csv_path`` is the encoder's own file, created by :meth:`start` (it may be set
    after :meth:`open`, once the run folder exists).
    """

    def __init__(
        self,
        spec: EncoderSettings,
        push: Push,
        csv_path: Path | None = None,
        *,
        on_error: Callable[[str, BaseException], None] | None = None,
        seed: int = 0,
    ) -> None:
        self.spec = spec
        self.device_id = spec.id
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.push = push
        self.on_error = on_error
        self.serial: Any = None
        self.samples = 0
        self.lines = 0  # non-blank lines received from the port
        self.unparsed = 0  # of those, lines that were not a sample
        self.first_unparsed: str | None = None  # the first one, for the message
        self.error: BaseException | None = None
        self._mm_per_click = math.pi * spec.diameter_mm / spec.cpr
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fh: TextIO | None = None  # the CSV, from start() until stop()
        self._clock = RunClock()
        self._t0 = 0.0
        self._t_prev: float | None = None
        self._distance = 0.0
        self._speed = 0.0

    @property
    def columns(self) -> list[str]:
        if self.spec.type == "wheel":
            return ["Clicks", "Time", "Speed"]
        return ["timestamp", "distance", "speed", "device_us"]

    @property
    def sampling_rate_hz(self) -> float:
        return 1000.0 / self.spec.sample_interval_ms

    # ------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Open the serial port (raises :class:`DeviceError` before the run starts)."""
        if self.spec.development_mode or self.serial is not None:
            return
        import serial

        try:
            self.serial = serial.serial_for_url(
                self.spec.port, baudrate=self.spec.baudrate, timeout=0.1
            )
        except (serial.SerialException, ValueError, OSError) as exc:
            raise DeviceError(
                f"{self.device_id}: cannot open serial port {self.spec.port!r}: {exc}"
            ) from None

    def start(self) -> None:
        self.open()
        if self.csv_path is None:
            raise RuntimeError(f"{self.device_id}: no csv_path to write to")
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = fh = open(self.csv_path, "x", newline="", encoding="utf-8")
        self._csv = csv.writer(fh)
        self._csv.writerow(self.columns)
        self._clock = RunClock()
        self._t0 = 0.0  # the clock's elapsed time at start
        target = self._simulate if self.spec.development_mode else self._read_serial
        self._thread = threading.Thread(
            target=self._guard,
            args=(target,),
            name=f"encoder-{self.device_id}",
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.error = self.error or DeviceError(
                    f"{self.device_id}: reader did not stop within {timeout:.0f} s"
                )
            else:
                self._thread = None
        if self.serial is not None:
            self.serial.close()
        if self._fh is not None and self._thread is None:
            self._fh.close()
            self._fh = None

    def status(self) -> dict[str, Any]:
        elapsed = (self._t_prev or self._t0) - self._t0
        return {
            "frames": self.samples,
            "fps": (self.samples - 1) / elapsed
            if self.samples > 1 and elapsed
            else 0.0,
            "lost": self.unparsed,
            "unparsed": self.unparsed,
            "queue_fill": 0.0,
            "error": str(self.error) if self.error else None,
        }

    def stream_problem(self) -> str | None:
        """Why a serial encoder's stream is unusable (nothing read), else None.

        An empty wheel CSV next to a complete manifest would pass for a still animal:
        a run whose port delivered nothing, or nothing readable, says so instead.
        """
        if self.spec.development_mode or self.samples:
            return None
        port = self.spec.port
        if not self.lines:
            return f"{self.device_id}: no data received from serial port {port!r}"
        return (
            f"{self.device_id}: none of the {self.lines} line(s) received from "
            f"{port!r} is a {self.spec.type} sample (first: {self.first_unparsed})"
        )

    # ------------------------------------------------------------ reader thread
    def _guard(self, target: Callable[[], Iterator[None]]) -> None:
        last_flush = time.perf_counter()
        fh = self._fh
        assert fh is not None  # start() opens it before the thread starts
        try:
            for _ in target():
                now = time.perf_counter()
                if now - last_flush >= FLUSH_INTERVAL_S:
                    fh.flush()
                    last_flush = now
            fh.flush()
        except BaseException as exc:
            self.error = exc
            if self.on_error is not None:
                self.on_error(self.device_id, exc)

    def _read_serial(self) -> Iterator[None]:  # one item per sample
        pending = bytearray()  # the line being received (at most MAX_LINE_BYTES)
        too_long = False  # the current line overflowed: drop it until its end
        while not self._stop.is_set():
            try:
                chunk = self.serial.read(self.serial.in_waiting or 1)
            except Exception as exc:
                raise DeviceError(
                    f"{self.device_id}: serial port {self.spec.port!r} failed: {exc}"
                ) from None
            if not chunk:
                continue
            pieces = _EOL.split(chunk)  # \r, \n and \r\n all end a line
            for i, piece in enumerate(pieces):
                if not too_long:
                    pending += piece
                    if len(pending) > MAX_LINE_BYTES:
                        too_long = True
                        pending.clear()
                if i == len(pieces) - 1:
                    break  # the last piece has no line end yet
                if too_long:
                    self._unparsed(f"a line longer than {MAX_LINE_BYTES} bytes")
                    too_long = False
                elif self._line(bytes(pending)):
                    yield
                pending.clear()

    def _line(self, raw: bytes) -> bool:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return False  # the \n of a \r\n, or a blank line
        if self._parse(text):
            return True
        self._unparsed(repr(text[:40]))
        return False

    def _unparsed(self, what: str) -> None:
        self.lines += 1
        self.unparsed += 1
        if self.first_unparsed is None:
            self.first_unparsed = what

    def _parse(self, text: str) -> bool:
        """One line -> one sample (True), or False for a line that is not one."""
        now = self._clock.elapsed()
        try:
            if self.spec.type == "wheel":
                clicks = _number(text)
                self.lines += 1
                self._wheel_sample(clicks, now)
                return True
            parts = [p.strip() for p in text.split(",")]
            if len(parts) == 3:
                device_us = int(_number(parts[0]))
                distance, speed = float(_number(parts[1])), float(_number(parts[2]))
            elif len(parts) == 2:
                device_us = int((now - self._t0) * 1e6)
                distance, speed = float(_number(parts[0])), float(_number(parts[1]))
            else:
                return False
        except ValueError:
            return False  # a banner or a garbled line: counted by the caller
        self.lines += 1
        self._treadmill_sample(device_us, distance, speed)
        return True

    def _simulate(self) -> Iterator[None]:  # one item per sample
        period = self.spec.sample_interval_ms / 1000.0
        n = 0
        while not self._stop.wait(
            max(0.0, self._t0 + (n + 1) * period - self._clock.elapsed())
        ):
            n += 1
            now = self._clock.elapsed()
            # a smooth random run speed (mm/s), sometimes at rest
            self._speed = max(0.0, 0.95 * self._speed + self._rng.normal(8.0, 25.0))
            if self.spec.type == "wheel":
                clicks = round(self._speed * period / self._mm_per_click)
                self._wheel_sample(clicks, now)
            else:
                self._distance += self._speed * period
                self._treadmill_sample(
                    int((now - self._t0) * 1e6),
                    round(self._distance, 3),
                    round(self._speed, 3),
                )
            yield

    def _wheel_sample(self, clicks: int | float, now: float) -> None:
        period = self.spec.sample_interval_ms / 1000.0
        dt = now - self._t_prev if self._t_prev is not None else period
        speed = clicks * self._mm_per_click / dt if dt > 0 else 0.0
        t = now - self._t0
        self._t_prev = now
        self._csv.writerow([clicks, f"{t:.6f}", f"{speed:.4f}"])
        self.samples += 1
        self.push(clicks, local_iso(self._clock.wall(now)))

    def _treadmill_sample(self, device_us: int, distance: float, speed: float) -> None:
        self._t_prev = now = self._clock.elapsed()
        self._csv.writerow([device_us, distance, speed, device_us])
        self.samples += 1
        self.push(
            {"distance": distance, "speed": speed, "device_us": device_us},
            local_iso(self._clock.wall(now)),
        )


def _number(text: str) -> int | float:
    """``3``, ``+3``, ``-3`` -> int; ``3.0`` -> 3; ``2.5`` -> 2.5 (ValueError if neither).

    Firmware prints counts as integers or as decimals; both are the same count.
    Non-finite values (``nan``, ``inf``) are not samples.
    """
    if not _NUMBER.fullmatch(text):  # (int()/float() would take "1_0" or "nan")
        raise ValueError(f"not a number: {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return int(value) if value.is_integer() else value
