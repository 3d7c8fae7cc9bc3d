"""The README's examples run as written.

Every ```python block of README.md runs in a fresh interpreter in a scratch folder
(``HOME`` there too, so ``~/data`` stays inside it), after the README's own command
sequence for the datakit section (``record --out EXP …``, ``export mean-trace EXP``,
``export dff EXP``). A block that cannot run here says why in a comment line starting
with ``# readme: not run`` (e.g. it needs a napari viewer or a real microscope); the
test checks it does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = "# readme: not run"


def python_blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    out = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S):
        line = text.count("\n", 0, match.start()) + 1
        out.append((line, match.group(1)))
    return out


BLOCKS = python_blocks()


def run(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "MPLBACKEND": "Agg"}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch folder holding the README's datakit sequence: EXP recorded and
    exported as the README says."""
    root = tmp_path_factory.mktemp("readme")
    (root / "home").mkdir()
    cli = [sys.executable, "-m", "mesofield_napari"]
    for args in (
        ["record", "--out", "EXP", "--subject", "M042", "--task", "widefield",
         "--frames", "40", "--size", "64x64", "--exposure", "5", "--writer", "both"],
        ["export", "mean-trace", "EXP"],
        ["export", "dff", "EXP"],
    ):  # fmt: skip
        res = run([*cli, *args], root, root / "home")
        assert res.returncode == 0, (args, res.stderr[-2000:])
    return root


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.slow
@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"L{n}" for n, _ in BLOCKS])
def test_readme_python_block_runs_as_written(line, code, workdir):
    if NOT_RUN in code:
        reason = code.split(NOT_RUN, 1)[1].splitlines()[0].strip(" :()")
        assert reason, f"README.md:{line}: say why the block is not run"
        pytest.skip(f"README.md:{line}: {reason}")
    res = run([sys.executable, "-c", code], workdir, workdir / "home")
    assert res.returncode == 0, f"README.md:{line}:\n{res.stderr[-3000:]}"
