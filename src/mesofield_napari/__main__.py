"""``python -m mesofield_napari`` == the ``mesofield-napari`` command."""

from .cli import run

run()
