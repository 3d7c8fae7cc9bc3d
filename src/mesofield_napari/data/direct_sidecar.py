"""The direct-mode sidecar, streamed from its journal (memory flat in run length).

Direct mode (``CV2Writer.begin/add_frame/finish``: OpenCV and simulated pupil cameras)
writes ``{"frame_metadatas": [...], "codec", "fps", **extra}`` (README, "File
formats"). Keeping each frame's dict until the end cost ~330 bytes a frame for the
whole run; the journal already holds every entry, so the sidecar is written from it
here, one entry in memory at a time — byte for byte what ``json.dump`` of the whole
payload wrote.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .journal import iter_journal
from .sidecar import _fsync_dir

KEY = "frame_metadatas"


def write_direct_sidecar(
    journal: str | os.PathLike[str],
    sidecar: str | os.PathLike[str],
    limit: int,
    fields: Mapping[str, Any],
) -> int:
    """Write ``{"frame_metadatas": <first limit journal entries>, **fields}``
    atomically (temp file, fsync, rename); return the entries written."""
    sidecar = Path(sidecar)
    tmp = sidecar.with_name(f".{sidecar.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("{" + json.dumps(KEY) + ": [")
            for kind, obj in iter_journal(journal):
                if n >= limit:
                    break
                if kind == "frame":
                    fh.write((", " if n else "") + json.dumps(obj["meta"]))
                    n += 1
            fh.write("]")
            for key, value in fields.items():
                if key != KEY:
                    fh.write(f", {json.dumps(str(key))}: {json.dumps(value)}")
            fh.write("}")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, sidecar)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(sidecar.parent)
    return n
