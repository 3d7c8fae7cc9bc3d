"""After a crash: bring the run's AcquisitionManifest in line with what was recovered.

A run whose process died leaves the manifest written at its start (or at its last
update): ``acquisition_complete: false`` and no frame counts. Once :func:`recover` has
rebuilt a recording's sidecar from its journal, :func:`complete_run_manifest` records
the recovered frame count in that file's producer entry and, when no file of the run is
left unrecovered, marks the acquisition complete — mesokit's ``find_files`` skips
incomplete manifests, so a recovered run would otherwise stay invisible downstream. The
crash itself stays on record in ``extra["mesofield_napari"]`` (``errors``,
``recovered``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from mesokit_schema import AcquisitionManifest

from .clock import local_iso
from .run_manifest import EXTRA_KEY, write_manifest
from .sidecar import journal_path


def session_folder(data: Path) -> Path:
    """The session folder of a data file (the parent of ``func/``/``beh/``)."""
    folder = data.parent
    return folder.parent if folder.name in ("func", "beh") else folder


def _manifest_for(data: Path) -> tuple[Path, AcquisitionManifest, str] | None:
    session = session_folder(data)
    relative = Path(os.path.relpath(data, session)).as_posix()
    for path in sorted(session.glob("*_manifest.json")):
        try:
            manifest = AcquisitionManifest.model_validate(
                json.loads(path.read_text(encoding="utf-8"))
            )
        except (OSError, ValueError):
            continue  # not ours (or not a manifest): leave it alone
        if any(p.output_path == relative for p in manifest.producers):
            return path, manifest, relative
    return None


def complete_run_manifest(
    data: str | os.PathLike[str], frames: int, message: str
) -> Path | None:
    """Record a recovered file in its run's manifest; returns the manifest's path.

    Does nothing (returns None) when the file is in no mesokit manifest (runs written
    before manifests were mesokit's, or files outside a run) or when the manifest
    already says the acquisition completed.
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
    extra: dict[str, Any] = dict(manifest.extra.get(EXTRA_KEY) or {})
    recovered = dict(extra.get("recovered") or {})
    recovered[relative] = {"frames": int(frames), "at": now, "message": message}
    extra["recovered"] = recovered
    crash = "the recording process ended without finishing the run; files recovered"
    errors = list(extra.get("errors") or [])
    if crash not in errors:
        errors.append(crash)
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
