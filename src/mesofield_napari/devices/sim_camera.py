"""The embedded simulated microscope: pure-Python devices for ``UniMMCore``.

Used by the demo, ``mesofield-napari record`` and the tests whenever no Micro-Manager
configuration is given (Micro-Manager's own device adapters cannot be installed
everywhere). Frames look like widefield calcium imaging: a vignetted, vessel-textured
background above a camera offset, slow fluorescence transients in a few regions and
shot noise. Generation is cheap (noise frames are drawn once and cycled) so the camera
can run at sCMOS rates.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from pymmcore_plus.experimental.unicore import (
    ShutterDevice,
    SimpleCameraDevice,
    StageDevice,
    UniMMCore,
    pymm_property,
)

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

CAMERA_LABEL = "MesoCam"
SHUTTER_LABEL = "SimShutter"
STAGE_LABEL = "SimZ"
_NOISE_BANK = 8


class SimulatedMesoscopeCamera(SimpleCameraDevice):
    """uint16 camera with mesoscope-like frames.

    Parameters
    ----------
    shape
        (height, width) of the sensor.
    exposure_ms
        Exposure; each snap takes at least this long (0 = as fast as possible).
    bit_depth
        Values stay within ``0..2**bit_depth-1`` (default 12, like many sCMOS modes).
    offset
        Camera offset added to every pixel (~100 on real sCMOS cameras).
    seed
        Seed of the random texture and noise (frames are reproducible).
    """

    def __init__(
        self,
        shape: tuple[int, ...] = (512, 512),  # checked: (height, width)
        exposure_ms: float = 10.0,
        bit_depth: int = 12,
        offset: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(shape) != 2 or min(shape) < 8:
            raise ValueError(f"camera shape must be (height, width) >= 8, got {shape}")
        if not 8 <= bit_depth <= 16:
            raise ValueError(f"bit depth must be within 8..16, got {bit_depth}")
        self._shape = (int(shape[0]), int(shape[1]))
        self._exposure = float(exposure_ms)
        self._bit_depth = int(bit_depth)
        self._offset = int(offset)
        self._seed = int(seed)
        self._frame_index = 0
        self._build_scene()

    # ------------------------------------------------------------ scene
    def _build_scene(self) -> None:
        rng = np.random.default_rng(self._seed)
        h, w = self._shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cy, cx = (h - 1) / 2, (w - 1) / 2
        r2 = ((yy - cy) / h) ** 2 + ((xx - cx) / w) ** 2
        vignette = np.exp(-r2 * 4.0)
        # vessel-like texture: a few random low-frequency sinusoids
        texture: np.ndarray = np.zeros((h, w), np.float32)
        for _ in range(6):
            fy, fx = rng.uniform(1, 8, 2)
            phase = rng.uniform(0, 2 * np.pi)
            texture += np.sin(2 * np.pi * (fy * yy / h + fx * xx / w) + phase)
        texture = np.abs(texture) / 6
        full_scale = 2**self._bit_depth - 1
        self._base = (
            self._offset + full_scale * 0.25 * vignette * (0.7 + 0.3 * texture)
        ).astype(np.float32)
        # three round regions with slow calcium-like transients
        self._regions = []
        for _ in range(3):
            ry, rx = rng.uniform(0.25, 0.75, 2) * (h, w)
            radius = rng.uniform(0.05, 0.12) * min(h, w)
            mask = np.exp(-(((yy - ry) ** 2 + (xx - rx) ** 2) / (2 * radius**2)))
            self._regions.append(
                (mask.astype(np.float32) * full_scale * 0.15, rng.uniform(0.2, 0.8))
            )
        noise_sd = np.sqrt(self._base - self._offset + 1).astype(np.float32)
        # background + shot noise, ready as uint16: a frame then costs one copy and a
        # saturating add per active region (few GIL hand-offs: this Python camera
        # shares the interpreter with napari's GUI thread)
        self._bank = [
            np.clip(
                self._base + rng.standard_normal((h, w), dtype=np.float32) * noise_sd,
                0,
                full_scale,
            ).astype(np.uint16)
            for _ in range(_NOISE_BANK)
        ]
        self._regions = [
            (np.clip(mask, 0, full_scale).astype(np.uint16), freq)
            for mask, freq in self._regions
        ]
        self._full_scale = full_scale

    def frame(self, index: int) -> np.ndarray:
        """The frame the camera produces at ``index`` (deterministic)."""
        import cv2

        img = self._bank[index % _NOISE_BANK].copy()
        t = index / 100.0
        for mask, freq in self._regions:
            amp = max(0.0, np.sin(2 * np.pi * freq * t)) ** 4
            if amp > 1e-3:
                cv2.addWeighted(img, 1.0, mask, amp, 0.0, dst=img)  # saturating
        np.minimum(img, self._full_scale, out=img)
        return img

    # ------------------------------------------------------------ camera API
    def sensor_shape(self) -> tuple[int, int]:
        return self._shape

    def dtype(self) -> DTypeLike:
        return np.uint16

    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        self._exposure = max(0.0, float(exposure))

    @pymm_property(limits=(8, 16))
    def bit_depth(self) -> int:
        """Significant bits per pixel (frames stay below 2**bit_depth)."""
        return self._bit_depth

    @bit_depth.setter  # type: ignore[no-redef]  # mypy knows .setter of property only
    def bit_depth(self, value: int) -> None:
        self._bit_depth = int(value)
        self._build_scene()

    def snap(self, buffer: np.ndarray) -> Mapping[str, Any]:
        t0 = time.perf_counter()
        index = self._frame_index
        self._frame_index += 1
        buffer[:] = self.frame(index)
        remaining = self._exposure / 1000.0 - (time.perf_counter() - t0)
        if remaining > 0:
            time.sleep(remaining)
        return {"SimFrameIndex": str(index)}


class SimulatedShutter(ShutterDevice):
    """A shutter that only remembers its state (MDA events need one)."""

    _open = False

    def get_open(self) -> bool:
        return self._open

    def set_open(self, open: bool) -> None:
        self._open = bool(open)


class SimulatedZStage(StageDevice):
    """A focus drive that moves instantly."""

    _pos = 0.0

    def set_position_um(self, val: float) -> None:
        self._pos = float(val)

    def get_position_um(self) -> float:
        return self._pos

    def home(self) -> None:
        self._pos = 0.0

    def stop(self) -> None:
        pass

    def set_origin(self) -> None:
        self._pos = 0.0


def _quiet_micromanager_path() -> None:
    # UniMMCore looks for a Micro-Manager install and logs an error when there is
    # none; an empty folder satisfies it.
    if not os.environ.get("MICROMANAGER_PATH"):
        empty = os.path.join(tempfile.gettempdir(), "mesofield-no-micromanager")
        os.makedirs(empty, exist_ok=True)
        os.environ["MICROMANAGER_PATH"] = empty


def create_sim_core(
    shape: tuple[int, int] = (512, 512),
    exposure_ms: float = 10.0,
    bit_depth: int = 12,
    *,
    core: UniMMCore | None = None,
    seed: int = 0,
) -> UniMMCore:
    """A ready ``UniMMCore`` with the simulated camera, shutter and Z stage loaded."""
    _quiet_micromanager_path()
    core = core or UniMMCore()
    camera = SimulatedMesoscopeCamera(shape, exposure_ms, bit_depth, seed=seed)
    core.loadPyDevice(CAMERA_LABEL, camera)
    core.loadPyDevice(SHUTTER_LABEL, SimulatedShutter())
    core.loadPyDevice(STAGE_LABEL, SimulatedZStage())
    core.initializeAllDevices()
    core.setCameraDevice(CAMERA_LABEL)
    core.setShutterDevice(SHUTTER_LABEL)
    core.setFocusDevice(STAGE_LABEL)
    core.setExposure(exposure_ms)
    return core


def sim_camera(core: UniMMCore) -> SimulatedMesoscopeCamera | None:
    """The simulated camera loaded in ``core`` (None for real cameras)."""
    try:
        dev = core._pydevices[core.getCameraDevice()]
    except Exception:
        return None
    return dev if isinstance(dev, SimulatedMesoscopeCamera) else None
