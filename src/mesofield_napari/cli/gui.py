"""``mesofield-napari gui`` (the default): napari with napari-micromanager and the
recorder; ``--record-frames``/``--experiment`` with ``--quit`` record once and exit."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._args import (
    EXIT_USAGE,
    CLIError,
    finite_positive,
    frame_size,
    non_negative_float,
    positive_int,
    prepare_out_dir,
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``gui`` to ``mesofield-napari``'s sub-commands."""
    gui = subparsers.add_parser(
        "gui",
        help="open napari with napari-micromanager and the recorder (the default)",
    )
    gui.add_argument("--config", type=Path, help="Micro-Manager configuration file")
    gui.add_argument(
        "--size", type=frame_size, default=(512, 512), help="sim camera HxW"
    )
    gui.add_argument("--exposure", type=non_negative_float, default=10.0, help="ms")
    gui.add_argument(
        "--record-frames", type=positive_int, help="record N frames via the widget"
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
        type=finite_positive,
        metavar="S",
        help="with --experiment: run length in seconds (default: the JSON's)",
    )
    gui.add_argument(
        "--out",
        type=Path,
        help="output root for --record-frames; the experiment folder for "
        "--experiment (default: its experiment_directory; without one, --out is needed)",
    )
    gui.add_argument("--writer", choices=("tiff", "mp4", "both"), default="tiff")
    gui.add_argument("--subject", help="default: sim (experiment: its first subject)")
    gui.add_argument("--session", help="default: 1 (experiment: the subject's)")
    gui.add_argument("--task", help="default: rec (experiment: the subject's)")
    gui.add_argument("--screenshot", type=Path, help="save a PNG of the window")
    gui.add_argument("--quit", action="store_true", help="exit when done")
    gui.add_argument("--json", action="store_true", help="print the result as JSON")
    return gui


def _check_gui_experiment(args: argparse.Namespace) -> None:
    """``gui --experiment``: the same one-line checks as ``record --experiment``,
    before napari opens (an unusable target never gets as far as a window)."""
    from ..experiment import ExperimentError, load_experiment

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


def cmd(args: argparse.Namespace) -> int:
    if args.experiment is not None:
        _check_gui_experiment(args)
    elif args.duration is not None:
        raise CLIError("--duration needs --experiment")
    if args.record_frames is not None and args.out is None:
        raise CLIError("--record-frames needs --out DIR")
    if args.quit and args.record_frames is None and args.experiment is None:
        raise CLIError("--quit only makes sense with --record-frames or --experiment")
    if args.out is not None:
        prepare_out_dir(args.out)
    if args.screenshot is not None and args.screenshot.suffix.lower() != ".png":
        raise CLIError(f"--screenshot must be a .png file, got {args.screenshot}")
    if args.config is not None and not args.config.is_file():
        raise CLIError(f"Micro-Manager configuration not found: {args.config}")
    from ..app import AppOptions, run_app

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
