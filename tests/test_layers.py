"""The package is layered (README, "Layout"): no module imports from a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

import contextedit

ROOT = Path(contextedit.__file__).parent
LAYERS = [
    {"contextedit", "errors", "defaults", "progress"},
    {"device", "fileio"},
    {"runs", "video", "schedulers", "attention", "prompts", "worlds"},
    {"models"},
    {"testing", "captioning", "metrics"},
    {"pipelines"},
    {"pipeline"},
    {"commands"},
    {"cli", "cli_setup", "cli_eval"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}
# The one sanctioned upward edge: the loader builds `tiny-random` and the tiny CLIP/BLIP-2 from
# contextedit.testing, imported inside the function that needs them.
ALLOWED = {("models", "testing")}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "contextedit"


def imports_of(path: Path) -> set[str]:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    package = list(rel.parts if path.name == "__init__.py" else rel.parts[:-1])
    if path.name == "__init__.py":
        package = package[:-1] + [package[-1]]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{module}.{a.name}" if not node.module else module for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("contextedit"):
            found.add(node.module)
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
            if there in LEVEL and LEVEL[there] > LEVEL[here] and (here, there) not in ALLOWED:
                upward.append(f"{path.relative_to(ROOT.parent)} imports {module}")
    assert not upward, upward
