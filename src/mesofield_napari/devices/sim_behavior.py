"""A simulated pupil/behaviour camera: 8-bit frames like an IR eye camera.

A dark pupil ellipse on a textured, vignetted background, drifting and dilating a
little, with per-frame noise. Frames are deterministic (:meth:`frame`), so tests can
compare a recording with what the camera produced. It has the same
``open``/``read``/``close`` interface as :class:`~.opencv_camera.OpenCVSource`, so the
same capture loop drives either; ``hardware.yaml`` selects it with ``backend: opencv``
and ``device: sim`` (or ``simulated: true``).
"""

from __future__ import annotations

import math

import numpy as np

_NOISE_BANK = 8


class SimulatedPupilSource:
    """Pupil-like uint8 frames of ``(height, width)``; frame ``i`` is reproducible."""

    def __init__(self, width: int = 640, height: int = 480, seed: int = 0) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"frame size must be at least 16x16, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        rng = np.random.default_rng(seed)
        h, w = self.height, self.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2
        texture = np.zeros((h, w), np.float32)
        for _ in range(5):
            fy, fx = rng.uniform(2, 12, 2)
            texture += np.sin(
                2 * np.pi * (fy * yy / h + fx * xx / w) + rng.uniform(0, 6)
            )
        base = 150 * np.exp(-r2 * 3) + 12 * texture / 5 + 40
        self._bank = [
            np.clip(base + rng.normal(0, 4, (h, w)), 0, 255).astype(np.uint8)
            for _ in range(_NOISE_BANK)
        ]
        self._yy, self._xx = yy, xx
        self._index = 0

    def frame(self, index: int) -> np.ndarray:
        """The frame the camera produces at ``index`` (deterministic)."""
        import cv2

        img = self._bank[index % _NOISE_BANK].copy()
        h, w = self.height, self.width
        t = index / 30.0
        center = (
            int(w / 2 + 0.08 * w * math.sin(0.7 * t)),
            int(h / 2 + 0.05 * h * math.sin(0.45 * t + 1.0)),
        )
        radius = 0.12 * min(h, w) * (1 + 0.15 * math.sin(0.3 * t))
        axes = (max(2, int(radius * 1.15)), max(2, int(radius)))
        cv2.ellipse(img, center, axes, 10.0, 0, 360, 15, thickness=-1)
        # a corneal reflection, like an IR-lit eye
        glint = (center[0] + axes[0] // 3, center[1] - axes[1] // 3)
        cv2.circle(img, glint, max(1, axes[1] // 6), 250, thickness=-1)
        return img

    # ------------------------------------------------------------ source API
    @property
    def is_color(self) -> bool:
        return False

    def open(self) -> tuple[int, int]:
        """Nothing to open; ``(width, height)`` of the frames."""
        self._index = 0
        return self.width, self.height

    def read(self) -> np.ndarray | None:
        frame = self.frame(self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"simulated pupil camera {self.width}x{self.height}"
