"""Open a recording lazily, with its per-frame metadata (no Qt).

Opening is O(1) in file size: a TIFF written by ``CustomWriter`` is contiguous and
uncompressed, so its pixels are memory-mapped from the first page's data offset
(``TiffFile.series`` would walk every IFD — minutes for a long run); a compressed one
(``formats/tiff_compressed.py``) has its IFD chain read as one memory-mapped table
of strip offsets and sizes, and a frame is decoded only when it is read; a video is read
chunk by chunk by seeking a ``cv2.VideoCapture``. The number of frames comes from the
sidecar (or the journal of a crashed run), which trims the preallocated TIFF's tail of
never-written zero frames. Bad input gives warnings (what was ignored) or a clear
``ValueError``/``OSError`` naming the file — never a bare parser traceback. Only
regular files are opened (a FIFO or device named like a sidecar, notes file or video
is refused at once instead of blocking), and what is read from one metadata file is
bounded (``safe_open``).
"""

from __future__ import annotations

import json
import os
import re
import uuid
import warnings as _warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import short_reason
from ..formats.frameindex import (
    FrameIndex,
    NotAnObjectError,
    PositionIndex,
    load_entries,
    scan_journal,
    scan_sidecar,
)
from ..formats.names import (
    DATA_EXTENSIONS,
    VIDEO_EXTENSIONS,
    split_extension,
    with_name_suffix,
)
from ..formats.safe_open import (
    MAX_FILE_BYTES,
    check_regular,
    open_regular,
    read_text,
)
from ..formats.sidecar import (
    JOURNAL_SUFFIX,
    SIDECAR_SUFFIX,
    journal_path,
    recording_path,
    sidecar_path,
)
from ..manager.paths import is_processed

if TYPE_CHECKING:
    import dask.array as da

    from ..frame_timing import FrameTiming

__all__ = [
    "Recording",
    "RecordingWarning",
    "load_index",
    "open_recording",
    "open_run",
]

SidecarState = Literal["final", "journal", "corrupt", "missing"]
_CHUNK_BYTES = 32 * 2**20  # dask chunk target: a few frames of a large camera


class RecordingWarning(UserWarning):
    """Something in a recording was ignored (it is also listed in ``warnings``)."""


# ---------------------------------------------------------------- metadata
def load_index(data: Path) -> tuple[FrameIndex, SidecarState, list[str]]:
    """The frame index of a recording (its sidecar, else its journal), streaming:
    counts and clocks, no per-frame dicts; its state and what was ignored.

    Memory is ~16 bytes a frame however long the run (see ``frameindex``).
    """
    spath, jpath = sidecar_path(data), journal_path(data)
    notes: list[str] = []
    if spath.exists():
        try:
            return scan_sidecar(spath), "final", notes
        except NotAnObjectError:
            notes.append(f"sidecar {spath.name} does not hold a JSON object")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            notes.append(
                f"sidecar {spath.name} is not valid JSON ({short_reason(exc)})"
            )
        except OSError as exc:
            notes.append(f"cannot read sidecar {spath.name}: {_reason(exc, spath)}")
        if not jpath.exists():
            empty = FrameIndex(spath, "none")
            return empty, "corrupt", [*notes, "opened without frame metadata"]
        notes.append(f"using the journal {jpath.name} instead")
    if jpath.exists():
        try:
            index = scan_journal(jpath)
        except (OSError, ValueError, RecursionError) as exc:
            empty = FrameIndex(jpath, "none")
            why = _journal_problem(exc, jpath)
            return empty, "corrupt", [*notes, f"unreadable journal: {why}"]
        if index.bad_lines:
            notes.append(
                f"ignored {index.bad_lines} unreadable line(s) in {jpath.name}"
            )
        return index, "journal", notes
    return FrameIndex(spath, "none"), "missing", notes


def _journal_problem(exc: BaseException, jpath: Path) -> str:
    if isinstance(exc, OSError):
        return f"{jpath.name}: {_reason(exc, jpath)}"
    return short_reason(exc)


def _skipped_entries(index: FrameIndex, notes: list[str]) -> None:
    for key, pos in index.positions.items():
        if pos.skipped:
            notes.append(
                f"ignored {pos.skipped} non-object frame entr(ies) under {key!r}"
            )


# ---------------------------------------------------------------- pixel sources
@dataclass
class _Source:
    """One data file opened lazily: how many frames it holds and how to read them."""

    path: Path
    frames: int  # complete frames in the file
    frame_shape: tuple[int, ...]
    dtype: np.dtype
    to_dask: Callable[[int], da.Array]  # n frames -> lazy (n, *frame_shape)
    codec: str | None = None
    fps: float | None = None
    memmap: Callable[[int], np.memmap] | None = None  # n frames -> (n, *frame_shape)


