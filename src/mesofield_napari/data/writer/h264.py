"""H.264 through PyAV's libx264, muxed so that a killed process still leaves a video.

OpenCV's pip wheels cannot encode H.264 and write MP4's index (``moov``) only when the
file is closed, so a SIGKILL or a full disk leaves nothing decodable. Here ``.mp4``
files are *fragmented* MP4 (``frag_keyframe+empty_moov+default_base_moof``): the
index is written up front and every keyframe (at most one second apart) starts a
self-contained fragment that is flushed to the OS at once, so a killed recording keeps
every frame up to the last fragment. :class:`AVVideoEncoder` has the tiny
``write``/``release`` surface of ``cv2.VideoWriter`` so that ``CV2Writer`` drives both
alike, but unlike OpenCV it *raises* when the muxer cannot write (disk full).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import RecordingError

if TYPE_CHECKING:
    from av.container import OutputContainer

H264 = "h264"
H264_LOSSLESS = "h264-lossless"
AV_CODECS = (H264, H264_LOSSLESS)
DEFAULT_CRF = 23
DEFAULT_PRESET = (
    "ultrafast"  # measured: ≥ OpenCV mp4v speed (benchmarks/bench_video.py)
)
DEFAULT_THREADS = 4
FRAGMENTED_MP4 = "frag_keyframe+empty_moov+default_base_moof"
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG: 0..255 stays 0..255 (decoders expand "tv" range)
#: timestamps are the frames' real times on this clock (MPEG's 90 kHz), so a player
#: shows each frame when the camera took it, whatever the nominal fps said
TIME_BASE_HZ = 90_000


def libx264_available() -> bool:
    """True when this PyAV build can encode H.264 (its wheels ship libx264)."""
    try:
        import av
    except ImportError:  # pragma: no cover - PyAV is a dependency
        return False
    return "libx264" in av.codecs_available


def keyframe_interval(fps: float) -> int:
    """Frames between keyframes: at most one second, so a kill loses ≤ ~1 s."""
    return max(1, math.floor(fps))


class AVVideoEncoder:
    """Encode uint8 frames to H.264 (lossy CRF or lossless ``qp=0``) with PyAV.

    Gray frames are encoded as ``gray`` (no chroma planes) and colour frames as
    ``yuv420p`` (``yuv444p`` when lossless), both full range, so that decoders give
    back the pixel values that went in: exactly when ``lossless`` and gray.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        width: int,
        height: int,
        *,
        is_color: bool,
        lossless: bool = False,
        crf: float = DEFAULT_CRF,
        preset: str = DEFAULT_PRESET,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        import av

        self.path = Path(path)
        self.is_color = bool(is_color)
        self.frames_muxed = 0  # packets handed to the muxer without error
        self.frames_sent = 0
        options: dict[str, str] = {}
        if self.path.suffix.lower() == ".mp4":
            # flush_packets: each written fragment goes to the OS at once
            options = {"movflags": FRAGMENTED_MP4, "flush_packets": "1"}
        try:
            container = av.open(os.fspath(self.path), "w", options=options)
        except av.FFmpegError as exc:
            raise RecordingError(f"cannot create {self.path.name}: {exc}") from exc
        self._container: OutputContainer | None = container  # None once closed
        try:
            stream = container.add_stream("libx264", rate=_rate(fps))
            stream.width, stream.height = int(width), int(height)
            if self.is_color:
                stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
            else:
                stream.pix_fmt = "gray"
            ctx = stream.codec_context
            from fractions import Fraction

            ctx.time_base = Fraction(1, TIME_BASE_HZ)
            stream.time_base = Fraction(1, TIME_BASE_HZ)
            self._fps = float(fps)
            self._last_pts = -1
            self._t0: float | None = None  # the first frame's time: pts 0
            ctx.gop_size = keyframe_interval(fps)
            ctx.color_range = _FULL_RANGE
            ctx.thread_count = max(1, int(threads))
            # zerolatency: sliced threads, so no frame waits inside the encoder
            # (measured as fast as frame threads here, same size)
            x264: dict[str, object] = {"preset": str(preset), "tune": "zerolatency"}
            if lossless:
                x264["qp"] = "0"
            else:
                x264["crf"] = f"{float(crf):g}"
            # no scene-cut keyframes: fragments stay ≤ gop_size frames, sizes steady
            x264["x264-params"] = f"keyint={ctx.gop_size}:min-keyint={ctx.gop_size}"
            stream.options = x264
            self._stream = stream
            self._frame_format = "bgr24" if self.is_color else "gray"
        except Exception:
            container.close()
            raise

    def write(self, frame: np.ndarray, time_s: float | None = None) -> None:
        """Encode one uint8 frame (HxW gray or HxWx3 BGR) and mux what is ready.

        ``time_s`` is the frame's real time (seconds since the first frame, the
        sidecar's clock): it becomes the frame's timestamp, so the video plays at the
        rate the camera really ran. Without it (or if it is not after the previous
        frame's) the nominal ``fps`` spaces the frames.
        """
        import av

        vf = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(frame), format=self._frame_format
        )
        vf.color_range = _FULL_RANGE
        if time_s is not None and math.isfinite(time_s):
            if self._t0 is None:
                self._t0 = float(time_s)
            pts = round((float(time_s) - self._t0) * TIME_BASE_HZ)
        else:
            pts = round(self.frames_sent * TIME_BASE_HZ / self._fps)
        pts = max(pts, self._last_pts + 1)
        self._last_pts = pts
        vf.pts = pts
        self.frames_sent += 1
        try:
            self._mux(self._stream.encode(vf))
        except av.FFmpegError as exc:
            raise self._error(exc) from exc

    def release(self) -> int:
        """Flush the encoder and close the file; returns the frames muxed."""
        import av

        if self._container is None:
            return self.frames_muxed
        try:
            self._mux(self._stream.encode(None))
            self._container.close()
        except av.FFmpegError as exc:
            self.abort()
            raise self._error(exc) from exc
        self._container = None
        return self.frames_muxed

    def abort(self) -> None:
        """Close after a failure without raising (what is on disk stays as it is)."""
        container, self._container = self._container, None
        if container is not None:
            # the first error is the one reported
            with contextlib.suppress(Exception):
                container.close()

    # -------------------------------------------------------------- helpers
    def _mux(self, packets: Any) -> None:
        container = self._container
        assert container is not None  # only write() and release() mux, while open
        for packet in packets:
            container.mux(packet)
            self.frames_muxed += 1

    def _error(self, exc: BaseException) -> RecordingError:
        reason = getattr(exc, "strerror", None) or str(exc)
        return RecordingError(f"cannot write video {self.path.name}: {reason}")


def _rate(fps: float) -> Any:
    """fps as an exact fraction where it is one of the NTSC rates (29.97 -> 30000/1001)."""
    from fractions import Fraction

    for base in (24, 30, 60, 120):
        if abs(fps - base * 1000 / 1001) < 1e-3:
            return Fraction(base * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)
