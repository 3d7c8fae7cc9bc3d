"""Batch export of recordings (no Qt): traces, ΔF/F, videos, montages, batch runner.

Every operation takes a recording (a path or an opened
:class:`~mesofield_napari.data.reader.recording.Recording`), writes its output atomically
into ``out_dir`` (default ``<run folder>/processed``), refuses to overwrite unless
``overwrite=True`` (``FileExistsError``), reports ``progress(done, total)`` in frames
and stops with :class:`Cancelled` (writing nothing) once ``cancel.is_set()``.
"""

from __future__ import annotations

from .dff import DFF_METHODS, dff_trace, moving_percentile, sampling_rate
from .jobs import (
    Cancelled,
    CancelToken,
    ProgressCallback,
    default_out_dir,
    output_stem,
)
from .montage import MontageResult, montage, projection
from .parallel import OPERATIONS, BatchSummary, JobResult, expand_paths, run_batch
from .traces import TraceResult, mean_trace, roi_mask
from .video_export import VideoResult, auto_contrast, export_video

__all__ = [
    "DFF_METHODS",
    "OPERATIONS",
    "BatchSummary",
    "CancelToken",
    "Cancelled",
    "JobResult",
    "MontageResult",
    "ProgressCallback",
    "TraceResult",
    "VideoResult",
    "auto_contrast",
    "default_out_dir",
    "dff_trace",
    "expand_paths",
    "export_video",
    "mean_trace",
    "montage",
    "moving_percentile",
    "output_stem",
    "projection",
    "roi_mask",
    "run_batch",
    "sampling_rate",
]
