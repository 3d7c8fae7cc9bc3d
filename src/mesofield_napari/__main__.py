"""``python -m mesofield_napari`` == the ``mesofield-napari`` command."""

import sys

from .cli import main

sys.exit(main())
