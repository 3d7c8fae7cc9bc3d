"""Video codec choice and the uint16 -> uint8 contrast mapping for video writers.

H.264 (the default) is encoded by PyAV's libx264 (:mod:`.av_encoder`): OpenCV's pip
wheels cannot encode it. Other fourccs (``mp4v``, ``MJPG``, ``FFV1``) stay with
OpenCV, which does them well. :func:`resolve_codec` probes once per
(extension, codec) and, for a codec nothing here can encode, falls back with a single
warning that names what was asked and what is used; writers record the codec used.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..formats.names import VIDEO_EXTENSIONS

DEFAULT_FOURCC = "H264"
FOURCC_ENV = "MESOFIELD_FOURCC"
FALLBACK_FOURCC = {".mp4": "h264", ".avi": "MJPG"}  # h264: PyAV, not OpenCV
# what users may call H.264 (any case); all mean PyAV's libx264
H264_NAMES = frozenset({"H264", "AVC1", "X264", "AVC"})
LOSSLESS_NAME = "H264-LOSSLESS"

_probe_lock = threading.Lock()
_resolved: dict[tuple[str, str, bool], str] = {}


class CodecUnavailableWarning(UserWarning):
    """The requested codec cannot be encoded; a fallback codec is used."""


def default_fourcc() -> str:
    """``$MESOFIELD_FOURCC`` if set, else H.264."""
    return os.environ.get(FOURCC_ENV, "").strip() or DEFAULT_FOURCC


def video_extension(path: str | os.PathLike[str]) -> str:
    ext = Path(path).suffix.lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ValueError(
            f"video filename must end with {' or '.join(VIDEO_EXTENSIONS)}: "
            f"{os.fspath(path)!r}"
        )
    return ext


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr chatter while probing codecs."""
    import cv2

    logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_mod is None:  # pragma: no cover
        yield
        return
    old = logging_mod.getLogLevel()
    logging_mod.setLogLevel(logging_mod.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_mod.setLogLevel(old)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """FFmpeg prints straight to fd 2 while probing encoders; hide that once-off noise."""
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no stderr
        yield
        return
    from ..._platform.fileio import open_binary

    devnull = open_binary(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _can_encode(ext: str, fourcc: str) -> bool:
    import cv2

    if len(fourcc) != 4:
        return False
    with tempfile.TemporaryDirectory(prefix="mesofield-codec-") as tmp:
        probe = str(Path(tmp) / f"probe{ext}")
        with quiet_opencv(), _stderr_silenced():
            writer = cv2.VideoWriter(
                probe, cv2.VideoWriter.fourcc(*fourcc), 10.0, (64, 64), isColor=False
            )
            ok = writer.isOpened()
            if ok:
                writer.write(np.zeros((64, 64), np.uint8))
            writer.release()
    return ok


def describe_codec(codec: str) -> str:
    """How a warning names a codec: ``'h264'`` -> ``H.264 (libx264 via PyAV)``."""
    from .h264 import H264, H264_LOSSLESS

    return {
        H264: "H.264 (libx264 via PyAV)",
        H264_LOSSLESS: "lossless H.264 (libx264 qp=0 via PyAV)",
    }.get(codec, repr(codec))


def resolve_codec(ext: str, requested: str, *, lossless: bool = False) -> str:
    """The codec to use for ``ext`` files: ``"h264"``/``"h264-lossless"`` (PyAV) or an
    OpenCV fourcc.

    ``requested`` is a fourcc (``H264``/``avc1``/``mp4v``/``MJPG``/``FFV1``...) or
    ``h264-lossless``. A codec that cannot be encoded here is replaced by the
    extension's fallback with one :class:`CodecUnavailableWarning` per combination.
    """
    from .h264 import H264, H264_LOSSLESS, libx264_available

    ext = ext.lower()
    name = requested.strip()
    up = name.upper()
    if up == LOSSLESS_NAME:
        up, lossless = "H264", True
    if lossless and up not in H264_NAMES and up != "FFV1":
        raise ValueError(
            f"lossless video needs H264 (or FFV1 in .avi), not fourcc {requested!r}"
        )
    key = (ext, up, lossless)
    with _probe_lock:
        if key in _resolved:
            return _resolved[key]
        if up in H264_NAMES and libx264_available():
            _resolved[key] = H264_LOSSLESS if lossless else H264
            return _resolved[key]
        if up not in H264_NAMES and _can_encode(ext, name):
            _resolved[key] = name
            return name
        if lossless:
            raise RuntimeError(
                f"cannot encode lossless {requested!r} into {ext} files here "
                "(PyAV has no libx264 and OpenCV no FFV1)"
            )
        fallback = FALLBACK_FOURCC[ext]
        if fallback == H264 and not libx264_available():  # pragma: no cover
            fallback = "mp4v"
        if fallback != H264 and not _can_encode(ext, fallback):
            raise RuntimeError(
                f"can encode neither {requested!r} nor {fallback!r} into {ext} files"
            )
        _resolved[key] = fallback
    warnings.warn(
        f"cannot encode fourcc {requested!r} into {ext} files here; using "
        f"{describe_codec(fallback)} instead. Set {FOURCC_ENV} or --fourcc to choose "
        "another codec.",
        CodecUnavailableWarning,
        stacklevel=3,
    )
    return fallback


def bit_depth_from_pixel_format(pixel_format: str | None) -> int | None:
    """``"Mono12"`` -> 12."""
    if pixel_format and (m := re.search(r"(\d+)$", str(pixel_format))):
        return int(m.group(1))
    return None


@dataclass
class ContrastMapping:
    """Map camera frames to uint8 with limits fixed for the whole video.

    Fixed limits keep brightness stable across frames; ``per_frame_stretch=True``
    reproduces mesofield's per-frame min-max normalisation (which flickers).
    """

    limits: tuple[float, float] | None = None
    bit_depth: int | None = None
    per_frame_stretch: bool = False

    def __post_init__(self) -> None:
        if self.limits is not None:
            lo, hi = (float(v) for v in self.limits)
            if not hi > lo:
                raise ValueError(
                    f"contrast limits must satisfy low < high: {self.limits}"
                )
            self.limits = (lo, hi)
        if self.bit_depth is not None and not 1 <= int(self.bit_depth) <= 32:
            raise ValueError(f"bit depth must be within 1..32, got {self.bit_depth}")

    def limits_for(self, dtype: np.dtype) -> tuple[float, float] | None:
        """The fixed (low, high) used for frames of ``dtype`` (None: passthrough)."""
        if self.limits is not None:
            return self.limits
        if self.bit_depth is not None:
            return (0.0, float(2 ** int(self.bit_depth) - 1))
        dtype = np.dtype(dtype)
        if dtype == np.uint8:
            return None
        if dtype.kind in "ui":
            return (0.0, float(np.iinfo(dtype).max))
        return (0.0, 1.0)

    def to_uint8(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        if self.per_frame_stretch:
            # an explicit dst: OpenCV's stubs type dst=None differently across versions
            out = np.empty(frame.shape, dtype=np.uint8)
            cv2.normalize(frame, out, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
            return out
        limits = self.limits_for(frame.dtype)
        if limits is None:
            return frame
        lo, hi = limits
        scale = 255.0 / (hi - lo)
        if frame.dtype in (np.uint8, np.uint16) and frame.ndim == 2:
            # saturating; OpenCV's stubs lack the scalar second operand cv2 takes
            shifted: np.ndarray = cv2.subtract(frame, lo) if lo > 0 else frame  # type: ignore[call-overload, unused-ignore]
            mapped: np.ndarray = cv2.convertScaleAbs(shifted, alpha=scale)
            return mapped
        scaled = (frame.astype(np.float32) - lo) * scale
        rounded: np.ndarray = np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
        return rounded
