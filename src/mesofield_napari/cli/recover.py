"""``mesofield-napari recover``: finish the recordings of a run whose process died."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._args import EXIT_USAGE, CLIError

if TYPE_CHECKING:
    from ..data.formats.payloads import RecoverFolderPayload, RecoveryPayload


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``recover`` to ``mesofield-napari``'s sub-commands."""
    recv = subparsers.add_parser(
        "recover", help="finish the recordings of a run whose process died"
    )
    recv.add_argument(
        "path",
        type=Path,
        help="data file, its journal or sidecar, or an experiment/session/run folder "
        "(every recording with a journal in it)",
    )
    recv.add_argument("--json", action="store_true")
    return recv


def cmd(args: argparse.Namespace) -> int:
    """One recording, or every crashed recording of an experiment/session/run folder."""
    from ..data import recover
    from ..data.formats.sidecar import JOURNAL_SUFFIX, data_path_for
    from ..data.manager.paths import is_processed

    if args.path.is_dir():
        targets = [
            data_path_for(j)
            for j in sorted(args.path.rglob(f"*{JOURNAL_SUFFIX}"))
            if not is_processed(j, args.path)
        ]
        if not targets:
            if args.json:
                empty: RecoverFolderPayload = {"ok": True, "recordings": []}
                print(json.dumps(empty, indent=2))
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
        payload: RecoveryPayload | RecoverFolderPayload = (
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
