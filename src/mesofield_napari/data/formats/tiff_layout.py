"""BigTIFFs whose headers are rewritten, in place and crash-safely, to hold exactly
the frames that were recorded.

A file we create is a little-endian BigTIFF, one uncompressed strip per page, the
frames contiguous (so ``tifffile.memmap``, Fiji and suite2p map them directly), every
header *before* the frames::

    [header 16 B][IFD0][description][software][IFD1 ... IFD(N-1)]...pad...
    D: frame 0, frame 1, ... frame N-1                      end of file: D + N*F

A planned run of N frames gets its whole IFD chain at creation (it reads as the
planned shape while recording); an until-Stop file only IFD0 (N = 1) and grows. The
end of file is then *set*, not written (``_platform.fileio.set_size``), and the disk
space reserved (``reserve``). Frames are written in order from D, so the file's
written bytes grow sequentially: on NTFS, which zero-fills everything between the
highest byte written so far ("valid data length") and a write that starts beyond
it, no write ever lands far past that mark -- a chain written after the planned
frames (this layout's predecessor) made the first write zero-fill the whole planned
file, tens of GB, before recording. The price: a planned run stopped after n of N
frames keeps N-n unused IFDs (256 B each, 0.05 % of a 512x512 uint16 frame) before
its data.

:func:`finish_exact` turns it into a file of ``n`` pages without touching pixel data
(files are 10-200 GB):

1. write the *tail* -- the new description and IFD0'..IFD(n-1)' -- at ``D + n*F``,
   right after the frames kept (over space of frames that were never written), then
   sync (``full_sync``: F_FULLFSYNC on macOS);
2. point the header's first-IFD offset (bytes 8-16, one sector) at IFD0', sync;
3. cut the file at the end of the tail (``set_size``), sync.

The disk space of that tail is reserved with the frames' (:func:`tail_bound`), so a
run can always be finished, even on a disk that filled up; a run that records every
planned frame only gives that space back.

The header region (IFD0, the original description and chain) is never modified, and
the tail is a pure function of the :class:`TiffLayout` (journaled when the file is
created) and ``n``, so a process killed anywhere in between leaves a file that
:func:`finish_exact` -- run again by ``recover`` -- finishes idempotently. Older files
(chain after the frames) finish the same way: only ``data_offset`` is used.

Which ``n``: frames are addressed in storage order (``dims`` then y, x). A run that
stops early keeps whole blocks of its first non-singleton axis -- e.g. complete time
points of a t/z/c run -- up to the block holding the last written frame. No written
frame is ever dropped; in a multi-axis run the last block may hold planes that were
never acquired (zeros; the sidecar lists which were). The OME-XML (Size<axis>,
PlaneCount) or tifffile's JSON shape declares exactly that many.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._platform import fileio

_ALIGN = 4096  # frames start on a page boundary (whole-page writes for 2^k frames)
_SOFTWARE = b"mesofield-napari\0"
_ENTRY = struct.Struct("<HHQ8s")
_SHORT, _LONG, _RATIONAL, _LONG8, _ASCII = 3, 4, 5, 16, 2
_PAUSE_ENV = "MESOFIELD_NAPARI_FINISH_PAUSE"
_CHAIN_BATCH = 4096  # IFDs written per pwrite (~1 MB): memory stays bounded


@dataclass(frozen=True)
class TiffLayout:
    """Everything needed to (re)write a file's headers; journaled as JSON."""

    file: str  # file name (same folder as the journal)
    dtype: str
    frame_shape: tuple[int, int]  # (y, x)
    dims: str  # storage axes before y/x, e.g. "tzc"; "t" for until-Stop files
    sizes: tuple[int, ...]  # planned sizes of ``dims``
    growing: bool  # until Stop: no planned length, frames in arrival order
    is_ome: bool
    data_offset: int
    description: str  # as created (an OME-XML keeps its UUID when retitled)
    ifds_first: bool = False  # the chain precedes the frames (False: older files)
    # "" uncompressed; else a codec of ``tiff_compressed.CODECS``: strips appended in
    # arrival order, sizes and offsets in the journal (docs/design.md §5)
    compression: str = ""

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.frame_shape)) * np.dtype(self.dtype).itemsize

    @property
    def planned_pages(self) -> int:
        return int(np.prod(self.sizes, dtype=np.int64))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TiffLayout:
        fields = dict(obj)
        fields["frame_shape"] = tuple(int(v) for v in fields["frame_shape"])
        fields["sizes"] = tuple(int(v) for v in fields["sizes"])
        return cls(**fields)

    # ------------------------------------------------------------ frame counts
    def _trunc_axis(self) -> int | None:
        if self.growing:
            return 0
        return next((i for i, s in enumerate(self.sizes) if s > 1), None)

    def flat_index(self, index: dict[str, int]) -> int:
        """Storage position of a frame from its MDA event index."""
        if not self.dims:
            return 0
        idx = tuple(int(index.get(d, 0)) for d in self.dims)
        return int(np.ravel_multi_index(idx, self.sizes))

    def pages_for(self, last_flat: int) -> int:
        """Pages to keep when ``last_flat`` is the highest storage index written."""
        if last_flat < 0:
            return 0
        axis = self._trunc_axis()
        if axis is None:
            return self.planned_pages
        block = int(np.prod(self.sizes[axis + 1 :], dtype=np.int64))
        return -(-(last_flat + 1) // block) * block

    def final_sizes(self, pages: int) -> tuple[int, ...]:
        axis = self._trunc_axis()
        if axis is None:
            return self.sizes
        block = int(np.prod(self.sizes[axis + 1 :], dtype=np.int64))
        sizes = list(self.sizes)
        sizes[axis] = pages // block
        return tuple(sizes)

    def final_description(self, pages: int) -> str:
        if not self.growing and pages == self.planned_pages:
            return self.description
        sizes = self.final_sizes(pages)
        if not self.is_ome:
            return plain_description(self.dims, sizes, self.frame_shape)
        axis = self._trunc_axis()
        text = self.description
        if axis is not None:
            name = self.dims[axis].upper()
            text = re.sub(rf'\bSize{name}="\d+"', f'Size{name}="{sizes[axis]}"', text)
        return re.sub(r'\bPlaneCount="\d+"', f'PlaneCount="{pages}"', text)


# ---------------------------------------------------------------- descriptions
def plain_description(
    dims: str, sizes: tuple[int, ...], frame_shape: tuple[int, int]
) -> str:
    """tifffile's JSON shape, singleton axes dropped as ImageJ (and so upstream's
    ``OMETiffWriter`` for ``.tif``) does: a 1-channel t/c run reads back as TYX."""
    kept = [(d, s) for d, s in zip(dims, sizes, strict=True) if s > 1]
    shape = [s for _, s in kept] + list(frame_shape)
    axes = "".join(d for d, _ in kept).upper() + "YX"
    return json.dumps({"shape": shape, "axes": axes})


def ome_description(
    dtype: np.dtype,
    dims: str,
    sizes: tuple[int, ...],
    frame_shape: tuple[int, int],
    metadata: dict[str, Any],
) -> str:
    """The OME-XML tifffile's ``imwrite(..., ome=True)`` writes for this shape."""
    from tifffile import OmeXml

    pages = int(np.prod(sizes, dtype=np.int64))
    shape = (*sizes, *frame_shape)
    ome = OmeXml(**metadata)
    ome.addimage(
        dtype,
        shape,
        (pages, 1, 1, *frame_shape, 1),
        axes=(dims + "yx").upper(),
        **metadata,
    )
    return str(ome.tostring(declaration=True))


# ---------------------------------------------------------------- IFDs
def _value(typ: int, count: int, value: Any) -> bytes:
    if typ == _SHORT:
        return struct.pack("<H", value).ljust(8, b"\0")
    if typ == _LONG:
        return struct.pack("<I", value).ljust(8, b"\0")
    if typ == _RATIONAL:
        return struct.pack("<II", *value)
    return struct.pack("<Q", value)  # LONG8 or an offset


# TIFF Compression tag of each codec name (``tiff_compressed.CODECS``); 50002 is
# JPEG XL as GDAL and tifffile write it
TIFF_CODES = {"": 1, "deflate": 8, "zstd": 50000, "jpegxl": 50002}
# the byte codecs compress integer frames after horizontal differencing (Predictor
# 2); JPEG XL predicts the pixels itself (Predictor 1)
PREDICTED = frozenset({"deflate", "zstd"})


def _tags(
    layout: TiffLayout,
    strip: int,
    desc: tuple[int, int] | None,
    soft: int | None,
    nbytes: int | None = None,
) -> list[tuple[int, int, int, Any]]:
    y, x = layout.frame_shape
    dtype = np.dtype(layout.dtype)
    code = TIFF_CODES[layout.compression]
    tags: list[tuple[int, int, int, Any]] = [
        (256, _LONG, 1, x),
        (257, _LONG, 1, y),
        (258, _SHORT, 1, dtype.itemsize * 8),
        (259, _SHORT, 1, code),  # 1: no compression
        (262, _SHORT, 1, 1),  # min-is-black
    ]
    if desc is not None:
        tags.append((270, _ASCII, desc[1], desc[0]))
    tags += [
        (273, _LONG8, 1, strip),
        (277, _SHORT, 1, 1),
        (278, _LONG, 1, y),
        (279, _LONG8, 1, layout.frame_bytes if nbytes is None else nbytes),
        (282, _RATIONAL, 1, (1, 1)),
        (283, _RATIONAL, 1, (1, 1)),
        (296, _SHORT, 1, 1),
    ]
    if soft is not None:
        tags.append((305, _ASCII, len(_SOFTWARE), soft))
    if layout.compression in PREDICTED and dtype.kind in "ui":
        tags.append((317, _SHORT, 1, 2))  # horizontal differencing (compressed)
    if dtype.kind != "u":
        tags.append((339, _SHORT, 1, {"i": 2, "f": 3}[dtype.kind]))
    return tags


def _ifd(tags: list[tuple[int, int, int, Any]], next_offset: int) -> bytes:
    parts = [struct.pack("<Q", len(tags))]
    parts += [_ENTRY.pack(c, t, n, _value(t, n, v)) for c, t, n, v in tags]
    parts.append(struct.pack("<Q", next_offset))
    return b"".join(parts)


def _ifd_size(ntags: int) -> int:
    return 16 + 20 * ntags


def _page_ifd_size(layout: TiffLayout) -> int:
    return _ifd_size(len(_tags(layout, 0, None, None)))


def _first_block(
    layout: TiffLayout,
    at: int,
    description: str,
    next_offset: int | None,
    strip: tuple[int, int] | None = None,
) -> tuple[bytes, int]:
    """[IFD0][description][software] placed at ``at``; returns (bytes, IFD0 offset).

    ``next_offset`` None: the next IFD follows the block directly. ``strip``: the
    first frame's (offset, bytes) when it is not at ``data_offset`` uncompressed.
    """
    desc = description.encode("utf-8") + b"\0"
    ntags = len(_tags(layout, 0, (0, 0), 0))
    desc_at = at + _ifd_size(ntags)
    soft_at = desc_at + len(desc)
    end = _pad8(soft_at + len(_SOFTWARE))
    at0, n0 = strip if strip is not None else (layout.data_offset, None)
    tags = _tags(layout, at0, (desc_at, len(desc)), soft_at, n0)
    ifd = _ifd(tags, end if next_offset is None else next_offset)
    block = ifd + desc + _SOFTWARE
    return block.ljust(end - at, b"\0"), at


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def _chain(
    layout: TiffLayout, at: int, first_page: int, last_page: int
) -> Iterator[tuple[int, bytes]]:
    """IFDs of pages ``first_page..last_page-1`` from ``at`` on, in batches."""
    size = _page_ifd_size(layout)
    f, d = layout.frame_bytes, layout.data_offset
    for start in range(first_page, last_page, _CHAIN_BATCH):
        stop = min(start + _CHAIN_BATCH, last_page)
        blocks = []
        for page in range(start, stop):
            pos = at + (page - first_page) * size
            nxt = pos + size if page + 1 < last_page else 0
            blocks.append(_ifd(_tags(layout, d + page * f, None, None), nxt))
        yield at + (start - first_page) * size, b"".join(blocks)


def _chain_ifd(layout: TiffLayout, strip: int, nbytes: int, next_offset: int) -> bytes:
    """One page's IFD (no description) for a strip of ``nbytes`` at ``strip``."""
    return _ifd(_tags(layout, strip, None, None, nbytes), next_offset)


def tail_bound(layout: TiffLayout, pages: int) -> int:
    """An upper bound of the bytes :func:`finish_exact` writes after ``pages``
    frames (reserve it ahead so a full disk can still be finished)."""
    first = _ifd_size(len(_tags(layout, 0, (0, 0), 0)))
    extra = len(layout.description.encode("utf-8")) + 64 + len(_SOFTWARE) + 16
    return first + extra + max(pages - 1, 0) * _page_ifd_size(layout)


# ---------------------------------------------------------------- create / finish
def checked_description(
    dtype: Any,
    dims: str,
    sizes: tuple[int, ...],
    frame_shape: tuple[int, int],
    is_ome: bool,
    metadata: dict[str, Any],
) -> tuple[np.dtype, str]:
    """The frames' dtype, checked for a TIFF, and the file's description (OME-XML
    or JSON): what every layout is built from."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "uif" or dtype.byteorder == ">":
        raise ValueError(f"cannot write {dtype} frames to a TIFF")
    if is_ome:
        return dtype, ome_description(dtype, dims, sizes, frame_shape, metadata)
    return dtype, plain_description(dims, sizes, frame_shape)


@contextmanager
def created_exclusively(path: Path) -> Iterator[int]:
    """``path`` created exclusively (never overwrites) for its set-up writes; a
    failure there closes and removes it (it is ours) and propagates."""
    fd = fileio.open_binary(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        yield fd
    except BaseException:
        fileio.close(fd)
        fileio.unlink(path)
        raise


def create_tiff(
    path: Path,
    *,
    dtype: np.dtype,
    frame_shape: tuple[int, int],
    dims: str,
    sizes: tuple[int, ...],
    growing: bool,
    is_ome: bool,
    metadata: dict[str, Any],
) -> tuple[int, TiffLayout]:
    """Create ``path`` exclusively (never overwrites); return (fd, layout).

    A planned file gets its full IFD chain, before the frames (it reads as the
    planned shape while recording); a growing one only IFD0 until it is finished.
    The caller reserves the data's disk space.
    """
    dtype, description = checked_description(
        dtype, dims, sizes, frame_shape, is_ome, metadata
    )
    probe = TiffLayout(
        path.name, dtype.str, frame_shape, dims, sizes, growing, is_ome, 0, description
    )
    pages = 1 if growing else probe.planned_pages
    first_len = len(_first_block(probe, 16, description, 0)[0])
    chain_at = 16 + first_len  # IFD1.. follow IFD0's block, before the frames
    head_len = chain_at + max(pages - 1, 0) * _page_ifd_size(probe)
    offset = -(-head_len // _ALIGN) * _ALIGN
    layout = TiffLayout(
        path.name,
        dtype.str,
        tuple(frame_shape),  # type: ignore[arg-type]
        dims,
        tuple(sizes),
        growing,
        is_ome,
        offset,
        description,
        ifds_first=True,
    )
    first, _ = _first_block(layout, 16, description, None if pages > 1 else 0)
    with created_exclusively(path) as fd:
        fileio.pwrite_all(fd, _header(16) + first, 0)
        for at, block in _chain(layout, chain_at, 1, pages):
            fileio.pwrite_all(fd, block, at)
        if offset > head_len:  # written up to the frames: none lands past the data
            fileio.pwrite_all(fd, bytes(offset - head_len), head_len)
        # the frames' bytes exist (zeros) at once, without writing them
        fileio.set_size(fd, offset + pages * layout.frame_bytes)
    return fd, layout


def finish_exact(fd: int, layout: TiffLayout, pages: int) -> int:
    """Make the file hold exactly ``pages`` frames (crash-safe, idempotent).

    Returns the new file size. ``pages`` must be >= 1.
    """
    if pages < 1:
        raise ValueError("a TIFF needs at least one page")
    if not layout.growing and pages == layout.planned_pages:
        # the file was created like this; only the disk space reserved past its end
        # for a tail that was not needed is given back (setting the same size)
        end = layout.data_offset + pages * layout.frame_bytes
        if layout.ifds_first and os.fstat(fd).st_size >= end:
            fileio.set_size(fd, end)
            fileio.full_sync(fd)
            return end
        return os.fstat(fd).st_size
    at = layout.data_offset + pages * layout.frame_bytes
    desc = layout.final_description(pages)
    first, ifd0 = _first_block(layout, at, desc, 0 if pages == 1 else None)
    end = at + len(first)
    fileio.pwrite_all(fd, first, at)
    _pause("tail_started")
    for pos, block in _chain(layout, end, 1, pages):
        fileio.pwrite_all(fd, block, pos)
    end += (pages - 1) * _page_ifd_size(layout)
    return _commit_tail(fd, ifd0, end)


def _commit_tail(fd: int, ifd0: int, end: int) -> int:
    """The crash-safe end of finishing, shared by both layouts: the new page
    headers durable, then the header pointed at them, then the file cut to ``end``
    (each step synced, so a kill leaves the old file or the new one; §6)."""
    fileio.full_sync(fd)
    _pause("tail_synced")
    fileio.pwrite_all(fd, _header(ifd0), 0)
    fileio.full_sync(fd)
    _pause("switched")
    fileio.set_size(fd, end)
    fileio.full_sync(fd)
    _pause("truncated")
    return end


def _header(first_ifd: int) -> bytes:
    return b"II" + struct.pack("<HHHQ", 43, 8, 0, first_ifd)


def _pause(point: str) -> None:
    """Test hook: ``MESOFIELD_NAPARI_FINISH_PAUSE=<point>:<marker file>`` makes the
    finishing step stop at ``point`` (touching the marker) so a test can SIGKILL it
    there, or let it go on by deleting the marker. Unset in normal use."""
    spec = os.environ.get(_PAUSE_ENV)
    if not spec:
        return
    name, _, marker = spec.partition(":")
    if name != point:
        return
    held = Path(marker)
    held.write_text(point, encoding="utf-8")
    deadline = time.monotonic() + 60
    # bounded: the test kills us or deletes the marker long before
    while time.monotonic() < deadline and held.exists():
        time.sleep(0.05)


def pause_point(point: str) -> None:
    """The same test hook for steps outside this module (sidecar, journal)."""
    _pause(point)
