"""The batch-export operations and which parameter applies to which, in one place.

Shared by ``mesofield-napari export`` (:mod:`mesofield_napari.cli.export`) and the
batch-export widget's model (:mod:`mesofield_napari.models.batch_export`). No imports:
the CLI builds its parser from it without loading the data layer.
"""

from __future__ import annotations

OPERATION_CHOICES = ("mean-trace", "dff", "video", "montage")

#: parameter (the library's keyword; ``ext`` is ``export_video``'s ``out_ext``) ->
#: the operation it applies to
OPTION_OPERATION: dict[str, str] = {
    "roi": "mean-trace",
    "roi_camera": "mean-trace",
    "method": "dff",
    "camera_offset": "dff",
    "fs": "dff",
    "percentile": "dff",
    "window_seconds": "dff",
    "f0_floor": "dff",
    "n_f0_samples": "dff",
    "chunk_frames": "dff",
    "fix_first_frame": "dff",
    "fps": "video",
    "fourcc": "video",
    "ext": "video",
    "contrast": "video",
    "frame": "montage",
    "columns": "montage",
    "name": "montage",
}
