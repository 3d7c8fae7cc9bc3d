"""Run-level recovery: a run whose process died ends up like a stopped one.

``RunManager.start`` writes the manifest with ``extra.mesofield_napari.state:
"running"``; only ``RunManager.stop`` writes ``"stopped"``. A manifest still saying
"running" is therefore a run whose process died, at any point: mid-acquisition (its
journals left), after its sidecars (no journal left, nothing said yet), during the
data queue's fan-out (a temp file left), after its timestamps. :func:`finish_run`
brings it to what a stop would have written, each step streaming, idempotent and
atomic (docs/design.md §6):

1. every journal of the run is recovered (``recovery.recover_file``);
2. counts come from the files: frames per camera from its sidecar, encoder samples
   from its CSV rows, notes from the notes file;
3. the data queue is finished with the stop's own function
   (``manager.dataqueue.finish_dataqueue``): each camera's rows cut to the frames
   its file holds, dict payloads fanned out into columns;
4. the run's temp files (``.<stamp>_….tmp``) are removed;
5. ``timestamps.csv`` gets its ``stopped`` column: the run's from the last data-queue
   row, each device's from its own last row;
6. the manifest says ``state: "stopped"``, ``recovered: true``, the counts, the crash
   in ``errors``, and complete when no recording is left unrecovered.

A second ``recover`` finds ``state: "stopped"`` and changes nothing.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesokit_schema import AcquisitionManifest

from .._platform import fileio
from .clock import local_iso
from .formats.frameindex import scan_sidecar
from .formats.safe_open import MAX_FILE_BYTES, read_bytes, read_text
from .formats.sidecar import atomic_text, journal_path, sidecar_path
from .manager.dataqueue import QueueCounts, finish_dataqueue
from .manager.manifest import EXTRA_KEY, write_manifest
from .manager.paths import session_folder
from .recovery import RecoveryReport, recover_file

__all__ = [
    "LIVE_CHECK_S",
    "RunRecovery",
    "complete_run_manifest",
    "finish_run",
    "growing",
    "is_running_manifest",
    "recover",
    "run_files",
]

LIVE_CHECK_S = 2.0  # a live recording's journal or queue grows within this

CRASH = "the recording process ended without finishing the run; files recovered"


@dataclass
class RunRecovery:
    """What :func:`finish_run` found and did for one run."""

    manifest: Path
    recordings: list[RecoveryReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # recordings left unrecovered
    frames: dict[str, int] = field(default_factory=dict)  # camera -> frames on disk
    dataqueue_rows: int = 0
    trimmed: dict[str, int] = field(default_factory=dict)
    temp_files_removed: int = 0
    complete: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "recordings": [r.as_dict() for r in self.recordings],
            "errors": list(self.errors),
            "frames": dict(self.frames),
            "dataqueue_rows": self.dataqueue_rows,
            "dataqueue_rows_trimmed": dict(self.trimmed),
            "temp_files_removed": self.temp_files_removed,
            "complete": self.complete,
        }


def _load(path: Path) -> AcquisitionManifest | None:
    """The manifest at ``path`` when it is a mesokit one, else None (not ours)."""
    try:
        raw = json.loads(read_bytes(path, MAX_FILE_BYTES).decode("utf-8"))
        return AcquisitionManifest.model_validate(raw)
    except (OSError, ValueError):
        return None


def _ours(manifest: AcquisitionManifest) -> dict[str, Any]:
    extra = manifest.extra.get(EXTRA_KEY)
    return dict(extra) if isinstance(extra, dict) else {}


def is_running_manifest(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is one of our manifests whose run never stopped."""
    manifest = _load(Path(path))
    return manifest is not None and _ours(manifest).get("state") == "running"


def recover(path: str | os.PathLike[str]) -> RecoveryReport:
    """Finish a recording whose process died (``recovery.recover_file``), then its
    run: a manifest still "running" is finished as a whole (:func:`finish_run`),
    one that stopped but is incomplete records the recovered frames
    (:func:`complete_run_manifest`). ``report.manifest`` names the manifest updated.
    """
    report = recover_file(path)
    found = _manifest_for(report.data_path)
    if found is None:
        return report
    manifest_path, manifest, _ = found
    if _ours(manifest).get("state") == "running":
        finish_run(manifest_path, done=[report])
        report.manifest = manifest_path
    else:
        report.manifest = complete_run_manifest(
            report.data_path, report.frames, report.message
        )
    return report


