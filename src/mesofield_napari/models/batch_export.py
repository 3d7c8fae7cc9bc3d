"""What the batch-export widget asks for and gets back, without Qt.

The dock widget (:mod:`mesofield_napari._widgets.batch_export`) is a thin view: it
collects its widgets' values into :func:`build_request` (validation, the same
parameter names and defaults as ``mesofield-napari export``), runs :func:`execute` in
a worker thread and shows the :class:`BatchOutcome` (:func:`result_rows`, the traces
read back by :func:`traces_from_summary`).

Widget conventions mirrored here: ``0`` means "not given" for ``fs``, ``fps``,
``max_frames`` and ``columns`` (the library then takes the sidecar clock / all frames
/ an about-square grid), a contrast of ``(0, 0)`` means automatic, an empty
``fourcc``/output folder/scheduler means the default.
"""

from __future__ import annotations

import csv
import inspect
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.batch.dff import DEFAULT_CAMERA_OFFSET, DFF_METHODS, dff_trace
from ..data.batch.montage import montage
from ..data.batch.options import OPERATION_CHOICES, OPTION_OPERATION
from ..data.batch.parallel import BatchSummary, run_batch
from ..data.batch.traces import TraceResult
from ..data.batch.video_export import export_video
from ..data.formats.names import VIDEO_EXTENSIONS, split_extension

__all__ = [
    "DEFAULT_PATTERN",
    "OPERATION_CHOICES",
    "OPTIONS",
    "BatchOutcome",
    "BatchRequest",
    "LatestProgress",
    "RequestError",
    "ResultRow",
    "Trace",
    "build_request",
    "execute",
    "labels_mask",
    "layer_sources",
    "option_defaults",
    "read_trace_csv",
    "rect_roi",
    "result_rows",
    "trace_matches",
    "trace_path",
    "traces_from_summary",
]

#: folders are searched recursively for recordings whose names match (empty = every
#: recording: the TIFF cameras, and videos when ``include_videos``)
DEFAULT_PATTERN = ""

#: the export options the widget takes apart: the ROI (and so the camera it was
#: drawn on) comes from a layer, not an option; the contrast is two spin boxes and
#: the montage frame a mode and an index
_WIDGET_KEYS = {
    "roi": (),
    "roi_camera": (),
    "contrast": ("contrast_low", "contrast_high"),
    "frame": ("frame", "frame_index"),
}
#: widget option -> the operations it applies to (as ``mesofield-napari export``)
OPTIONS: dict[str, tuple[str, ...]] = {
    key: (operation,)
    for opt, operation in OPTION_OPERATION.items()
    for key in _WIDGET_KEYS.get(opt, (opt,))
}


class RequestError(ValueError):
    """The widget's values do not make a valid batch (the message says why)."""


def _default(fn: Any, name: str) -> Any:
    return inspect.signature(fn).parameters[name].default


def option_defaults() -> dict[str, Any]:
    """Widget defaults, taken from the library's signatures (0 / "" = library's)."""
    return {
        "method": _default(dff_trace, "method"),
        # the widget always passes a number: the 16-bit default (see dff_trace)
        "camera_offset": DEFAULT_CAMERA_OFFSET,
        "fs": 0.0,
        "percentile": _default(dff_trace, "percentile"),
        "window_seconds": _default(dff_trace, "window_seconds"),
        "f0_floor": _default(dff_trace, "f0_floor"),
        "n_f0_samples": _default(dff_trace, "n_f0_samples"),
        "chunk_frames": _default(dff_trace, "chunk_frames"),
        "fix_first_frame": _default(dff_trace, "fix_first_frame"),
        "ext": _default(export_video, "out_ext"),
        "fps": 0.0,
        "fourcc": "",
        "contrast_low": 0.0,
        "contrast_high": 0.0,
        "frame": "mean",
        "frame_index": 0,
        "columns": 0,
        "name": _default(montage, "name"),
    }


