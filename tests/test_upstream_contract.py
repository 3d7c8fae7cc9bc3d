"""Fail loudly when pymmcore-plus changes the surface our writers are built on.

Our writers subclass ``pymmcore_plus.mda.handlers.OMETiffWriter`` (a deprecated module,
docs/design.md §9): they override some of its methods and rely on its ``frameReady`` calling
the others with fixed positional arguments. If upstream removes or reshapes any of them,
these tests say so before a recording silently goes wrong.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import warnings

import pytest

import mesofield_napari
from mesofield_napari.data import CustomWriter, CV2Writer
from mesofield_napari.data.writer._upstream import OMETiffWriter


def _upstream_module():
    # already imported (warning contained) by mesofield_napari.data; re-importing a
    # cached module emits nothing, but stay explicit in case it was not cached
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return importlib.import_module("pymmcore_plus.mda.handlers")


def test_omtiffwriter_still_exported_upstream() -> None:
    handlers = _upstream_module()
    assert hasattr(handlers, "OMETiffWriter"), (
        "pymmcore_plus.mda.handlers.OMETiffWriter is gone: CustomWriter/CV2Writer "
        "subclass it (vendor it or pin pymmcore-plus)"
    )
    assert handlers.OMETiffWriter is OMETiffWriter


# method -> positional parameters after self, as upstream's frameReady/sequence
# callbacks call them (and as our overrides accept them)
EXPECTED_METHODS = {
    "new_array": ["position_key", "dtype", "sizes"],
    "write_frame": ["ary", "index", "frame"],
    "frameReady": ["frame", "event", "meta"],
    "sequenceStarted": ["seq", "meta"],
    "sequenceFinished": ["seq"],
    "store_frame_metadata": ["key", "event", "meta"],
    "finalize_metadata": [],
    "_sequence_metadata": [],
    "get_position_key": ["event"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_METHODS))
def test_upstream_method_signatures(name: str) -> None:
    method = getattr(OMETiffWriter, name, None)
    assert callable(method), f"OMETiffWriter.{name} disappeared upstream"
    params = list(inspect.signature(method).parameters.values())[1:]  # drop self
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    expected = EXPECTED_METHODS[name]
    # the count matters (upstream calls them positionally); names only as a hint
    assert len(positional) == len(expected), (
        f"OMETiffWriter.{name} now takes {[p.name for p in positional]}, "
        f"we expect {expected}"
    )
    if name == "sequenceStarted":
        # we call it with (seq, meta); meta must stay optional for old callers
        assert positional[1].default is not inspect.Parameter.empty


def test_upstream_position_sizes_property() -> None:
    assert isinstance(inspect.getattr_static(OMETiffWriter, "position_sizes"), property)


def test_upstream_base_state_attributes() -> None:
    """The base state our mixin reads: created by ``_5DWriterBase.__init__``."""
    writer = OMETiffWriter("unused.ome.tif")  # creates no file
    for attr in ("frame_metadatas", "current_sequence", "position_arrays"):
        assert hasattr(writer, attr), f"_5DWriterBase no longer sets {attr}"
    assert writer.current_sequence is None
    writer.frame_metadatas["p0"].append({})  # a defaultdict(list), as we rely on
    assert writer.position_sizes == []


def test_upstream_frameready_drives_our_overrides() -> None:
    """Upstream's ``frameReady`` still calls new_array -> write_frame -> store."""
    source = inspect.getsource(OMETiffWriter.frameReady)
    for call in ("self.new_array(", "self.write_frame(", "self.store_frame_metadata("):
        assert call in source, f"upstream frameReady no longer calls {call}...)"
    source = inspect.getsource(OMETiffWriter.sequenceFinished)
    assert "self.finalize_metadata()" in source


@pytest.mark.parametrize("cls", [CustomWriter, CV2Writer])
def test_writers_are_ometiffwriter_subclasses(cls: type) -> None:
    assert issubclass(cls, OMETiffWriter)
    assert issubclass(cls, _upstream_module().OMETiffWriter)


def test_writers_importable_from_package_root() -> None:
    assert mesofield_napari.CustomWriter is CustomWriter
    assert mesofield_napari.CV2Writer is CV2Writer
    with pytest.raises(AttributeError):
        _ = mesofield_napari.NoSuchWriter  # type: ignore[attr-defined]


def test_import_contains_upstream_futurewarning() -> None:
    """A fresh interpreter with FutureWarning as error can import our data layer."""
    code = (
        "import sys, mesofield_napari.data as d; "
        "assert 'pymmcore_plus.mda.handlers' in sys.modules; "
        "print(d.CustomWriter.__mro__[2].__name__)"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OMETiffWriter"
