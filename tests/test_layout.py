"""The import graph the design promises: ``sweeps`` builds on ``harness``, never the reverse.

Only the entry point ``harness.run`` may reach ``sweeps`` (its ``+sweep=`` dispatch, one lazy
import of ``sweeps.cli``); nothing in ``sweeps`` imports that entry point; no two modules of the
two packages import each other, directly or around a loop. Read from the source with ``ast``, so
lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from collections import defaultdict

from harness.paths import REPO_ROOT

PACKAGES = ("harness", "sweeps")
ENTRY_POINTS_ABOVE_SWEEPS = {"harness.run"}


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the two packages it imports (at any depth of its source)."""
    files = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rsplit(".", 1)[0] if "." in target else None
                if target and target != name:
                    graph[name].add(target)
    return graph


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def test_the_harness_library_never_imports_sweeps():
    graph = import_graph()
    assert graph, "no modules found"
    upward = sorted((a, b) for a, targets in graph.items() for b in targets
                    if a.startswith("harness") and b.startswith("sweeps") and a not in ENTRY_POINTS_ABOVE_SWEEPS)
    assert upward == []
    assert graph["harness.run"] & {m for m in graph if m.startswith("sweeps")} <= {"sweeps.cli"}


def test_sweeps_never_import_the_entry_point_and_no_module_loops_back_across_the_packages():
    graph = import_graph()
    assert not any("harness.run" in targets for name, targets in graph.items() if name.startswith("sweeps"))
    for name, targets in graph.items():
        if name.startswith("sweeps"):
            for target in targets:
                if target.startswith("harness"):
                    assert not reaches(graph, target, name), f"{target} reaches back to {name}"
