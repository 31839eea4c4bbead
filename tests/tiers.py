"""The fast tier (``make test-fast``): a pytest plugin that marks ``e2e`` every test that trains,
scores or starts a process, so ``-m "not slow and not gpu and not e2e"`` keeps the unit tests.

A test is end-to-end when it, one of its fixtures (at any depth), or a function of its own module
that it calls (at any depth) calls one of :data:`HEAVY` (names called, or ``subprocess.*``). The
rule is read from the tests' source with ``ast``, so a new test that runs the CLI or trains leaves
the fast tier by itself. Loaded only by ``make test-fast`` (``-p tests.tiers``); the full suite
(``make test``, ``.ci/run``) runs every test as before.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap

import pytest

# What makes a test end-to-end: a run (CLI or in process), a sweep, a pack, scoring with lm-eval,
# building a model, a notebook, or any child process.
HEAVY = frozenset({
    "run_cli", "sweep_cli", "train_in_process", "run_training", "run_sweep", "run_pack", "train_pack", "main",
    "build_model", "load_model", "score", "score_base", "evaluate_run", "NotebookClient", "Popen", "run_bench",
    "bench",
})


def called_names(tree: ast.AST) -> set[str]:
    """Every name a piece of code calls (``f()``, ``obj.f()``), and ``subprocess`` when it uses it."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "subprocess":
            names.add("Popen")
    return names


@functools.cache
def heavy_functions(path: str) -> frozenset[str]:
    """The module's own functions that call something heavy, directly or through one another."""
    tree = ast.parse(open(path).read())
    calls = {node.name: called_names(node) for node in ast.walk(tree)
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    heavy = {name for name, names in calls.items() if names & HEAVY}
    while True:
        more = {name for name, names in calls.items() if names & heavy} - heavy
        if not more:
            return frozenset(heavy)
        heavy |= more


def is_heavy(function, seen: set) -> bool:
    if function in seen:
        return False
    seen.add(function)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        path = inspect.getsourcefile(function)
    except (OSError, TypeError):
        return False
    return bool(called_names(tree) & (HEAVY | heavy_functions(path)))


def pytest_collection_modifyitems(config, items):
    for item in items:
        seen: set = set()
        functions = [getattr(item, "function", None)]
        for name in getattr(item, "fixturenames", ()):
            for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ()):
                functions.append(fixturedef.func)
        if any(f is not None and is_heavy(f, seen) for f in functions):
            item.add_marker(pytest.mark.e2e)
