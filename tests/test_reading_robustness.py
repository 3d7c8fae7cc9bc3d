"""The reading side reports what is on disk and readable (issue 10, reading half).

Corrupt TIFF headers, a run folder with bad files in it, notes of other runs,
``processed/`` exports, 0-byte / half-written files, sidecars that list more than the
file holds, and metadata memory that must not grow with Python objects per frame.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesofield_napari._reader import read_recordings
from mesofield_napari.acquisition.timelapse import record, timelapse
from mesofield_napari.cli import main
from mesofield_napari.data import CV2Writer, journal_path, open_recording, sidecar_path
from mesofield_napari.data.formats.frameindex import (
    NO_NUMBER,
    scan_journal,
    scan_sidecar,
)
from mesofield_napari.data.manager.run_manager import RunManager
from mesofield_napari.data.reader.recording import (
    RecordingWarning,
    find_recording_paths,
    open_run,
)
from mesofield_napari.data.reader.summary import (
    find_recordings,
    frame_entries,
    frame_times_s,
    summarize_recording,
    summarize_run,
)

if TYPE_CHECKING:
    from pymmcore_plus.experimental.unicore import UniMMCore

N, H, W = 6, 24, 32


def _tiff(path: Path, frames: int = N, entries: list[Any] | None = None) -> Path:
    """A small real OME-TIFF (contiguous, like CustomWriter's) and its sidecar."""
    stack = np.arange(frames * H * W, dtype=np.uint16).reshape(frames, H, W) + 1
    tifffile.imwrite(path, stack, bigtiff=True, contiguous=True, ome=True)
    if entries is None:
        entries = [{"runner_time_ms": 10.0 * i} for i in range(frames)]
    sidecar_path(path).write_text(json.dumps({"p0": entries}), encoding="utf-8")
    return path


def _patch_tag(path: Path, tag: str, value: int) -> None:
    """Overwrite one tag of the first IFD in place (what a bit flip there does)."""
    with tifffile.TiffFile(path, mode="r+b") as tf:
        t = tf.pages.first.tags[tag]
        t.overwrite(value if t.count == 1 else [value] * t.count)


# ---------------------------------------------------------------- 1. corrupt TIFFs
# (tag, value, error-class on the code before the fix)
HEADER_CASES = [
    ("ImageWidth", 2**31),  # a 96 GiB frame: MemoryError
    ("ImageLength", 2**31),
    ("ImageWidth", 0),  # an empty frame: ZeroDivisionError in the reshape
    ("ImageLength", 0),
    # decoded as packed 7-bit samples once imagecodecs is installed (garbage that
    # looks like pixels); NotImplementedError without it: refused at open either way
    ("BitsPerSample", 7),
]
PIXEL_CASES = [  # the header parses; reading pixels fails (was: in contrast limits)
    ("ImageLength", 25),  # KeyError from tifffile
    ("ImageWidth", 33),
    ("BitsPerSample", 32),
    ("SamplesPerPixel", 3),
    ("Compression", 8),  # zlib.error
]


@pytest.mark.parametrize(("tag", "value"), HEADER_CASES)
def test_absurd_header_sizes_are_a_clear_error(
    tmp_path: Path, tag: str, value: int
) -> None:
    path = _tiff(tmp_path / "cam.ome.tiff")
    _patch_tag(path, tag, value)
    with pytest.raises(ValueError, match=r"corrupt TIFF .*cam\.ome\.tiff"):
        open_recording(path)
    with pytest.raises(ValueError, match=r"cam\.ome\.tiff"):
        read_recordings(path)  # the npe2 reader


@pytest.mark.parametrize(("tag", "value"), PIXEL_CASES)
def test_unreadable_pixels_are_a_clear_error(
    tmp_path: Path, tag: str, value: int
) -> None:
    path = _tiff(tmp_path / "cam.ome.tiff")
    _patch_tag(path, tag, value)
    with (
        pytest.warns(RecordingWarning, match="cam.ome.tiff"),
        pytest.raises(ValueError, match=r"cannot read the pixels of .*cam\.ome"),
    ):
        read_recordings(path)


def test_folder_with_corrupt_files_still_opens(tmp_path: Path) -> None:
    good = _tiff(tmp_path / "good.ome.tiff")
    for i, (tag, value) in enumerate(HEADER_CASES + PIXEL_CASES):
        _patch_tag(_tiff(tmp_path / f"bad{i:02d}.ome.tiff"), tag, value)
    with pytest.warns(RecordingWarning) as caught:
        layers = read_recordings(tmp_path)
    assert [ly[1]["metadata"]["mesofield"]["source"] for ly in layers] == [str(good)]
    data, kwargs, _ = layers[0]
    np.testing.assert_array_equal(np.asarray(data), tifffile.imread(good))
    assert kwargs["contrast_limits"] == (1, N * H * W)
    named = " ".join(str(w.message) for w in caught)
    for i in range(len(HEADER_CASES + PIXEL_CASES)):
        assert f"bad{i:02d}.ome.tiff" in named  # each bad file is named once


def test_partly_readable_file_loads_without_contrast_limits(tmp_path: Path) -> None:
    """Frame 0 reads, a later sampled frame does not: the layer stays, no limits."""
    path = tmp_path / "cam.ome.tiff"
    stack = np.ones((N, H, W), np.uint16)
    tifffile.imwrite(path, stack, compression="zlib", tile=(16, 16))
    sidecar_path(path).write_text(json.dumps({"p0": [{}] * N}))
    with tifffile.TiffFile(path) as tf:
        offset = tf.pages[N - 1].dataoffsets[0]
    with open(path, "r+b") as fh:  # garbage instead of the last frame's zlib stream
        fh.seek(offset)
        fh.write(b"\xff" * 8)
    with pytest.warns(RecordingWarning) as caught:
        (layer,) = read_recordings(path)
    assert any("no contrast limits" in str(w.message) for w in caught)
    assert "contrast_limits" not in layer[1]
    assert (np.asarray(layer[0][0]) == 1).all()


# ---------------------------------------------------------------- 2. notes
def _run(core: UniMMCore, root: Path, note: str, frames: int = 3) -> RunManager:
    run = RunManager(root, "m1", 1, "wf").start()
    run.add_note(note)
    assert record(core, [run.writer_for("meso", "tiff")], timelapse(frames)).ok
    run.stop()
    return run


def test_notes_belong_to_their_own_run(sim_core: UniMMCore, tmp_path: Path) -> None:
    first = _run(sim_core, tmp_path, "first run")
    second = _run(sim_core, tmp_path, "second run")
    assert first.run_dir == second.run_dir  # one session folder, two runs
    recs = open_run(first.run_dir)
    assert len(recs) == 2
    seen = sorted(note.split(": ", 1)[1] for r in recs for note in r.notes)
    assert seen == ["first run", "second run"]  # one note each, not both each
    for r in recs:
        assert len(r.notes) == 1
    summary = summarize_run(first.run_dir)
    assert sorted(r["notes"][0].split(": ", 1)[1] for r in summary["recordings"]) == [
        "first run",
        "second run",
    ]
    assert all(len(r["notes"]) == 1 for r in summary["recordings"])


# ---------------------------------------------------------------- 3. processed/
def test_processed_outputs_are_not_recordings(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    run = _run(sim_core, tmp_path, "x")
    exports = [
        run.run_dir / "processed",  # where batch exports write today
        tmp_path / "processed" / "sub-m1" / "ses-01",  # <experiment>/processed/...
    ]
    for folder in exports:
        folder.mkdir(parents=True)
        w = CV2Writer(folder / "export.avi", fps=10, fourcc="MJPG")
        w.begin(W, H, is_color=False)
        for _ in range(2):
            w.add_frame(np.zeros((H, W), np.uint8))
        w.finish({})
        _tiff(folder / "montage.ome.tiff")
    for root in (run.run_dir, tmp_path):
        (found,) = find_recording_paths(root)
        assert found.name.endswith("_meso.ome.tiff")
        assert find_recordings(root) == [found]
        assert [r.path for r in open_run(root)] == [found]
        assert [r["path"] for r in summarize_run(root)["recordings"]] == [str(found)]
    # the processed folder itself still opens
    assert len(find_recording_paths(exports[0])) == 2


# ---------------------------------------------------------------- 4. inspect truth
def test_zero_byte_tiff_is_not_complete(tmp_path: Path) -> None:
    path = _tiff(tmp_path / "cam.ome.tiff")
    path.write_bytes(b"")
    s = summarize_recording(path)
    assert (s["frames"], s["frames_listed"], s["complete"]) == (0, N, False)
    assert any("cam.ome.tiff" in p for p in s["problems"])


def _mp4(core: UniMMCore, path: Path, frames: int = 5) -> Path:
    w = CV2Writer(path, fps=20, fourcc="mp4v", bit_depth=12)
    assert record(core, [w], timelapse(frames)).ok
    return path


@pytest.mark.parametrize("cut", ["half", "no-moov"])
def test_half_written_mp4_has_no_readable_frames(
    sim_core: UniMMCore, tmp_path: Path, cut: str
) -> None:
    path = _mp4(sim_core, tmp_path / "beh.mp4")
    raw = path.read_bytes()
    moov = raw.rfind(b"moov") - 4
    assert moov > 0
    path.write_bytes(raw[: len(raw) // 2] if cut == "half" else raw[:moov])
    s = summarize_recording(path)
    assert (s["frames"], s["frames_listed"], s["complete"]) == (0, 5, False)
    assert any("beh.mp4" in p for p in s["problems"])
    assert s["codec"] == "mp4v"  # what the writer recorded in the sidecar


def test_complete_mp4_reports_the_sidecar_codec(
    sim_core: UniMMCore, tmp_path: Path
) -> None:
    path = _mp4(sim_core, tmp_path / "beh.mp4")
    s = summarize_recording(path)
    assert (s["frames"], s["codec"], s["complete"], s["problems"]) == (
        5,
        "mp4v",  # not OpenCV's decoder name "FMP4"
        True,
        [],
    )


def test_sidecar_listing_more_frames_than_the_file(tmp_path: Path) -> None:
    listed = 20_000  # a 6-frame file whose sidecar claims far more
    path = _tiff(tmp_path / "cam.ome.tiff", entries=[{}] * listed)
    s = summarize_recording(path)
    assert (s["frames"], s["frames_listed"], s["complete"]) == (N, listed, False)
    assert any(f"lists {listed}" in p for p in s["problems"])
    run = summarize_run(tmp_path)
    assert (run["frames"], run["complete"]) == (N, False)


def test_cli_inspect_prints_the_problems(tmp_path: Path, capsys: Any) -> None:
    path = _tiff(tmp_path / "cam.ome.tiff")
    path.write_bytes(b"")
    assert main(["inspect", str(path)]) == 2  # an unreadable file is not complete
    out = capsys.readouterr().out
    assert "complete: False" in out
    assert "problem: " in out and "cam.ome.tiff" in out.split("problem: ", 1)[1]


# ---------------------------------------------------------------- 5. bounded memory
def _write_sidecar(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"p0": [')
        for i in range(n):
            entry = {
                "runner_time_ms": 10.0 * i,
                "camera_device": "MesoCam",
                "camera_metadata": {"ImageNumber": str(i), "ElapsedTime-ms": "1.0"},
            }
            fh.write((", " if i else "") + json.dumps(entry))
        fh.write("]}")


def _write_journal(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"format":"mesofield-frame-journal","version":1,"mode":"mda"}\n')
        for i in range(n):
            meta = {"runner_time_ms": 10.0 * i, "camera_metadata": {"ImageNumber": i}}
            fh.write(json.dumps({"meta": meta, "pos": "p0"}) + "\n")


@pytest.mark.parametrize("kind", ["sidecar", "journal"])
def test_metadata_memory_is_not_per_frame_objects(tmp_path: Path, kind: str) -> None:
    """200 000 entries: a few bytes a frame, not a dict a frame (was ~100 MB)."""
    n = 200_000
    path = tmp_path / "cam.tif"  # not .ome: tifffile's OME-XML would list every plane
    tifffile.imwrite(path, np.ones((n, 2, 2), np.uint8), contiguous=True)
    if kind == "sidecar":
        _write_sidecar(sidecar_path(path), n)
    else:
        _write_journal(journal_path(path), n)
    open_recording(path)  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        rec = open_recording(path)
        t = rec.timestamps_s
        dropped = rec.dropped_frames
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (
        rec.frames == n
        and t.size == n
        and t[-1] == pytest.approx(10.0 * (n - 1) / 1000)
    )
    assert dropped == 0
    assert peak < 16 * 2**20  # two arrays of 1.6 MB + read buffers
    assert len(repr(rec)) < 300


def test_repr_is_short(tmp_path: Path) -> None:
    path = _tiff(tmp_path / "cam.ome.tiff")
    text = repr(open_recording(path))
    assert text == (
        f"Recording({str(path)!r}, kind='tiff', frames={{'p0': {N}}}, sidecar='final')"
    )


# ---------------------------------------------------------------- same results as before
def _legacy(payload: dict[str, Any]) -> dict[str, tuple[int, np.ndarray]]:
    return {k: (len(v), frame_times_s(v)) for k, v in frame_entries(payload).items()}


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=6),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "p0",
                    "p1",
                    "frame_metadatas",
                    "runner_time_ms",
                    "camera_metadata",
                    "ImageNumber",
                    "ElapsedTime-ms",
                    "fps",
                ]
            ),
            kids,
            max_size=4,
        )
    ),
    max_leaves=24,
)


