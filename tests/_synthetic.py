"""Synthetic recordings with known pixels: a BigTIFF (as tifffile writes it, contiguous)
plus a legacy sidecar ``{"p0": [{"runner_time_ms": ...}, ...]}``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from mesofield_napari.data import sidecar_path

SHAPE = (48, 64)


def write_recording(
    path: Path, stack: np.ndarray, times_ms: np.ndarray | None = None
) -> Path:
    """Write ``stack`` (t, y, x) and its sidecar; default clock 50 ms per frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, stack, bigtiff=True, photometric="minisblack")
    if times_ms is None:
        times_ms = np.arange(len(stack)) * 50.0
    entries = [
        {"runner_time_ms": float(t), "camera_metadata": {"ImageNumber": i}}
        for i, t in enumerate(times_ms)
    ]
    sidecar_path(path).write_text(json.dumps({"p0": entries}), encoding="utf-8")
    return path


def traced_stack(
    n: int = 40, shape: tuple[int, int] = SHAPE, seed: int = 0
) -> np.ndarray:
    """A uint16 stack: per-pixel baseline + a slow per-frame signal + noise."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(300, 900, size=shape)
    signal = 1.0 + 0.2 * np.sin(np.arange(n) / 3.0)
    noise = rng.normal(0, 5, size=(n, *shape))
    stack = base[None] * signal[:, None, None] + noise + 100
    return np.clip(np.round(stack), 0, 65535).astype(np.uint16)
