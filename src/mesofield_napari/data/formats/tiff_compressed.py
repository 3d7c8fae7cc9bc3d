"""Losslessly compressed BigTIFFs: strips appended in arrival order, headers at the end.

A compressed frame's size is only known once it is encoded, so these files are not
planned (``tiff_layout``) but *appended* (docs/design.md §5)::

    [header 16 B, first IFD = 0]  strip, strip, ... (frame order of arrival)
    at finish: [zero strip?][IFD0][description][software][IFD1 ... IFD(N-1)]

Each strip is one whole frame (RowsPerStrip = height) encoded with a TIFF codec:
deflate or zstd after the horizontal-differencing predictor (Predictor = 2), so
tifffile, libtiff and Bio-Formats/Fiji read the file as any other TIFF, or lossless
JPEG XL (Compression 50002, its own pixel prediction; tifffile and GDAL read it). The writer journals
each frame's line *after* its strip reached the OS, with the strip's ``[offset,
bytes]``: the journal is the strip index. While recording the header points at no
IFD (the file is not yet a TIFF); :func:`finish_compressed` writes the IFD chain past
the last strip, syncs, points the header at it, syncs, cuts the file, syncs -- the
steps of ``tiff_layout.finish_exact``, idempotent because the tail is a pure function
of the layout and the journaled strips, so :func:`recover_compressed` redoes it from
the journal after a crash. Pages are in storage order (``dims``); planes a run that
stopped early never acquired point at one shared strip of zeros, as an uncompressed
file keeps zeros there.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._platform import fileio
from .tiff_layout import (
    PREDICTED,
    TIFF_CODES,
    TiffLayout,
    _chain_ifd,
    _commit_tail,
    _first_block,
    _header,
    _page_ifd_size,
    _pause,
    checked_description,
    created_exclusively,
    tail_bound,
)

__all__ = [
    "CODECS",
    "StripIndex",
    "create_compressed_tiff",
    "decode_strip",
    "encode_frame",
    "finish_compressed",
    "parse_compression",
    "recover_compressed",
    "uses_predictor",
]


@dataclass(frozen=True)
class Codec:
    """A TIFF codec and the level we encode with (docs/design.md §5)."""

    name: str
    tiff_code: int
    level: int  # JPEG XL: the encoder's effort
    dtypes: str = "uint8 uint16 uint32 int8 int16 int32 float32 float64"


# On camera frames (benchmarks/bench_writers.py): level 1 deflate and level 3 zstd
# reach the same ratio (~0.55 with the predictor) at ~150-190 MB/s per core;
# deflate is read by every TIFF reader. Lossless JPEG XL at effort 1 (libjxl's fast
# lossless mode) models 16-bit pixels, not bytes: ~0.45 at ~900 MB/s per core.
CODECS = {
    "deflate": Codec("deflate", 8, 1),
    "zstd": Codec("zstd", 50000, 3),
    "jpegxl": Codec("jpegxl", 50002, 1, "uint8 uint16"),
}
_HEAD = 16  # strips start right after the 16-byte BigTIFF header


def parse_compression(value: Any) -> str:
    """The codec name for a user's option ("" = uncompressed); a clear error else."""
    if value is None or value is False:
        return ""
    text = str(value).strip().lower()
    if text in ("", "none", "off", "raw"):
        return ""
    if text not in CODECS:
        raise ValueError(
            f"unknown compression {value!r}: choose none, {', '.join(CODECS)}"
        )
    return text


_SCRATCH = threading.local()  # each compressor thread's buffer for the differences


def encode_frame(frame: np.ndarray, codec: str) -> bytes:
    """One frame as one compressed strip (thread-safe; imagecodecs drops the GIL)."""
    import imagecodecs

    data = np.ascontiguousarray(frame)
    spec = CODECS[codec]
    if codec == "jpegxl":
        # lossless; one thread each: the pool runs one encoder per core
        encoded = imagecodecs.jpegxl_encode(
            data, lossless=True, effort=spec.level, numthreads=1
        )
        return bytes(encoded)
    if data.dtype.kind in "ui":
        buf = getattr(_SCRATCH, "buf", None)
        if buf is None or buf.shape != data.shape or buf.dtype != data.dtype:
            buf = _SCRATCH.buf = np.empty_like(data)
        data = imagecodecs.delta_encode(data, axis=-1, out=buf)
    if codec == "zstd":
        return bytes(imagecodecs.zstd_encode(data, level=spec.level))  # type: ignore[arg-type, unused-ignore]  # imagecodecs' stub: any buffer is taken
    return bytes(imagecodecs.deflate_encode(data, level=spec.level))  # type: ignore[arg-type, unused-ignore]  # same


