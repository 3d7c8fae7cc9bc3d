"""The run manager: one run of a session with its writers, notes, timestamps,
configuration, data queue and AcquisitionManifest (docs/design.md §5).

Usage::

    with RunManager(experiment, subject="M042", session=1, task="widefield") as run:
        writer = run.writer_for("mesoscope", "tiff", suffix="meso")
        run.add_note("whisker stim at 60 s")
        ...  # run the acquisition with `writer`
    # leaving the block (also through an exception) finalizes writers, timestamps,
    # data queue and manifest; run.errors says what went wrong, if anything.

Files go to ``<experiment>/data/sub-<s>/ses-<n>/`` (see ``runpaths.py``). Every camera
writer pushes one data-queue row per frame (the run's one clock), and every note one
row of device ``notes``.

A run is complete (``acquisition_complete`` in the manifest) when it stopped with no
error and was not interrupted: whoever stops a planned run before its plan ended
(Ctrl-C, Stop, closing the app) calls :meth:`RunManager.interrupt` with the reason,
which the manifest keeps (``extra.mesofield_napari.interrupted``). While running, a
:class:`~.run_guard.RunGuard` notices within a second when the run folder (or one of
its files) is deleted, records the error and cancels every writer's acquisition
through its ``on_error`` (and :attr:`RunManager.on_lost`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import weakref
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from ..._platform import fileio
from ..clock import local_iso, local_now
from ..errors import RecordingError
from ..formats.names import split_extension
from ..formats.payloads import WriterFile
from ..formats.sidecar import sidecar_path
from ..formats.tiff_layout import pause_point
from ..frame_timing import MissingCounter, frame_timing
from ..writer.tiff import CustomWriter
from ..writer.video import CV2Writer
from .dataqueue import DataQueue
from .manifest import (
    Producer,
    build_manifest,
    camera_queue_rows,
    notes_queue_rows,
    write_manifest,
)
from .paths import RunPaths
from .run_guard import RunGuard

Writer = CustomWriter | CV2Writer
WriterKind = Literal["tiff", "mp4", "avi"]
EXTRA_FORMAT = "mesofield-napari-run"
_BIDS_TYPE = {"tiff": "func", "mp4": "beh", "avi": "beh"}
_SESSION_FILES = (
    ("configuration", ".csv", None),
    ("timestamps", ".csv", None),
    ("manifest", ".json", None),
    ("dataqueue", ".csv", "beh"),
)

# writer -> its run, weak both ways: a run holds its writers, so a strong value
# here would keep every run (and its files' memory maps) alive for ever
_RUN_OF: weakref.WeakKeyDictionary[Any, weakref.ref[RunManager]] = (
    weakref.WeakKeyDictionary()
)


def run_of(writer: Any) -> RunManager | None:
    """The run a writer was made for by :meth:`RunManager.writer_for` (else None).

    Lets code that only holds writers (``acquire.record``) tell their run that it
    was interrupted.
    """
    ref = _RUN_OF.get(writer)
    return ref() if ref is not None else None


def escape_note(text: str) -> str:
    """Keep a note on one line: backslashes and line breaks are escaped."""
    return (
        str(text)
        .replace("\\", "\\\\")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def writer_kind(writer: Writer) -> str:
    if isinstance(writer, CustomWriter):
        return "tiff"
    return split_extension(writer._filename)[1].lstrip(".").lower()


def describe_writer(writer: Writer) -> list[WriterFile]:
    """One manifest/CLI entry per data file a writer produced."""
    kind = writer_kind(writer)
    per_position = writer.frames_written
    entries: list[WriterFile] = []
    for path in writer.files:
        ext = split_extension(path)[1]
        key = next((k for k in per_position if path.name.endswith(f"_{k}{ext}")), None)
        frames = per_position.get(key, 0) if key else sum(per_position.values())
        entry: WriterFile = {
            "path": str(path),
            "kind": kind,
            "frames": frames,
            "sidecar": str(writer.sidecar_path)
            if writer.sidecar_path.exists()
            else None,
            "journal": str(writer.journal_path)
            if writer.journal_path.exists()
            else None,
            "started": writer.started_at,
            "stopped": writer.stopped_at,
            "frames_lost": writer.stats.frames_lost,
            "backpressure_events": writer.stats.backpressure_events,
        }
        if isinstance(writer, CV2Writer):
            entry["codec"] = writer.fourcc
            entry["fps"] = writer.fps
        entries.append(entry)
    return entries


class RunManager:
    """Orchestrates the files of one run. Thread-safe for notes and queue pushes.

    Parameters
    ----------
    root
        The experiment folder; the run goes to ``<root>/data/sub-<s>/ses-<n>/``.
    parameters
        Rows of the configuration CSV (``Parameter,Value``); ``experimenter`` and
        ``protocol`` also go into the manifest's session identity.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        subject: str = "sim",
        session: str | int = 1,
        task: str = "rec",
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        self.paths = RunPaths(Path(root), str(subject), str(session), str(task))
        p = self.paths
        self.parameters: dict[str, Any] = {
            "subject": p.subject,
            "session": p.session,
            "task": p.task,
            **dict(parameters or {}),
        }
        # refused before anything exists when the paths would be too long (Windows)
        for suffix, ext, kind in _SESSION_FILES:
            p.check_length(suffix, ext, kind)
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.interrupted: str | None = None  # why a planned run ended early
        self.on_lost: Callable[[str], None] | None = None  # folder deleted mid-run
        self._guard: RunGuard | None = None
        self.started: str | None = None
        self.stopped: str | None = None
        self._started_at: _dt.datetime | None = None
        self._stopped_at: _dt.datetime | None = None
        self._writers: dict[str, Writer] = {}
        self._missing: dict[str, MissingCounter] = {}  # camera id -> live count
        self._producers: list[Producer] = []
        self._clock_devices: set[str] = set()  # cameras already pushing queue rows
        self._clock_writers: dict[str, Writer] = {}  # the writer behind those rows
        self._devices: dict[str, list[str | None]] = {}  # id -> [started, stopped]
        self._state: Literal["new", "running", "stopped"] = "new"
        self._assign_paths()

    def _assign_paths(self) -> None:
        p = self.paths
        self.configuration_path = p.run_dir / p.name("configuration", ".csv")
        self.notes_path = p.file("notes", ".txt")
        self.timestamps_path = p.file("timestamps", ".csv")
        self.manifest_path = p.file("manifest", ".json")
        self.dataqueue_path = p.file("dataqueue", ".csv", "beh")
        self.queue = DataQueue(self.dataqueue_path)

    @property
    def run_dir(self) -> Path:
        """The session folder this run writes into."""
        return self.paths.run_dir

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def complete(self) -> bool:
        """Stopped, with nothing failed and nothing interrupted."""
        return self._state == "stopped" and not self.errors and not self.interrupted

    def interrupt(self, reason: str) -> None:
        """Say that the run ended before its plan (call before :meth:`stop`): the
        manifest then says incomplete, with ``reason``. The first reason is kept."""
        if self.interrupted is None:
            self.interrupted = str(reason)

    @property
    def writers(self) -> list[Writer]:
        return list(self._writers.values())

    # ------------------------------------------------------------ lifecycle
    def start(self) -> RunManager:
        """Create the folder and the run's files; start the data-queue logger."""
        if self._state != "new":
            raise RuntimeError("a RunManager runs once; create a new one per run")
        root = self.paths.root
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermissionError(
                f"cannot create run folder under {root}: {exc.strerror or exc}"
            ) from exc
        if not os.access(self.run_dir, os.W_OK | os.X_OK):
            raise PermissionError(f"run folder is not writable: {self.run_dir}")
        stamp = self.paths.stamp
        path, fh = self.paths.claim("configuration", ".csv")
        if self.paths.stamp != stamp:  # another run took that second
            self._assign_paths()
        self.configuration_path = path
        with fh:
            self._write_configuration(fh)
        self._started_at = local_now()
        self.started = self._started_at.isoformat(timespec="microseconds")
        self._state = "running"
        self.notes_path.touch(exist_ok=False)
        self._write_timestamps()
        self.queue.start()
        self._producers[:0] = self._session_producers()
        self._write_manifest()
        self._guard = RunGuard(self.run_dir, self._guarded_paths, self._lost).start()
        return self

    def _guarded_paths(self) -> list[Path]:
        """The run's own files (never removed before :meth:`stop`) and the folders
        of its data files (a writer may remove a file it never wrote a frame to)."""
        paths = [self.configuration_path, self.notes_path, self.dataqueue_path]
        for writer in list(self._writers.values()):
            paths.extend({p.parent for p in writer.files})
        return paths

    def _lost(self, problem: str) -> None:
        """The guard's report (its thread): record it, stop every acquisition."""
        self.errors.append(f"{problem}; the run was stopped")
        for writer in list(self._writers.values()):
            if (on_error := writer.on_error) is not None:
                try:
                    on_error(RecordingError(problem))
                except Exception as exc:  # never let the guard die silently
                    self.errors.append(f"could not stop {writer_kind(writer)}: {exc}")
        if (callback := self.on_lost) is not None:
            callback(problem)

    def stop(
        self, error: BaseException | None = None, *, raise_errors: bool = True
    ) -> dict[str, Any]:
        """Finalize writers, data queue, timestamps and manifest (in that order).

        Every step runs even if an earlier one failed; failures are listed in
        ``errors`` and in the manifest (``acquisition_complete: false``), then raised
        as a :class:`RecordingError` unless ``raise_errors`` is false or the run is
        already ending with ``error``.
        """
        if self._state != "running":
            return self.manifest()
        if (guard := self._guard) is not None:
            guard.stop()  # files are closed and renamed from here on
            if guard.problem is None and (problem := guard.check()) is not None:
                # gone before the guard looked (a writer may have failed on it
                # first): the deletion is the cause, so it is said first
                guard.problem = problem
                self.errors.insert(0, f"{problem}; the run was stopped")
        if error is not None:
            self.errors.append(f"run ended with {type(error).__name__}: {error}")
        for key, writer in self._writers.items():
            device_id = key.rsplit(".", 1)[0]
            try:
                writer.close()
                writer.raise_if_failed()
            except Exception as exc:
                self.errors.append(f"{device_id}: {exc}")
        pause_point("writers_closed")  # test hook: every sidecar written, no manifest
        # a camera's rows, pushed as frames reached its writer, down to the frames
        # its file holds (a full disk): the queue never claims a missing frame
        limits = {
            device_id: sum(writer.frames_written.values())
            for device_id, writer in self._clock_writers.items()
        }
        try:
            self.queue.stop(limits=limits)
            if self.queue.error is not None:
                raise self.queue.error
        except Exception as exc:
            self.errors.append(f"data queue: {exc}")
        self._stopped_at = local_now()
        self.stopped = self._stopped_at.isoformat(timespec="microseconds")
        self._state = "stopped"
        for step in (self._write_timestamps, self._write_manifest):
            try:
                step()
            except Exception as exc:
                self.errors.append(f"{step.__name__.strip('_')}: {exc}")
            if step == self._write_timestamps:
                pause_point("timestamps_written")  # test hook: the manifest is next
        if self.errors and raise_errors and error is None:
            raise RecordingError("; ".join(self.errors))
        return self.manifest()

    def __enter__(self) -> RunManager:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(error=exc)

    # ------------------------------------------------------------ writers & devices
    def data_path(self, suffix: str, ext: str, bids_type: str | None) -> Path:
        """A fresh, collision-safe path for a device's data file in this run."""
        path = self.paths.file(suffix, ext, bids_type)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _frame_listener(self, device_id: str) -> Any:
        """The camera's data-queue row per frame, counting missing frames on the way."""
        counter = self._missing.setdefault(device_id, MissingCounter())
        push = partial(self.queue.push, device_id)

        def listen(number: Any, device_ts: Any) -> None:
            counter.feed(number)
            push(number, device_ts)

        return listen

    def frames_missing(self, device_id: str) -> int:
        """Frames camera ``device_id`` numbered but never delivered (so far)."""
        counter = self._missing.get(device_id)
        return counter.missing if counter is not None else 0

    def writer_for(
        self,
        device_id: str,
        kind: WriterKind = "tiff",
        *,
        suffix: str | None = None,
        bids_type: str | None = None,
        sampling_rate_hz: float | None = None,
        **kwargs: Any,
    ) -> Writer:
        """A writer for camera ``device_id``: OME-TIFF in ``func/``, video in ``beh/``.

        The file is named ``…_<suffix>.<ext>`` (default: the device id). The first
        writer of a camera pushes one data-queue row per frame under ``device_id``.
        """
        key = f"{device_id}.{kind}"
        if key in self._writers:
            raise ValueError(f"this run already has a {kind} writer for {device_id!r}")
        if kind not in _BIDS_TYPE:
            raise ValueError(
                f"writer kind must be 'tiff', 'mp4' or 'avi', got {kind!r}"
            )
        folder = bids_type or _BIDS_TYPE[kind]
        suffix = suffix or device_id
        self.paths.check_length(
            suffix, ".ome.tiff" if kind == "tiff" else f".{kind}", folder
        )
        if kind == "tiff":
            path = self.data_path(suffix, ".ome.tiff", folder)
            writer: Writer = CustomWriter(path, **kwargs)
        else:
            path = self.data_path(suffix, f".{kind}", folder)
            writer = CV2Writer(path, **kwargs)
            sampling_rate_hz = sampling_rate_hz or writer.fps
        self._writers[key] = writer
        _RUN_OF[writer] = weakref.ref(self)
        clock = device_id not in self._clock_devices
        if clock:
            self._clock_devices.add(device_id)
            self._clock_writers[device_id] = writer
            # (ImageNumber, device time) of each frame -> a row of the run's clock
            writer.frame_listener = self._frame_listener(device_id)
        self._producers.append(
            Producer(
                device_id=device_id,
                device_type="camera",
                data_type="frames" if kind == "tiff" else "video",
                file_type="ome.tiff" if kind == "tiff" else kind,
                output_path=path,
                bids_type=folder,
                metadata_path=writer.sidecar_path,
                sampling_rate_hz=sampling_rate_hz,
                clock_source="micromanager_core",
                queue_rows=camera_queue_rows(device_id) if clock else None,
                calibration=partial(_writer_calibration, writer, path),
            )
        )
        if self._guard is not None:
            self._guard.watch()  # its folder exists now: watched from now on
        if self.running:
            self._write_manifest()
        return writer

    def add_producer(self, producer: Producer) -> None:
        """Declare another device's data file (an encoder, say) in the manifest."""
        self._producers.append(producer)
        if self.running:
            self._write_manifest()

    def device_started(self, device_id: str) -> None:
        self._devices.setdefault(str(device_id), [None, None])[0] = local_iso()

    def device_stopped(self, device_id: str) -> None:
        self._devices.setdefault(str(device_id), [None, None])[1] = local_iso()

    def push(self, device_id: str, payload: Any, device_ts: Any = None) -> None:
        """Add a packet to the run's data queue (logged to ``beh/..._dataqueue.csv``)."""
        self.queue.push(device_id, payload, device_ts)

    # ------------------------------------------------------------ notes
    def add_note(self, text: str) -> str:
        """Append a timestamped note to the notes file now (flushed and fsync'ed),
        and a ``notes`` row to the data queue (the run's clock)."""
        if self._state != "running":
            raise RuntimeError("notes can only be added while the run is running")
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        text = escape_note(text)
        line = f"{stamp}: {text}"
        with open(self.notes_path, "a", encoding="utf-8", newline="\n") as fh:
            fh.write(line + "\n")
            fh.flush()
            fileio.sync(fh.fileno())
        self.queue.push("notes", text, local_iso())
        self.notes.append(line)
        return line

    # ------------------------------------------------------------ files
    def _write_configuration(self, fh: IO[str]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["Parameter", "Value"])
        for key, value in self.parameters.items():
            w.writerow([key, value])
        fh.write(buf.getvalue())

    def _timestamp_rows(self) -> list[list[str]]:
        rows = [["run", self.started or "", self.stopped or ""]]
        seen = set()
        for key, writer in self._writers.items():
            device_id = key.rsplit(".", 1)[0]
            if device_id not in seen:
                seen.add(device_id)
                rows.append(
                    [
                        device_id,
                        writer.started_at or "",
                        writer.stopped_at or "",
                    ]
                )
        for device_id, (started, stopped) in self._devices.items():
            if device_id not in seen:
                rows.append([device_id, started or "", stopped or ""])
        return rows

    def _write_timestamps(self) -> None:
        tmp = self.timestamps_path.with_name(f".{self.timestamps_path.name}.tmp")
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["device_id", "started", "stopped"])
                w.writerows(self._timestamp_rows())
                fh.flush()
                fileio.full_sync(fh.fileno())
            fileio.replace(tmp, self.timestamps_path)
        except BaseException:
            fileio.unlink(tmp)  # never leave a half-written temp file
            raise

    def _session_producers(self) -> list[Producer]:
        def rows() -> dict[str, Any]:
            return {"rows_by_device": dict(self.queue.rows_by_device)}

        def note_count() -> dict[str, Any]:
            return {"notes": len(self.notes)}

        return [
            Producer(
                "dataqueue",
                "dataqueue",
                "dataqueue",
                "csv",
                self.dataqueue_path,
                bids_type="beh",
                clock_source="monotonic_s",
                calibration=rows,
            ),
            Producer(
                "notes",
                "notes",
                "notes",
                "txt",
                self.notes_path,
                queue_rows=notes_queue_rows(),
                calibration=note_count,
            ),
            Producer(
                "session",
                "session",
                "session_config",
                "csv",
                self.configuration_path,
            ),
            Producer("session", "session", "timestamps", "csv", self.timestamps_path),
        ]

    def manifest(self) -> dict[str, Any]:
        """The AcquisitionManifest as a JSON-ready dict (what the file holds)."""
        dumped: dict[str, Any] = self._build_manifest().model_dump(mode="json")
        return dumped

    def _build_manifest(self) -> Any:
        files: list[dict[str, Any]] = []
        for key, writer in self._writers.items():
            for entry in describe_writer(writer):
                files.append({"device_id": key.rsplit(".", 1)[0], **entry})
        for f in files:
            for k in ("path", "sidecar", "journal"):
                if f.get(k):
                    f[k] = Path(os.path.relpath(f[k], self.run_dir)).as_posix()
        params = self.parameters
        return build_manifest(
            session_dir=self.run_dir,
            subject=self.paths.subject,
            session=self.paths.session,
            task=self.paths.task,
            experimenter=str(params.get("experimenter") or "") or None,
            protocol=str(params.get("protocol") or "") or None,
            started_at=self._started_at or local_now(),
            ended_at=self._stopped_at,
            complete=self.complete,
            producers=self._producers,
            notes="\n".join(self.notes) or None,
            extra={
                "format": EXTRA_FORMAT,
                "version": 2,
                "stamp": self.paths.stamp,
                "state": self._state,
                "errors": list(self.errors),
                "interrupted": self.interrupted,
                "notes": len(self.notes),
                "dataqueue_rows": self.queue.rows_written,
                "dataqueue_rows_trimmed": dict(self.queue.trimmed),
                "files": files,
            },
        )

    def _write_manifest(self) -> None:
        write_manifest(self.manifest_path, self._build_manifest())


