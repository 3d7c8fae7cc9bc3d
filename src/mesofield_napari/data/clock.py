"""Wall-clock stamps for the files we write: local time *with* its UTC offset.

datakit strips the zone from stamps and compares them with PsychoPy's local clock, so
plain UTC would be off by the local offset, and naive local time is ambiguous (DST,
travelling laptops). ``2026-11-29T01:41:54.444058-07:00`` serves both kinds of reader:
zone-stripping tools get local time, zone-aware tools get the right instant.
"""

from __future__ import annotations

import datetime as _dt


def local_iso(epoch_s: float | None = None) -> str:
    """ISO-8601 local time with its offset, always with microseconds.

    Fixed width: ``isoformat()`` drops ``.ffffff`` on a whole second, and pandas then
    refuses the column (it infers one format from the first value).
    """
    moment = (
        _dt.datetime.now().astimezone()
        if epoch_s is None
        else _dt.datetime.fromtimestamp(epoch_s).astimezone()
    )
    return moment.isoformat(timespec="microseconds")


def local_now() -> _dt.datetime:
    """Now, as an aware datetime in the local zone."""
    return _dt.datetime.now().astimezone()


def frame_clock(meta: object, fallback_index: int) -> tuple[int, str]:
    """(ImageNumber, device time) of a frame, for its data-queue row.

    pymmcore-plus's ``FrameMetaV1`` carries the camera's ``ImageNumber`` and the
    core's ``TimeReceivedByCore`` in ``camera_metadata`` for sequenced acquisitions;
    unsequenced frames lack them, so the frame's index in the run and the wall clock
    now stand in.
    """
    camera = meta.get("camera_metadata") if isinstance(meta, dict) else None
    camera = camera if isinstance(camera, dict) else {}
    try:
        number = int(camera["ImageNumber"])
    except (KeyError, TypeError, ValueError):
        number = fallback_index
    received = camera.get("TimeReceivedByCore")
    return number, str(received) if received else local_iso()
