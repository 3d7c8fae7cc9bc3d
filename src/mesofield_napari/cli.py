"""The ``mesofield-napari`` command.

Sub-commands: ``record`` (headless recording on the simulated camera or a
Micro-Manager configuration), ``recover`` (rebuild a crashed run's sidecar),
``inspect``, ``gui`` and ``export`` (batch traces, ΔF/F, videos, montages).
Bad arguments and failures give a one-line error and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


MAX_FPS = 1000.0  # a video frame rate above this is a typo (and hangs OpenCV)


class _Parser(argparse.ArgumentParser):
    """One-line errors with exit code 2; no abbreviations (``--experiment`` must not
    silently mean ``--experimenter``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HxW like 512x512, got {text!r}"
        ) from None
    if h < 8 or w < 8 or h > 8192 or w > 8192:
        raise argparse.ArgumentTypeError(
            f"frame size must be within 8..8192, got {text!r}"
        )
    return h, w


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text!r}"
        ) from None
    if value < minimum:
        what = "must not be negative" if minimum == 0 else f"must be at least {minimum}"
        raise argparse.ArgumentTypeError(f"{what}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _number(text: str) -> float:
    """A finite number: ``inf`` and ``nan`` are typos, never settings."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _finite_positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _fps(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    if value > MAX_FPS:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_FPS:.0f} frames per second, got {value}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mesofield-napari",
        description="Record, recover and inspect mesofield recordings.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    rec = sub.add_parser(
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
        type=_finite_positive,
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
        type=_non_negative_int,
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
        "--size",
        type=_size,
        default=(512, 512),
        metavar="HxW",
        help="simulated camera frame size (default 512x512)",
    )
    rec.add_argument("--exposure", type=_non_negative_float, default=10.0, metavar="MS")
    rec.add_argument(
        "--interval",
        type=_non_negative_float,
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
    rec.add_argument("--fps", type=_fps, help="MP4 frame rate (default: from exposure)")
    rec.add_argument("--fourcc", help="MP4 codec (default: $MESOFIELD_FOURCC or H264)")
    rec.add_argument(
        "--contrast",
        type=_number,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="MP4 contrast limits (default: the camera's bit depth)",
    )
    rec.add_argument(
        "--max-queue-mb",
        type=_positive_int,
        default=512,
        help="memory budget for frames waiting for the disk",
    )
    rec.add_argument("--json", action="store_true", help="print one JSON object")

    recv = sub.add_parser(
        "recover", help="finish the recordings of a run whose process died"
    )
    recv.add_argument(
        "path",
        type=Path,
        help="data file, its journal or sidecar, or an experiment/session/run folder "
        "(every recording with a journal in it)",
    )
    recv.add_argument("--json", action="store_true")
    gui = sub.add_parser(
        "gui",
        help="open napari with napari-micromanager and the recorder (the default)",
    )
    gui.add_argument("--config", type=Path, help="Micro-Manager configuration file")
    gui.add_argument("--size", type=_size, default=(512, 512), help="sim camera HxW")
    gui.add_argument("--exposure", type=_non_negative_float, default=10.0, help="ms")
    gui.add_argument(
        "--record-frames", type=_positive_int, help="record N frames via the widget"
    )
    gui.add_argument(
        "--experiment",
        type=Path,
        metavar="TARGET",
        help="open the recorder's experiment mode on TARGET (folder, hardware.yaml "
        "or experiment.json); with --quit, record it once and exit",
    )
    gui.add_argument(
        "--duration",
        type=_finite_positive,
        metavar="S",
        help="with --experiment: run length in seconds (default: the JSON's)",
    )
    gui.add_argument(
        "--out",
        type=Path,
        help="output root for --record-frames; the experiment folder for "
        "--experiment (default: its experiment_directory or its folder)",
    )
    gui.add_argument("--writer", choices=("tiff", "mp4", "both"), default="tiff")
    gui.add_argument("--subject", help="default: sim (experiment: its first subject)")
    gui.add_argument("--session", help="default: 1 (experiment: the subject's)")
    gui.add_argument("--task", help="default: rec (experiment: the subject's)")
    gui.add_argument("--screenshot", type=Path, help="save a PNG of the window")
    gui.add_argument("--quit", action="store_true", help="exit when done")
    gui.add_argument("--json", action="store_true", help="print the result as JSON")

    ins = sub.add_parser("inspect", help="summarise a run folder or one recording")
    ins.add_argument("path", type=Path, help="run folder, data file or sidecar")
    ins.add_argument("--json", action="store_true")

    from .cli_export import add_export_parser

    add_export_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ._platform.console import safe_text_streams

    safe_text_streams()  # before --help: Windows' cp1252 cannot print "ΔF/F"
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_output()
    if args.command is None:  # the app, as a desktop shortcut would start it
        args = parser.parse_args(["gui"])
    try:
        return {
            "record": _cmd_record,
            "recover": _cmd_recover,
            "inspect": _cmd_inspect,
            "gui": _cmd_gui,
            "export": _cmd_export,
        }[args.command](args)
    except CLIError as exc:
        print(f"mesofield-napari {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class _ConsoleFilter(logging.Filter):
    """What reaches the terminal as ``LEVEL: message``.

    pymmcore-plus's records below CRITICAL are dropped (a run's camera trouble is
    collected by :class:`~mesofield_napari.run_watch.RunWatch` and reported once, in
    the run's errors), and so are our own ERROR records: every failure they describe
    is in ``run.errors`` and printed once at the end.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        if record.name.startswith("pymmcore-plus"):
            return False
        return not (
            record.name.startswith("mesofield_napari")
            and record.levelno >= logging.ERROR
        )


def _quiet_pymmcore() -> None:
    """Raise pymmcore-plus's coloured console handler to CRITICAL (its records still
    reach our one-line handler, filtered). It exists only once pymmcore-plus is
    imported, so this runs again after the core is made."""
    for h in logging.getLogger("pymmcore-plus").handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(
            h, logging.FileHandler
        ):
            h.setLevel(logging.CRITICAL)


def _configure_output() -> None:
    """Warnings and log records as single lines; library chatter below WARNING hidden.

    pymmcore-plus's own coloured console handler is raised to CRITICAL, so its
    records only reach the terminal through our one-line handler (filtered above).
    """
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.addFilter(_ConsoleFilter())
    logging.getLogger().addHandler(handler)
    _quiet_pymmcore()

    def one_line(
        message: Warning | str, category: type[Warning], *_: Any, **__: Any
    ) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line  # type: ignore[assignment]


# ---------------------------------------------------------------- record
def _prepare_out_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(
            f"cannot create output folder {out}: {exc.strerror or exc}"
        ) from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise CLIError(f"output folder is not writable: {out}")
    return out


def _make_core(args: argparse.Namespace) -> Any:
    from .acquire import make_core

    try:
        core = make_core(args.config, size=args.size, exposure_ms=args.exposure)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    except Exception as exc:
        raise CLIError(f"cannot load {args.config}: {exc}") from exc
    _quiet_pymmcore()  # its console handler exists now
    return core


def _preflight(args: argparse.Namespace, core: Any, out: Path) -> None:
    """Refuse a run that cannot fit; warn when the disk cannot keep up."""
    from .preflight import check_free_space, frame_geometry, planned_bytes, rate_warning

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


def _cmd_record(args: argparse.Namespace) -> int:
    if args.experiment is not None:
        return _cmd_record_experiment(args)
    if args.duration is not None:
        raise CLIError("--duration needs --experiment (use --frames for a time-lapse)")
    if args.stop_file is not None and args.stop_file.exists():
        raise CLIError(f"stop file {args.stop_file} already exists: remove it first")
    if args.out is None:
        raise CLIError("--out DIR is required (or --experiment TARGET)")
    # given but empty is a mistake the run manager reports, not a default
    args.subject = "sim" if args.subject is None else args.subject
    args.session = "1" if args.session is None else args.session
    args.task = "rec" if args.task is None else args.task
    return _cmd_record_timelapse(args)


def _cmd_record_experiment(args: argparse.Namespace) -> int:
    """Several cameras and encoders from mesofield's hardware.yaml/experiment.json."""
    from ._platform.console import StopRequests
    from .cli_experiment import ExperimentError, record_experiment

    if args.out is not None:
        _prepare_out_dir(args.out)
    if args.stop_file is not None and args.stop_file.exists():
        raise CLIError(f"stop file {args.stop_file} already exists: remove it first")
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
    from ._platform.console import StopRequests
    from .acquire import timelapse
    from .data.manager import RunManager

    out = _prepare_out_dir(args.out)
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
    _preflight(args, core, out)  # before any file or event is made
    if args.frames:
        sequence: Any = timelapse(args.frames, args.interval)
    else:  # until Stop: a stop request (a KeyboardInterrupt) cancels cleanly
        from .data.writer import endless_timelapse

        sequence = endless_timelapse(args.interval, core=core)
        print("recording until Stop: press Ctrl-C to end the run", file=sys.stderr)
    with StopRequests(args.stop_file) as stops:
        return _record_and_report(args, run, core, sequence, stops)


def _writer_files(writer: str) -> list[tuple[str, str]]:
    """(extension, folder) of the data files ``--writer`` makes."""
    files = {"tiff": (".ome.tiff", "func"), "mp4": (".mp4", "beh")}
    return [f for kind, f in files.items() if writer in (kind, "both")]


def _record_and_report(
    args: argparse.Namespace, run: Any, core: Any, sequence: Any, stops: Any
) -> int:
    """Record with the run's files, then print what was written (``_cmd_record``).

    A stop request (Ctrl-C, SIGTERM, Ctrl-Break, the console closing, the stop
    file) cancels the acquisition; once it has ended the requests are ignored, so
    finishing the files is never interrupted.
    """
    from .acquire import add_writers, record

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
        )
        result = record(core, writers, sequence)
        stops.ignore()
    except BaseException as exc:
        stops.ignore()
        run.stop(error=exc, raise_errors=False)  # finalize whatever was written
        if isinstance(exc, (OSError, ValueError)):
            raise CLIError(str(exc)) from exc
        raise
    # one source of truth: the camera's problems join the writers' in run.errors,
    # so the manifest, --json and the exit code all say the same
    run.errors.extend(result.camera_errors)
    run.stop(raise_errors=False)
    errors = list(dict.fromkeys(run.errors))

    payload = {
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


# ---------------------------------------------------------------- recover
def _cmd_recover(args: argparse.Namespace) -> int:
    """One recording, or every crashed recording of an experiment/session/run folder."""
    from .data import recover
    from .data.sidecar import JOURNAL_SUFFIX, data_path_for

    if args.path.is_dir():
        targets = [
            data_path_for(j)
            for j in sorted(args.path.rglob(f"*{JOURNAL_SUFFIX}"))
            if "processed" not in j.relative_to(args.path).parts[:-1]
        ]
        if not targets:
            if args.json:
                print(json.dumps({"ok": True, "recordings": []}, indent=2))
            else:
                print(f"{args.path}: no crashed recording (no frame journal) found")
            return 0
    elif not args.path.exists() and not args.path.parent.is_dir():
        raise CLIError(f"no such file or folder: {args.path}")
    else:
        targets = [args.path]
    folder = args.path.is_dir()
    reports, failures = [], []
    for target in targets:
        try:
            reports.append(recover(target))
        except (OSError, ValueError) as exc:
            if not folder:
                raise CLIError(str(exc)) from exc
            failures.append(f"{target}: {exc}")
    if args.json:
        payload: Any = (
            reports[0].as_dict()
            if not folder
            else {
                "ok": not failures,
                "recordings": [r.as_dict() for r in reports],
                "errors": failures,
            }
        )
        print(json.dumps(payload, indent=2))
    else:
        for report in reports:
            print(f"{report.data_path}: {report.message}")
            print(f"  frames written: {report.frames}  sidecar: {report.sidecar}")
            if report.manifest is not None:
                print(f"  manifest updated: {report.manifest.name}")
    for line in failures:
        print(f"mesofield-napari recover: error: {line}", file=sys.stderr)
    return EXIT_USAGE if failures else 0


# ---------------------------------------------------------------- gui
def _check_gui_experiment(args: argparse.Namespace) -> None:
    """``gui --experiment``: the same one-line checks as ``record --experiment``,
    before napari opens (an unusable target never gets as far as a window)."""
    from .experiment import ExperimentError, load_experiment

    if args.record_frames is not None:
        raise CLIError("--experiment and --record-frames are two modes; give one")
    if args.config is not None:
        raise CLIError(
            "--config is for the single-camera recorder; an experiment's cameras "
            "come from its hardware.yaml"
        )
    try:
        experiment = load_experiment(args.experiment)
        if args.subject is not None:
            experiment.subject(args.subject)
    except ExperimentError as exc:
        raise CLIError(str(exc)) from exc
    if args.duration is None and experiment.duration_s is None:
        raise CLIError(
            f"{experiment.json_path}: no Configuration.duration; give --duration S"
        )


def _cmd_gui(args: argparse.Namespace) -> int:
    if args.experiment is not None:
        _check_gui_experiment(args)
    elif args.duration is not None:
        raise CLIError("--duration needs --experiment")
    if args.record_frames is not None and args.out is None:
        raise CLIError("--record-frames needs --out DIR")
    if args.quit and args.record_frames is None and args.experiment is None:
        raise CLIError("--quit only makes sense with --record-frames or --experiment")
    if args.out is not None:
        _prepare_out_dir(args.out)
    if args.screenshot is not None and args.screenshot.suffix.lower() != ".png":
        raise CLIError(f"--screenshot must be a .png file, got {args.screenshot}")
    if args.config is not None and not args.config.is_file():
        raise CLIError(f"Micro-Manager configuration not found: {args.config}")
    from .app import AppOptions, run_app

    opts = AppOptions(
        config=args.config,
        size=args.size,
        exposure_ms=args.exposure,
        record_frames=args.record_frames,
        out=args.out,
        screenshot=args.screenshot,
        quit=args.quit,
        writers=args.writer,
        subject=args.subject or ("" if args.experiment else "sim"),
        session=args.session or ("" if args.experiment else "1"),
        task=args.task or ("" if args.experiment else "rec"),
        experiment=args.experiment,
        duration_s=args.duration,
    )
    try:
        result = run_app(opts)
    except RuntimeError as exc:
        raise CLIError(str(exc)) from exc
    if args.experiment is not None:
        return _report_gui_experiment(args, result) if args.quit else 0
    if args.record_frames is None:
        return 0
    outcome = result.outcome
    payload = {
        "ok": outcome is not None and not result.errors,
        "run_dir": str(outcome.run_dir) if outcome else None,
        "frames": outcome.frames_written if outcome else 0,
        "files": [str(p) for p in outcome.data_files] if outcome else [],
        "screenshot": str(result.screenshot) if result.screenshot else None,
        "errors": result.errors,
    }
    if args.json:
        print(json.dumps(payload, indent=2))
    elif outcome is not None:
        print(f"run folder: {outcome.run_dir}")
        for path in outcome.data_files:
            print(f"  {os.path.relpath(path, outcome.run_dir)}")
        print(f"recorded {outcome.frames_written} frames through the recorder widget")
        if result.screenshot:
            print(f"screenshot: {result.screenshot}")
    for err in result.errors:
        print(f"mesofield-napari gui: error: {err}", file=sys.stderr)
    return 0 if payload["ok"] else EXIT_USAGE


def _report_gui_experiment(args: argparse.Namespace, result: Any) -> int:
    """Print what ``gui --experiment --quit`` recorded; 0 when the run is ok."""
    run = result.experiment or {}
    errors = list(dict.fromkeys(result.errors))
    if not run:
        errors = errors or ["the experiment did not run"]
    payload = {
        **run,
        "ok": bool(run.get("ok")) and not errors,
        "screenshot": str(result.screenshot) if result.screenshot else None,
        "errors": errors,
    }
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    elif run:
        run_dir = Path(run["run_dir"])
        print(f"run folder: {run_dir}")
        for f in run.get("files", []):
            frames = f" {f['frames']} frames" if f.get("frames") is not None else ""
            rel = os.path.relpath(f["path"], run_dir)
            print(f"  {f.get('device_id', '')}: {rel}{frames}")
        print("recorded the experiment through the recorder's experiment panel")
        if result.screenshot:
            print(f"screenshot: {result.screenshot}")
    for err in errors:
        print(f"mesofield-napari gui: error: {err}", file=sys.stderr)
    return 0 if payload["ok"] else EXIT_USAGE


# ---------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    from .cli_export import cmd_export

    return cmd_export(args)


# ---------------------------------------------------------------- inspect
def _cmd_inspect(args: argparse.Namespace) -> int:
    from .data.summary import summarize_recording, summarize_run

    if not args.path.exists():
        raise CLIError(f"no such file or folder: {args.path}")
    if args.path.is_dir():
        summary = summarize_run(args.path)
        if not summary["recordings"]:
            raise CLIError(f"no recordings found in {args.path}")
        # a single-recording view of the run's main numbers for scripts
        first = summary["recordings"][0]
        summary.update({k: first[k] for k in ("shape", "dtype", "duration_s", "fps")})
        summary["dropped_frames"] = sum(
            r["dropped_frames"] for r in summary["recordings"]
        )
        summary["sidecar"] = first["sidecar"]
    else:
        summary = summarize_recording(args.path)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for rec in summary.get("recordings", [summary]):
        print(rec["path"])
        print(
            f"  frames {rec['frames']}  shape {rec['shape']}  {rec['dtype']}  "
            f"{rec['duration_s']:.2f} s  fps {rec['fps']}  dropped {rec['dropped_frames']}"
        )
        print(f"  sidecar: {rec['sidecar']}  complete: {rec['complete']}")
        for problem in rec.get("problems", []):
            print(f"  problem: {problem}")
    for note in summary.get("notes", []):
        print(f"  note: {note}")
    return 0


def run() -> None:  # pragma: no cover - the process entry point
    """``mesofield-napari`` / ``python -m mesofield_napari``: :func:`main`, then exit
    without the interpreter's teardown.

    Every file is closed and fsynced before :func:`main` returns. What is left is
    native threads of the camera/encoder libraries; tearing the interpreter down under
    them occasionally aborts the process ("FATAL: exception not rethrown", seen in ~1
    of 10 experiment runs), which would turn a good run's exit code 0 into 134.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader left; not an error of ours
        code = 0
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
