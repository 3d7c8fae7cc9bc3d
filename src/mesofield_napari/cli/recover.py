"""``mesofield-napari recover``: finish the recordings of a run whose process died."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._args import EXIT_USAGE, CLIError

if TYPE_CHECKING:
    from ..data.formats.payloads import RecoverFolderPayload


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``recover`` to ``mesofield-napari``'s sub-commands."""
    recv = subparsers.add_parser(
        "recover", help="finish the recordings of a run whose process died"
    )
    recv.add_argument(
        "path",
        type=Path,
        help="data file, its journal or sidecar, or an experiment/session/run folder "
        "(every run that never stopped and every recording with a journal in it)",
    )
    recv.add_argument("--json", action="store_true")
    return recv


def cmd(args: argparse.Namespace) -> int:
    """One recording, or every crashed run and recording of a folder."""
    from ..data import recover

    if args.path.is_dir():
        return _recover_folder(args)
    if not args.path.exists() and not args.path.parent.is_dir():
        raise CLIError(f"no such file or folder: {args.path}")
    from ..data.formats.sidecar import journal_path, recording_path
    from ..data.run_recovery import growing

    if growing([journal_path(recording_path(args.path))]):
        raise CLIError(_LIVE.format(args.path))
    try:
        report = recover(args.path)
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report)
    return 0


def _recover_folder(args: argparse.Namespace) -> int:
    """Every run whose manifest still says "running" (finished as a whole, its
    journals first), then every other recording with a journal."""
    from ..data import recover
    from ..data.formats.sidecar import JOURNAL_SUFFIX, data_path_for
    from ..data.manager.paths import is_processed
    from ..data.run_recovery import finish_run, growing, is_running_manifest, run_files

    def ours(path: Path) -> bool:
        return not is_processed(path, args.path)

    runs = [
        m
        for m in sorted(args.path.rglob("*_manifest.json"))
        if ours(m) and is_running_manifest(m)
    ]
    journals = [j for j in sorted(args.path.rglob(f"*{JOURNAL_SUFFIX}")) if ours(j)]
    # one look at everything, once: a run or recording still being written is left
    # alone (another process is recording into this folder)
    files = {m: run_files(m) for m in runs}
    live = growing([*journals, *(f for fs in files.values() for f in fs)])
    failures: list[str] = []
    for manifest in [m for m in runs if live & set(files[m])]:
        failures.append(_LIVE.format(manifest.parent))
        runs.remove(manifest)
    owned = {f for fs in files.values() for f in fs}
    for journal in [j for j in journals if j in live]:
        if journal not in owned:  # a live run's own journal: said once, above
            failures.append(_LIVE.format(data_path_for(journal)))
        journals.remove(journal)
    reports: list[Any] = []
    finished: list[Any] = []
    for manifest in runs:
        try:
            run = finish_run(manifest)
        except (OSError, ValueError) as exc:
            failures.append(f"{manifest}: {exc}")
            continue
        if run is not None:
            finished.append(run)
            reports.extend(run.recordings)
            failures.extend(f"{manifest.parent}: {e}" for e in run.errors)
    # recordings outside those runs (or left by them: an error is reported once)
    for journal in journals:
        if not journal.exists() or any(
            journal.parent.is_relative_to(r.manifest.parent) for r in finished
        ):
            continue
        target = data_path_for(journal)
        try:
            reports.append(recover(target))
        except (OSError, ValueError) as exc:
            failures.append(f"{target}: {exc}")
    if args.json:
        payload: RecoverFolderPayload = {
            "ok": not failures,
            "recordings": [r.as_dict() for r in reports],
            "runs": [r.as_dict() for r in finished],
            "errors": failures,
        }
        print(json.dumps(payload, indent=2))
    elif not reports and not finished and not failures:
        print(f"{args.path}: no crashed recording (no frame journal) found")
    else:
        for report in reports:
            _print_report(report)
        for run in finished:
            state = "complete" if run.complete else "incomplete"
            print(
                f"{run.manifest.parent}: run finished ({state}): "
                f"{run.dataqueue_rows} data-queue row(s), "
                f"{run.temp_files_removed} temp file(s) removed"
            )
    for line in failures:
        print(f"mesofield-napari recover: error: {line}", file=sys.stderr)
    return EXIT_USAGE if failures else 0


_LIVE = (
    "{}: still being written (its files grew in the last seconds): left as is; "
    "stop that recording first"
)


def _print_report(report: Any) -> None:
    print(f"{report.data_path}: {report.message}")
    print(f"  frames written: {report.frames}  sidecar: {report.sidecar}")
    if report.manifest is not None:
        print(f"  manifest updated: {report.manifest.name}")