def _same_times(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True)
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=_json, indent=st.sampled_from([None, 2]), cut=st.integers(0, 3))
def test_streamed_index_matches_json_loads(
    tmp_path: Path, value: Any, indent: int | None, cut: int
) -> None:
    path = tmp_path / "x.json"
    text = json.dumps(value, indent=indent)
    text = text[: len(text) - cut] if cut < len(text) else text  # sometimes cut short
    path.write_text(text, encoding="utf-8")
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        with pytest.raises(ValueError):
            scan_sidecar(path)
        return
    index = scan_sidecar(path)
    legacy = _legacy(payload)
    assert list(index.positions) == list(legacy)
    for key, (count, times) in legacy.items():
        pos = index.positions[key]
        assert pos.count == count
        now = pos.times_ms / 1000.0
        now = now - now[0] if now.size and np.isfinite(now[0]) else now
        assert _same_times(now, times)


def test_journal_index_matches_the_legacy_reader(tmp_path: Path) -> None:
    from mesofield_napari.data.formats.journal import legacy_payload, read_journal

    path = tmp_path / "x.jsonl"
    lines = [
        '{"format":"mesofield-frame-journal","version":1,"mode":"mda"}',
        '{"meta":{"runner_time_ms":1.5,"camera_metadata":{"ImageNumber":"3"}}}',
        "[1, 2]",
        '{"meta":{"camera_metadata":{"ElapsedTime-ms":"7.25"}},"pos":"p1"}',
        '{"meta":{"runner_time_ms":"bad"},"pos":"p0"}',
        '{"meta":{"runner_time_ms":4.0,"camera_metadata":{"ImageNumber":5}}}',
        "",
        '{"meta":{"runner_time_ms":9.0,"camera_me',  # cut by a crash
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    contents = read_journal(path)
    legacy = _legacy(legacy_payload("mda", contents.entries))
    index = scan_journal(path)
    assert index.bad_lines == contents.bad_lines == 2
    assert list(index.positions) == list(legacy) == ["p0", "p1"]
    for key, (count, times) in legacy.items():
        now = index.positions[key].times_ms / 1000.0
        assert index.positions[key].count == count
        assert _same_times(now - now[0], times)
    assert index.positions["p0"].image_numbers.tolist() == [3, NO_NUMBER, 5]


def test_metadata_is_loaded_on_demand(tmp_path: Path) -> None:
    entries = [{"runner_time_ms": 10.0 * i, "k": i} for i in range(N)]
    path = _tiff(tmp_path / "cam.ome.tiff", entries=[*entries, 7, {"k": 99}])
    with pytest.warns(RecordingWarning, match="non-object"):
        rec = open_recording(path)
    assert rec.metadata == entries  # clamped to the 6 frames on disk
    assert rec.metadata_for("p0")[2] == {"runner_time_ms": 20.0, "k": 2}
