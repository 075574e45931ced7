"""The package is layered (README, "Layout"): no module imports from a layer above its own, and no
module imports itself through others (no import cycle, lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import contextedit

ROOT = Path(contextedit.__file__).parent
LAYERS = [
    {"contextedit", "errors", "defaults", "progress", "settings"},
    {"device", "fileio"},
    {"runs", "video", "schedulers", "attention", "prompts", "worlds"},
    {"models"},
    {"testing", "captioning", "metrics"},
    {"pipelines"},
    {"pipeline", "options"},
    {"commands"},
    {"cli", "cli_options", "cli_setup", "cli_eval", "cli_ui", "ui"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "contextedit"


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    package = list(rel.parts if path.name == "__init__.py" else rel.parts[:-1])
    if path.name == "__init__.py":
        package = package[:-1] + [package[-1]]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("contextedit")):
            base = package[:len(package) - (node.level - 1)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # `from pkg import sub` imports the submodule where `sub` is one, else a name of `pkg`
            found |= {f"{module}.{a.name}" if _is_module(f"{module}.{a.name}") else module for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("contextedit")}
    return found


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())}
    parts = {"contextedit" if p == "__init__" else p for p in parts}
    assert parts <= set(LEVEL), sorted(parts - set(LEVEL))


def test_nothing_imports_upward():
    upward = []
    for path in ROOT.rglob("*.py"):
        here = _part(".".join(path.relative_to(ROOT.parent).with_suffix("").parts))
        for module in imports_of(path):
            there = _part(module)
            if there == "contextedit" and module.count(".") == 1:  # `from .. import video`
                there = module.split(".")[1]
            if there in LEVEL and LEVEL[there] > LEVEL[here]:
                upward.append(f"{path.relative_to(ROOT.parent)} imports {module}")
    assert not upward, upward


def import_graph() -> dict[str, set[str]]:
    """Every contextedit module and the contextedit modules it imports, anywhere in its body."""
    graph = {module_name(path): set() for path in ROOT.rglob("*.py")}
    for path in ROOT.rglob("*.py"):
        graph[module_name(path)] = {m for m in imports_of(path) if m in graph and m != module_name(path)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):  # a chain deeper than the recursion limit would be a layering in itself
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_production_never_imports_the_test_helpers():
    """contextedit.testing only re-exports production modules for the tests and benchmarks."""
    graph = import_graph()
    offenders = sorted(f"{m} imports {t}" for m, targets in graph.items() if not m.startswith("contextedit.testing")
                       for t in targets if t == "contextedit.testing" or t.startswith("contextedit.testing."))
    assert offenders == []


def test_the_cycle_check_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
