"""Helpers to read back what the writers produced (imported by the test modules)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import useq

SHAPE = (48, 64)  # (height, width) of the simulated sensor in most tests


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def timelapse(loops: int, **kwargs: Any) -> useq.MDASequence:
    return useq.MDASequence(time_plan={"interval": 0, "loops": loops}, **kwargs)


def sim_index(entry: dict[str, Any]) -> int:
    """The simulated camera's frame index recorded in a FrameMetaV1 entry."""
    return int(entry["camera_metadata"]["SimFrameIndex"])


def arrival_indices(sidecar: dict[str, list[dict[str, Any]]]) -> dict[int, int]:
    """Map ``id(entry)`` -> camera frame index for *unsequenced* acquisitions.

    Unsequenced MDA frames carry no ``camera_metadata`` (upstream behaviour), but on a
    fresh core the camera's n-th snap is frame n, and ``runner_time_ms`` gives the
    order in which frames arrived across all positions.
    """
    entries = [e for frames in sidecar.values() for e in frames]
    ordered = sorted(entries, key=lambda e: e["runner_time_ms"])
    return {id(e): n for n, e in enumerate(ordered)}


def read_video(path: str | os.PathLike[str]) -> tuple[list[np.ndarray], float, str]:
    """All frames of a video (read until failure), its fps and its fourcc."""
    import cv2

    cap = cv2.VideoCapture(os.fspath(path))
    assert cap.isOpened(), f"OpenCV cannot open {path}"
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        code = int(cap.get(cv2.CAP_PROP_FOURCC))
        fourcc = code.to_bytes(4, "little").decode("ascii", "replace")
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    return frames, fps, fourcc


def journal_entry_lines(path: str | os.PathLike[str]) -> int:
    """Complete, parseable frame lines of a journal (the header line excluded)."""
    n = 0
    raw = Path(path).read_bytes()
    for line in raw.split(b"\n")[1:]:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "meta" in obj:
            n += 1
    return n


def wait_until(
    predicate: Any,
    timeout: float = 30.0,
    interval: float = 0.01,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` (for background threads and processes) until it returns
    something truthy, and return that; fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return value


def kill_after_journal(
    proc: Any, find_journal: Any, frames: int, timeout: float = 60.0
) -> Path:
    """Kill the recording child ``proc`` once its journal holds ``frames`` frames.

    ``find_journal()`` returns the journal path once it exists. Returns that path;
    the child is dead (killed, never allowed to finish) when this returns or raises.
    """

    def journal_ready() -> Path | None:
        assert proc.poll() is None, "the recording ended before the kill"
        journal = find_journal()
        if journal is not None and journal_entry_lines(journal) >= frames:
            return journal
        return None

    try:
        journal = wait_until(journal_ready, timeout, 0.02, what=f"{frames} frames")
        kill_hard(proc)
        return journal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def record_then_kill(script: str, path: Path, *args: str, frames: int) -> int:
    """Run ``script`` (``python -c``; its argv: ``path``, then ``args``) in a child in
    ``path``'s folder, kill it hard once ``path``'s journal holds ``frames`` frames,
    and return the frames journaled. The script prints FINISHED if it ever ends on
    its own: it must not have."""
    import subprocess
    import sys

    from mesofield_napari.data import journal_path

    jpath = journal_path(path)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=path.parent,
    )
    kill_after_journal(proc, lambda: jpath if jpath.exists() else None, frames)
    out, _ = proc.communicate(timeout=30)
    assert b"FINISHED" not in out
    return journal_entry_lines(jpath)


def kill_hard(proc: Any) -> None:
    """Kill ``proc`` the way nothing can catch: SIGKILL on POSIX, TerminateProcess
    (``Popen.kill``) on Windows, which has no SIGKILL."""
    import signal

    from mesofield_napari._platform import system

    if system() == "windows":
        proc.kill()
        assert proc.wait(timeout=30) != 0
        return
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


# The first lines of a child that must meet a full disk after ``limit`` bytes per file
# (``limit`` in ``sys.argv[LIMIT_ARG]``): POSIX has RLIMIT_FSIZE; Windows has neither
# it nor ``resource``, so there the platform emulation's disk limit stands in
# (``disk_limit_env``).
LIMIT_PROLOGUE = """
import signal, sys
try:
    import resource
except ImportError:  # Windows: MESOFIELD_EMULATE_DISK_LIMIT does it
    pass
else:
    _limit = int(sys.argv[LIMIT_ARG])
    resource.setrlimit(resource.RLIMIT_FSIZE, (_limit, _limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
"""


def limit_prologue(arg: int) -> str:
    return LIMIT_PROLOGUE.replace("LIMIT_ARG", str(arg))


def disk_limit_env(limit: int, *, ffmpeg: bool = False) -> dict[str, str]:
    """Environment for a :data:`LIMIT_PROLOGUE` child on this system.

    Windows has no RLIMIT_FSIZE: the emulation's disk limit stands in, for files we
    open ourselves (``ffmpeg``: an encoder writing through FFmpeg's own C I/O cannot
    be limited that way, and a real Windows run has no emulation: both skip).
    """
    import pytest

    from mesofield_napari._platform import system

    if system() != "windows":
        return {}
    import _emulate_os

    if ffmpeg or _emulate_os.emulated_system() != "windows":
        pytest.skip(
            "needs a size-limited file system: RLIMIT_FSIZE (POSIX) or the Windows "
            "emulation's disk limit for files opened through os.open"
        )
    return {_emulate_os.DISK_LIMIT_ENV: str(limit)}


def manifest_view(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's manifest, validated as mesokit's ``AcquisitionManifest`` (what datakit
    and mesokit read), flattened to what tests check: ``complete``, ``errors``,
    ``interrupted``, ``files`` (our per-file entries), ``session``, ``stamp``,
    ``producers``."""
    from mesokit_schema import AcquisitionManifest

    manifest = AcquisitionManifest.read(path)
    ours = manifest.extra["mesofield_napari"]
    return {
        "complete": manifest.acquisition_complete,
        "errors": ours["errors"],
        "interrupted": ours.get("interrupted"),
        "files": ours["files"],
        "session": manifest.session.session,
        "subject": manifest.session.subject,
        "stamp": ours["stamp"],
        "ended_at": manifest.ended_at,
        "producers": manifest.producers,
    }


def accept_console_pushes(viewer: Any) -> Any:
    """napari-micromanager pushes its core into napari's console, which the test
    viewer's stand-in console lacks: give it a ``push`` that does nothing."""
    console = getattr(viewer.window._qt_viewer, "console", None)
    if console is not None and not hasattr(console, "push"):
        console.push = lambda *a, **k: None
    return viewer