def _chunk_frames(frame_shape: tuple[int, ...], dtype: np.dtype) -> int:
    nbytes = int(np.prod(frame_shape)) * dtype.itemsize
    return max(1, min(256, _CHUNK_BYTES // max(nbytes, 1)))


def _dask_name(path: Path) -> str:
    # never let dask tokenize (hash) a memmap or a video: that reads everything
    return f"mesofield-{path.name}-{uuid.uuid4().hex[:8]}"


def _open_tiff(path: Path, notes: list[str]) -> _Source:
    import tifffile

    try:
        with open_regular(path) as fh, tifffile.TiffFile(fh) as tf:
            page = tf.pages.first
            shape = tuple(int(d) for d in page.shape)  # odd types on bit flips
            dtype = np.dtype(page.dtype)
            bits = int(page.bitspersample)
            compressed = page.compression != 1
            offsets, counts = page.dataoffsets, page.databytecounts
            contiguous = (
                page.compression == 1
                and len(offsets) >= 1
                and all(
                    o == offsets[0] + sum(counts[:i]) for i, o in enumerate(offsets)
                )
            )
            declared = _declared_frames(page.description)
            second = _second_offset(tf) if contiguous and declared != 1 else None
            ours = compressed and page.software == "mesofield-napari"
            codec = _CODECS.get(int(page.compression))
            strips = (
                _strip_table(fh, int(page.offset), declared)
                if ours and codec and int(page.predictor) in (1, 2)
                else None
            )
            predictor = int(page.predictor) if ours else 1
    except OSError:
        raise
    except Exception as exc:  # tifffile raises struct.error, IndexError, ...
        raise ValueError(f"cannot read TIFF {path}: {short_reason(exc)}") from exc
    if bits not in (8, 16, 32, 64):
        # no camera writes these; a bit flip does (and imagecodecs would decode the
        # 16-bit pixels as packed 7-bit ones: plausible-looking garbage)
        raise ValueError(f"corrupt TIFF {path}: {bits}-bit samples")
    size = path.stat().st_size
    frame_bytes = _check_frame(path, shape, dtype, size, compressed)
    if contiguous and second is not None and second != offsets[0] + frame_bytes:
        contiguous = False
    if strips is not None and codec is not None:
        return _open_strips(
            path, shape, dtype, codec, predictor, strips, declared, notes
        )
    if not contiguous:
        return _open_tiff_zarr(path, notes)
    offset = int(offsets[0])
    in_file = max(0, (size - offset) // frame_bytes) if frame_bytes else 0
    frames = in_file if declared is None else min(declared, in_file)
    if declared is not None and in_file < declared:
        notes.append(
            f"{path.name} is truncated: {in_file} of {declared} frame(s) complete"
        )

    def memmap(n: int) -> np.memmap:
        check_regular(path)  # np.memmap opens the path again: never a FIFO
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(n, *shape))

    def to_dask(n: int) -> da.Array:
        import dask.array as da

        if n == 0:
            return da.zeros((0, *shape), dtype=dtype)
        chunks = (_chunk_frames(shape, dtype), *shape)
        return da.from_array(
            _MemmapFrames(memmap, n),
            chunks=chunks,
            name=_dask_name(path),
            asarray=False,
        )

    return _Source(path, frames, shape, dtype, to_dask, memmap=memmap)


def _check_frame(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, size: int, compressed: bool
) -> int:
    """Bytes of one frame, after checking the header's sizes against the file.

    Bit flips in an IFD give absurd sizes (ImageWidth 2**31: a 1 TiB frame) or empty
    ones; arrays built from them fail far from here (``MemoryError``,
    ``ZeroDivisionError`` in dask), so they are refused first, naming the file. An
    uncompressed frame cannot be larger than the file that holds it.
    """
    if not shape or any(int(d) <= 0 for d in shape) or dtype.itemsize == 0:
        raise ValueError(f"corrupt TIFF {path}: frame shape {shape} {dtype}")
    frame_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if not compressed and frame_bytes > size:
        raise ValueError(
            f"corrupt TIFF {path}: one {'x'.join(map(str, shape))} {dtype} frame "
            f"({frame_bytes} bytes) is larger than the file ({size} bytes)"
        )
    return frame_bytes


class _MemmapFrames:
    """A memory-mapped file as dask's array: each read maps, copies and unmaps.

    ``da.from_array`` copies array inputs that have a ``copy`` method (an
    ``np.memmap`` does), which reads the whole file at open: GBs of I/O and memory.
    Behind this minimal array protocol, only the chunks asked for are read. Nothing
    here holds the file: a map (an open file descriptor) lives only while a chunk is
    read, and the chunk returned is a copy — napari's chunk cache keeps results, and
    a view would keep every map (and file) a viewer ever showed open, even after its
    layer was deleted (one open TIFF per recorded run).
    """

    def __init__(self, memmap: Callable[[int], np.memmap], n: int) -> None:
        self._memmap = memmap
        self._n = n
        probe = memmap(n)
        self.shape: tuple[int, ...] = probe.shape
        self.dtype = probe.dtype
        self.ndim = probe.ndim
        del probe

    def __getitem__(self, key: Any) -> np.ndarray:
        mm = self._memmap(self._n)
        try:
            return np.array(mm[key], copy=True)
        finally:
            del mm


def _declared_frames(description: str) -> int | None:
    """Frames the file was allocated for, from the OME-XML or tifffile's JSON shape."""
    if not description:
        return None
    if "<OME" in description:
        sizes = {
            k: int(v) for k, v in re.findall(r'\bSize([TZC])="(\d+)"', description)
        }
        if sizes:
            return sizes.get("T", 1) * sizes.get("Z", 1) * sizes.get("C", 1)
        return None
    try:
        meta = json.loads(description)
        shape = [int(s) for s in meta["shape"]]
    except (ValueError, TypeError, KeyError):
        return None
    return int(np.prod(shape[:-2])) if len(shape) > 2 else 1


def _second_offset(tf: Any) -> int | None:
    """Data offset of page 2 (one extra IFD read), to confirm the layout is contiguous."""
    try:
        page = tf.pages[1]
    except Exception:  # truncated file: the trailing IFDs are gone
        return None
    offsets = getattr(page, "dataoffsets", None)
    return int(offsets[0]) if offsets else None


# what CustomWriter(compression=) writes
_CODECS = {8: "deflate", 50000: "zstd", 50002: "jpegxl"}
_ENTRY = np.dtype(
    [("code", "<u2"), ("type", "<u2"), ("count", "<u8"), ("value", "<u8")]
)


def _strip_table(fh: Any, ifd0: int, declared: int | None) -> np.ndarray | None:
    """``(pages, 2)`` strip offsets and sizes of a compressed file we wrote.

    Our tail is IFD0 then pages-1 IFDs of one size, back to back: IFD0 is read
    entry by entry, the rest is viewed as one structured array (a memory map: 16
    bytes a page are kept). None when the file is not laid out like that (it is
    then read through tifffile's zarr store).
    """
    import struct

    try:
        fh.seek(ifd0)
        (ntags,) = struct.unpack("<Q", fh.read(8))
        if not 0 < ntags < 64:
            return None
        tags = np.frombuffer(fh.read(20 * ntags), dtype=_ENTRY)
        (nxt,) = struct.unpack("<Q", fh.read(8))
        first = _strip_of(tags)
        if first is None:
            return None
        size = os.fstat(fh.fileno()).st_size
        if nxt == 0:
            return np.array([first], dtype=np.int64)
        fh.seek(nxt)
        (k,) = struct.unpack("<Q", fh.read(8))
        if not 0 < k < 64:
            return None
        ifd = np.dtype([("n", "<u8"), ("tags", _ENTRY, (k,)), ("next", "<u8")])
        count, rest = divmod(size - nxt, ifd.itemsize)
        if rest or (declared is not None and count + 1 != declared) or count < 1:
            return None
        chain = np.memmap(fh.name, dtype=ifd, mode="r", offset=nxt, shape=(count,))
        codes = chain["tags"]["code"][0]
        want = np.nonzero(codes == 273)[0], np.nonzero(codes == 279)[0]
        if not (len(want[0]) == 1 and len(want[1]) == 1):
            return None
        expected = nxt + ifd.itemsize * (np.arange(count, dtype=np.int64) + 1)
        expected[-1] = 0
        if not (
            np.all(chain["n"] == k)
            and np.array_equal(chain["next"].astype(np.int64), expected)
            and np.all(chain["tags"]["code"] == codes)
        ):
            return None
        table = np.empty((count + 1, 2), dtype=np.int64)
        table[0] = first
        table[1:, 0] = chain["tags"]["value"][:, want[0][0]]
        table[1:, 1] = chain["tags"]["value"][:, want[1][0]]
        del chain
    except (OSError, ValueError, struct.error):
        return None
    if np.any(table < 0) or np.any(table[:, 0] + table[:, 1] > size):
        return None
    return table


def _strip_of(tags: np.ndarray) -> tuple[int, int] | None:
    by_code = {int(t["code"]): t for t in tags}
    off, cnt, rows = by_code.get(273), by_code.get(279), by_code.get(277)
    if off is None or cnt is None or int(off["count"]) != 1 or int(cnt["count"]) != 1:
        return None
    if rows is not None and int(rows["value"]) != 1:
        return None  # not one sample per pixel
    return int(off["value"]), int(cnt["value"])


class _StripFrames:
    """Compressed frames as dask's array: a read decodes only the strips asked for."""

    def __init__(
        self,
        path: Path,
        table: np.ndarray,
        shape: tuple[int, ...],
        dtype: np.dtype,
        codec: str,
        predictor: int,
    ) -> None:
        self._path, self._table = path, table
        self._codec, self._predictor = codec, predictor
        self.shape: tuple[int, ...] = (len(table), *shape)
        self.dtype = dtype
        self.ndim = len(self.shape)

    def frames(self, which: range) -> np.ndarray:
        from ..formats.tiff_compressed import decode, uses_predictor

        if (self._predictor == 2) != uses_predictor(self._codec, self.dtype):
            raise ValueError(f"{self._path.name}: unexpected predictor")

        out = np.empty((len(which), *self.shape[1:]), dtype=self.dtype)
        with open_regular(self._path) as fh:
            for n, i in enumerate(which):
                offset, nbytes = (int(v) for v in self._table[i])
                fh.seek(offset)
                data = fh.read(nbytes)
                if len(data) != nbytes:
                    raise ValueError(f"{self._path.name}: frame {i} is truncated")
                try:
                    frame = decode(data, self._codec, self.dtype, self.shape[1:])
                except Exception as exc:  # imagecodecs errors, a short strip
                    raise ValueError(
                        f"{self._path.name}: frame {i} does not decode "
                        f"({short_reason(exc)})"
                    ) from exc
                out[n] = frame
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            index: tuple[Any, ...] = (0, *rest)
            return self.frames(range(self.shape[0])[first : int(first) + 1 or None])[
                index
            ]
        if isinstance(first, slice):
            index = (slice(None), *rest)
            return self.frames(range(self.shape[0])[first])[index]
        idx = np.arange(self.shape[0])[first]  # an index array: frame by frame
        block = np.empty((idx.size, *self.shape[1:]), dtype=self.dtype)
        for n, i in enumerate(idx.ravel()):
            block[n] = self.frames(range(int(i), int(i) + 1))[0]
        block = block.reshape((*idx.shape, *self.shape[1:]))
        index = (*(slice(None),) * idx.ndim, *rest)
        return block[index]


def _open_strips(
    path: Path,
    shape: tuple[int, ...],
    dtype: np.dtype,
    codec: str,
    predictor: int,
    table: np.ndarray,
    declared: int | None,
    notes: list[str],
) -> _Source:
    frames = len(table) if declared is None else min(declared, len(table))
    reader = _StripFrames(path, table[:frames], shape, dtype, codec, predictor)

    def to_dask(n: int) -> da.Array:
        import dask.array as da

        if n == 0:
            return da.zeros((0, *shape), dtype=dtype)
        sub = (
            reader
            if n == frames
            else _StripFrames(path, table[:n], shape, dtype, codec, predictor)
        )
        return da.from_array(
            sub,
            chunks=(_chunk_frames(shape, dtype), *shape),
            name=_dask_name(path),
            asarray=False,
        )

    return _Source(path, frames, shape, dtype, to_dask, codec=codec)


def _open_tiff_zarr(path: Path, notes: list[str]) -> _Source:
    """Compressed or scattered TIFFs (not ours): through tifffile's zarr store."""
    import dask.array as da
    import tifffile
    import zarr

    store = None
    try:
        store = tifffile.imread(path, aszarr=True)
        z = zarr.open(store, mode="r")
        # the store holds the file open: close it when the last array using it goes
        weakref.finalize(z, store.close)
        arr = da.from_zarr(z)
        if arr.ndim < 2 or 0 in arr.shape:
            raise ValueError(f"empty image of shape {arr.shape}")
        frame_shape = tuple(int(d) for d in arr.shape[-2:])
        _check_frame(path, frame_shape, np.dtype(arr.dtype), 1 << 62, compressed=True)
        if arr.ndim < 3:
            arr = arr[None]
        arr = arr.reshape((-1, *frame_shape))
    except Exception as exc:  # zarr/dask/tifffile on a corrupt file: anything
        if store is not None:
            store.close()
        if isinstance(exc, OSError):
            raise
        raise ValueError(f"cannot read TIFF {path}: {short_reason(exc)}") from exc
    notes.append(f"{path.name} is not contiguous; read through zarr (slower)")
    return _Source(
        path, int(arr.shape[0]), tuple(arr.shape[1:]), arr.dtype, lambda n: arr[:n]
    )


def _fourcc(code: float) -> str:
    c = int(code)
    return "".join(chr((c >> 8 * i) & 0xFF) for i in range(4)).strip("\0 ")


class _VideoFrames:
    """Array-like over a video: each slice opens a capture, seeks and decodes."""

    def __init__(self, path: Path, n: int, shape: tuple[int, ...], gray: bool) -> None:
        self.path, self.gray = path, gray
        self.shape = (n, *shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)
        self._timeline: Any = None  # H.264: frame-exact seeking by timestamp

    def _read(self, wanted: range) -> list[np.ndarray] | None:
        """Frames through the H.264 timeline (None: not H.264, use OpenCV)."""
        from .video_seek import open_timeline

        if self._timeline is None:
            self._timeline = open_timeline(self.path) or False
        if self._timeline is False:
            return None
        return self._timeline.read(wanted, self.gray)

    def __getitem__(self, key: Any) -> np.ndarray:
        import cv2

        key = key if isinstance(key, tuple) else (key,)
        first = key[0] if key else slice(None)
        if isinstance(first, (int, np.integer)):
            first = slice(int(first), int(first) + 1)
            squeeze = True
        else:
            squeeze = False
        start, stop, step = first.indices(self.shape[0])
        wanted = range(start, stop, step)
        out = np.zeros((len(wanted), *self.shape[1:]), dtype=np.uint8)
        if len(wanted):
            check_regular(self.path)  # OpenCV would block on a FIFO
        decoded = self._read(wanted) if len(wanted) else None
        if decoded is not None:
            for i, frame in enumerate(decoded):
                out[i] = frame
        elif len(wanted):
            cap = cv2.VideoCapture(os.fspath(self.path))
            try:
                cap.set(cv2.CAP_PROP_POS_FRAMES, start)
                pos = start
                for i, target in enumerate(wanted):
                    while pos <= target:
                        ok, frame = cap.read()
                        pos += 1
                        if not ok:
                            raise OSError(
                                f"cannot decode frame {target} of {self.path.name}"
                            )
                    out[i] = frame[..., 0] if self.gray else frame[..., ::-1]
            finally:
                cap.release()
        if squeeze:
            out = out[0]
        return out[key[1:]] if len(key) > 1 else out


def _open_video(path: Path, notes: list[str]) -> _Source:
    import cv2

    from ..writer.codecs import quiet_opencv

    check_regular(path)  # OpenCV would block on a FIFO
    with quiet_opencv():
        cap = cv2.VideoCapture(os.fspath(path))
    try:
        if not cap.isOpened():
            raise OSError(f"cannot open video {path} (OpenCV could not read it)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or None
        codec = _fourcc(cap.get(cv2.CAP_PROP_FOURCC)) or None
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        raise OSError(f"cannot decode video {path} (no readable frame)")
    gray = frame.ndim == 2 or bool(np.ptp(frame.astype(np.int16), axis=-1).max() <= 2)
    shape = tuple(frame.shape[:2]) if gray else tuple(frame.shape)
    n = max(n, 1)

    def to_dask(count: int) -> da.Array:
        import dask.array as da

        frames = _VideoFrames(path, count, shape, gray)
        chunks = (_chunk_frames(shape, frames.dtype), *shape)
        meta = np.empty((0,) * len(frames.shape), dtype=np.uint8)
        return da.from_array(
            frames, chunks=chunks, name=_dask_name(path), asarray=False, meta=meta
        )

    return _Source(path, n, shape, np.dtype(np.uint8), to_dask, codec, fps)


def _open_source(path: Path, notes: list[str]) -> _Source:
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    check_regular(path)  # a FIFO or device: refused now, never opened
    if path.name.lower().endswith(VIDEO_EXTENSIONS):
        return _open_video(path, notes)
    return _open_tiff(path, notes)


# ---------------------------------------------------------------- Recording
@dataclass(repr=False)
class Recording:
    """One recording (one sidecar): its positions, lazy pixels and frame metadata.

    ``path`` is the data file the sidecar is named after (for a multi-position run,
    the base name; each position's file is in ``files``). Per-frame metadata is kept
    as counts and clocks (``index``); whole frame dicts are read on demand by
    :meth:`metadata_for`, so opening a long run costs ~16 bytes a frame.
    """

    path: Path
    kind: Literal["tiff", "video"]
    sidecar_state: SidecarState
    files: dict[str, Path]
    index: FrameIndex
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _sources: dict[str, _Source] = field(default_factory=dict)
    _frames: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Recording({os.fspath(self.path)!r}, kind={self.kind!r}, "
            f"frames={self._frames!r}, sidecar={self.sidecar_state!r}"
            + (f", warnings={len(self.warnings)}" if self.warnings else "")
            + ")"
        )

    @property
    def extra(self) -> dict[str, Any]:
        """The sidecar's top-level values other than frame lists (fps, codec...)."""
        return self.index.extra

    # -------------------------------------------------------- per position
    @property
    def positions(self) -> list[str]:
        return list(self.files)

    def frames_for(self, position: str | None = None) -> int:
        """Frames written (sidecar count, clamped to the complete frames on disk)."""
        return self._frames[self._key(position)]

    def data_for(self, position: str | None = None) -> da.Array:
        """Lazy ``(frames, y, x[, rgb])`` dask array; nothing is read until computed."""
        key = self._key(position)
        return self._sources[key].to_dask(self._frames[key])

    def frame_block(
        self, start: int, stop: int, position: str | None = None
    ) -> np.ndarray:
        """Frames ``start:stop`` (clamped to the frames written) as a NumPy array.

        For a memory-mapped TIFF this is a read-only view of a fresh memory map: no
        copy, and the pages are unmapped once the caller drops the block (so reading a
        long file block by block keeps memory bounded). Other sources are read now.
        """
        key = self._key(position)
        n = self._frames[key]
        start, stop, _ = slice(start, stop).indices(n)
        source = self._sources[key]
        if source.memmap is not None and n:
            return source.memmap(n)[start:stop]
        arr = source.to_dask(n)[start:stop]
        return np.asarray(arr.compute(scheduler="synchronous"))

    def metadata_for(self, position: str | None = None) -> list[dict[str, Any]]:
        """The frame dicts of the frames written, read from the sidecar/journal now.

        Costs memory per frame: what only needs times or counts should use
        :meth:`timestamps_for` / :meth:`frames_for`.
        """
        key = self._key(position)
        return load_entries(self.index, key, self._frames[key])

    def timestamps_for(self, position: str | None = None) -> np.ndarray:
        """Seconds from the first frame (runner_time_ms, else ElapsedTime-ms)."""
        pos = self._position_index(position)
        if pos is None:
            return np.zeros(0, dtype=float)
        t = pos.times_ms[: self.frames_for(position)] / 1000.0
        return t - t[0] if t.size and np.isfinite(t[0]) else t

    def image_numbers_for(self, position: str | None = None) -> np.ndarray:
        """The camera's ImageNumber per frame written (``NO_NUMBER`` where none)."""
        pos = self._position_index(position)
        if pos is None:
            return np.zeros(0, dtype=np.int64)
        return pos.image_numbers[: self.frames_for(position)]

    def _position_index(self, position: str | None) -> PositionIndex | None:
        return self.index.positions.get(self._key(position))

    def _first_entry(self) -> dict[str, Any]:
        pos = self._position_index(None)
        if pos is None or not self.frames or pos.first is None:
            return {}
        return pos.first

    def _key(self, position: str | None) -> str:
        if position is None:
            return self.positions[0]
        if position not in self.files:
            raise KeyError(f"{self.path.name} has no position {position!r}")
        return position

    # -------------------------------------------------------- first position
    @property
    def frames(self) -> int:
        return self.frames_for()

    @property
    def data(self) -> da.Array:
        return self.data_for()

    @property
    def metadata(self) -> list[dict[str, Any]]:
        return self.metadata_for()

    @property
    def timestamps_s(self) -> np.ndarray:
        return self.timestamps_for()

    @property
    def shape(self) -> tuple[int, ...]:
        src = self._sources[self.positions[0]]
        return (self.frames, *src.frame_shape)

    @property
    def dtype(self) -> np.dtype:
        return self._sources[self.positions[0]].dtype

    @property
    def fps(self) -> float | None:
        """Mean frame rate from the frame clock; else what the video/sidecar says."""
        t = self.timestamps_s
        if t.size > 1 and np.isfinite(t[-1]) and t[-1] > 0:
            return float((t.size - 1) / t[-1])
        for value in (self.extra.get("fps"), self._sources[self.positions[0]].fps):
            if isinstance(value, (int, float)) and np.isfinite(value) and value > 0:
                return float(value)
        return None

    @property
    def dropped_frames(self) -> int:
        """Missing frames (ImageNumber gaps) of the first position; see :attr:`timing`."""
        return self.timing.missing

    @property
    def timing(self) -> FrameTiming:
        """Rate, missing and late frames of the first position (:mod:`.frame_timing`)."""
        return self.timing_for()

    def timing_for(self, position: str | None = None) -> FrameTiming:
        from ..frame_timing import frame_timing

        return frame_timing(
            self.image_numbers_for(position), self.timestamps_for(position)
        )

    @property
    def codec(self) -> str | None:
        """The codec the writer recorded (sidecar), else what the file says."""
        for value in (
            self.extra.get("codec"),
            self._first_entry().get("video_codec"),
            self._sources[self.positions[0]].codec,
        ):
            if isinstance(value, str) and value:
                return value
        return None

    @property
    def compression(self) -> str | None:
        """A TIFF's lossless codec (``deflate``, ``zstd``); None when uncompressed."""
        if self.kind != "tiff":
            return None
        return self._sources[self.positions[0]].codec

    @property
    def size_ratio(self) -> float | None:
        """Bytes of the data files over the raw bytes of the frames they hold."""
        raw = sum(
            self._frames[k]
            * int(np.prod(src.frame_shape, dtype=np.int64))
            * src.dtype.itemsize
            for k, src in self._sources.items()
        )
        if not raw:
            return None
        disk = sum(path.stat().st_size for path in set(self.files.values()))
        return disk / raw

    @property
    def pixel_size_um(self) -> float | None:
        value = self._first_entry().get("pixel_size_um")
        if isinstance(value, (int, float)) and np.isfinite(value) and value > 0:
            return float(value)
        return None

    def position_name(self, position: str | None = None) -> str:
        """A short label: the camera part of the file name (+ position if several)."""
        key = self._key(position)
        name = split_extension(self.path.name)[0]
        label = name.rsplit("_", 1)[-1] if "_task-" in name else name
        ext = split_extension(self.path.name)[1].lstrip(".").split(".")[-1]
        label = f"{label} ({ext})"
        return f"{label} {key}" if len(self.files) > 1 else label


def split_position_file(path: Path) -> tuple[Path, str] | None:
    """``x_p1.ome.tiff`` -> (``x.ome.tiff``, ``p1``) when that base has metadata."""
    stem, ext = split_extension(path)
    if "_" not in Path(stem).name:
        return None
    base_stem, key = stem.rsplit("_", 1)
    base = Path(base_stem + ext)
    if sidecar_path(base).exists() or journal_path(base).exists():
        return base, key
    return None


NOTES_SUFFIX = "_notes.txt"


def run_notes_files(data: Path) -> list[Path]:
    """The notes file(s) of ``data``'s own run, never those of other runs.

    A run's files share the prefix ``<stamp>_sub-X_ses-Y_task-Z``: the notes are
    ``<prefix>_notes.txt`` in the session folder, the data ``func/<prefix>_<camera>``.
    A session folder holds every run of that session, so matching ``*_notes.txt``
    alone would show each recording the notes of all runs.
    """
    folder = data.parent
    if folder.name not in ("func", "beh"):
        return []
    name, best = data.name, []
    for p in folder.parent.glob(f"*{NOTES_SUFFIX}"):
        prefix = p.name[: -len(NOTES_SUFFIX)]
        if prefix and name.startswith(prefix + "_"):
            best.append(p)
    if not best:
        return []
    longest = max(len(p.name) for p in best)  # the most specific prefix wins
    return sorted(p for p in best if len(p.name) == longest)


def read_notes(paths: list[Path], problems: list[str] | None = None) -> list[str]:
    """Non-blank lines of notes files (undecodable bytes replaced).

    A notes file that cannot be read — missing, a FIFO or device, larger than
    ``MAX_FILE_BYTES`` (e.g. a link to ``/dev/zero``) — is skipped, and said so in
    ``problems`` when given.
    """
    lines: list[str] = []
    for p in paths:
        try:
            text = read_text(p, MAX_FILE_BYTES, errors="replace")
        except OSError as exc:
            if problems is not None:
                problems.append(f"cannot read notes {p.name}: {_reason(exc, p)}")
            continue
        lines.extend(line for line in text.splitlines() if line.strip())
    return lines


def _reason(exc: OSError, path: Path) -> str:
    """The error without the path it starts with (the caller names the file)."""
    text = str(exc.strerror or exc)
    prefix = f"{os.fspath(path)}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def run_notes(data: Path, problems: list[str] | None = None) -> list[str]:
    """The notes of the run ``data`` belongs to."""
    return read_notes(run_notes_files(data), problems)


def open_recording(path: str | os.PathLike[str]) -> Recording:
    """Open a data file, its sidecar or its journal lazily.

    Raises ``FileNotFoundError`` when the data file is missing, ``ValueError`` for an
    unreadable TIFF and ``OSError`` for an unreadable video; lesser problems become
    ``warnings`` (also emitted as :class:`RecordingWarning`).
    """
    given = Path(path)
    if given.is_dir():
        raise IsADirectoryError(f"{given} is a folder; use open_run()")
    data = recording_path(given)
    only: str | None = None
    has_meta = sidecar_path(data).exists() or journal_path(data).exists()
    if not has_meta and (split := split_position_file(data)) is not None:
        data, only = split
    if not data.name.lower().endswith(DATA_EXTENSIONS):
        raise ValueError(f"not a recording (unknown file type): {given}")
    rec = _build(data, only)
    if rec.warnings:  # one warning per recording: easy to catch or filter
        text = "; ".join(rec.warnings)
        _warnings.warn(f"{data.name}: {text}", RecordingWarning, stacklevel=2)
    return rec


def _build(data: Path, only: str | None) -> Recording:
    notes: list[str] = []
    index, state, meta_notes = load_index(data)
    notes.extend(meta_notes)
    _skipped_entries(index, notes)
    counts = index.counts
    files = _position_files(data, list(counts), notes)
    if only is not None:
        files = {only: files[only]} if only in files else {}
    if not files:
        raise FileNotFoundError(f"data file not found: {data}")
    sources = {key: _open_source(p, notes) for key, p in files.items()}
    frames: dict[str, int] = {}
    for key, src in sources.items():
        written = counts.get(key)
        if written is None:
            frames[key] = src.frames
        elif written > src.frames:
            notes.append(
                f"sidecar lists {written} frame(s) under {key!r} but "
                f"{src.path.name} holds {src.frames}; showing {src.frames}"
            )
            frames[key] = src.frames
        else:
            frames[key] = written
    kind: Literal["tiff", "video"] = (
        "video" if data.name.lower().endswith(VIDEO_EXTENSIONS) else "tiff"
    )
    return Recording(
        path=data,
        kind=kind,
        sidecar_state=state,
        files=files,
        index=index,
        notes=run_notes(data, notes),
        warnings=notes,
        _sources=sources,
        _frames=frames,
    )


def _position_files(data: Path, keys: list[str], notes: list[str]) -> dict[str, Path]:
    """Which file holds each position: ``x_<key>.ext`` if present, else ``x.ext``."""
    unsafe = [k for k in keys if not k or any(c in k for c in "/\\\0")]
    if unsafe:  # a key must not lead to another folder (or a bad path)
        notes.append(f"ignored {len(unsafe)} position key(s) that are not file names")
        keys = [k for k in keys if k not in unsafe]
    per_key = {k: with_name_suffix(data, f"_{k}") for k in keys}
    found = {k: p for k, p in per_key.items() if p.exists()}
    if found:
        missing = sorted(set(keys) - set(found))
        if missing:
            notes.append(f"no data file for position(s) {', '.join(missing)}")
        return found
    if not data.exists():
        return {}
    if len(keys) > 1:
        notes.append(f"ignored metadata of position(s) {', '.join(keys[1:])}")
    return {keys[0] if keys else "p0": data}


def find_recording_paths(folder: str | os.PathLike[str]) -> list[Path]:
    """Each recording in ``folder`` (recursively) once, by its base data path.

    ``processed/`` folders (batch-export outputs: traces, videos) are skipped: they
    hold derived files, not recordings. Opening a ``processed`` folder itself still
    finds what is in it.
    """
    found: dict[Path, None] = {}
    folder = Path(folder)
    for p in sorted(folder.rglob("*")):
        name = p.name
        if name.startswith(".") or is_processed(p, folder) or not p.is_file():
            continue
        if name.endswith((SIDECAR_SUFFIX, JOURNAL_SUFFIX)):
            found.setdefault(recording_path(p))
        elif name.lower().endswith(DATA_EXTENSIONS):
            has = sidecar_path(p).exists() or journal_path(p).exists()
            if has or split_position_file(p) is None:
                found.setdefault(p)
    return list(found)


def open_run(folder: str | os.PathLike[str]) -> list[Recording]:
    """All recordings in a run folder (found recursively), in path order.

    A recording that cannot be opened is skipped with a :class:`RecordingWarning`;
    a folder without any readable recording raises ``FileNotFoundError``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    out: list[Recording] = []
    for p in find_recording_paths(folder):
        try:
            out.append(open_recording(p))
        except (OSError, ValueError) as exc:
            _warnings.warn(f"skipped {p.name}: {exc}", RecordingWarning, stacklevel=2)
    if not out:
        raise FileNotFoundError(f"no readable recordings in {folder}")
    return out
