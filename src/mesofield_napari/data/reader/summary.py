"""Summaries of recordings and run folders (``mesofield-napari inspect``).

Everything reported is what is on disk and readable, never the plan: a frame counts
when the sidecar (or the journal of a crashed run) lists it AND the data file holds
it (the preallocated tail of a TIFF was never written; a sidecar may list more frames
than a truncated file holds), and an unreadable file holds none.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..formats.names import is_video
from ..formats.payloads import RecordingSummary, RunEntry, RunSummary
from ..formats.sidecar import recording_path
from ..frame_timing import LATE_FACTOR, frame_timing
from ..manager.paths import is_processed

DROP_FACTOR = LATE_FACTOR  # the name the inspector used; see frame_timing


def frame_entries(payload: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per-position lists of frame dicts (direct mode: one list, ``frame_metadatas``)."""
    frames = payload.get("frame_metadatas")
    if isinstance(frames, list):
        return {"frame_metadatas": [f for f in frames if isinstance(f, dict)]}
    return {
        k: [f for f in v if isinstance(f, dict)]
        for k, v in payload.items()
        if isinstance(v, list)
    }


def frame_times_s(entries: list[dict[str, Any]]) -> np.ndarray:
    """Frame clock in seconds from the first frame (runner_time_ms, else ElapsedTime-ms)."""
    from ..formats.frameindex import PositionIndex

    index = PositionIndex()
    for e in entries:
        index.add(e)
    arr = index.times_ms / 1000.0
    return arr - arr[0] if arr.size and np.isfinite(arr[0]) else arr


def dropped_frames(entries: list[dict[str, Any]], times_s: np.ndarray) -> int:
    """Missing frames: gaps in the camera's ImageNumber (see :mod:`.frame_timing`)."""
    from ..formats.frameindex import PositionIndex

    index = PositionIndex()
    for e in entries:
        index.add(e)
    return count_dropped(index.image_numbers, times_s)


def count_dropped(numbers: np.ndarray, times_s: np.ndarray) -> int:
    """:func:`dropped_frames` on arrays: the missing frames of
    :func:`~mesofield_napari.data.frame_timing.frame_timing` (a camera without
    ImageNumber, ``NO_NUMBER``, has none; long intervals are *late* frames)."""
    return frame_timing(numbers, times_s).missing


def summarize_recording(path: str | os.PathLike[str]) -> RecordingSummary:
    """What is on disk and readable: frames, shape, dtype, timing, sidecar state.

    ``frames`` counts the frames that the sidecar (or journal) lists AND that the data
    file holds and can be read (0 for a file that cannot be opened); ``complete`` is
    true only for a final sidecar whose every frame is in a readable file;
    ``problems`` says why not (one sentence each).
    """
    from .recording import RecordingWarning, load_index, open_recording, run_notes

    data = recording_path(Path(path))
    problems: list[str] = []
    rec = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordingWarning)
        try:
            rec = open_recording(data)
        except (OSError, ValueError) as exc:
            problems.append(str(exc))
    if rec is None:
        index, state, notes = load_index(data)
        problems.extend(notes)
        listed = index.counts
        by_position = {k: 0 for k in listed}
        shape = dtype = None
        times = np.zeros(0)
        timing = frame_timing([], times)
        first = next(iter(index.positions.values()), None)
        codec = index.extra.get("codec") or (
            first.first.get("video_codec") if first and first.first else None
        )
        compression = ratio = None
        files_exist = data.exists()
    else:
        state, index = rec.sidecar_state, rec.index
        problems.extend(rec.warnings)
        listed = {k: n for k, n in index.counts.items() if k in rec.files}
        if rec.path.name == data.name:  # the whole recording: every listed position
            listed = index.counts
        by_position = {k: rec.frames_for(k) for k in rec.positions}
        shape, dtype = list(rec.shape), str(rec.dtype)
        times, timing, codec = rec.timestamps_s, rec.timing, rec.codec
        compression, ratio = rec.compression, rec.size_ratio
        files_exist = True
        if rec.kind == "video":
            problems.extend(_undecodable(rec))
    if state == "journal":
        problems.append(
            "no final sidecar: the run did not finish "
            "(`mesofield-napari recover` rebuilds it from the journal)"
        )
    elif state == "missing":
        problems.append("no frame-metadata sidecar or journal")
    short = {k: n for k, n in listed.items() if by_position.get(k, 0) < n}
    duration, fps = timing.duration_s, timing.fps
    return {
        "path": str(data),
        "kind": "video" if is_video(data) else "tiff",
        "exists": files_exist,
        "frames": sum(by_position.values()),
        "frames_listed": sum(listed.values()),
        "frames_by_position": by_position,
        "shape": shape,
        "dtype": dtype,
        "codec": codec if isinstance(codec, str) and codec else None,
        "compression": compression,  # a TIFF's lossless codec, None: uncompressed
        "size_ratio": round(ratio, 4) if ratio is not None else None,
        "duration_s": round(duration, 6),
        "fps": round(fps, 3) if fps else None,
        "dropped_frames": timing.missing,  # = missing_frames (the older name)
        "missing_frames": timing.missing,
        "late_frames": timing.late,
        "sidecar": state,
        "complete": state == "final"
        and rec is not None
        and not short
        and not any(p.startswith("cannot decode") for p in problems),
        "problems": problems,
        "notes": run_notes(data, problems) if rec is None else list(rec.notes),
    }


