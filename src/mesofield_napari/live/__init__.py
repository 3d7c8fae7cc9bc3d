"""Live ROI traces while recording (Qt-free): the model, its ROIs, its run files."""

from .rois import Roi
from .sink import Sample, TraceSink
from .traces import DffSettings, LiveTraces, TraceView

__all__ = ["DffSettings", "LiveTraces", "Roi", "Sample", "TraceSink", "TraceView"]
