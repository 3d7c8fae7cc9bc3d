"""Recovery of recordings whose process died: files, sidecars and the run manifest.

A crash leaves each recording's frame journal (``formats/journal.py``): one line per
frame really written, plus, for a TIFF, the layout its headers were made from.
:func:`recover` then

1. rewrites each TIFF's headers to the frames journaled (:func:`finish_tiffs`,
   idempotent: ``formats/tiff_layout.py``; never a pixel copied);
2. keeps, for a video, only the sidecar entries of frames that really decode
   (:func:`trim_to_decodable`: a fragmented MP4 loses up to its last fragment; a file
   whose index was never written holds nothing decodable);
3. streams the legacy sidecar from the journal and only then removes the journal;
4. records the recovered frame counts in the run's AcquisitionManifest
   (:func:`complete_run_manifest`) and, when no file of the run is left unrecovered,
   marks the acquisition complete -- mesokit's ``find_files`` skips incomplete
   manifests, so a recovered run would otherwise stay invisible downstream. The crash
   stays on record in ``extra["mesofield_napari"]`` (``errors``, ``recovered``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesokit_schema import AcquisitionManifest

from .._platform import fileio
from .clock import local_iso
from .formats.journal import (
    JournalSummary,
    legacy_payload,
    read_journal,
    summarize_journal,
    write_sidecar_from_journal,
)
from .formats.names import is_video, with_name_suffix
from .formats.payloads import RecoveryPayload
from .formats.sidecar import (
    journal_path,
    recording_path,
    sidecar_path,
    write_json_atomic,
)
from .formats.tiff_layout import finish_exact
from .formats.video_check import VideoLostError, decodable_frames
from .manager.manifest import EXTRA_KEY, write_manifest
from .manager.paths import session_folder

__all__ = ["RecoveryReport", "complete_run_manifest", "finish_tiffs", "recover"]


def finish_tiffs(data: Path, summary: JournalSummary) -> list[str]:
    """Rewrite every TIFF the journal laid out to the frames it journaled.

    Idempotent (see ``tiff_layout``). Returns notes for the report; a file that is
    missing or not the one journaled is left alone and noted.
    """
    notes: list[str] = []
    for pos, layout in summary.layouts.items():
        path = data.parent / layout.file
        pages = layout.pages_for(summary.last_flat.get(pos, -1))
        if pages < 1:
            notes.append(f"{layout.file}: no frame was written; file left as is")
            continue
        try:
            fd = fileio.open_binary(path, os.O_RDWR)
        except FileNotFoundError:
            notes.append(f"{layout.file} is missing; only its metadata was recovered")
            continue
        try:
            head = fileio.pread(fd, 16, 0)
            size = os.fstat(fd).st_size
            if head[:4] != b"II+\0" or size < layout.data_offset + pages * (
                layout.frame_bytes
            ):
                notes.append(f"{layout.file} is not the file journaled; left as is")
                continue
            finish_exact(fd, layout, pages)
        finally:
            fileio.close(fd)
        notes.append(f"{layout.file}: {pages} frame(s)")
    return notes


@dataclass
class RecoveryReport:
    """What :func:`recover` found and did."""

    data_path: Path
    sidecar: Path
    frames_by_position: dict[str, int] = field(default_factory=dict)
    recovered: bool = False  # True when a journal was turned into the sidecar
    bad_lines: int = 0
    message: str = ""
    manifest: Path | None = None  # the run manifest updated with what was recovered

    @property
    def frames(self) -> int:
        return sum(self.frames_by_position.values())

    def as_dict(self) -> RecoveryPayload:
        return {
            "data_path": str(self.data_path),
            "sidecar": str(self.sidecar),
            "frames": self.frames,
            "frames_by_position": self.frames_by_position,
            "recovered": self.recovered,
            "bad_lines": self.bad_lines,
            "message": self.message,
            "manifest": str(self.manifest) if self.manifest else None,
        }


def _count_frames(payload: dict[str, Any]) -> dict[str, int]:
    if isinstance(payload.get("frame_metadatas"), list):
        return {"frame_metadatas": len(payload["frame_metadatas"])}
    return {k: len(v) for k, v in payload.items() if isinstance(v, list)}


def _read_sidecar(spath: Path) -> tuple[dict[str, Any] | None, str]:
    """The final sidecar if it is a readable JSON object, else (None, why not)."""
    if not spath.exists():
        return None, "missing"
    try:
        final = json.loads(spath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None, "not valid JSON"
    if not isinstance(final, dict):  # valid JSON, but `[]` or `"x"` is no sidecar
        return None, "not a JSON object"
    return final, "ok"


def recover(path: str | os.PathLike[str]) -> RecoveryReport:
    """Finish a recording whose process died, from the journal it left behind.

    ``path`` may be the data file, its journal or its sidecar. Rewrites each TIFF's
    headers to the frames really written (one journal line each; idempotent, no
    pixel is copied), then streams the legacy JSON sidecar from the journal and
    removes the journal. A video keeps only the frames that decode (``VideoLostError``
    when none does). A recording that finished normally is left untouched and
    reported as complete; a corrupt sidecar is rebuilt when a journal exists. The
    run's AcquisitionManifest then records the recovered frames (``run_recovery``).
    """
    report = _recover_files(path)
    report.manifest = complete_run_manifest(
        report.data_path, report.frames, report.message
    )
    return report


def _recover_files(path: str | os.PathLike[str]) -> RecoveryReport:
    data = recording_path(path)
    jpath, spath = journal_path(data), sidecar_path(data)
    report = RecoveryReport(data_path=data, sidecar=spath)
    final, state = _read_sidecar(spath)

    if not jpath.exists():
        if final is None:
            what = (
                f"and no sidecar {spath.name}"
                if state == "missing"
                else f"and its sidecar {spath.name} is corrupt ({state})"
            )
            raise FileNotFoundError(
                f"no frame journal for {data.name} {what}; nothing to recover"
            )
        report.message = "recording is complete; nothing to recover"
        if is_video(data):  # a sidecar can list frames that never decode
            final, note = trim_to_decodable(data, final)
            if note:
                write_json_atomic(spath, final)
                report.message = f"{note}; sidecar trimmed to the decodable frames"
        report.frames_by_position = _count_frames(final)
        return report

    summary = summarize_journal(jpath)
    report.bad_lines = summary.bad_lines
    # the TIFFs first: a sidecar is only ever written after its data file is exact
    notes = finish_tiffs(data, summary)
    if final is not None:
        # The process died after the atomic rename but before removing the journal:
        # the sidecar is complete; the journal is redundant.
        report.frames_by_position = _count_frames(final)
        fileio.unlink(jpath, missing_ok=False)
        report.message = "sidecar was complete; removed leftover journal"
        return report

    note = ""
    direct = summary.header.get("mode") == "direct"
    if direct or is_video(data):
        contents = read_journal(jpath)
        extra = None
        if direct:  # keep what the header journaled (codec, fps) as finish() does
            own = {"format", "version", "mode", "data_file", "started"}
            extra = {k: v for k, v in contents.header.items() if k not in own}
            extra["recovered_from_journal"] = True
        payload = legacy_payload("direct" if direct else "mda", contents.entries, extra)
        if is_video(data):  # keep only the frames that decode (or raise)
            payload, note = trim_to_decodable(data, payload)
        write_json_atomic(spath, payload)
        report.frames_by_position = _count_frames(payload)
    else:
        report.frames_by_position = write_sidecar_from_journal(
            jpath, spath, list(summary.frames)
        )
    fileio.unlink(jpath, missing_ok=False)
    report.recovered = True
    report.message = f"recovered {report.frames} frame(s) from the journal" + (
        f"; ignored {report.bad_lines} unreadable line(s)" if report.bad_lines else ""
    )
    if summary.layouts:
        report.message += "; data rewritten to the frames written (" + (
            "; ".join(notes) + ")"
        )
    if note:
        report.message += f"; {note}: sidecar trimmed to the decodable frames"
    return report


# ---------------------------------------------------------------- videos
def position_file(data: Path, key: str, keys: list[str]) -> Path:
    """The video holding position ``key`` (``<stem>_<key><ext>`` when several)."""
    if len(keys) > 1 or not data.exists():
        candidate = with_name_suffix(data, f"_{key}")
        if candidate.exists() or len(keys) > 1:
            return candidate
    return data


def trim_to_decodable(
    data: Path, payload: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """``payload`` with each frame list cut to the frames that decode, and a note
    saying what was cut ("" when nothing was). Raises :class:`VideoLostError` when
    no frame decodes anywhere."""
    if isinstance(payload.get("frame_metadatas"), list):
        lists = {"frame_metadatas": data}
    else:
        keys = [k for k, v in payload.items() if isinstance(v, list)]
        lists = {k: position_file(data, k, keys) for k in keys}
    notes: list[str] = []
    total = listed_total = 0
    for key, video in lists.items():
        listed = len(payload[key])
        found = decodable_frames(video) if video.exists() else 0
        total += found
        listed_total += listed
        if found < listed:
            payload[key] = payload[key][:found]
            notes.append(f"{video.name}: {found} of {listed} frame(s) decode")
    if total == 0 and listed_total:
        names = ", ".join(sorted({p.name for p in lists.values()})) or data.name
        raise VideoLostError(
            f"the video is lost: no frame of {names} decodes "
            "(killed before its first fragment reached the disk, or an MP4 written "
            "without a crash-safe index)"
        )
    return payload, "; ".join(notes)


# ---------------------------------------------------------------- the run manifest


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
