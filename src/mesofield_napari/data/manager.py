"""The run manager: one folder per run with its writers, notes, timestamps,
configuration, data-queue log and manifest (DESIGN.md §3).

Usage::

    with RunManager(root, subject="M042", session=1, task="widefield") as run:
        writer = run.writer_for("meso", "tiff")
        run.add_note("whisker stim at 60 s")
        ...  # run the acquisition with `writer`
    # leaving the block (also through an exception) finalizes writers, timestamps,
    # data queue and manifest; run.errors says what went wrong, if anything.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from .dataqueue import DataQueue
from .errors import RecordingError
from .paths import split_extension
from .runpaths import RunPaths
from .sidecar import utc_now_iso, write_json_atomic
from .video import CV2Writer
from .writer import CustomWriter

Writer = CustomWriter | CV2Writer
WriterKind = Literal["tiff", "mp4", "avi"]
MANIFEST_FORMAT = "mesofield-run-manifest"


def escape_note(text: str) -> str:
    """Keep a note on one line: backslashes and line breaks are escaped."""
    return (
        str(text)
        .replace("\\", "\\\\")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def describe_writer(writer: Writer) -> list[dict[str, Any]]:
    """One manifest/CLI entry per data file a writer produced."""
    kind = (
        "tiff"
        if isinstance(writer, CustomWriter)
        else split_extension(writer._filename)[1].lstrip(".")
    )
    per_position = writer.frames_written
    entries = []
    for path in writer.files:
        ext = split_extension(path)[1]
        key = next((k for k in per_position if path.name.endswith(f"_{k}{ext}")), None)
        frames = per_position.get(key, 0) if key else sum(per_position.values())
        entry: dict[str, Any] = {
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
    """Orchestrates the files of one run. Thread-safe for notes and queue pushes."""

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
        self.notes_path = p.file("notes", ".txt")
        self.timestamps_path = p.file("timestamps", ".csv")
        self.configuration_path = p.file("configuration", ".csv")
        self.manifest_path = p.file("manifest", ".json")
        self.dataqueue_path = p.file("dataqueue", ".csv", "beh")
        self.parameters: dict[str, Any] = {
            "subject": p.subject,
            "session": p.session,
            "task": p.task,
            **dict(parameters or {}),
        }
        self.queue = DataQueue(self.dataqueue_path)
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.started: str | None = None
        self.stopped: str | None = None
        self._writers: dict[str, Writer] = {}
        self._devices: dict[str, list[str | None]] = {}  # id -> [started, stopped]
        self._state: Literal["new", "running", "stopped"] = "new"

    @property
    def run_dir(self) -> Path:
        return self.paths.run_dir

    @property
    def running(self) -> bool:
        return self._state == "running"

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
        self.started = utc_now_iso()
        self._state = "running"
        self._write_configuration()
        self.notes_path.touch(exist_ok=False)
        self._write_timestamps()
        self.queue.start()
        self._write_manifest()
        return self

    def stop(
        self, error: BaseException | None = None, *, raise_errors: bool = True
    ) -> dict[str, Any]:
        """Finalize writers, data queue, timestamps and manifest (in that order).

        Every step runs even if an earlier one failed; failures are listed in
        ``errors`` and in the manifest (``complete: false``), then raised as a
        :class:`RecordingError` unless ``raise_errors`` is false or the run is already
        ending with ``error``.
        """
        if self._state != "running":
            return self.manifest()
        if error is not None:
            self.errors.append(f"run ended with {type(error).__name__}: {error}")
        for key, writer in self._writers.items():
            device_id = key.rsplit(".", 1)[0]
            try:
                writer.close()
                writer.raise_if_failed()
            except Exception as exc:
                self.errors.append(f"{device_id}: {exc}")
        try:
            self.queue.stop()
            if self.queue.error is not None:
                raise self.queue.error
        except Exception as exc:
            self.errors.append(f"data queue: {exc}")
        self.stopped = utc_now_iso()
        self._state = "stopped"
        for step in (self._write_timestamps, self._write_manifest):
            try:
                step()
            except Exception as exc:
                self.errors.append(f"{step.__name__.strip('_')}: {exc}")
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
    def writer_for(
        self, device_id: str, kind: WriterKind = "tiff", **kwargs: Any
    ) -> Writer:
        """A writer for camera ``device_id``: OME-TIFF in ``func/``, video in ``beh/``."""
        key = f"{device_id}.{kind}"
        if key in self._writers:
            raise ValueError(f"this run already has a {kind} writer for {device_id!r}")
        if kind == "tiff":
            path = self.paths.file(device_id, ".ome.tiff", "func")
            path.parent.mkdir(parents=True, exist_ok=True)
            writer: Writer = CustomWriter(path, **kwargs)
        elif kind in ("mp4", "avi"):
            path = self.paths.file(device_id, f".{kind}", "beh")
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = CV2Writer(path, **kwargs)
        else:
            raise ValueError(
                f"writer kind must be 'tiff', 'mp4' or 'avi', got {kind!r}"
            )
        self._writers[key] = writer
        if self.running:
            self._write_manifest()
        return writer

    def device_started(self, device_id: str) -> None:
        self._devices.setdefault(str(device_id), [None, None])[0] = utc_now_iso()

    def device_stopped(self, device_id: str) -> None:
        self._devices.setdefault(str(device_id), [None, None])[1] = utc_now_iso()

    def push(self, device_id: str, payload: Any, device_ts: Any = None) -> None:
        """Add a packet to the run's data queue (logged to ``beh/..._dataqueue.csv``)."""
        self.queue.push(device_id, payload, device_ts)

    # ------------------------------------------------------------ notes
    def add_note(self, text: str) -> str:
        """Append a timestamped note to the notes file now (flushed and fsync'ed)."""
        if self._state != "running":
            raise RuntimeError("notes can only be added while the run is running")
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        line = f"{stamp}: {escape_note(text)}"
        with open(self.notes_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.notes.append(line)
        return line

    # ------------------------------------------------------------ files
    def _write_configuration(self) -> None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["Parameter", "Value"])
        for key, value in self.parameters.items():
            w.writerow([key, value])
        with open(self.configuration_path, "x", newline="", encoding="utf-8") as fh:
            fh.write(buf.getvalue())

    def _timestamp_rows(self) -> list[list[str]]:
        rows = [["run", self.started or "", self.stopped or ""]]
        seen = set()
        for key, writer in self._writers.items():
            device_id = key.rsplit(".", 1)[0]
            if device_id not in seen:
                seen.add(device_id)
                rows.append(
                    [device_id, writer.started_at or "", writer.stopped_at or ""]
                )
        for device_id, (started, stopped) in self._devices.items():
            if device_id not in seen:
                rows.append([device_id, started or "", stopped or ""])
        return rows

    def _write_timestamps(self) -> None:
        tmp = self.timestamps_path.with_name(f".{self.timestamps_path.name}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["device_id", "started", "stopped"])
            w.writerows(self._timestamp_rows())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.timestamps_path)

    def manifest(self) -> dict[str, Any]:
        """The run manifest as a dict (what ``..._manifest.json`` holds)."""
        files: list[dict[str, Any]] = []
        for key, writer in self._writers.items():
            for entry in describe_writer(writer):
                files.append({"device_id": key.rsplit(".", 1)[0], **entry})
        for kind, path in (
            ("configuration", self.configuration_path),
            ("notes", self.notes_path),
            ("timestamps", self.timestamps_path),
            ("dataqueue", self.dataqueue_path),
        ):
            files.append({"path": str(path), "kind": kind, "exists": path.exists()})
        for f in files:
            f["path"] = os.path.relpath(f["path"], self.run_dir)
            for key in ("sidecar", "journal"):
                if f.get(key):
                    f[key] = os.path.relpath(f[key], self.run_dir)
        return {
            "format": MANIFEST_FORMAT,
            "version": 1,
            "run_dir": str(self.run_dir),
            "subject": self.paths.subject,
            "session": self.paths.session,
            "task": self.paths.task,
            "stamp": self.paths.stamp,
            "started": self.started,
            "stopped": self.stopped,
            "complete": self._state == "stopped" and not self.errors,
            "errors": list(self.errors),
            "notes": len(self.notes),
            "dataqueue_rows": self.queue.rows_written,
            "files": files,
        }

    def _write_manifest(self) -> None:
        write_json_atomic(self.manifest_path, self.manifest())
