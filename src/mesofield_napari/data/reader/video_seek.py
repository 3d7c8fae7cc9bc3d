"""Frame-exact random access to H.264 videos whose timestamps are the frames' times.

Our H.264 files carry each frame's real time as its timestamp (variable frame rate).
OpenCV seeks by ``frame number / fps``, which lands on the wrong frame when frames are
not evenly spaced, so these videos are read through PyAV: the presentation
timestamps of all packets are listed once (demuxing only, no decoding), then frame
``k`` is found by seeking to the keyframe before its timestamp and decoding up to it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

__all__ = ["VideoTimeline", "open_timeline"]


class VideoTimeline:
    """The video stream's frame timestamps, in presentation order, and a reader."""

    def __init__(self, path: Path, pts: np.ndarray) -> None:
        self.path, self.pts = path, pts

    def read(self, wanted: range, gray: bool) -> list[np.ndarray]:
        """Frames ``wanted`` (ascending), decoded; ``OSError`` for one that fails."""
        import av

        out: list[np.ndarray] = []
        fmt = "gray" if gray else "rgb24"
        with av.open(os.fspath(self.path)) as container:
            stream = container.streams.video[0]
            targets = iter(wanted)
            target = next(targets, None)
            if target is None:
                return out
            self._check(target)
            container.seek(int(self.pts[target]), stream=stream, backward=True)
            try:
                for frame in container.decode(stream):
                    while target is not None and frame.pts == self.pts[target]:
                        out.append(frame.to_ndarray(format=fmt))
                        target = next(targets, None)
                        if target is not None:
                            self._check(target)
                    if target is None:
                        break
            except av.FFmpegError as exc:
                raise OSError(
                    f"cannot decode frame {target} of {self.path.name}: {exc}"
                ) from exc
        if target is not None:
            raise OSError(f"cannot decode frame {target} of {self.path.name}")
        return out

    def _check(self, index: int) -> None:
        if not 0 <= index < self.pts.size:
            raise OSError(f"cannot decode frame {index} of {self.path.name}")


def open_timeline(path: Path) -> VideoTimeline | None:
    """The timeline of an H.264 video (None for other codecs: OpenCV reads those)."""
    try:
        import av
    except ImportError:  # pragma: no cover - PyAV is a dependency
        return None
    pts: list[int] = []
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.codec_context.name != "h264":
                return None
            with contextlib.suppress(av.FFmpegError):  # a killed file's torn tail
                for packet in container.demux(stream):
                    if packet.pts is not None and packet.size:
                        pts.append(int(packet.pts))
    except (av.FFmpegError, OSError):
        return None
    return VideoTimeline(path, np.sort(np.asarray(pts, dtype=np.int64)))
