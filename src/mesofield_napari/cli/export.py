"""``mesofield-napari export``: batch traces, ΔF/F, videos and montages from the shell.

    mesofield-napari export dff RUN_FOLDER --method pixelwise --workers 2
    mesofield-napari export video a.ome.tiff b.ome.tiff --ext .avi --out videos/

Folders are searched recursively for recordings (``processed/`` folders skipped).
Progress goes to stderr, the summary to stdout (``--json``: one JSON object). Exit
code 0 when every recording was exported, 2 for bad arguments or any failure (one
``mesofield-napari export: error: ...`` line each), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..data.batch.options import OPERATION_CHOICES, OPTION_OPERATION
from ..data.formats.names import VIDEO_EXTENSIONS
from ._args import EXIT_USAGE, CLIError, non_negative_float, number, positive_int


def _positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive, got 0")
    return value


def _percent(text: str) -> float:
    value = non_negative_float(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be within 0..100, got {value}")
    return value


def _frame(text: str) -> int | str:
    if text == "mean":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'mean' or a frame index, got {text!r}"
        ) from None


def _ext(text: str) -> str:
    ext = text.lower() if text.startswith(".") else "." + text.lower()
    if ext not in VIDEO_EXTENSIONS:
        raise argparse.ArgumentTypeError(f"expected .mp4 or .avi, got {text!r}")
    return ext


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to ``mesofield-napari``'s sub-parsers."""
    p = subparsers.add_parser(
        "export",
        help="batch-export traces, ΔF/F, videos or a montage",
        description=(
            "Export recordings (files or run folders, searched recursively). "
            "Outputs go to <run folder>/processed unless --out is given."
        ),
    )
    p.add_argument("operation", choices=OPERATION_CHOICES)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder")
    p.add_argument("--pattern", metavar="GLOB", help="file names to take in folders")
    p.add_argument(
        "--include-videos",
        action="store_true",
        help="folders: export their videos too (default: the TIFF cameras, the data "
        "a scientist analyses; videos named on the command line are always taken)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N")
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="dask.distributed scheduler address (e.g. tcp://host:8786)",
    )
    p.add_argument("--max-frames", type=positive_int, metavar="N")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    g = p.add_argument_group("mean-trace")
    g.add_argument(
        "--roi", type=int, nargs=4, metavar=("Y0", "Y1", "X0", "X1"), help="rectangle"
    )
    g.add_argument(
        "--roi-camera",
        metavar="NAME",
        help="the camera the ROI was drawn on (e.g. meso): other cameras are skipped",
    )
    g = p.add_argument_group("dff")
    g.add_argument("--method", choices=("collapse_first", "pixelwise"))
    g.add_argument("--camera-offset", type=number, metavar="F")
    g.add_argument("--fs", type=_positive_float, metavar="HZ")
    g.add_argument("--percentile", type=_percent, metavar="P")
    g.add_argument("--window-seconds", type=_positive_float, metavar="S")
    g.add_argument("--f0-floor", type=non_negative_float, metavar="F")
    g.add_argument("--n-f0-samples", type=positive_int, metavar="N")
    g.add_argument("--chunk-frames", type=positive_int, metavar="N")
    g.add_argument(
        "--no-fix-first-frame",
        dest="fix_first_frame",
        action="store_false",
        default=None,
        help="keep the first frame's value",
    )
    g = p.add_argument_group("video")
    g.add_argument("--ext", type=_ext, metavar=".mp4|.avi")
    g.add_argument("--fps", type=_positive_float)
    g.add_argument("--fourcc", metavar="CODE")
    g.add_argument("--contrast", type=number, nargs=2, metavar=("LOW", "HIGH"))
    g = p.add_argument_group("montage")
    g.add_argument("--frame", type=_frame, metavar="mean|N")
    g.add_argument("--columns", type=positive_int, metavar="N")
    g.add_argument("--name", metavar="FILE.png")
    return p


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for opt, operation in OPTION_OPERATION.items():
        value = getattr(args, opt)
        if value is None:
            continue
        if args.operation != operation:
            flag = "--no-fix-first-frame" if opt == "fix_first_frame" else opt
            flag = flag if flag.startswith("--") else "--" + flag.replace("_", "-")
            raise CLIError(f"{flag} does not apply to {args.operation}")
        params[opt] = value
    if args.max_frames is not None:
        params["max_frames"] = args.max_frames
    if "roi" in params:
        params["roi"] = tuple(params["roi"])
    if "contrast" in params:
        lo, hi = params["contrast"]
        if not hi > lo:
            raise CLIError(f"--contrast needs LOW < HIGH, got {lo} {hi}")
        params["contrast"] = (lo, hi)
    if "ext" in params:
        params["out_ext"] = params.pop("ext")
    if args.operation == "montage" and "name" in params:
        if not params["name"].lower().endswith(".png"):
            raise CLIError(f"--name must end with .png, got {params['name']}")
        if os.path.basename(params["name"]) != params["name"]:
            raise CLIError("--name is a file name; use --out for the folder")
    return params