def _writer_calibration(writer: Writer, path: Path) -> dict[str, Any]:
    """What the schema has no field for: frame counts, losses, codec, clock."""
    entry = next(
        (e for e in describe_writer(writer) if Path(e["path"]) == path),
        None,
    )
    if entry is None:
        return {}
    out: dict[str, Any] = {
        k: entry[k]
        for k in ("frames", "frames_lost", "backpressure_events", "started", "stopped")
    }
    for k in ("codec", "fps"):
        if k in entry:
            out[k] = entry[k]
    out.update(_measured_timing(path, entry))
    return out


def _measured_timing(path: Path, entry: WriterFile) -> dict[str, Any]:
    """The file's own timing figures (:mod:`.frame_timing`), as ``inspect`` gives
    them: ``fps_measured`` on the frames' clock (``fps`` is the nominal rate the
    writer was given), ``frames_missing`` and ``frames_late``."""
    if not entry.get("sidecar"):
        return {}
    from ..formats.frameindex import scan_sidecar

    try:
        index = scan_sidecar(sidecar_path(path))
    except (OSError, ValueError, RecursionError):
        return {}
    first = next(iter(index.positions.values()), None)
    if first is None:
        return {}
    timing = frame_timing(first.image_numbers, first.times_ms / 1000.0)
    return {
        "fps_measured": round(timing.fps, 3) if timing.fps else None,
        "frames_missing": timing.missing,
        "frames_late": timing.late,
    }