# ---------------------------------------------------------------- the request
@dataclass
class BatchRequest:
    """One :func:`~mesofield_napari.data.batch.run_batch` call, validated."""

    operation: str
    paths: list[Path]
    pattern: str | None = None
    out_dir: Path | None = None
    overwrite: bool = False
    workers: int = 1
    scheduler: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    include_videos: bool = False

    def run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``run_batch`` (add ``progress`` and ``cancel``)."""
        return {
            "operation": self.operation,
            "paths": list(self.paths),
            "out_dir": self.out_dir,
            "overwrite": self.overwrite,
            "workers": self.workers,
            "scheduler": self.scheduler,
            "pattern": self.pattern,
            "include_videos": self.include_videos,
            **self.params,
        }


def _finite(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise RequestError(f"{name} must be a finite number, got {value!r}")
    return out


def _count(name: str, value: Any, minimum: int) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a whole number, got {value!r}") from None
    if out < minimum:
        raise RequestError(f"{name} must be at least {minimum}, got {out}")
    return out


def _dff_params(opts: Mapping[str, Any]) -> dict[str, Any]:
    method = str(opts["method"])
    if method not in DFF_METHODS:
        raise RequestError(f"method must be one of {', '.join(DFF_METHODS)}")
    percentile = _finite("percentile", opts["percentile"])
    if not 0 <= percentile <= 100:
        raise RequestError(f"percentile must be within 0..100, got {percentile:g}")
    window = _finite("window_seconds", opts["window_seconds"])
    if window <= 0:
        raise RequestError(f"window_seconds must be positive, got {window:g}")
    fs = _finite("fs", opts["fs"])
    if fs < 0:
        raise RequestError(f"fs must be positive (0 = from the sidecar), got {fs:g}")
    f0_floor = _finite("f0_floor", opts["f0_floor"])
    if f0_floor < 0:
        raise RequestError(f"f0_floor must not be negative, got {f0_floor:g}")
    params: dict[str, Any] = {
        "method": method,
        "camera_offset": _finite("camera_offset", opts["camera_offset"]),
        "percentile": percentile,
        "window_seconds": window,
        "f0_floor": f0_floor,
        "n_f0_samples": _count("n_f0_samples", opts["n_f0_samples"], 1),
        "chunk_frames": _count("chunk_frames", opts["chunk_frames"], 1),
        "fix_first_frame": bool(opts["fix_first_frame"]),
    }
    if fs > 0:
        params["fs"] = fs
    return params


def _video_params(opts: Mapping[str, Any]) -> dict[str, Any]:
    ext = str(opts["ext"]).lower()
    ext = ext if ext.startswith(".") else "." + ext
    if ext not in VIDEO_EXTENSIONS:
        raise RequestError(f"ext must be .mp4 or .avi, got {opts['ext']!r}")
    params: dict[str, Any] = {"out_ext": ext}
    fps = _finite("fps", opts["fps"])
    if fps < 0:
        raise RequestError(f"fps must be positive (0 = from the sidecar), got {fps:g}")
    if fps > 0:
        params["fps"] = fps
    fourcc = str(opts["fourcc"] or "").strip()
    if fourcc:
        if len(fourcc) != 4 and fourcc.lower() != "h264-lossless":
            raise RequestError(
                f"fourcc must be 4 characters or h264-lossless, got {fourcc!r}"
            )
        params["fourcc"] = fourcc
    lo = _finite("contrast low", opts["contrast_low"])
    hi = _finite("contrast high", opts["contrast_high"])
    if (lo, hi) != (0.0, 0.0):
        if not hi > lo:
            raise RequestError(
                f"contrast needs low < high (0, 0 = automatic), got {lo:g}, {hi:g}"
            )
        params["contrast"] = (lo, hi)
    return params


def _montage_params(opts: Mapping[str, Any]) -> dict[str, Any]:
    frame = str(opts["frame"])
    if frame not in ("mean", "frame"):
        raise RequestError(f"montage frame must be 'mean' or 'frame', got {frame!r}")
    params: dict[str, Any] = {
        "frame": "mean" if frame == "mean" else int(opts["frame_index"])
    }
    columns = _count("columns", opts["columns"], 0)
    if columns:
        params["columns"] = columns
    name = str(opts["name"] or "").strip() or "montage.png"
    if not name.lower().endswith(".png"):
        raise RequestError(f"montage name must end with .png, got {name!r}")
    if os.path.basename(name) != name:
        raise RequestError("montage name is a file name; use the output folder")
    params["name"] = name
    return params


def _opt_path(value: Any) -> Path | None:
    if value is None:
        return None
    text = os.fspath(value).strip()
    return Path(text).expanduser() if text else None


def build_request(
    operation: str,
    *,
    files: Iterable[str | os.PathLike[str]] = (),
    folder: str | os.PathLike[str] | None = None,
    pattern: str | None = DEFAULT_PATTERN,
    layer_paths: Iterable[str | os.PathLike[str] | None] = (),  # None: no source
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
    max_frames: int = 0,
    roi: Any = None,
    label: int = 0,
    roi_camera: str | None = None,
    include_videos: bool = False,
    options: Mapping[str, Any] | None = None,
) -> BatchRequest:
    """Validate the widget's values into a :class:`BatchRequest` (``RequestError``).

    Inputs are ``files``, the recordings found recursively in ``folder`` whose names
    match ``pattern`` (``fnmatch``; empty = every recording) and ``layer_paths``
    (source files of open layers), in that order, each once. ``options`` are the
    per-operation widgets' values (keys of :data:`OPTIONS`, defaults
    :func:`option_defaults`); only the chosen operation's are used. ``roi`` (mean
    trace only) is ``None``, a rectangle ``(y0, y1, x0, x1)`` or a 2-D mask; with a
    mask, ``label`` > 0 takes only that label; ``roi_camera`` is the camera it was
    drawn on (recordings of other cameras are skipped). Videos found in ``folder``
    are skipped (and listed) unless ``include_videos``; files and layers named are
    taken as they are.
    """
    if operation not in OPERATION_CHOICES:
        raise RequestError(
            f"unknown operation {operation!r} (choose from "
            f"{', '.join(OPERATION_CHOICES)})"
        )
    opts = {**option_defaults(), **(options or {})}
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise RequestError(f"unknown option(s): {', '.join(unknown)}")

    paths: dict[Path, None] = {}
    for p in [*files, *layer_paths]:
        if p is None or not os.fspath(p).strip():
            continue
        paths.setdefault(Path(p).expanduser())
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise RequestError(f"no such file: {missing[0]}")
    folder_path = _opt_path(folder)
    if folder_path is not None:
        if not folder_path.is_dir():
            raise RequestError(f"not a folder: {folder_path}")
        paths.setdefault(folder_path)
    if not paths:
        raise RequestError("choose recordings: files, a folder or open layers")

    workers = _count("workers", workers, 1)
    address = (scheduler or "").strip() or None
    if address is not None and workers > 1:
        raise RequestError(
            "workers is for local runs; with a scheduler the cluster runs the jobs"
        )
    params: dict[str, Any] = {}
    if operation == "dff":
        params.update(_dff_params(opts))
    elif operation == "video":
        params.update(_video_params(opts))
    elif operation == "montage":
        params.update(_montage_params(opts))
    elif roi is not None:
        if isinstance(roi, np.ndarray) and roi.ndim == 2:
            params["roi"] = roi
            if _count("label", label, 0):
                params["label"] = int(label)
        else:
            rect = tuple(int(v) for v in roi)
            if len(rect) != 4 or not (rect[0] < rect[1] and rect[2] < rect[3]):
                raise RequestError(f"ROI rectangle (y0, y1, x0, x1) is empty: {rect}")
            params["roi"] = rect
        if roi_camera:
            params["roi_camera"] = str(roi_camera)
    frames = _count("max frames", max_frames, 0)
    if frames:
        params["max_frames"] = frames
    return BatchRequest(
        operation=operation,
        paths=list(paths),
        pattern=(pattern or "").strip() or None,
        out_dir=_opt_path(out_dir),
        overwrite=bool(overwrite),
        workers=workers,
        scheduler=address,
        params=params,
        include_videos=bool(include_videos),
    )


# ---------------------------------------------------------------- inputs from layers
def layer_sources(layers: Iterable[Any]) -> dict[str, Path]:
    """``{layer name: data file}`` of the layers opened by this plugin's reader."""
    out: dict[str, Path] = {}
    for layer in layers:
        meta = getattr(layer, "metadata", None)
        info = meta.get("mesofield") if isinstance(meta, Mapping) else None
        src = info.get("source") if isinstance(info, Mapping) else None
        if isinstance(src, (str, os.PathLike)) and os.fspath(src):
            out[str(layer.name)] = Path(src)
    return out