def decode_strip(data: bytes, layout: TiffLayout) -> np.ndarray:
    """The frame a strip of ``layout`` holds (the reader decodes its own way)."""
    return decode(data, layout.compression, np.dtype(layout.dtype), layout.frame_shape)


def decode(
    data: bytes, codec: str, dtype: np.dtype, shape: tuple[int, ...]
) -> np.ndarray:
    """Decode one strip of ``codec`` with the predictor to a ``shape`` frame."""
    import imagecodecs

    if codec == "jpegxl":
        image: np.ndarray = imagecodecs.jpegxl_decode(data, numthreads=1)
        if image.dtype != dtype or image.shape != tuple(shape):
            raise ValueError(
                f"a {image.dtype} {image.shape} image, not {dtype} {tuple(shape)}"
            )
        return image
    raw = (
        imagecodecs.zstd_decode(data)
        if codec == "zstd"
        else imagecodecs.deflate_decode(data)
    )
    frame: np.ndarray = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    if frame.dtype.kind in "ui":
        decoded: np.ndarray = np.empty_like(frame)
        imagecodecs.delta_decode(frame, axis=-1, out=decoded)
        return decoded
    copied: np.ndarray = frame.copy()  # a float frame: no predictor to undo
    return copied


class StripIndex:
    """Where each page's strip is: offset and bytes per storage index (-1: none).

    16 bytes per frame in memory (11 MB for 2 hours at 100 Hz), grown by doubling
    for until-Stop files; the end of the strips written so far is ``end``.
    """

    def __init__(self, pages: int = 16) -> None:
        self.offsets = np.full(max(pages, 1), -1, dtype=np.int64)
        self.counts = np.zeros(max(pages, 1), dtype=np.int64)
        self.end = _HEAD
        self.last_flat = -1

    def add(self, flat: int, offset: int, nbytes: int) -> None:
        if flat >= len(self.offsets):
            grow = max(flat + 1, 2 * len(self.offsets))
            self.offsets = np.concatenate(
                [self.offsets, np.full(grow - len(self.offsets), -1, np.int64)]
            )
            self.counts = np.concatenate(
                [self.counts, np.zeros(grow - len(self.counts), np.int64)]
            )
        self.offsets[flat] = offset
        self.counts[flat] = nbytes
        self.end = max(self.end, offset + nbytes)
        self.last_flat = max(self.last_flat, flat)


# ---------------------------------------------------------------- create / finish
def create_compressed_tiff(
    path: Path,
    *,
    dtype: np.dtype,
    frame_shape: tuple[int, int],
    dims: str,
    sizes: tuple[int, ...],
    growing: bool,
    is_ome: bool,
    metadata: dict[str, Any],
    compression: str,
) -> tuple[int, TiffLayout]:
    """Create ``path`` exclusively (never overwrites): the header, no IFD yet."""
    dtype, description = checked_description(
        dtype, dims, sizes, frame_shape, is_ome, metadata
    )
    if compression not in CODECS:
        raise ValueError(f"unknown compression {compression!r}")
    allowed = CODECS[compression].dtypes.split()
    if dtype.name not in allowed:
        raise ValueError(
            f"{compression} compresses {' and '.join(allowed)} frames, not "
            f"{dtype.name}: choose zstd or deflate"
        )
    layout = TiffLayout(
        path.name,
        dtype.str,
        tuple(frame_shape),  # type: ignore[arg-type]
        dims,
        tuple(sizes),
        growing,
        is_ome,
        _HEAD,
        description,
        ifds_first=False,
        compression=compression,
    )
    with created_exclusively(path) as fd:
        fileio.pwrite_all(fd, _header(0), 0)
    return fd, layout


