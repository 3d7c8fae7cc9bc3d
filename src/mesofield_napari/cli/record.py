"""``mesofield-napari record``: a time-lapse on one camera, or a whole experiment.

Without ``--experiment`` it records a time-lapse on the simulated camera (or a
Micro-Manager configuration) through a :class:`~..data.RunManager`; ``--experiment``
records every camera and encoder of mesofield's ``hardware.yaml`` +
``experiment.json`` (:func:`~..experiment.record_experiment`). Either way the exit
code, ``--json``'s ``ok``, the manifest and the printed summary say the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._platform.console import StopRequests
from ..acquisition.console_log import quiet_pymmcore_console
from ..acquisition.core_release import release_core
from ..data.formats.tiff_compressed import CODECS
from ._args import (
    EXIT_USAGE,
    CLIError,
    finite_positive,
    fps,
    frame_size,
    non_negative_float,
    non_negative_int,
    number,
    positive_int,
    prepare_out_dir,
)
from .signals import acknowledged_interrupts

if TYPE_CHECKING:
    from ..acquisition.timelapse import RecordResult
    from ..data.formats.payloads import RecordPayload


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``record`` to ``mesofield-napari``'s sub-commands."""
    rec = subparsers.add_parser(
        "record",
        help="record a time-lapse (or a whole experiment: --experiment) headless",
    )
    rec.add_argument(
        "--out",
        type=Path,
        help="experiment folder: runs go to OUT/data/sub-<subject>/ses-<session>/ "
        "(required without --experiment)",
    )
    rec.add_argument(
        "--experiment",
        type=Path,
        metavar="TARGET",
        help="mesofield experiment: a folder with hardware.yaml + experiment.json, a "
        "hardware.yaml, or an experiment.json beside its hardware.yaml",
    )
    rec.add_argument(
        "--duration",
        type=finite_positive,
        metavar="S",
        help="with --experiment: run length in seconds (default: the JSON's duration)",
    )
    rec.add_argument(
        "--subject", help="subject label (default: sim; experiment: its first subject)"
    )
    rec.add_argument(
        "--session", help="session (numbers pad to 01; default 1 or the subject's)"
    )
    rec.add_argument("--task", help="task label (default: rec or the subject's)")
    rec.add_argument("--experimenter", default="", help="stored in the configuration")
    rec.add_argument(
        "--note",
        action="append",
        default=[],
        metavar="TEXT",
        help="add a note (repeatable)",
    )
    rec.add_argument(
        "--frames",
        type=non_negative_int,
        default=100,
        help="time-lapse length (default 100); 0 records until Stop: Ctrl-C, "
        "SIGTERM (Windows: Ctrl-Break, closing the console) or --stop-file ends "
        "the run cleanly and the files hold exactly what was recorded",
    )
    rec.add_argument(
        "--stop-file",
        type=Path,
        metavar="PATH",
        help="end the run cleanly (like Ctrl-C) as soon as PATH exists: how another "
        "program stops a run on any system (must not exist at the start)",
    )
    rec.add_argument("--writer", choices=("tiff", "mp4", "both"), default="tiff")
    rec.add_argument(
        "--compression",
        choices=("none", *CODECS),
        default="none",
        help="lossless TIFF compression on all cores (deflate: every reader; zstd: "
        "tifffile, Fiji/Bio-Formats; jpegxl: the fastest and smallest, read by "
        "tifffile and GDAL; default none)",
    )
    rec.add_argument(
        "--size",
        type=frame_size,
        default=(512, 512),
        metavar="HxW",
        help="simulated camera frame size (default 512x512)",
    )
    rec.add_argument("--exposure", type=non_negative_float, default=10.0, metavar="MS")
    rec.add_argument(
        "--interval",
        type=non_negative_float,
        default=0.0,
        metavar="S",
        help="time-lapse interval in seconds (0: as fast as possible)",
    )
    rec.add_argument(
        "--config",
        type=Path,
        metavar="MMCONFIG.cfg",
        help="Micro-Manager configuration (default: simulated camera)",
    )
    rec.add_argument(
        "--camera-id",
        default="mesoscope",
        help="the camera's id in the data queue and manifest (default: mesoscope, "
        "which datakit takes as the timeline master)",
    )
    rec.add_argument(
        "--camera-name",
        default="meso",
        help="camera suffix of the file names (default: meso -> …_meso.ome.tiff)",
    )
    rec.add_argument("--fps", type=fps, help="MP4 frame rate (default: from exposure)")
    rec.add_argument("--fourcc", help="MP4 codec (default: $MESOFIELD_FOURCC or H264)")
    rec.add_argument(
        "--contrast",
        type=number,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="MP4 contrast limits (default: the camera's bit depth)",
    )
    rec.add_argument(
        "--max-queue-mb",
        type=positive_int,
        default=512,
        help="memory budget for frames waiting for the disk",
    )
    rec.add_argument("--json", action="store_true", help="print one JSON object")
    return rec


