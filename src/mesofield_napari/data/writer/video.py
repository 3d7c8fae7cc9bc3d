"""``CV2Writer``: MP4/AVI, MDA-driven or self-driven (direct mode).

H.264 (the default) goes through PyAV's libx264 into fragmented MP4, which survives a
killed process (:mod:`.av_encoder`); ``mp4v``/``MJPG``/``FFV1`` go through OpenCV. Like :class:`~mesofield_napari.data.CustomWriter`, encoding runs on the writer's own
thread behind a byte-bounded queue, metadata is journaled per frame and the legacy
sidecar is written atomically at the end. At the end the frames reported (sidecar
entries, ``frames_written``) are the frames that decode: a write failure (disk full)
trims them to what is really in the file. Conversion to uint8 uses limits fixed for the
whole video (camera bit depth or given contrast limits), so brightness does not flicker.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from ..clock import local_iso
from ..errors import RecordingError
from ..formats.names import check_new_file
from ..formats.sidecar import journal_path, sidecar_path, utc_now_iso
from ..formats.video_check import decodable_frames
from ._pipeline import DEFAULT_FLUSH_INTERVAL_S, DEFAULT_MAX_QUEUE_BYTES
from ._queued import _NULL, QueuedWriterMixin
from ._upstream import OMETiffWriter
from .codecs import (
    ContrastMapping,
    bit_depth_from_pixel_format,
    default_fourcc,
    quiet_opencv,
    resolve_codec,
    video_extension,
)
from .h264 import (
    AV_CODECS,
    DEFAULT_CRF,
    DEFAULT_PRESET,
    DEFAULT_THREADS,
    AVVideoEncoder,
)

if TYPE_CHECKING:
    import useq

logger = logging.getLogger(__name__)
MAX_FPS = 1000.0


class _X264Settings(TypedDict):
    """The H.264 encoder's settings, kept until the first frame opens the file."""

    crf: float
    preset: str
    threads: int


def _is_number(value: object) -> bool:
    """An int or float: the annotations say so, callers (JSON, scripts) may not."""
    return isinstance(value, (int, float))


def _encode(writer: Any, frame: np.ndarray, time_s: float | None) -> None:
    """Encode one frame: with its real time where the encoder takes one (PyAV);
    OpenCV's writers space frames by their nominal fps (see the sidecar's clock)."""
    if isinstance(writer, AVVideoEncoder):
        writer.write(frame, time_s)
    else:
        writer.write(frame)


