"""Checks before a recording starts: will it fit on the disk, can the disk keep up?

Both run before any file or event is built, so an impossible request (``--frames
1000000000000``) is one clear line at once instead of minutes of planning and a
half-made run folder. No Qt here.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .._platform import fileio
from ..data.errors import gigabytes

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

# MP4 size is unknowable up front: this is a deliberately pessimistic 1/10 of the
# 8-bit frame (mp4v on the simulated camera measured ~1/250; noisy real data does
# worse, but not 1/10).
MP4_BYTES_PER_PIXEL = 0.1
TIFF_HEADER_BYTES = 64 * 2**10  # BigTIFF header + OME-XML, generously
SPEED_PROBE_BYTES = 64 * 2**20  # the write-speed probe writes at most this much...
SPEED_PROBE_SECONDS = 0.25  # ...and stops after about this long
_PROBE_CHUNK = 4 * 2**20
# exposure 0 and interval 0 mean "as fast as the camera reads out": plan for 1000 fps,
# the fastest sCMOS full-frame rate we expect
FASTEST_FPS = 1000.0
# below this planned rate the disk is not measured (any disk we meet does more)
ALWAYS_FAST_ENOUGH = 50e6


def frame_geometry(core: CMMCorePlus) -> tuple[int, int, int]:
    """(height, width, bytes per frame) of the core's current camera."""
    h, w = int(core.getImageHeight()), int(core.getImageWidth())
    bpp = int(core.getBytesPerPixel()) * max(1, int(core.getNumberOfComponents()))
    return h, w, h * w * bpp


def planned_bytes(
    frames: int, height: int, width: int, frame_bytes: int, kinds: str
) -> dict[str, int]:
    """Bytes each writer kind will need for ``frames`` frames (MP4: an estimate)."""
    out: dict[str, int] = {}
    if kinds in ("tiff", "both"):
        out["tiff"] = frames * frame_bytes + TIFF_HEADER_BYTES
    if kinds in ("mp4", "both"):
        out["mp4"] = math.ceil(frames * height * width * MP4_BYTES_PER_PIXEL)
    return out


def check_free_space(folder: Path, frames: int, needs: dict[str, int]) -> None:
    """Raise ``ValueError`` (one line) when the planned files cannot fit."""
    free = shutil.disk_usage(folder).free
    total = sum(needs.values())
    if total > free:
        parts = ", ".join(f"{kind} {gigabytes(n)}" for kind, n in needs.items())
        raise ValueError(
            f"not enough disk space for {frames} frames: they need {gigabytes(total)} "
            f"({parts}), {gigabytes(free)} free on {folder}"
        )


def measure_write_speed(
    folder: Path,
    *,
    max_bytes: int = SPEED_PROBE_BYTES,
    budget_s: float = SPEED_PROBE_SECONDS,
) -> float | None:
    """Bytes/s the disk under ``folder`` sustains, synced to the device (or None).

    Writes 4 MiB chunks, each synced (``fileio.data_sync``), to a temporary file until ``max_bytes``
    or ``budget_s`` (a slow disk stops after one chunk), then removes the file. The
    number is pessimistic on purpose: the page cache absorbs short bursts, not a
    whole run.
    """
    chunk = os.urandom(1024) * (_PROBE_CHUNK // 1024)
    try:
        fd, name = tempfile.mkstemp(prefix=".mesofield-speed-", dir=folder)
    except OSError:
        return None
    written = 0
    try:
        t0 = time.perf_counter()
        while written < max_bytes:
            written += os.write(fd, chunk)
            fileio.data_sync(fd)
            if time.perf_counter() - t0 > budget_s:
                break
        elapsed = time.perf_counter() - t0
    except OSError:
        return None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            fileio.unlink(name)
    return written / elapsed if elapsed > 0 else None


def planned_rate(frame_bytes: int, exposure_ms: float, interval_s: float) -> float:
    """Bytes/s the camera will produce; exposure and interval 0 count as 1000 fps."""
    period_s = max(interval_s, exposure_ms / 1000.0) or 1 / FASTEST_FPS
    return frame_bytes / period_s


def rate_warning(
    frame_bytes: int,
    exposure_ms: float,
    interval_s: float,
    folder: Path,
) -> str | None:
    """A warning when the camera will produce data faster than ``folder`` takes it.

    The disk is measured (:func:`measure_write_speed`) only when the planned rate is
    above ``ALWAYS_FAST_ENOUGH``, so small runs cost nothing.
    """
    rate = planned_rate(frame_bytes, exposure_ms, interval_s)
    if rate <= ALWAYS_FAST_ENOUGH:
        return None
    disk = measure_write_speed(folder)
    if disk is None or rate <= disk:
        return None
    return (
        f"the camera will produce up to {rate / 1e6:.0f} MB/s but {folder} sustained "
        f"{disk / 1e6:.0f} MB/s in a quick write test: the run stops early if the "
        "camera's buffer fills (lower the frame size or rate, or raise the exposure)"
    )


__all__ = [
    "check_free_space",
    "frame_geometry",
    "measure_write_speed",
    "planned_bytes",
    "planned_rate",
    "rate_warning",
]