def compressed_tail_bound(layout: TiffLayout, pages: int) -> int:
    """Bytes :func:`finish_compressed` may write past the strips (reserve ahead):
    the headers, and one strip of zeros (bounded by the raw frame plus slack)."""
    return tail_bound(layout, pages) + layout.frame_bytes + 4096


def finish_compressed(
    fd: int, layout: TiffLayout, index: StripIndex, pages: int
) -> int:
    """Write the IFD chain of ``pages`` pages past the strips and switch to it.

    Crash-safe and idempotent (module docstring). Returns the new file size.
    """
    if pages < 1:
        raise ValueError("a TIFF needs at least one page")
    offsets = index.offsets[:pages].copy()
    counts = index.counts[:pages].copy()
    if len(offsets) < pages:  # pages past the index: never acquired
        offsets = np.concatenate([offsets, np.full(pages - len(offsets), -1)])
        counts = np.concatenate([counts, np.zeros(pages - len(counts), np.int64)])
    at = _pad8(index.end)
    missing = offsets < 0
    if missing.any():
        zeros = np.zeros(layout.frame_shape, dtype=np.dtype(layout.dtype))
        strip = encode_frame(zeros, layout.compression)
        fileio.pwrite_all(fd, strip, at)
        offsets[missing], counts[missing] = at, len(strip)
        at = _pad8(at + len(strip))
    desc = layout.final_description(pages)
    first, ifd0 = _first_block(
        layout,
        at,
        desc,
        0 if pages == 1 else None,
        strip=(int(offsets[0]), int(counts[0])),
    )
    fileio.pwrite_all(fd, first, at)
    end = at + len(first)
    _pause("tail_started")
    size = _page_ifd_size(layout)
    batch = 4096
    for start in range(1, pages, batch):
        stop = min(start + batch, pages)
        blocks = []
        for page in range(start, stop):
            pos = end + (page - 1) * size
            nxt = pos + size if page + 1 < pages else 0
            blocks.append(
                _chain_ifd(layout, int(offsets[page]), int(counts[page]), nxt)
            )
        fileio.pwrite_all(fd, b"".join(blocks), end + (start - 1) * size)
    end += (pages - 1) * size
    return _commit_tail(fd, ifd0, end)


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


# ---------------------------------------------------------------- recovery
def strips_from_journal(
    journal: str | os.PathLike[str], position: str, layout: TiffLayout
) -> StripIndex:
    """The strip index of one position, from its journal's frame lines."""
    from .journal import iter_journal

    index = StripIndex(1 if layout.growing else layout.planned_pages)
    n = 0
    for kind, obj in iter_journal(journal):
        if kind != "frame" or str(obj.get("pos", "p0")) != position:
            continue
        strip = obj.get("strip")
        if not (isinstance(strip, list) and len(strip) == 2):
            continue
        flat = n
        if not layout.growing:
            event = obj["meta"].get("mda_event")
            try:
                flat = layout.flat_index(event if isinstance(event, dict) else {})
            except (ValueError, TypeError):
                flat = n
        index.add(flat, int(strip[0]), int(strip[1]))
        n += 1
    return index


def recover_compressed(
    path: Path, layout: TiffLayout, journal: Path, position: str
) -> str:
    """Finish a compressed file a killed process left, from its journal (a note)."""
    index = strips_from_journal(journal, position, layout)
    pages = layout.pages_for(index.last_flat)
    if pages < 1:
        return f"{layout.file}: no frame was written; file left as is"
    try:
        fd = fileio.open_binary(path, os.O_RDWR)
    except FileNotFoundError:
        return f"{layout.file} is missing; only its metadata was recovered"
    try:
        head = fileio.pread(fd, 8, 0)
        if head[:4] != b"II+\0" or os.fstat(fd).st_size < index.end:
            return f"{layout.file} is not the file journaled; left as is"
        finish_compressed(fd, layout, index, pages)
    finally:
        fileio.close(fd)
    return f"{layout.file}: {pages} frame(s)"


assert set(CODECS) <= set(TIFF_CODES) and set(CODECS) >= PREDICTED


def uses_predictor(codec: str, dtype: np.dtype) -> bool:
    """Whether a strip of ``codec`` holds horizontal differences (Predictor 2)."""
    return codec in PREDICTED and np.dtype(dtype).kind in "ui"
