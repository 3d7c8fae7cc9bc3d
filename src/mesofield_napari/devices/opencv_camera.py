"""OpenCV cameras (a device index, a file path or a URL) recorded in direct mode.

:class:`OpenCVSource` opens the capture device; :class:`DirectCamera` runs one capture
thread that paces a source at the configured rate and hands every frame to
``CV2Writer.add_frame`` (which only queues it: encoding runs on the writer's own thread
behind a byte-bounded queue). A source that cannot be opened fails in
:meth:`DirectCamera.open`, before the run starts; one that stops delivering frames
mid-run reports a :class:`~mesofield_napari.devices.DeviceError` through ``on_error``
and keeps everything written so far.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from . import DeviceError

if TYPE_CHECKING:
    import numpy as np

    from ..data.writer.video import CV2Writer

JOIN_TIMEOUT_S = 10.0


class FrameSource(Protocol):
    """What :class:`DirectCamera` needs from a camera."""

    @property
    def is_color(self) -> bool: ...

    def open(self) -> tuple[int, int]: ...

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


class OpenCVSource:
    """``cv2.VideoCapture`` on an index, path or URL; raises ``DeviceError`` early."""

    def __init__(
        self,
        device: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
    ) -> None:
        self.device = device
        self._size = (width, height)
        self._fps = fps
        self._cap: Any = None
        self._first: np.ndarray | None = None
        self._color = True

    @property
    def is_color(self) -> bool:
        return self._color

    def describe(self) -> str:
        return f"OpenCV camera {self.device!r}"

    def open(self) -> tuple[int, int]:
        """Open the device and read one frame (its size is the video's size)."""
        import cv2

        from ..data.writer.codecs import quiet_opencv

        device = self.device
        if (
            isinstance(device, str)
            and "://" not in device
            and not os.path.exists(device)
        ):
            raise DeviceError(
                f"cannot open OpenCV camera {self.device!r}: no such file"
            )
        with quiet_opencv():
            cap = cv2.VideoCapture(self.device)
            if not cap.isOpened():
                cap.release()
                raise DeviceError(
                    f"cannot open OpenCV camera {self.device!r} "
                    f"(no such device, or it is in use)"
                )
            width, height = self._size
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if self._fps:
                cap.set(cv2.CAP_PROP_FPS, self._fps)
            ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise DeviceError(f"OpenCV camera {self.device!r} opened but gave no frame")
        self._cap, self._first = cap, frame
        self._color = frame.ndim == 3
        return int(frame.shape[1]), int(frame.shape[0])

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        return frame if ok else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class DirectCamera:
    """A capture thread feeding a ``CV2Writer`` in direct mode.

    Parameters
    ----------
    device_id
        The camera's id (its data-queue rows come from the writer's frame listener).
    writer
        The video to record into; may be set after :meth:`open` (once the run folder
        exists).
    fps
        Frames are requested at this rate (sources that pace themselves, like real
        cameras, simply make the loop wait in ``read``).
    max_frames
        Stop by itself after this many frames (None: until :meth:`stop`).
    on_error, on_done
        Called from the capture thread when the camera fails / finishes by itself.
    """

    def __init__(
        self,
        device_id: str,
        source: FrameSource,
        fps: float,
        writer: CV2Writer | None = None,
        *,
        max_frames: int | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
        on_done: Callable[[str], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.source = source
        self.writer = writer
        self.fps = float(fps)
        self.max_frames = max_frames
        self.on_error = on_error
        self.on_done = on_done
        self.error: BaseException | None = None
        self.frames = 0
        self._size: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._t_last = 0.0

    def open(self) -> None:
        """Open the source (raises :class:`DeviceError` before anything starts)."""
        self._size = self.source.open()

    def start(self) -> None:
        if self._size is None:
            self.open()
        if self.writer is None:
            raise RuntimeError(f"{self.device_id}: no writer to record into")
        assert self._size is not None
        self.writer.begin(*self._size, is_color=self.source.is_color)
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(
            target=self._run, name=f"camera-{self.device_id}", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        writer = self.writer
        assert writer is not None
        period = 1.0 / self.fps
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.frames >= self.max_frames:
                    break
                delay = self._t0 + self.frames * period - time.perf_counter()
                if delay > 0 and self._stop.wait(delay):
                    break
                frame = self.source.read()
                if frame is None:
                    raise DeviceError(
                        f"{self.device_id}: {self.source.describe()} stopped "
                        f"delivering frames after {self.frames} frame(s)"
                    )
                writer.add_frame(frame)
                self.frames += 1
                self._t_last = time.perf_counter()
                if writer.error is not None:
                    raise writer.error
        except BaseException as exc:
            self.error = exc
            if self.on_error is not None:
                self.on_error(self.device_id, exc)
            return
        if not self._stop.is_set() and self.on_done is not None:
            self.on_done(self.device_id)

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """Stop capturing, then finish the video and its sidecar (drains the queue)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.error = self.error or DeviceError(
                    f"{self.device_id}: capture thread did not stop within "
                    f"{timeout:.0f} s"
                )
        self.source.close()
        if self._thread is not None and self.writer is not None:
            self._thread = None
            try:
                self.writer.finish(
                    {"device_id": self.device_id, "source": self.source.describe()}
                )
            except Exception:
                if self.writer.error is None:
                    raise
                # a failed writer is reported once, by its owner (raise_if_failed)

    def status(self) -> dict[str, Any]:
        elapsed = self._t_last - self._t0
        if self.writer is None:
            return {
                "frames": 0,
                "fps": 0.0,
                "lost": 0,
                "queue_fill": 0.0,
                "error": None,
            }
        stats = self.writer.stats
        return {
            "frames": self.frames,
            "fps": (self.frames - 1) / elapsed
            if self.frames > 1 and elapsed > 0
            else 0.0,
            "lost": stats.frames_lost,
            "queue_fill": stats.queue_fill,
            "error": str(self.error) if self.error else None,
        }
