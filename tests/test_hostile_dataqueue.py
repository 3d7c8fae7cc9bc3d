"""The data queue never claims a frame that is not in its file (issue 21).

A camera pushes its data-queue row when a frame reaches its writer; when the disk
fills, the frames after it never reach the file. The run's stop trims each camera's
rows to the frames its file holds (the kill case, finished by ``recover``, is in
``test_hostile_pending.py``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import read_video

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE")

CHILD = """
import json, resource, signal, sys
import numpy as np
root, limit = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
from mesofield_napari.data.manager import RunManager
run = RunManager(root, "M1", 1, "wf").start()
writer = run.writer_for("pupil", "mp4", fps=10)
writer.begin(128, 128, is_color=False)
rng = np.random.default_rng(7)
for _ in range(200):  # noise: ~16 kB a frame, the video hits the limit first
    writer.add_frame(rng.integers(0, 256, (128, 128), dtype=np.uint8))
try:
    writer.finish({})
except Exception:
    pass  # reported by the run below
run.stop(raise_errors=False)
print(json.dumps({"dataqueue": str(run.dataqueue_path), "video": str(writer.files[0]),
                  "sidecar": str(writer.sidecar_path), "manifest": str(run.manifest_path),
                  "errors": run.errors}))
"""


def test_a_full_disk_leaves_no_queue_rows_for_unsaved_frames(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(300_000)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYMM_LOG_FILE": str(tmp_path.parent / "pymm.log")},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any("File too large" in e for e in out["errors"]), out["errors"]
    frames, _, _ = read_video(out["video"])
    side = json.loads(Path(out["sidecar"]).read_text())
    n = len(side["frame_metadatas"])
    assert 0 < n == len(frames) < 200
    with open(out["dataqueue"], newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["device_id"] == "pupil"]
    assert [int(r["payload"]) for r in rows] == list(range(n))  # the frames kept
    extra = json.loads(Path(out["manifest"]).read_text())["extra"]["mesofield_napari"]
    assert extra["dataqueue_rows_trimmed"] == {"pupil": 200 - n}
    assert extra["dataqueue_rows"] == n