def _undecodable(rec: Any) -> list[str]:
    """A video that lists frames it cannot decode is not complete (checks the last)."""
    out = []
    for key in rec.positions:
        n = rec.frames_for(key)
        if n:
            try:
                rec.frame_block(n - 1, n, key)
            except OSError as exc:
                out.append(str(exc))
    return out


def find_recordings(folder: Path) -> list[Path]:
    """Recordings below ``folder`` (not in ``processed/``), as the reader finds them."""
    from .recording import find_recording_paths

    return find_recording_paths(folder)


def summarize_run(folder: str | os.PathLike[str]) -> RunSummary:
    """An experiment, session or run folder: its recordings, notes and whether every
    run's manifest says the acquisition completed.

    Manifests are mesokit ``AcquisitionManifest``s (or the run manifests written
    before them); ``processed/`` outputs are not recordings. ``notes`` are every notes
    file found (a session folder may hold several runs); each recording's own run's
    notes are in its ``notes``.
    """
    from ..manager.manifest import read_manifest_summary
    from .recording import read_notes

    folder = Path(folder)
    manifests = [
        p
        for p in sorted(folder.rglob("*_manifest.json"))
        if not is_processed(p, folder)
    ]
    complete = bool(manifests)
    errors: list[str] = []
    for path in manifests:
        try:
            summary = read_manifest_summary(path)
        except (ValueError, OSError, RecursionError) as exc:
            complete = False
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors.append(f"corrupt manifest {path.name}: {text}")
            continue
        complete = complete and summary["complete"]
        errors.extend(summary["errors"])
    notes = read_notes(
        [p for p in sorted(folder.rglob("*_notes.txt")) if not is_processed(p, folder)],
        errors,  # a notes file that cannot be read is said, not skipped silently
    )
    recordings = [summarize_recording(p) for p in find_recordings(folder)]
    return {
        "run_dir": str(folder),
        "complete": complete and all(r["complete"] for r in recordings),
        "errors": errors,
        "notes": notes,
        "recordings": recordings,
        "frames": sum(r["frames"] for r in recordings),
        "runs": _runs(manifests, recordings),
    }


