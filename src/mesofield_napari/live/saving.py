"""A run's live traces on disk, in its data queue and in its manifest.

Where: the run's processed folder, next to the batch exports
(``<experiment>/processed/sub-X/ses-Y/``, ``data.manager.paths.processed_folder``):

* ``<stem>_meso-live-roi<k>-trace.csv`` — ``Slice,Mean,time_s``: the 1-based frame
  number the sample came from, the ROI mean, seconds from the run's first frame
  (the sidecar's ``runner_time_ms`` clock, as the batch traces use);
* ``<stem>_meso-live-roi<k>-dff-trace.csv`` — the same with ``Mean`` = ΔF/F;
* ``<stem>_meso-live-rois.json`` — geometry, first/last frame and sample count of
  every ROI, ΔF/F settings, the sampling rate used, counters and ROI events.

``<stem>`` is the camera's data file name without its extension (the batch
``output_stem``). Rows stream into hidden temp files while recording (no trace is
held in memory) and are renamed into place when the run ends, never over an existing
file. Every sample is also a ``traces`` row of the run's data queue
(payload ``{roi, mean[, dff], frame}``, ``device_ts`` = the frame's camera time), and
every ROI change a run note.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mesokit_schema import DataqueuePayloadSchema

from .._platform import fileio
from ..data.clock import local_iso
from ..data.formats.names import VIDEO_EXTENSIONS, split_extension
from ..data.manager.manifest import Producer
from ..data.manager.paths import processed_folder
from .sink import Sample

if TYPE_CHECKING:
    from ..data.manager.run_manager import RunManager

__all__ = ["TRACES_DEVICE", "RunTraceFiles", "processed_dir", "traces_queue_rows"]

TRACES_DEVICE = "traces"
FLUSH_INTERVAL_S = 1.0


def processed_dir(run_dir: Path) -> Path:
    """Where the batch exports of this run's recordings go (the same rule)."""
    return processed_folder(run_dir)


def traces_queue_rows(with_dff: bool) -> DataqueuePayloadSchema:
    fields = {"roi": "int", "mean": "float", "frame": "int"}
    if with_dff:
        fields["dff"] = "float"
    return DataqueuePayloadSchema(
        device_id=TRACES_DEVICE,
        payload_format="dict",
        payload_fields=fields,
        description=(
            "one row per live ROI sample: roi id, ROI mean"
            + (", running ΔF/F (trailing window)" if with_dff else "")
            + ", the 1-based frame number; device_ts = the frame's camera time"
        ),
    )


def camera_stem(run: RunManager) -> str:
    """The first camera data file's stem (``x.ome.tiff`` -> ``x``, ``x.mp4`` -> ``x_mp4``)."""
    for writer in run.writers:
        sidecar = Path(writer.sidecar_path)
        data_name = sidecar.name.removesuffix("_frame_metadata.json")
        stem, ext = split_extension(data_name)
        video = ext.lower() in VIDEO_EXTENSIONS  # as the batch's output_stem tags it
        return stem + ("_" + ext.lstrip(".").lower() if video else "")
    return run.paths.name("live", "")


class _Stream:
    """One CSV growing in a hidden temp file."""

    def __init__(self, folder: Path, name: str) -> None:
        self.name = name
        self.tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        self.fh: IO[str] = open(self.tmp, "x", encoding="utf-8", newline="\n")
        self.fh.write("Slice,Mean,time_s\n")
        self.rows = 0

    def write(self, frame: int, value: float, time_s: float) -> None:
        self.fh.write(f"{frame:d},{value:.10g},{time_s:.6f}\n")
        self.rows += 1