def _make_core(args: argparse.Namespace) -> Any:
    from ..acquisition.timelapse import make_core

    try:
        core = make_core(args.config, size=args.size, exposure_ms=args.exposure)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    except Exception as exc:
        raise CLIError(f"cannot load {args.config}: {exc}") from exc
    quiet_pymmcore_console()  # its console handler exists now
    return core


def _preflight(args: argparse.Namespace, core: Any, out: Path) -> None:
    """Refuse a run that cannot fit; warn when the disk cannot keep up."""
    from ..acquisition.preflight import (
        check_free_space,
        frame_geometry,
        planned_bytes,
        rate_warning,
    )

    h, w, frame_bytes = frame_geometry(core)
    needs = planned_bytes(args.frames, h, w, frame_bytes, args.writer)
    try:
        check_free_space(out, args.frames, needs)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if args.writer in ("tiff", "both") and (
        why := rate_warning(frame_bytes, args.exposure, args.interval, out)
    ):
        print(f"warning: {why}", file=sys.stderr)


def cmd(args: argparse.Namespace) -> int:
    """Record; a Ctrl-C while the files are being finished is acknowledged and
    ignored (``signals.acknowledged_interrupts``)."""
    with acknowledged_interrupts() as interrupts:
        args.interrupts = interrupts
        return _cmd(args)


def _cmd(args: argparse.Namespace) -> int:
    if args.stop_file is not None and args.stop_file.exists():
        raise CLIError(f"stop file {args.stop_file} already exists: remove it first")
    if args.experiment is not None:
        return _cmd_record_experiment(args)
    if args.duration is not None:
        raise CLIError("--duration needs --experiment (use --frames for a time-lapse)")
    if args.out is None:
        raise CLIError("--out DIR is required (or --experiment TARGET)")
    # given but empty is a mistake the run manager reports, not a default
    args.subject = "sim" if args.subject is None else args.subject
    args.session = "1" if args.session is None else args.session
    args.task = "rec" if args.task is None else args.task
    return _cmd_record_timelapse(args)


def _cmd_record_experiment(args: argparse.Namespace) -> int:
    """Several cameras and encoders from mesofield's hardware.yaml/experiment.json."""
    from ..experiment import ExperimentError, record_experiment

    if args.out is not None:
        prepare_out_dir(args.out)
    stop = threading.Event()
    try:
        with StopRequests(args.stop_file, on_request=stop.set):
            payload = record_experiment(
                args.experiment,
                subject=args.subject,
                session=args.session,
                task=args.task,
                duration=args.duration,
                out=args.out,
                stop=stop,
                on_finishing=args.interrupts.finishing,
            )
    except ExperimentError as exc:
        raise CLIError(str(exc)) from exc
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        run_dir = Path(payload["run_dir"])
        print(f"run folder: {run_dir}")
        for f in payload["files"]:
            rel = os.path.relpath(f["path"], run_dir)
            frames = f" {f['frames']} frames" if f.get("frames") is not None else ""
            print(f"  {f.get('device_id', '')}: {rel}{frames}")
        print(f"  manifest: {Path(payload['manifest']).name}")
    for err in payload.get("errors", []):
        print(f"mesofield-napari record: error: {err}", file=sys.stderr)
    return 0 if payload["ok"] else EXIT_USAGE