def _manifest_for(data: Path) -> tuple[Path, AcquisitionManifest, str] | None:
    session = session_folder(data)
    relative = Path(os.path.relpath(data, session)).as_posix()
    for path in sorted(session.glob("*_manifest.json")):
        manifest = _load(path)
        if manifest is not None and any(
            p.output_path == relative for p in manifest.producers
        ):
            return path, manifest, relative
    return None


# ---------------------------------------------------------------- still recording?
def run_files(manifest_path: str | os.PathLike[str]) -> list[Path]:
    """The files a live run of this manifest keeps appending to: its cameras'
    journals, its data queue and its encoders' CSVs."""
    path = Path(manifest_path)
    manifest = _load(path)
    if manifest is None:
        return []
    out = []
    for p in manifest.producers:
        target = path.parent / p.output_path
        if p.device_type == "camera":
            out.append(journal_path(target))
        elif p.device_type in ("dataqueue", "encoder"):
            out.append(target)
    return out


def growing(paths: list[Path], wait_s: float = LIVE_CHECK_S) -> set[Path]:
    """Which of ``paths`` changed (size or mtime) during ``wait_s``: a recording
    still being written (a process that died changes nothing). Recover must leave
    those alone: rewriting a live run's files would lose what it writes next. A run
    slower than one frame per ``wait_s`` is not seen (README, *Known limits*)."""

    def state(p: Path) -> tuple[int, int] | None:
        try:
            st = p.stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    before = {p: state(p) for p in paths}
    if not any(v is not None for v in before.values()):
        return set()
    time.sleep(wait_s)
    return {p for p, v in before.items() if v is not None and state(p) != v}


# ---------------------------------------------------------------- the whole run
def finish_run(
    manifest_path: str | os.PathLike[str], done: list[RecoveryReport] | None = None
) -> RunRecovery | None:
    """Finish the run of a manifest still saying "running" (see the module
    docstring); None when it is not such a manifest (nothing changed). ``done``:
    recordings of the run already recovered by the caller."""
    path = Path(manifest_path)
    manifest = _load(path)
    if manifest is None or _ours(manifest).get("state") != "running":
        return None
    session = path.parent
    result = RunRecovery(manifest=path, recordings=list(done or []))
    recovered = {Path(r.data_path).resolve() for r in result.recordings}
    cameras = [p for p in manifest.producers if p.device_type == "camera"]
    # 1. every journal of the run
    for producer in cameras:
        data = session / producer.output_path
        if data.resolve() in recovered or not journal_path(data).exists():
            continue
        try:
            report = recover_file(data)
        except (OSError, ValueError) as exc:
            result.errors.append(f"{producer.output_path}: {exc}")
            continue
        report.manifest = path
        result.recordings.append(report)
    # 2. counts from the files
    for producer in cameras:
        result.frames[producer.output_path] = _sidecar_frames(
            session / producer.output_path
        )
    samples = {
        p.output_path: _csv_rows(session / p.output_path)
        for p in manifest.producers
        if p.device_type == "encoder"
    }
    notes_file = next(
        (session / p.output_path for p in manifest.producers if p.device_id == "notes"),
        None,
    )
    notes = _note_lines(notes_file)
    # 3. the data queue, cut to the frames in the files, fanned out
    queue = QueueCounts()
    queue_file = next(
        (
            session / p.output_path
            for p in manifest.producers
            if p.device_type == "dataqueue"
        ),
        None,
    )
    if queue_file is not None and queue_file.is_file():
        _cut_partial_line(queue_file)
        limits: dict[str, int] = {}
        for p in cameras:  # the camera whose writer pushes its rows
            if p.dataqueue_schema is not None:
                limits[p.device_id] = result.frames[p.output_path]
        queue = finish_dataqueue(queue_file, limits)
    result.dataqueue_rows = queue.rows
    result.trimmed = {d: n for d, n in queue.trimmed.items() if n}
    # 4. the run's temp files (sidecars, queue, timestamps, manifest: all named so)
    stamp = str(_ours(manifest).get("stamp") or "")
    if stamp:
        for tmp in sorted(session.rglob(f".{stamp}_*.tmp")):
            fileio.unlink(tmp)
            result.temp_files_removed += 1
    # 5. the timestamps' stop times
    ended = _ended_at(queue, session, manifest)
    stamps = next(
        (
            session / p.output_path
            for p in manifest.producers
            if p.data_type == "timestamps"
        ),
        None,
    )
    if stamps is not None:
        devices = [p.device_id for p in manifest.producers if p.device_type in _DEVICES]
        _write_timestamps(stamps, devices, queue, ended.isoformat())
    # 6. the manifest of a stopped run, marked recovered
    result.complete = not result.errors and not any(
        journal_path(session / p.output_path).exists() for p in cameras
    )
    _write_finished_manifest(path, manifest, result, samples, notes, queue, ended)
    return result