class CV2Writer(QueuedWriterMixin, OMETiffWriter):
    """Write frames to an ``.mp4``/``.avi`` video (H.264 via PyAV, else OpenCV).

    Two modes share codec, contrast and metadata logic:

    - **MDA-driven**: pass it as ``output=`` to ``core.mda.run`` (or use
      :meth:`attached`); ``new_array``/``write_frame``/``finalize_metadata`` keep the
      seed's roles.
    - **Direct**: :meth:`begin`, :meth:`add_frame`, :meth:`finish` for cameras that run
      their own capture loop.

    Parameters
    ----------
    filename
        Output ``.mp4`` or ``.avi`` (multi-position: ``<stem>_<poskey>.<ext>``).
    fps
        Frame rate stored in the container; may be fractional (e.g. 29.97).
    fourcc
        Codec; default ``$MESOFIELD_FOURCC`` or ``"H264"`` (PyAV's libx264; ``.mp4``
        is fragmented so a killed recording stays decodable). ``"h264-lossless"``
        is the same as ``lossless=True``. Other fourccs (``mp4v``, ``MJPG``,
        ``FFV1``) use OpenCV; one it cannot encode falls back to H.264 (.mp4) /
        ``MJPG`` (.avi) with one warning. :attr:`fourcc` is the codec used.
    contrast_limits
        ``(low, high)`` camera values mapped to 0..255 for every frame.
    bit_depth
        Camera bit depth: maps ``0..2**bit_depth-1`` (used when no limits are given;
        MDA mode reads it from the summary metadata's pixel format otherwise).
    per_frame_stretch
        mesofield's per-frame min-max stretch (brightness flickers); off by default.
    lossless
        Exact pixels: H.264 ``qp=0`` (or ``FFV1`` when asked for in ``.avi``).
        Gray frames decode bit-exact; files are ~10x larger than the default.
    crf, preset, threads
        libx264 quality (lower = better, 23 default), speed preset and encoder
        threads (ignored for OpenCV codecs).
    """

    def __init__(
        self,
        filename: Path | str,
        fps: float = 30,
        fourcc: str | None = None,
        *,
        contrast_limits: tuple[float, float] | None = None,
        bit_depth: int | None = None,
        per_frame_stretch: bool = False,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL_S,
        lossless: bool = False,
        crf: float = DEFAULT_CRF,
        preset: str = DEFAULT_PRESET,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        name = os.fspath(filename)
        self._ext = video_extension(name)
        if not (
            _is_number(fps)
            and not isinstance(fps, bool)
            and math.isfinite(fps)
            and 0 < fps <= MAX_FPS
        ):
            raise ValueError(
                f"fps must be a finite number in (0, {MAX_FPS:g}], got {fps!r}"
            )
        if not (_is_number(crf) and 0 <= crf <= 51):
            raise ValueError(f"crf must be within 0..51, got {crf!r}")
        check_new_file(name, sidecar_path(name), journal_path(name))
        # OMETiffWriter.__init__ insists on .tif; only the shared base state is needed
        super(OMETiffWriter, self).__init__()
        self._filename = name
        self._is_ome = False
        self._fps = float(fps)
        self.requested_fourcc = fourcc or ("H264" if lossless else default_fourcc())
        self.fourcc = resolve_codec(self._ext, self.requested_fourcc, lossless=lossless)
        self._x264: _X264Settings = {"crf": crf, "preset": preset, "threads": threads}
        self.contrast = ContrastMapping(contrast_limits, bit_depth, per_frame_stretch)
        self._writers: dict[str, Any] = {}
        self._direct: dict[str, Any] | None = None  # direct-mode state
        self._frame_time_s: float | None = None  # the MDA frame being encoded
        self._time0_ms: float | None = None  # its run's first frame time
        self._init_queue(max_queue_bytes=max_queue_bytes, flush_interval=flush_interval)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def codec(self) -> str:
        """The codec used (``h264``, ``h264-lossless`` or an OpenCV fourcc)."""
        return self.fourcc

    def raise_if_failed(self) -> None:
        """Raise :class:`RecordingError` naming the file and the frames really in it."""
        if (err := self.error) is not None:
            kept = sum(self._frames_by_position.values())
            received = self.stats.frames_received
            name = Path(self._filename).name
            prefix = "" if name in str(err) else f"{name}: "
            raise RecordingError(
                f"{prefix}{err} ({kept} frame(s) decodable in the file; "
                f"{max(received - kept, 0)} of {received} received not saved)"
            ) from err

    # ------------------------------------------------------------ MDA mode
    def sequenceStarted(self, seq: useq.MDASequence, meta: Any = _NULL) -> None:
        if self.contrast.limits is None and self.contrast.bit_depth is None:
            self._bit_depth_from_summary(meta)
        super().sequenceStarted(seq, meta)
        self._time0_ms = None  # timestamps restart with each sequence

    def _bit_depth_from_summary(self, meta: Any) -> None:
        infos = meta.get("image_infos") if isinstance(meta, dict) else None
        if infos:
            depth = bit_depth_from_pixel_format(infos[0].get("pixel_format"))
            if depth and depth < 16:
                self.contrast.bit_depth = depth

    def new_array(
        self, position_key: str, dtype: np.dtype, sizes: dict[str, int]
    ) -> Any:
        """Open the ``cv2.VideoWriter`` for one position."""
        path = self._position_path(position_key)
        writer = self._open_video(path, sizes["x"], sizes["y"], is_color=False)
        self._writers[position_key] = writer
        return writer

    def write_frame(self, ary: Any, index: tuple[int, ...], frame: np.ndarray) -> None:
        """Convert to uint8 with the fixed mapping and encode (writer thread)."""
        _encode(ary, self._to_video_frame(frame, is_color=False), self._frame_time_s)

    def _extra_frame_metadata(self) -> dict[str, Any]:
        return {"video_codec": self.fourcc, "video_fps": self._fps}

    def finalize_metadata(self) -> None:
        """Close the videos, count the frames really in them, write the sidecar."""
        problems = []
        for key, writer in list(self._writers.items()):
            path = self._position_path(key)
            expected = self._frames_by_position.get(key, 0)
            found, problem = self._close_video(writer, path, expected)
            if found < expected:
                del self.frame_metadatas[key][found:]
                self._set_frames(key, found)
                problems.append(
                    f"{path.name}: only {found} of {expected} frame(s) decode"
                    + (f" ({problem})" if problem else "")
                )
        self._writers.clear()
        self._write_sidecar(dict(self.frame_metadatas))
        if problems and self.error is None:  # else raise_if_failed reports it
            raise RecordingError("; ".join(problems))

    # ------------------------------------------------------------ direct mode
    def begin(self, width: int, height: int, is_color: bool = True) -> None:
        """Open the video for a self-driven capture loop."""
        if self._direct is not None or self._pipeline.running:
            raise RuntimeError("CV2Writer is already recording")
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"invalid frame size {width}x{height}")
        writer = self._open_video(
            Path(self._filename), int(width), int(height), is_color
        )
        self._direct = {
            "writer": writer,
            "shape": (int(height), int(width)),
            "is_color": bool(is_color),
            "written": 0,  # frames encoded; their metadata is in the journal only
            "t0": time.perf_counter(),
            "count": 0,
            "lock": threading.Lock(),
            # the journal is made with the first frame: a capture loop that fails
            # before it leaves nothing behind (no journal blocking the name)
            "journal_extra": {"fps": self._fps, "codec": self.fourcc},
        }
        self.started_at, self.stopped_at = local_iso(), None
        self._pipeline.start()

    def add_frame(self, frame: np.ndarray) -> None:
        """Queue one frame (stamped now, ms since :meth:`begin`); never blocks on IO."""
        state = self._direct
        if state is None:
            raise RuntimeError("CV2Writer.add_frame called before begin()")
        if tuple(frame.shape[:2]) != state["shape"]:
            raise ValueError(
                f"frame shape {frame.shape[:2]} does not match the video's "
                f"{state['shape']} given to begin()"
            )
        with state["lock"]:
            entry = {
                "index": state["count"],
                "runner_time_ms": (time.perf_counter() - state["t0"]) * 1000.0,
                "time_utc": utc_now_iso(),
            }
            state["count"] += 1
        if frame.base is not None or not frame.flags.c_contiguous:
            frame = frame.copy()
        if (listener := self.frame_listener) is not None:
            listener(entry["index"], local_iso())
        self._pipeline.put_frame(frame, entry, nbytes=frame.nbytes)

    def finish(self, extra_metadata: dict[str, Any] | None = None) -> Path:
        """Drain, close the video and write ``{"frame_metadatas": [...], **extra}``."""
        if self._direct is None:
            raise RuntimeError("CV2Writer.finish called before begin()")
        try:
            self._pipeline.call("finish_direct", dict(extra_metadata or {}))
        finally:
            self._pipeline.stop()
            self._direct = None
            self.stopped_at = local_iso()
        self.raise_if_failed()
        return self.sidecar_path

    # ------------------------------------------------------------ writer thread
    def _handle(self, kind: str, args: tuple[Any, ...]) -> None:
        if kind == "frame" and self._direct is None:  # MDA: (frame, event, meta)
            self._frame_time_s = self._time_of(args[2] if len(args) > 2 else None)
        if kind == "frame" and self._direct is not None:
            frame, entry = args
            state = self._direct
            t = entry["runner_time_ms"] / 1000.0
            if self._journal is None and not state["written"]:
                self._open_journal("direct", state["journal_extra"])
            _encode(state["writer"], self._to_video_frame(frame, state["is_color"]), t)
            state["written"] += 1
            self._frames_by_position["frame_metadatas"] = state["written"]
            if self._journal is not None:
                self._journal.append(entry)  # the store: nothing kept per frame
        elif kind == "finish_direct":
            self._finish_direct(args[0])
        else:
            super()._handle(kind, args)

    def _finish_direct(self, extra: dict[str, Any]) -> None:
        state = self._direct
        assert state is not None
        path, expected = Path(self._filename), state["written"]
        found, problem = self._close_video(state["writer"], path, expected)
        if found < expected:
            self._set_frames("frame_metadatas", found)
        fields: dict[str, Any] = {"codec": self.fourcc, "fps": self._fps}
        fields.update(extra)
        self._write_sidecar(fields, direct_frames=found)
        if found < expected and self.error is None:
            raise RecordingError(
                f"{path.name}: only {found} of {expected} frame(s) decode"
                + (f" ({problem})" if problem else "")
            )

    def _close_video(self, writer: Any, path: Path, sent: int) -> tuple[int, str]:
        """Close a video; return (frames really in it, why fewer) without raising.

        After a clean close the encoder's own count is trusted (PyAV raises on any
        write error; OpenCV's header count is checked); after any failure the
        frames that decode are counted.
        """
        problem = ""
        try:
            if self.error is not None and isinstance(writer, AVVideoEncoder):
                writer.abort()
            else:
                writer.release()
        except RecordingError as exc:
            problem = str(exc)
        if self.error is None and not problem:
            if isinstance(writer, AVVideoEncoder):
                found: int | None = writer.frames_muxed
            else:
                found = _count_video_frames(path)
            if found is None or found == sent:
                return sent, ""
        return min(decodable_frames(path), sent), problem

    def _set_frames(self, key: str, count: int) -> None:
        """Report ``count`` frames for ``key`` (what decodes), fixing the stats."""
        if count:
            self._frames_by_position[key] = count
        else:
            self._frames_by_position.pop(key, None)
        stats = self.stats
        stats.frames_written = sum(self._frames_by_position.values())
        stats.frames_lost = stats.frames_received - stats.frames_written

    # ------------------------------------------------------------ helpers
    def _time_of(self, meta: Any) -> float | None:
        """An MDA frame's time (s) since the run's first frame, from its metadata."""
        value = meta.get("runner_time_ms") if isinstance(meta, dict) else None
        if not isinstance(value, (int, float)):
            return None
        if self._time0_ms is None:
            self._time0_ms = float(value)
        return (float(value) - self._time0_ms) / 1000.0

    def _open_video(self, path: Path, width: int, height: int, is_color: bool) -> Any:
        import cv2

        check_new_file(path)
        if self.fourcc in AV_CODECS:
            return AVVideoEncoder(
                path,
                self._fps,
                width,
                height,
                is_color=is_color,
                lossless=self.fourcc.endswith("lossless"),
                crf=self._x264["crf"],
                preset=self._x264["preset"],
                threads=self._x264["threads"],
            )
        with quiet_opencv():
            writer = cv2.VideoWriter(
                os.fspath(path),
                cv2.VideoWriter.fourcc(*self.fourcc),
                self._fps,
                (width, height),
                isColor=is_color,
            )
        if not writer.isOpened():
            raise RecordingError(
                f"OpenCV could not open {path.name} for writing "
                f"(fourcc={self.fourcc}, fps={self._fps}, size={width}x{height})"
            )
        return writer

    def _to_video_frame(self, frame: np.ndarray, is_color: bool) -> np.ndarray:
        import cv2

        out = self.contrast.to_uint8(frame)
        if is_color and out.ndim == 2:
            out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
        elif not is_color and out.ndim == 3:
            out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
        return out


def _count_video_frames(path: Path) -> int | None:
    """Frame count from the container header (None if OpenCV cannot tell)."""
    import cv2

    with quiet_opencv():
        cap = cv2.VideoCapture(os.fspath(path))
        try:
            if not cap.isOpened():
                return 0
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
    return n if n >= 0 else None