class _Bar:
    """Frames done on stderr: tqdm if installed, else a one-line ``\\r`` bar."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled = label, enabled
        self._tqdm: Any = None
        self._last = 0.0
        self._lock = threading.Lock()
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(
                    total=0, unit="frame", desc=label, file=sys.stderr, leave=False
                )

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._tqdm is not None:
                if self._tqdm.total != total:
                    self._tqdm.total = total
                self._tqdm.update(done - self._tqdm.n)
                return
            now = time.monotonic()
            if now - self._last < 0.1 and done < total:
                return
            self._last = now
            frac = done / total if total else 1.0
            filled = int(30 * frac)
            print(
                f"\r{self.label} [{'#' * filled}{'-' * (30 - filled)}] "
                f"{100 * frac:3.0f}% {done}/{total} frames",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def cmd(args: argparse.Namespace) -> int:
    """Run ``mesofield-napari export``; returns the exit code."""
    from ..data.batch import run_batch

    params = _params(args)
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        raise CLIError(f"no such file or folder: {missing[0]}")
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(
                f"cannot create output folder {args.out}: {exc.strerror or exc}"
            ) from exc
    if args.scheduler and args.workers > 1:
        raise CLIError("--workers is for local runs; --scheduler runs on the cluster")

    cancel = threading.Event()
    # a progress bar is for a person watching a terminal: never ``\r`` into a log
    bar = _Bar(args.operation, enabled=sys.stderr.isatty())
    previous = _on_interrupt(cancel)
    try:
        summary = run_batch(
            args.operation,
            args.paths,
            out_dir=args.out,
            overwrite=args.overwrite,
            workers=args.workers,
            scheduler=args.scheduler,
            progress=bar,
            cancel=cancel,
            pattern=args.pattern,
            include_videos=args.include_videos,
            **params,
        )
    except (OSError, ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from exc
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)

    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        for job in summary.jobs:
            if job.ok:
                outs = ", ".join(_rel(p) for p in job.outputs)
                print(f"ok      {_rel(job.path)} -> {outs}")
            elif job.cancelled:
                print(f"skipped {_rel(job.path)} (cancelled)")
            else:
                print(f"FAILED  {_rel(job.path)}")
            for note in job.warnings:
                print(f"        warning: {note}")
        for skip in summary.skipped:
            print(f"skipped {_rel(skip.path)}")
        done = sum(j.ok for j in summary.jobs)
        print(
            f"{args.operation}: {done} of {len(summary.jobs)} recording(s) exported "
            f"in {summary.elapsed_s:.1f} s"
            + (f", {len(summary.skipped)} skipped" if summary.skipped else "")
        )
    for skip in summary.skipped:  # not failures (but unfinished ones), never silent
        level = "error" if skip.unfinished else "warning"
        print(
            f"mesofield-napari export: {level}: {_rel(skip.path)}: {skip.reason}",
            file=sys.stderr,
        )
    for path, err in summary.failures.items():
        print(f"mesofield-napari export: error: {path}: {err}", file=sys.stderr)
    if summary.cancelled:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if summary.ok else EXIT_USAGE


def _rel(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return os.fspath(path)
    return rel if not rel.startswith("..") else os.fspath(path)


def _on_interrupt(cancel: threading.Event) -> Any:
    """Ctrl-C sets ``cancel`` (jobs stop at their next block, nothing partial stays)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        cancel.set()

    return signal.signal(signal.SIGINT, handler)
