"""The ``--json`` objects the commands really print match their TypedDicts
(``mesofield_napari.data.formats.payloads``): every required key there, no key the
TypedDict does not declare, every value of its declared type. mypy checks the
builders; this checks the printed objects, so a key added to a builder without its
TypedDict (or a value of another type) fails here. docs/design.md §10."""

from __future__ import annotations

import json
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest

from mesofield_napari.data.formats import payloads as P

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "experiment"


def cli(*args: object) -> Any:
    res = subprocess.run(
        [sys.executable, "-m", "mesofield_napari", *map(str, args), "--json"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    # bytes: stderr is in the console's encoding (cp1252 on an emulated Windows);
    # the JSON on stdout is ASCII (json.dumps escapes the rest)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return json.loads(res.stdout)


def mismatch(value: Any, tp: Any, where: str = "$") -> str | None:
    """Why ``value`` (parsed JSON) is not of type ``tp``, or None when it is."""
    if tp is Any:
        return None
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return f"{where}: {type(value).__name__}, not a {tp.__name__} object"
        hints = get_type_hints(tp)
        missing = sorted(tp.__required_keys__ - value.keys())
        extra = sorted(value.keys() - hints.keys())
        if missing or extra:
            return f"{where} ({tp.__name__}): missing {missing}, undeclared {extra}"
        for key, item in value.items():
            if why := mismatch(item, hints[key], f"{where}.{key}"):
                return why
        return None
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        whys = [mismatch(value, arg, where) for arg in get_args(tp)]
        return None if None in whys else " / ".join(w for w in whys if w)
    if origin is list:
        if not isinstance(value, list):
            return f"{where}: {value!r} is not a list"
        (arg,) = get_args(tp)
        return next(
            (
                w
                for i, v in enumerate(value)
                if (w := mismatch(v, arg, f"{where}[{i}]"))
            ),
            None,
        )
    if origin is dict:
        if not isinstance(value, dict):
            return f"{where}: {value!r} is not an object"
        _, arg = get_args(tp)
        return next(
            (w for k, v in value.items() if (w := mismatch(v, arg, f"{where}.{k}"))),
            None,
        )
    if tp is type(None):
        return None if value is None else f"{where}: {value!r} is not null"
    if tp is float:  # JSON writes 2.0 as 2.0 but a whole float may come back an int
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    return None if ok else f"{where}: {value!r} is not {tp.__name__}"


def test_the_checker_refuses_what_does_not_match():
    good: P.SkippedPayload = {"path": "a.tif", "reason": "a video"}
    assert mismatch(good, P.SkippedPayload) is None
    assert "missing ['reason']" in mismatch({"path": "a"}, P.SkippedPayload)
    assert "undeclared ['why']" in mismatch({**good, "why": 1}, P.SkippedPayload)
    assert "is not str" in mismatch({**good, "reason": 3}, P.SkippedPayload)
    job = {"path": "a", "ok": True, "outputs": ["b"], "frames": 1, "elapsed_s": 0.5}
    job |= {"error": None, "cancelled": False, "warnings": []}
    assert mismatch(job, P.JobPayload) is None
    assert "is not int" in mismatch({**job, "frames": True}, P.JobPayload)
    assert "is not a list" in mismatch({**job, "outputs": "b"}, P.JobPayload)
    assert mismatch({**job, "error": "boom"}, P.JobPayload) is None
    assert mismatch({**job, "error": 1}, P.JobPayload) is not None


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Any]:
    """One single-camera run, both writers: TIFF and MP4 entries."""
    out = tmp_path_factory.mktemp("payloads") / "out"
    payload = cli(
        "record", "--out", out, "--frames", 5, "--writer", "both",
        "--size", "24x40", "--exposure", 0,
    )  # fmt: skip
    return out, payload


def test_record_json_is_a_record_payload(recorded):
    _, payload = recorded
    assert mismatch(payload, P.RecordPayload) is None
    assert sorted(f["kind"] for f in payload["files"]) == ["mp4", "tiff"]
    video = next(f for f in payload["files"] if f["kind"] == "mp4")
    assert {"codec", "fps"} <= video.keys()  # WriterFile's optional keys, when a video


def test_inspect_json_is_a_recording_or_run_summary(recorded):
    _, payload = recorded
    for f in payload["files"]:
        summary = cli("inspect", f["path"])
        assert mismatch(summary, P.RecordingSummary) is None
        assert summary["frames"] == 5
    run = cli("inspect", payload["run_dir"])
    assert mismatch(run, P.RunSummary) is None
    assert len(run["recordings"]) == 2 and run["frames"] == 10


def test_recover_json_is_a_recovery_payload(recorded):
    out, payload = recorded
    tiff = next(f["path"] for f in payload["files"] if f["kind"] == "tiff")
    report = cli("recover", tiff)
    assert mismatch(report, P.RecoveryPayload) is None
    assert report["recovered"] is False and report["frames"] == 5
    folder = cli("recover", out)  # nothing crashed: no journal anywhere
    assert folder == {"ok": True, "recordings": [], "runs": [], "errors": []}
    assert mismatch(folder, P.RecoverFolderPayload) is None


def test_export_json_is_an_export_payload(recorded, tmp_path):
    _, payload = recorded
    summary = cli("export", "mean-trace", payload["run_dir"], "--out", tmp_path)
    assert mismatch(summary, P.ExportPayload) is None
    assert summary["ok"] is True and len(summary["jobs"]) == 1  # the TIFF
    assert summary["skipped"]  # the MP4 of a folder search, said so


def test_experiment_record_json_is_an_experiment_payload(tmp_path):
    payload = cli("record", "--experiment", EXAMPLE, "--duration", 1, "--out", tmp_path)
    assert mismatch(payload, P.ExperimentPayload) is None
    kinds = {f["device_id"]: f["kind"] for f in payload["files"]}
    assert "csv" in kinds.values()  # the encoder's file: FileEntry's keys only


def test_every_payload_is_exported():
    declared = {n for n, v in vars(P).items() if is_typeddict(v) and n[0] != "_"}
    assert declared == set(P.__all__)
    assert typing.get_type_hints(P.ExperimentPayload)["files"] == list[P.DeviceFile]