def _runs(manifests: list[Path], recordings: list[RecordingSummary]) -> list[RunEntry]:
    """One entry per run (``<prefix>_manifest.json``): its recordings, its own notes,
    whether it is complete and why not."""
    from ..manager.manifest import read_manifest_summary
    from .recording import read_notes

    runs: list[RunEntry] = []
    taken: set[str] = set()
    for path in sorted(manifests, key=lambda p: (len(p.name), p.name), reverse=True):
        prefix = path.name.removesuffix("_manifest.json")
        session = path.parent
        mine = [
            r
            for r in recordings
            if r["path"] not in taken
            and Path(r["path"]).parent.parent == session
            and Path(r["path"]).name.startswith(prefix + "_")
        ]
        taken.update(r["path"] for r in mine)
        try:
            info = read_manifest_summary(path)
            done, errors = bool(info["complete"]), list(info["errors"])
        except (ValueError, OSError) as exc:
            done, errors = False, [f"corrupt manifest: {str(exc).splitlines()[0]}"]
        notes_file = session / f"{prefix}_notes.txt"
        runs.append(
            {
                "run": prefix,
                "manifest": str(path),
                "complete": done and all(r["complete"] for r in mine),
                "errors": errors,
                "notes": read_notes([notes_file]) if notes_file.exists() else [],
                "recordings": [r["path"] for r in mine],
            }
        )
    runs.sort(key=lambda r: r["run"] or "")  # all named: orphans (None) come next
    orphans = [r["path"] for r in recordings if r["path"] not in taken]
    if orphans:  # recordings of no manifest (folders written before manifests)
        runs.append(
            {
                "run": None,
                "manifest": None,
                "complete": all(
                    r["complete"] for r in recordings if r["path"] in orphans
                ),
                "errors": [],
                "notes": [],
                "recordings": orphans,
            }
        )
    return runs


#: ``inspect``'s exit code when a recording or run is incomplete (crashed, short,
#: undecodable, a manifest that says so)
EXIT_INCOMPLETE = 2


def inspect_exit_code(summary: RecordingSummary | RunSummary) -> int:
    """0 when everything inspected is complete, else :data:`EXIT_INCOMPLETE`."""
    return 0 if summary.get("complete") else EXIT_INCOMPLETE


def _recording_lines(rec: RecordingSummary) -> list[str]:
    lines = [
        rec["path"],
        f"  frames {rec['frames']}  shape {rec['shape']}  {rec['dtype']}  "
        f"{rec['duration_s']:.2f} s  fps {rec['fps']}  "
        f"missing {rec.get('missing_frames', rec['dropped_frames'])}  "
        f"late {rec.get('late_frames', 0)}",
        f"  sidecar: {rec['sidecar']}  complete: {rec['complete']}",
    ]
    if rec.get("compression"):
        ratio = rec.get("size_ratio")
        lines.append(
            f"  compression: {rec['compression']}  size ratio "
            + (f"{ratio:.3f} of raw" if ratio is not None else "unknown")
        )
    lines.extend(f"  problem: {p}" for p in rec.get("problems", []))
    return lines


def inspect_lines(summary: RecordingSummary | RunSummary) -> list[str]:
    """What ``inspect`` prints: each run with its recordings, its notes and errors
    (a session folder holds several runs: no note is shown under another run)."""
    if "recordings" not in summary:  # one recording
        one = _recording_lines(summary)
        return one + [f"  note: {n}" for n in summary.get("notes", [])]
    by_path = {r["path"]: r for r in summary["recordings"]}
    lines: list[str] = []
    runs: list[RunEntry] = summary.get("runs") or [
        {"run": None, "manifest": None, "recordings": list(by_path),
         "notes": summary.get("notes", []), "errors": summary.get("errors", []),
         "complete": summary.get("complete", False)}
    ]  # fmt: skip
    for run in runs:
        state = "complete" if run["complete"] else "INCOMPLETE"
        lines.append(f"run {run['run'] or '(no manifest)'}: {state}")
        for path in run["recordings"]:
            lines.extend("  " + line for line in _recording_lines(by_path[path]))
        lines.extend(f"  note: {n}" for n in run["notes"])
        lines.extend(f"  error: {e}" for e in run["errors"])
    return lines
