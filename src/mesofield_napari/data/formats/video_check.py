"""How many frames of a video really decode (after a kill, a full disk, or to verify).

A container's header can claim frames that are not there (a cut-short fragment) or
none at all (an MP4 whose index was never written), so the honest count is the number
of frames a decoder produces. This decodes with PyAV, one packet at a time, keeping
no frame (memory stays bounded) and stopping at the first packet that cannot be
decoded: frames after a damaged one would be built on garbage.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


class VideoLostError(OSError):
    """Not a single frame of the video decodes."""


def decodable_frames(
    path: str | os.PathLike[str], *, timeout_s: float | None = 600.0
) -> int:
    """Frames of ``path`` that decode, counted from the start (0 if none).

    Stops at the first undecodable packet or the end of readable data. ``timeout_s``
    bounds the time spent (``TimeoutError`` past it; ``None``: no bound).
    """
    import av

    path = Path(path)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        container = av.open(os.fspath(path))
    except (av.FFmpegError, OSError):
        return 0
    count = 0
    with container:
        if not container.streams.video:
            return 0
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker: flushed below
                count += len(ctx.decode(packet))
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"counting decodable frames of {path.name} took over "
                        f"{timeout_s:g} s (at frame {count})"
                    )
        except (av.FFmpegError, av.error.EOFError):
            pass  # damaged or cut-short data: frames so far are the honest count
        with contextlib.suppress(av.FFmpegError):
            count += len(ctx.decode(None))  # frames still inside the decoder
    return count
