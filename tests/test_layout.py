"""The package's layering, from its imports: data flows one way (docs/design.md).

Every module belongs to a room (the longest prefix in ``LAYERS``); a module may import
its own room and rooms *below* it, never one above, and no two modules may import each
other, directly or round a loop -- ``TYPE_CHECKING`` and function-local imports count
too, since they are the same dependency deferred. A new room goes into ``LAYERS``
where it belongs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mesofield_napari

PKG = Path(mesofield_napari.__file__).parent
ROOT = "mesofield_napari"

# bottom to top
LAYERS = [
    "_platform",  # the OS: positional I/O, sync, reservation, clocks, stopping
    "data.errors",
    "data.clock",
    "data.formats",  # what is on disk
    "data.frame_timing",  # one definition of rate, missing and late frames
    "data.writer",  # frames to disk
    "data.manager",  # a run's folder and files
    "data.reader",  # recordings read back
    "data.recovery",  # one recording's files
    "data.run_recovery",  # a whole run: manifest, data queue, timestamps
    "data.batch",  # post-hoc export
    "data",  # the face: data/__init__
    "devices",
    "acquisition",
    "live",
    "experiment",
    "models",  # the docks' Qt-free models
    "_reader",
    "_reader_preference",
    "_sample_data",
    "_widgets",
    "app",
    "cli",
    "__main__",
    "",  # the package root (lazy re-exports)
]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in mods else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {t for t in found if t in mods and t != name}


def _room(name: str) -> str:
    rel = name[len(ROOT) + 1 :] if name != ROOT else ""
    return max(
        (r for r in LAYERS if rel == r or rel.startswith(r + ".") or r == ""),
        key=len,
    )


MODS = _modules()
GRAPH = {name: _imports(name, path, MODS) for name, path in MODS.items()}


def test_every_module_has_a_room() -> None:
    unplaced = [m for m in MODS if _room(m) == "" and m != ROOT]
    assert not unplaced, f"add these to LAYERS: {unplaced}"


def test_no_arrow_goes_up() -> None:
    level = {room: i for i, room in enumerate(LAYERS)}
    upward = sorted(
        f"{a} -> {b}"
        for a, targets in GRAPH.items()
        for b in targets
        if _room(a) != _room(b) and level[_room(b)] > level[_room(a)]
    )
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_circles() -> None:
    # Tarjan's strongly connected components: any component of > 1 module is a loop
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not loops, f"import circles: {loops}"


@pytest.mark.parametrize(
    "statement",
    [
        "from mesofield_napari import CustomWriter, CV2Writer",
        "from mesofield_napari.data import CustomWriter, CV2Writer, RunManager",
        "from mesofield_napari.data.writer import CustomWriter, CV2Writer",
        "from mesofield_napari.data import Recording, open_recording, open_run, recover",
    ],
)
def test_mesofield_style_imports(statement: str) -> None:
    """mesofield's scripts do ``from mesofield.data import CustomWriter``."""
    namespace: dict[str, object] = {}
    exec(statement, namespace)
    names = statement.split(" import ")[1].split(", ")
    assert all(isinstance(namespace[n], type) or callable(namespace[n]) for n in names)
