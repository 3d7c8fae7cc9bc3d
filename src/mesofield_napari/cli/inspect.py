"""``mesofield-napari inspect``: summarise a run folder or one recording.

Each run is printed with its own recordings, notes and errors; the exit code is 2
while any recording inspected is incomplete (a crashed run before ``recover``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._args import CLIError

if TYPE_CHECKING:
    from ..data.formats.payloads import RecordingSummary, RunSummary


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``inspect`` to ``mesofield-napari``'s sub-commands."""
    ins = subparsers.add_parser(
        "inspect", help="summarise a run folder or one recording"
    )
    ins.add_argument("path", type=Path, help="run folder, data file or sidecar")
    ins.add_argument("--json", action="store_true")
    return ins


def cmd(args: argparse.Namespace) -> int:
    from ..data.reader.summary import (
        inspect_exit_code,
        inspect_lines,
        summarize_recording,
        summarize_run,
    )

    if not args.path.exists():
        raise CLIError(f"no such file or folder: {args.path}")
    summary: RunSummary | RecordingSummary
    if args.path.is_dir():
        run = summarize_run(args.path)
        if not run["recordings"]:
            raise CLIError(f"no recordings found in {args.path}")
        # a single-recording view of the run's main numbers for scripts
        first = run["recordings"][0]
        run["shape"], run["dtype"] = first["shape"], first["dtype"]
        run["duration_s"], run["fps"] = first["duration_s"], first["fps"]
        run["dropped_frames"] = sum(r["dropped_frames"] for r in run["recordings"])
        run["sidecar"] = first["sidecar"]
        summary = run
    else:
        summary = summarize_recording(args.path)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("\n".join(inspect_lines(summary)))
    return inspect_exit_code(summary)  # non-zero while anything is incomplete
