"""Live ROI traces while recording (Qt-free): the model, its ROIs, its run files."""

from .rois import Roi
from .traces import DffSettings, LiveTraces, Sample, TraceView

__all__ = ["DffSettings", "LiveTraces", "Roi", "Sample", "TraceView"]
