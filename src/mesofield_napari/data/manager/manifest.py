"""The run's ``mesokit_schema.AcquisitionManifest``: what datakit and mesokit read.

mesokit's discovery reads every ``*_manifest.json`` of a session folder as an
``AcquisitionManifest`` (``extra="forbid"``), so ours is built with the package's own
models, never hand-written JSON. One :class:`Producer` per data file (paths relative to
the session folder); devices that push data-queue rows declare their
``DataqueuePayloadSchema``. What the schema has no field for — frame counts, codec,
writer statistics, errors — goes into the producer's ``calibration`` or the manifest's
``extra["mesofield_napari"]``, so nothing we record is dropped.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesokit_schema import (
    AcquisitionManifest,
    DataqueuePayloadSchema,
    ProducerEntry,
    SessionIdentity,
    TimeBasis,
)

from ..formats.safe_open import MAX_FILE_BYTES, read_bytes
from ..formats.sidecar import write_json_atomic

PRODUCER_NAME = "mesofield-napari"
EXTRA_KEY = "mesofield_napari"


@dataclass
class Producer:
    """One data file of the run and how to read its clock."""

    device_id: str
    device_type: str
    data_type: str
    file_type: str
    output_path: Path
    bids_type: str | None = None
    metadata_path: Path | None = None
    sampling_rate_hz: float | None = None
    clock_source: str = "wall_unix_s"
    queue_rows: DataqueuePayloadSchema | None = None
    # evaluated each time the manifest is written (frame counts, codec, ...)
    calibration: Callable[[], Mapping[str, Any]] = field(default=dict)

    def entry(self, session_dir: Path) -> ProducerEntry:
        metadata = self.metadata_path
        return ProducerEntry(
            device_id=self.device_id,
            device_type=self.device_type,
            data_type=self.data_type,
            bids_type=self.bids_type,
            file_type=self.file_type,
            output_path=_relative(self.output_path, session_dir),
            metadata_path=_relative(metadata, session_dir) if metadata else None,
            sampling_rate_hz=self.sampling_rate_hz,
            time_basis=TimeBasis(clock_source=self.clock_source),
            calibration=_jsonable(dict(self.calibration())),
            dataqueue_schema=self.queue_rows,
        )


def camera_queue_rows(device_id: str) -> DataqueuePayloadSchema:
    return DataqueuePayloadSchema(
        device_id=device_id,
        payload_format="scalar",
        description=(
            "one row per frame the camera delivered: payload = the frame's ImageNumber, "
            "device_ts = TimeReceivedByCore (or the frame's wall-clock time)"
        ),
    )


def notes_queue_rows() -> DataqueuePayloadSchema:
    return DataqueuePayloadSchema(
        device_id="notes",
        payload_format="scalar",
        description="one row per note: payload = the note's text",
    )


def _producer_version() -> str:
    """Our installed version, from the distribution's metadata (no import of the
    package root from down here)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mesofield-napari")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def build_manifest(
    *,
    session_dir: Path,
    subject: str,
    session: str,
    task: str | None,
    experimenter: str | None,
    protocol: str | None,
    started_at: _dt.datetime,
    ended_at: _dt.datetime | None,
    complete: bool,
    producers: list[Producer],
    notes: str | None,
    extra: Mapping[str, Any],
) -> AcquisitionManifest:
    return AcquisitionManifest(
        mesofield_version=f"{PRODUCER_NAME} {_producer_version()}",
        acquisition_complete=complete,
        started_at=started_at,
        ended_at=ended_at,
        session=SessionIdentity(
            subject=subject,
            session=session,
            task=task or None,
            experimenter=experimenter or None,
            protocol=protocol or None,
        ),
        producers=[p.entry(session_dir) for p in producers],
        notes=notes,
        extra={EXTRA_KEY: _jsonable(dict(extra))},
    )


def write_manifest(path: Path, manifest: AcquisitionManifest) -> Path:
    """Atomically (temp file + fsync + rename), like every file we finish."""
    return write_json_atomic(path, manifest.model_dump(mode="json"))


def read_manifest_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``complete``, ``errors`` and our ``extra`` block of a manifest, ours or older.

    Reads both today's ``AcquisitionManifest`` and the pre-mesokit run manifest
    (``format: mesofield-run-manifest``) so folders written before the change still
    summarise. Raises ``ValueError`` for a file that is neither, ``OSError`` for one
    that is not a regular file or is larger than ``MAX_FILE_BYTES``.
    """
    raw = json.loads(read_bytes(path, MAX_FILE_BYTES).decode("utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{Path(path).name} does not hold a JSON object")
    if raw.get("format") == "mesofield-run-manifest":  # written before mesokit
        return {
            "complete": bool(raw.get("complete")),
            "errors": list(raw.get("errors") or []),
            "extra": raw,
        }
    manifest = AcquisitionManifest.model_validate(raw)
    ours = manifest.extra.get(EXTRA_KEY, {})
    errors = list(ours.get("errors") or []) if isinstance(ours, dict) else []
    if isinstance(ours, dict) and ours.get("interrupted"):  # why it is incomplete
        errors.append(f"interrupted: {ours['interrupted']}")
    return {
        "complete": manifest.acquisition_complete,
        "errors": errors,
        "extra": ours if isinstance(ours, dict) else {},
        "manifest": manifest,
    }


def _relative(path: Path, session_dir: Path) -> str:
    """Session-relative POSIX path, as the schema requires (never absolute)."""
    return Path(os.path.relpath(path, session_dir)).as_posix()


def _jsonable(value: Any) -> Any:
    from ..formats.sidecar import to_jsonable

    return to_jsonable(value)