def rect_roi(
    vertices: np.ndarray,
    frame_shape: Sequence[int] | None = None,
    scale: Sequence[float] = (1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0),
    image_scale: Sequence[float] = (1.0, 1.0),
    image_translate: Sequence[float] = (0.0, 0.0),
) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the pixels whose centres lie in a shape's bounding box.

    ``vertices`` are a Shapes layer's data coordinates (the last two columns are
    y, x); ``scale``/``translate`` map them to world coordinates and
    ``image_scale``/``image_translate`` (of the recording's image layer) from world
    coordinates to pixels (napari puts pixel ``i``'s centre at ``i``). Clipped to
    ``frame_shape`` (height, width) when given.
    """
    v = np.asarray(vertices, dtype=float)
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] < 2:
        raise RequestError("the ROI shape has no vertices")
    yx = v[:, -2:] * np.asarray(scale[-2:], float) + np.asarray(translate[-2:], float)
    px = (yx - np.asarray(image_translate[-2:], float)) / np.asarray(
        image_scale[-2:], float
    )
    lo, hi = px.min(axis=0), px.max(axis=0)
    y0, x0 = (max(0, math.ceil(c)) for c in lo)
    y1, x1 = (math.floor(c) + 1 for c in hi)
    if frame_shape is not None:
        y1, x1 = min(y1, int(frame_shape[-2])), min(x1, int(frame_shape[-1]))
    if not (y0 < y1 and x0 < x1):
        raise RequestError("the ROI rectangle covers no pixel of the frame")
    return (int(y0), int(y1), int(x0), int(x1))


def labels_mask(data: Any) -> np.ndarray:
    """A 2-D label image: the data itself, or (t, ..., y, x) collapsed by ``max``."""
    arr = np.asarray(data)
    if arr.ndim < 2:
        raise RequestError("the labels layer must be at least 2-D")
    if arr.ndim > 2:
        arr = arr.reshape(-1, *arr.shape[-2:]).max(axis=0)
    if not arr.any():
        raise RequestError("the labels layer has no labelled pixel")
    return arr


# ---------------------------------------------------------------- running
class LatestProgress:
    """A ``progress(done, total)`` callback for any thread; :meth:`take` polls it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: tuple[int, int] | None = None
        self._seen: tuple[int, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            self._value = (int(done), int(total))

    def take(self) -> tuple[int, int] | None:
        """The latest ``(done, total)`` if it changed since the last call."""
        with self._lock:
            if self._value is None or self._value == self._seen:
                return None
            self._seen = self._value
            return self._value


@dataclass
class Trace:
    """A computed trace, ready to plot: one value per frame."""

    recording: Path
    path: Path
    position: str
    time_s: np.ndarray
    values: np.ndarray
    quantity: str  # "mean" or "dF/F"

    @property
    def label(self) -> str:
        name = self.path.name
        for suffix in ("-trace.csv", ".csv"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return name

    def xy(self) -> tuple[np.ndarray, np.ndarray, str]:
        """``(x, y, x label)``: time (s) if the sidecar had it, else frame index."""
        t = np.asarray(self.time_s, dtype=float)
        if t.size and np.isfinite(t).all():
            return t, self.values, "time (s)"
        return np.arange(len(self.values), dtype=float), self.values, "frame"


@dataclass
class ResultRow:
    """One line of the results list."""

    status: str  # "ok", "failed", "cancelled" or "skipped"
    recording: Path
    detail: str  # output path(s) or the error
    outputs: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class BatchOutcome:
    """What :func:`execute` returns: the summary (or why there is none) + traces."""

    request: BatchRequest
    summary: BatchSummary | None = None
    error: str | None = None
    traces: list[Trace] = field(default_factory=list)

    @property
    def rows(self) -> list[ResultRow]:
        return result_rows(self.summary) if self.summary is not None else []


def read_trace_csv(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """``(time_s, values, quantity)`` of a mean-trace or ΔF/F CSV written here."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}: empty trace file")
    header = [h.strip() for h in rows[0]]
    data = np.array(rows[1:], dtype=float).reshape(-1, len(header))
    if "Mean" in header:
        dff = not Path(path).name.endswith("mean-trace.csv")
        col, quantity = header.index("Mean"), "dF/F" if dff else "mean"
    elif "dff" in header:  # ΔF/F files written before datakit's columns
        col, quantity = header.index("dff"), "dF/F"
    else:
        raise ValueError(f"{path}: not a trace file (columns {', '.join(header)})")
    return data[:, header.index("time_s")], data[:, col], quantity


def traces_from_summary(summary: BatchSummary) -> list[Trace]:
    """The traces of a mean-trace/ΔF/F batch: kept results, else the CSV outputs."""
    if summary.operation not in ("mean-trace", "dff"):
        return []
    out: list[Trace] = []
    for job in summary.jobs:
        if not job.ok:
            continue
        kept = [r for r in job.results if isinstance(r, TraceResult)]
        if kept:
            quantity = "mean" if summary.operation == "mean-trace" else "dF/F"
            out.extend(
                Trace(r.recording, r.path, r.position, r.time_s, r.values, quantity)
                for r in kept
            )
            continue
        for path in job.outputs:  # results stay on the dask workers: read the CSVs
            t, v, quantity = read_trace_csv(path)
            out.append(Trace(job.path, path, "", t, v, quantity))
    return out


def result_rows(summary: BatchSummary) -> list[ResultRow]:
    """One :class:`ResultRow` per recording: the jobs in input order, then those
    skipped (status ``skipped``, the reason as detail)."""
    rows = []
    for job in summary.jobs:
        if job.ok:
            status, detail = "ok", ", ".join(os.fspath(p) for p in job.outputs)
        elif job.cancelled:
            status, detail = "cancelled", "cancelled (nothing written)"
        else:
            status, detail = "failed", job.error or "failed"
        rows.append(
            ResultRow(status, job.path, detail, list(job.outputs), list(job.warnings))
        )
    rows.extend(ResultRow("skipped", s.path, s.reason) for s in summary.skipped)
    return rows


def execute(
    request: BatchRequest,
    progress: Any = None,
    cancel: Any = None,
) -> BatchOutcome:
    """Run ``request`` (blocking; call it off the GUI thread); never raises.

    Per-recording failures are in the summary; a batch that cannot start at all
    (nothing found, a bad parameter, an unreachable scheduler) comes back as
    ``error``.
    """
    outcome = BatchOutcome(request)
    try:
        outcome.summary = run_batch(
            **request.run_kwargs(), progress=progress, cancel=cancel
        )
    except Exception as exc:
        text = str(exc) if isinstance(exc, (OSError, ValueError)) else ""
        outcome.error = text or f"{type(exc).__name__}: {exc}"
        return outcome
    try:
        outcome.traces = traces_from_summary(outcome.summary)
    except (OSError, ValueError) as exc:
        outcome.error = f"could not read the traces back: {exc}"
    return outcome


def trace_path(
    trace: Trace,
    extent: Sequence[float] | None = None,
    origin: Sequence[float] = (0.0, 0.0),
) -> np.ndarray:
    """Vertices ``(row, col)`` of a Shapes ``path`` drawing ``trace`` over a frame.

    Time (or frame index) runs left to right over ``extent`` (height, width in world
    units, e.g. the recording's frame; default 100 x 200) from ``origin`` (y, x);
    larger values are drawn higher (smaller rows). Non-finite points are dropped.
    The drawing is only a picture: the numbers belong in the layer's metadata.
    """
    x, y, _ = trace.xy()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x, float)[keep], np.asarray(y, float)[keep]
    if x.size < 2:
        raise RequestError(f"{trace.label}: fewer than 2 finite points to draw")
    height, width = (float(v) for v in (extent or (100.0, 200.0))[-2:])
    oy, ox = (float(v) for v in origin[-2:])
    xr = float(np.ptp(x)) or 1.0
    yr = float(np.ptp(y)) or 1.0
    rows = oy + (float(y.max()) - y) / yr * height
    cols = ox + (x - float(x.min())) / xr * width
    return np.column_stack([rows, cols])


def trace_matches(trace: Trace, source: str | os.PathLike[str], position: Any) -> bool:
    """Whether a layer (its ``source`` file and ``position``) shows ``trace``'s data."""
    src = Path(source)
    if src == trace.recording:
        return not trace.position or position in (None, trace.position)
    if not trace.position or position != trace.position:
        return False
    stem, ext = split_extension(trace.recording.name)
    return src == trace.recording.with_name(f"{stem}_{trace.position}{ext}")
