"""The packages form layers that import downward only, and no module imports itself back through
others: models <- trainables <- analysis <- search (a reader of the code can start at the bottom)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["imagesets", "models", "trainables", "analysis", "search"]  # each may import those before it


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def test_packages_import_only_the_layers_below_them():
    upward = [(module, target) for module, targets in graph().items() for target in targets
              if LAYERS.index(target.split(".")[0]) > LAYERS.index(module.split(".")[0])]
    assert not upward, f"imports against the layers: {upward}"


def test_no_module_imports_itself_back():
    edges = graph()
    # A package's __init__ is imported with any of its modules; a cycle through it is a real one.
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_every_module_of_the_search_package_reads_in_one_sitting():
    """``search/`` is grouped by what each part does (command, engine, finish, resume), and no module of it grows
    past 250 lines: a newcomer follows a flag through modules that each fit a screen or two."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "search").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 250}
    assert not long, f"split these: {long}"