_DEVICES = ("camera", "encoder")


def _sidecar_frames(data: Path) -> int:
    """Frames the recording's sidecar lists (streamed), 0 when it has none."""
    try:
        return sum(scan_sidecar(sidecar_path(data)).counts.values())
    except (OSError, ValueError, RecursionError):
        return 0


def _csv_rows(path: Path) -> int:
    """Data rows of a CSV (streamed), its partial last line removed first."""
    if not path.is_file():
        return 0
    _cut_partial_line(path)
    with open(path, newline="", encoding="utf-8") as fh:
        return max(sum(1 for row in csv.reader(fh) if row) - 1, 0)


def _note_lines(path: Path | None) -> list[str]:
    if path is None or not path.is_file():
        return []
    try:
        return [line for line in read_text(path).splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def _cut_partial_line(path: Path) -> None:
    """Drop a last line a kill cut short (a streamed CSV is flushed in blocks):
    every complete row ends with a newline."""
    fd = fileio.open_binary(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        end = size
        while end > 0:
            start = max(end - 65536, 0)
            block = fileio.pread(fd, end - start, start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        if end != size:
            fileio.set_size(fd, end)
            fileio.sync(fd)
    finally:
        fileio.close(fd)


def _ended_at(
    queue: QueueCounts, session: Path, manifest: AcquisitionManifest
) -> _dt.datetime:
    """When the run really ended: its last data-queue row, else its newest file."""
    last = max(
        (ts for ts in queue.last_ts.values() if ts), default="", key=_parse_or_min
    )
    if last and (when := _parse(last)) is not None:
        return when
    newest = max(
        (p.stat().st_mtime for p in session.rglob("*") if p.is_file()),
        default=manifest.started_at.timestamp(),
    )
    return _dt.datetime.fromtimestamp(newest).astimezone()


def _parse(stamp: str) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(stamp)
    except ValueError:
        return None


def _parse_or_min(stamp: str) -> float:
    when = _parse(stamp)
    return when.timestamp() if when is not None else float("-inf")


def _write_timestamps(
    path: Path, devices: list[str], queue: QueueCounts, ended: str
) -> None:
    """``device_id,started,stopped`` with every stop filled in (atomic)."""
    rows: dict[str, list[str]] = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                if row and row[0] != "device_id":
                    rows[row[0]] = [*row[1:3], "", ""][:2]
    rows.setdefault("run", ["", ""])
    for device in devices:
        rows.setdefault(device, ["", ""])
    for device, (started, stopped) in rows.items():
        if device == "run":
            rows[device] = [started, stopped or ended]
        else:
            rows[device] = [
                started or queue.first_ts.get(device, ""),
                stopped or queue.last_ts.get(device, "") or ended,
            ]
    with atomic_text(path) as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["device_id", "started", "stopped"])
        for device, (started, stopped) in rows.items():
            w.writerow([device, started, stopped])


def _write_finished_manifest(
    path: Path,
    manifest: AcquisitionManifest,
    result: RunRecovery,
    samples: dict[str, int],
    notes: list[str],
    queue: QueueCounts,
    ended: _dt.datetime,
) -> None:
    now = local_iso()
    producers = []
    for producer in manifest.producers:
        calibration = dict(producer.calibration)
        if producer.output_path in result.frames:
            calibration["frames"] = result.frames[producer.output_path]
            calibration["recovered_at"] = now
        elif producer.output_path in samples:
            calibration["samples"] = samples[producer.output_path]
        elif producer.device_type == "dataqueue":
            calibration["rows_by_device"] = dict(queue.rows_by_device)
        elif producer.device_id == "notes":
            calibration["notes"] = len(notes)
        producers.append(producer.model_copy(update={"calibration": calibration}))
    ours = _ours(manifest)
    files = []
    for entry in ours.get("files") or []:
        entry = dict(entry)
        rel = entry.get("path")
        if rel in result.frames:
            entry["frames"] = result.frames[rel]
            entry["journal"] = None
            if sidecar_path(path.parent / rel).exists():
                entry["sidecar"] = Path(sidecar_path(rel)).as_posix()
            entry["stopped"] = entry.get("stopped") or ended.isoformat()
        files.append(entry)
    errors = list(ours.get("errors") or [])
    for line in (CRASH, *result.errors):
        if line not in errors:
            errors.append(line)
    ours.update(
        state="stopped",
        recovered=True,
        recovered_at=now,
        recovered_files={
            Path(os.path.relpath(r.data_path, path.parent)).as_posix(): {
                "frames": r.frames,
                "message": r.message,
            }
            for r in result.recordings
        },
        errors=errors,
        notes=len(notes),
        dataqueue_rows=queue.rows,
        dataqueue_rows_trimmed={
            **dict(ours.get("dataqueue_rows_trimmed") or {}),
            **result.trimmed,
        },
        files=files,
    )
    updated = manifest.model_copy(
        update={
            "producers": producers,
            "extra": {**manifest.extra, EXTRA_KEY: ours},
            "ended_at": manifest.ended_at or ended,
            "notes": "\n".join(notes) or manifest.notes,
            "acquisition_complete": result.complete,
        }
    )
    write_manifest(path, updated)


# ---------------------------------------------------------------- a stopped run
def complete_run_manifest(
    data: str | os.PathLike[str], frames: int, message: str
) -> Path | None:
    """Record a recovered file in the manifest of a run that stopped (a writer
    whose sidecar failed kept its journal); returns the manifest's path.

    Does nothing (returns None) when the file is in no mesokit manifest (runs
    written before manifests were mesokit's, or files outside a run) or when the
    manifest already says the acquisition completed.
    """
    found = _manifest_for(Path(data))
    if found is None:
        return None
    path, manifest, relative = found
    if manifest.acquisition_complete:
        return None
    session = path.parent
    now = local_iso()
    producers = []
    for producer in manifest.producers:
        if producer.output_path == relative:
            calibration = {**producer.calibration, "frames": int(frames)}
            calibration["recovered_at"] = now
            producer = producer.model_copy(update={"calibration": calibration})
        producers.append(producer)
    extra = _ours(manifest)
    recovered = dict(extra.get("recovered_files") or {})
    recovered[relative] = {"frames": int(frames), "at": now, "message": message}
    extra.update(recovered=True, recovered_files=recovered)
    errors = list(extra.get("errors") or [])
    if CRASH not in errors:
        errors.append(CRASH)
    extra["errors"] = errors
    pending = [
        p
        for p in producers
        if p.metadata_path and journal_path(session / p.output_path).exists()
    ]
    ended = (
        manifest.ended_at
        or _dt.datetime.fromtimestamp(Path(data).stat().st_mtime).astimezone()
    )
    updated = manifest.model_copy(
        update={
            "producers": producers,
            "extra": {**manifest.extra, EXTRA_KEY: extra},
            "ended_at": ended,
            "acquisition_complete": not pending,
        }
    )
    write_manifest(path, updated)
    return path
