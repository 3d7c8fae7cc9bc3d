"""Make napari choose our reader for our recordings, without a "Choose reader" dialog.

napari's builtin reader also claims TIFFs and folders, so a dropped recording or run
folder (and ``viewer.open(path, plugin=None)``) asks the user to choose, and a folder
given to the builtin reader fails on the run's CSV files. napari's own mechanism for
this is the reader preference (``settings.plugins.extension2reader``: fnmatch pattern
-> plugin), which its dialog sets when "remember" is ticked. We add the patterns of
the files and folders we write — our sidecars and journals, videos, BIDS-named
recordings, ``sub-*``/``ses-*`` folders and their ``func``/``beh`` — and never replace
a preference the user set. (``viewer.open(path)`` without ``plugin=`` is napari's
builtin reader by napari's own default, whatever the preference.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["PLUGIN", "READER_PATTERNS", "prefer_mesofield_reader"]

PLUGIN = "mesofield-napari"
READER_PATTERNS = (
    "*_frame_metadata.json",
    "*_frame_metadata.jsonl",
    "*.mp4",
    "*.avi",
    "*_task-*.ome.tiff",
    "*_task-*.ome.tif",
    "*/sub-*/",
    "*/ses-*/",
    "*/ses-*/func/",
    "*/ses-*/beh/",
)


def prefer_mesofield_reader(settings: Any = None) -> list[str]:
    """Add our reader patterns to napari's reader preferences; returns those added.

    A pattern the user already mapped to a reader is left as it is.
    """
    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    added = [p for p in READER_PATTERNS if p not in current]
    if added:
        current.update(dict.fromkeys(added, PLUGIN))
        settings.plugins.extension2reader = current
    return added
