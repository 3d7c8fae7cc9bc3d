"""Qt dock widgets: thin views over the Qt-free core in ``mesofield_napari.data``."""