class RunTraceFiles:
    """The :class:`~.sink.TraceSink` of one run."""

    def __init__(self, run: RunManager) -> None:
        self.run = run
        self.folder = processed_dir(run.run_dir)
        self._streams: dict[tuple[int, str], _Stream] = {}
        self._last_flush = time.monotonic()
        self.paths: list[Path] = []
        self.json_path: Path | None = None

    # ------------------------------------------------------------ sink (worker)
    def sample(self, s: Sample) -> None:
        payload: dict[str, Any] = {"roi": s.roi, "mean": s.mean, "frame": s.frame}
        if s.dff is not None:
            payload["dff"] = s.dff
        ts = s.device_ts
        if isinstance(ts, float):
            ts = local_iso(ts)
        self.run.push(TRACES_DEVICE, payload, ts)
        self._stream(s.roi, "").write(s.frame, s.mean, s.time_s)
        if s.dff is not None:
            self._stream(s.roi, "-dff").write(s.frame, s.dff, s.time_s)
        now = time.monotonic()
        if now - self._last_flush >= FLUSH_INTERVAL_S:
            self._last_flush = now
            for st in self._streams.values():
                st.fh.flush()

    def _stream(self, roi: int, kind: str) -> _Stream:
        key = (roi, kind)
        st = self._streams.get(key)
        if st is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            st = self._streams[key] = _Stream(self.folder, f"roi{roi}{kind}")
        return st

    def roi_event(self, event: dict[str, Any]) -> None:
        """A run note for every ROI the user adds, moves or removes."""
        if not self.run.running:
            return
        what = event["event"]
        text = (
            f"live traces: roi{event['roi']} {what} after frame {event['after_frame']}"
        )
        if "replaces" in event:
            text += f" (replaces roi{event['replaces']})"
        text += f": {event['roi_description']}"
        if "reason" in event:
            text += f" — {event['reason']}"
        self.run.add_note(text)

    # ------------------------------------------------------------ end of run
    def close(self, summary: dict[str, Any]) -> list[str]:
        """Rename the traces into place, write the ROI JSON, declare producers;
        returns what could not be saved (also a run note while the run lasts)."""
        stem = camera_stem(self.run)
        errors: list[str] = []
        by_roi: dict[int, dict[str, str]] = {}
        for (roi, kind), st in sorted(self._streams.items()):
            try:
                st.fh.flush()
                fileio.full_sync(st.fh.fileno())
                st.fh.close()
                final = _commit(
                    st.tmp, self.folder / f"{stem}_meso-live-{st.name}-trace.csv"
                )
                self.paths.append(final)
                by_roi.setdefault(roi, {})["dff" if kind else "mean"] = final.name
            except OSError as exc:
                errors.append(f"{st.name}: {exc}")
                with contextlib.suppress(OSError):
                    st.fh.close()
        summary = {**summary, "files": {f"roi{k}": v for k, v in by_roi.items()}}
        summary["errors"] = list(summary.get("errors", [])) + errors
        if by_roi or summary.get("rois"):
            try:
                self.json_path = _commit_text(
                    self.folder / f"{stem}_meso-live-rois.json",
                    json.dumps(summary, indent=2, default=str),
                )
            except OSError as exc:
                errors.append(f"ROI JSON: {exc}")
        for k, path in enumerate(self.paths):
            producer = Producer(
                device_id=TRACES_DEVICE,
                device_type="analysis",
                data_type="live_trace",
                file_type="csv",
                output_path=path,
                metadata_path=self.json_path,
                sampling_rate_hz=summary.get("fs"),
                clock_source="derived",  # the camera frames' runner_time_ms
                # one declaration of the device's rows is enough
                queue_rows=traces_queue_rows(summary.get("dff") is not None)
                if k == 0
                else None,
                calibration=_calibration(path, summary),
            )
            try:
                producer.entry(self.run.run_dir)  # never hand the run a bad entry
            except Exception as exc:
                errors.append(f"manifest entry for {path.name}: {exc}")
                continue
            self.run.add_producer(producer)
        if errors and self.run.running:
            with contextlib.suppress(Exception):
                self.run.add_note("live traces not fully saved: " + "; ".join(errors))
        return errors


def _calibration(path: Path, summary: dict[str, Any]) -> Any:
    info = {
        "samples_computed": summary.get("samples_computed"),
        "samples_skipped": summary.get("samples_skipped"),
        "dff": summary.get("dff"),
    }
    return lambda: {"file": path.name, **info}


def _commit(tmp: Path, final: Path) -> Path:
    """Rename ``tmp`` to ``final`` or, if that exists, ``<stem>_1<ext>``, ``_2``..."""
    stem, ext = split_extension(final.name)
    for n in range(10_000):
        target = final if n == 0 else final.with_name(f"{stem}_{n}{ext}")
        try:
            os.link(tmp, target)  # fails if target exists: never clobbers
        except FileExistsError:
            continue
        except OSError:  # no hard links on this file system
            if target.exists():
                continue
            fileio.replace(tmp, target)
            return target
        fileio.unlink(tmp, missing_ok=False)
        return target
    raise FileExistsError(f"no free name for {final}")


def _commit_text(final: Path, text: str) -> Path:
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            fileio.full_sync(fh.fileno())
        return _commit(tmp, final)
    finally:
        fileio.unlink(tmp)
