"""Regions of interest for live traces, in full-resolution camera pixels.

A :class:`Roi` is geometry only (no napari): the widget maps what the user drew on
the decimated live layer into full-resolution pixel coordinates first. Which pixels
belong to a shape is decided once, when the ROI meets a frame shape
(:meth:`Roi.region`): a pixel belongs to it when its *centre* lies inside the shape,
edges included (napari draws pixel ``(r, c)`` centred on world ``(r, c)``). The result
is the batch exports' own ``_Region`` (crop + optional mask), so a live trace and a
post-hoc :func:`~mesofield_napari.data.batch.traces.mean_trace` average exactly the
same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..data.batch.traces import roi_mask

__all__ = ["Roi", "RoiKind"]

RoiKind = Literal["frame", "rect", "polygon", "ellipse", "mask"]
_EPS = 1e-9


@dataclass(frozen=True, eq=False)
class Roi:
    """One region: the whole frame, a rectangle, a polygon, an ellipse or a mask.

    ``rect`` is ``(y0, y1, x0, x1)``, half-open pixel indices (as the batch exports
    take it); ``vertices`` are ``(row, col)`` points in full-resolution pixels;
    ``mask`` is a frame-sized boolean array.
    """

    kind: RoiKind
    rect: tuple[int, int, int, int] | None = None
    vertices: np.ndarray | None = None
    mask: np.ndarray | None = None
    source: str = ""  # where it came from (layer name, shape index...), for the JSON

    # ------------------------------------------------------------ constructors
    @classmethod
    def whole_frame(cls, source: str = "") -> Roi:
        return cls("frame", source=source)

    @classmethod
    def rectangle(cls, y0: int, y1: int, x0: int, x1: int, source: str = "") -> Roi:
        return cls("rect", rect=(int(y0), int(y1), int(x0), int(x1)), source=source)

    @classmethod
    def from_shape(cls, shape_type: str, vertices: Any, source: str = "") -> Roi:
        """A napari shape (``rectangle``, ``polygon``, ``ellipse``) in full-res pixels.

        ValueError for shapes without an area (lines, paths, points).
        """
        v = np.asarray(vertices, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] < 2 or len(v) < 3:
            raise ValueError(f"{source or 'shape'}: needs at least 3 (row, col) points")
        v = v[:, -2:]  # (row, col) of nD shapes
        if shape_type == "rectangle" and _axis_aligned(v):
            # pixels whose centres lie inside (edges included)
            lo, hi = v.min(axis=0), v.max(axis=0)
            y0, x0 = (int(np.ceil(a - _EPS)) for a in lo)
            y1, x1 = (int(np.floor(b + _EPS)) + 1 for b in hi)
            return cls("rect", rect=(y0, y1, x0, x1), vertices=v, source=source)
        if shape_type in ("rectangle", "polygon"):
            return cls("polygon", vertices=v, source=source)
        if shape_type == "ellipse":
            if len(v) != 4:
                raise ValueError(f"{source or 'ellipse'}: needs its 4 box corners")
            return cls("ellipse", vertices=v, source=source)
        raise ValueError(
            f"{source or 'shape'}: a {shape_type} has no area; draw a rectangle, "
            "polygon or ellipse"
        )

    @classmethod
    def from_mask(cls, mask: Any, source: str = "") -> Roi:
        m = np.asarray(mask).astype(bool)
        if m.ndim != 2:
            raise ValueError(f"{source or 'mask'}: a ROI mask must be 2-D")
        return cls("mask", mask=m, source=source)

    # ------------------------------------------------------------ geometry
    def region(self, shape: tuple[int, int]) -> Any:
        """The pixels to average in a ``shape`` frame (the batch ``_Region``).

        Shapes are clipped to the frame; ValueError (naming the ROI) when nothing of
        it is left.
        """
        h, w = int(shape[0]), int(shape[1])
        try:
            if self.kind == "frame":
                return roi_mask(None, (h, w))
            if self.kind == "rect":
                assert self.rect is not None
                y0, y1, x0, x1 = self.rect
                clipped = (max(0, y0), min(h, y1), max(0, x0), min(w, x1))
                return roi_mask(clipped, (h, w))
            if self.kind == "mask":
                assert self.mask is not None
                return roi_mask(self.mask, (h, w))
            return roi_mask(self._rasterize(h, w), (h, w))
        except ValueError as exc:
            raise ValueError(
                f"ROI {self.describe()} is outside the {h}x{w} frame ({exc})"
            ) from None

    def _rasterize(self, h: int, w: int) -> np.ndarray:
        """Frame-sized mask of the pixel centres inside a polygon or ellipse."""
        assert self.vertices is not None
        v = self.vertices
        lo = np.maximum(np.ceil(v.min(axis=0) - _EPS).astype(int), 0)
        hi = np.minimum(np.floor(v.max(axis=0) + _EPS).astype(int) + 1, (h, w))
        full = np.zeros((h, w), dtype=bool)
        if np.any(hi <= lo):
            return full
        rows, cols = np.mgrid[lo[0] : hi[0], lo[1] : hi[1]]
        pts = np.column_stack([rows.ravel(), cols.ravel()]).astype(np.float64)
        if self.kind == "ellipse":
            inside = _in_ellipse(v, pts)
        else:
            from matplotlib.path import Path as MplPath

            path = MplPath(v)
            # a tiny radius of either sign: edges count as inside, whatever the
            # winding direction of the vertices
            inside = path.contains_points(pts, radius=1e-6) | path.contains_points(
                pts, radius=-1e-6
            )
        full[lo[0] : hi[0], lo[1] : hi[1]] = inside.reshape(rows.shape)
        return full

    def describe(self) -> str:
        """A short human description (notes, status, errors)."""
        if self.kind == "frame":
            return "whole frame"
        if self.kind == "rect" and self.rect is not None:
            y0, y1, x0, x1 = self.rect
            return f"rectangle rows {y0}:{y1}, cols {x0}:{x1}"
        if self.kind == "mask" and self.mask is not None:
            return f"mask of {int(self.mask.sum())} px"
        n = 0 if self.vertices is None else len(self.vertices)
        return f"{self.kind} of {n} points"

    def geometry(self) -> dict[str, Any]:
        """JSON-ready geometry (a mask as its bounding box and pixel count)."""
        out: dict[str, Any] = {"kind": self.kind, "description": self.describe()}
        if self.rect is not None:
            out["rect_y0_y1_x0_x1"] = list(self.rect)
        if self.vertices is not None:
            out["vertices_row_col"] = np.round(self.vertices, 3).tolist()
        if self.mask is not None:
            ys, xs = np.nonzero(self.mask)
            out["pixels"] = int(ys.size)
            if ys.size:
                out["bbox_y0_y1_x0_x1"] = [
                    int(ys.min()),
                    int(ys.max()) + 1,
                    int(xs.min()),
                    int(xs.max()) + 1,
                ]
        if self.source:
            out["source"] = self.source
        return out

    def same_as(self, other: Roi) -> bool:
        """Same pixels? (the widget re-reads layers; unchanged ROIs keep their trace)."""
        if self.kind != other.kind or self.rect != other.rect:
            return False
        for a, b in ((self.vertices, other.vertices), (self.mask, other.mask)):
            if a is None or b is None:
                if a is not b:  # one of them only
                    return False
                continue
            if a.shape != b.shape or not np.array_equal(a, b):
                return False
        return True


def _axis_aligned(v: np.ndarray) -> bool:
    """Four corners with edges along rows and columns (an unrotated rectangle)."""
    if len(v) != 4:
        return False
    ys, xs = np.unique(np.round(v[:, 0], 9)), np.unique(np.round(v[:, 1], 9))
    return len(ys) <= 2 and len(xs) <= 2


def _in_ellipse(corners: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points inside the ellipse inscribed in the (possibly rotated) box ``corners``."""
    centre = corners.mean(axis=0)
    u = (corners[1] - corners[0]) / 2.0  # half-axes along the box's two edges
    w = (corners[3] - corners[0]) / 2.0
    basis = np.column_stack([u, w])
    if abs(np.linalg.det(basis)) < _EPS:
        return np.zeros(len(pts), dtype=bool)
    ab = np.linalg.solve(basis, (pts - centre).T)
    return (ab**2).sum(axis=0) <= 1.0 + 1e-9