def _cmd_record_timelapse(args: argparse.Namespace) -> int:
    from ..data.manager.run_manager import RunManager

    out = prepare_out_dir(args.out)
    params = {
        "experimenter": args.experimenter,
        "frames": args.frames,
        "exposure_ms": args.exposure,
        "interval_s": args.interval,
        "writer": args.writer,
        "camera": args.camera_id,
        "camera_name": args.camera_name,
        "config": str(args.config) if args.config else "simulated camera",
    }
    try:
        run = RunManager(out, args.subject, args.session, args.task, params)
        for ext, folder in _writer_files(args.writer):
            run.paths.check_length(args.camera_name, ext, folder)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    core = _make_core(args)
    try:
        result = _record_on(core, args, run, out)
    finally:
        # its native notification thread must not outlive this call: at interpreter
        # teardown it could call back into a finalizing Python (abort, exit 134)
        release_core(core)
    errors = list(dict.fromkeys(run.errors))

    payload: RecordPayload = {
        **result.as_dict(),
        "ok": not errors,
        "errors": errors,
        "run_dir": str(run.run_dir),
        "notes": str(run.notes_path),
        "timestamps": str(run.timestamps_path),
        "configuration": str(run.configuration_path),
        "manifest": str(run.manifest_path),
        "dataqueue": str(run.dataqueue_path),
    }
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(f"run folder: {run.run_dir}")
        for f in result.files:
            extra = f" ({f['codec']})" if "codec" in f else ""
            rel = os.path.relpath(f["path"], run.run_dir)
            print(f"  {f['kind']:>4}: {rel}  {f['frames']} frames{extra}")
        print(f"  manifest: {run.manifest_path.name}")
        of = (
            f" of {args.frames} planned"
            if args.frames and result.frames_written != args.frames
            else ""
        )
        print(
            f"recorded {result.frames_written} frames{of} in {result.elapsed_s:.1f} s"
        )
    for err in errors:
        print(f"mesofield-napari record: error: {err}", file=sys.stderr)
    return EXIT_USAGE if errors else 0


def _record_on(
    core: Any, args: argparse.Namespace, run: Any, out: Path
) -> RecordResult:
    """The time-lapse on ``core`` into ``run``; every file final when it returns."""
    from ..acquisition.timelapse import timelapse

    _preflight(args, core, out)  # before any file or event is made
    if args.frames:
        sequence: Any = timelapse(args.frames, args.interval)
    else:  # until Stop: a stop request (a KeyboardInterrupt) cancels cleanly
        from ..acquisition.sequencing import endless_timelapse

        sequence = endless_timelapse(args.interval, core=core)
        print("recording until Stop: press Ctrl-C to end the run", file=sys.stderr)
    with StopRequests(args.stop_file, on_request=args.interrupts.request) as stops:
        return _record_with_stops(args, run, core, sequence, stops)


def _writer_files(writer: str) -> list[tuple[str, str]]:
    """(extension, folder) of the data files ``--writer`` makes."""
    files = {"tiff": (".ome.tiff", "func"), "mp4": (".mp4", "beh")}
    return [f for kind, f in files.items() if writer in (kind, "both")]


def _record_with_stops(
    args: argparse.Namespace, run: Any, core: Any, sequence: Any, stops: Any
) -> RecordResult:
    """Record with the run's files; a stop request (Ctrl-C, SIGTERM, Ctrl-Break,
    the console closing, the stop file) cancels the acquisition, and once it has
    ended requests are ignored, so finishing the files is never interrupted."""
    from ..acquisition.timelapse import add_writers, record

    try:
        run.start()
    except OSError as exc:
        raise CLIError(str(exc)) from exc
    try:
        for note in args.note:
            run.add_note(note)
        writers = add_writers(
            run,
            core,
            args.camera_id,
            args.writer,
            suffix=args.camera_name,
            interval_s=args.interval,
            fps=args.fps,
            fourcc=args.fourcc,
            contrast_limits=tuple(args.contrast) if args.contrast else None,
            max_queue_bytes=args.max_queue_mb * 2**20,
            compression=None if args.compression == "none" else args.compression,
        )
        result = record(core, writers, sequence)
        stops.ignore()
        args.interrupts.finishing()
    except BaseException as exc:
        stops.ignore()
        args.interrupts.finishing()
        run.stop(error=exc, raise_errors=False)  # finalize whatever was written
        if isinstance(exc, (OSError, ValueError)):
            raise CLIError(str(exc)) from exc
        raise
    # one source of truth: the camera's problems join the writers' in run.errors,
    # so the manifest, --json and the exit code all say the same
    run.errors.extend(result.camera_errors)
    run.stop(raise_errors=False)
    return result
