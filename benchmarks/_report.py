"""Shared by the benchmark scripts: result tables, the output filesystem, fsync."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def filesystem(path: Path) -> str:
    """``<mount point> (<fs type>)`` of the filesystem holding ``path``."""
    best, kind = "", "?"
    resolved = os.fspath(path.resolve())
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as fh:
        for line in fh:
            _dev, mount, fstype, *_ = line.split()
            if resolved.startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    return f"{best or '?'} ({kind})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        + [fmt.format(*row) for row in rows]
    )


def fsync_path(path: Path) -> None:
    """Make ``path``'s data durable (the end of every timed write)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prime_memory(nbytes: int) -> None:
    """Touch, then free, ``nbytes`` of anonymous memory just before a timed run.

    On a virtual machine with a free-page-reporting balloon (virtio_balloon; these
    runners have one) the memory a deleted output file freed is handed back to the
    host within seconds, and the next run's page cache then faults every page in
    again on the host: measured here, the same 2 GB append alternates between ~1 s
    and ~4 s (3 s of it system CPU) from run to run, whichever writer runs. Touched
    and freed right before the run, the pages are backed for every contender alike,
    as a real machine's RAM always is.
    """
    import numpy as np

    block = np.ones(nbytes // 8 + 1, dtype=np.float64)
    del block
