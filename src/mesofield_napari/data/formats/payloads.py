"""The JSON objects the commands print with ``--json`` (``record``, ``inspect``,
``recover``, ``export``), as TypedDicts: the contract scripts read.

They live here, below every room that builds them (the writers' file entries in
``data.manager``, summaries in ``data.reader``, recovery reports, batch summaries,
``acquisition`` and ``experiment`` results, the CLI's own keys), so each builder
annotates what it returns with the one definition, and mypy checks every key and
type where the dict is made. Keys are only ever added (scripts read old keys); see
docs/design.md §5 and the Types paragraph.

Python 3.10 has no ``NotRequired``: a TypedDict's optional keys are a
``total=False`` subclass of its required ones.
"""

from __future__ import annotations

from typing import Any, TypedDict, final

__all__ = [
    "DeviceFile",
    "ExperimentPayload",
    "ExportPayload",
    "FileEntry",
    "JobPayload",
    "RecordPayload",
    "RecordResultPayload",
    "RecordingSummary",
    "RecoverFolderPayload",
    "RecoveryPayload",
    "RunEntry",
    "RunSummary",
    "SkippedPayload",
    "WriterFile",
]


# ---------------------------------------------------------------- record
class FileEntry(TypedDict):
    """A data file a run wrote (an encoder's CSV has only these keys)."""

    path: str
    kind: str  # "tiff", "video" or "csv"
    frames: int
    sidecar: str | None  # the frame-metadata sidecar, once it exists


class _WriterFileRequired(FileEntry):
    journal: str | None  # the frame journal while it exists (a crash left it)
    started: str | None  # local ISO-8601 with offset
    stopped: str | None
    frames_lost: int
    backpressure_events: int


class WriterFile(_WriterFileRequired, total=False):
    """A writer's data file (``run_manager.describe_writer``)."""

    codec: str  # videos only
    fps: float


class RecordResultPayload(TypedDict):
    """``acquisition.timelapse.RecordResult.as_dict()``."""

    ok: bool
    files: list[WriterFile]
    frames_requested: int  # 0: until Stop
    frames_written: int
    elapsed_s: float
    errors: list[str]
    interrupted: str | None  # why a planned run ended early


class RecordPayload(RecordResultPayload):
    """``record --json`` (one camera): the result and the run's own files."""

    run_dir: str
    notes: str
    timestamps: str
    configuration: str
    manifest: str
    dataqueue: str


class _DeviceFileRequired(FileEntry):
    device_id: str


class DeviceFile(_DeviceFileRequired, total=False):
    """An experiment device's file: a writer's (:class:`WriterFile`'s keys) or an
    encoder's CSV (:class:`FileEntry`'s)."""

    journal: str | None
    started: str | None
    stopped: str | None
    frames_lost: int
    backpressure_events: int
    codec: str
    fps: float


class ExperimentPayload(TypedDict):
    """``record --experiment --json`` (``ExperimentRun.result()``)."""

    ok: bool
    files: list[DeviceFile]
    run_dir: str
    manifest: str
    dataqueue: str
    subject: str
    session: str
    task: str
    duration_s: float
    # each device's live status (frames, fps, lost, queue fill, ...): its own keys
    devices: dict[str, dict[str, Any]]
    errors: list[str]
    interrupted: str | None


# ---------------------------------------------------------------- inspect
# final: nothing adds keys to them, so `"recordings" in summary` tells them apart
@final
class RecordingSummary(TypedDict):
    """``inspect <recording> --json`` (``data.reader.summary.summarize_recording``)."""

    path: str
    kind: str  # "tiff" or "video"
    exists: bool
    frames: int
    frames_listed: int
    frames_by_position: dict[str, int]
    shape: list[int] | None
    dtype: str | None
    codec: str | None
    duration_s: float
    fps: float | None
    dropped_frames: int  # = missing_frames (the older name)
    missing_frames: int
    late_frames: int
    sidecar: str  # "final", "journal" or "missing"
    complete: bool
    problems: list[str]
    notes: list[str]
    compression: str | None  # a TIFF's lossless codec; None: uncompressed
    size_ratio: float | None  # bytes on disk / raw pixel bytes


class RunEntry(TypedDict):
    """One run of a folder (``<prefix>_manifest.json``, or ``run: None`` for
    recordings of no manifest)."""

    run: str | None
    manifest: str | None
    complete: bool
    errors: list[str]
    notes: list[str]
    recordings: list[str]  # their paths


class _RunSummaryRequired(TypedDict):
    run_dir: str
    complete: bool
    errors: list[str]
    notes: list[str]
    recordings: list[RecordingSummary]
    frames: int
    runs: list[RunEntry]


@final
class RunSummary(_RunSummaryRequired, total=False):
    """``inspect <folder> --json`` (``summarize_run``); the command adds the first
    recording's main numbers, for scripts that expect one recording."""

    shape: list[int] | None
    dtype: str | None
    duration_s: float
    fps: float | None
    dropped_frames: int  # of every recording
    sidecar: str


# ---------------------------------------------------------------- recover
class RecoveryPayload(TypedDict):
    """``recover <recording> --json`` (``data.recovery.RecoveryReport.as_dict()``)."""

    data_path: str
    sidecar: str
    frames: int
    frames_by_position: dict[str, int]
    recovered: bool  # a journal was turned into the sidecar
    bad_lines: int
    message: str
    manifest: str | None  # the run manifest updated


class _RecoverFolderRequired(TypedDict):
    ok: bool
    recordings: list[RecoveryPayload]


class RecoverFolderPayload(_RecoverFolderRequired, total=False):
    """``recover <folder> --json``; ``errors`` is absent when no journal was found."""

    errors: list[str]
    runs: list[dict[str, Any]]  # data.run_recovery.RunRecovery.as_dict


# ---------------------------------------------------------------- export
class _SkippedRequired(TypedDict):
    path: str
    reason: str


class SkippedPayload(_SkippedRequired, total=False):
    """A recording not exported, and why (``data.batch.selection.Skipped``);
    ``unfinished`` when it is still being written (or crashed, not recovered)."""

    unfinished: bool


class JobPayload(TypedDict):
    """One recording's export (``data.batch.parallel.JobResult.as_dict()``)."""

    path: str
    ok: bool
    outputs: list[str]
    frames: int
    elapsed_s: float
    error: str | None
    cancelled: bool
    warnings: list[str]


class ExportPayload(TypedDict):
    """``export --json`` (``data.batch.parallel.BatchSummary.as_dict()``)."""

    operation: str
    ok: bool
    elapsed_s: float
    outputs: list[str]
    failures: dict[str, str]  # path -> one-line error
    cancelled: list[str]
    skipped: list[SkippedPayload]
    jobs: list[JobPayload]
