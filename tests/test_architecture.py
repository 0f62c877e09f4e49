"""The layers of docs/architecture.md: every import of crossroads' own code runs down, never up or across.

Imports are read from the source (functions and ``TYPE_CHECKING`` blocks included), so a
lazy import inside a function counts like any other.  The one exception is the front door,
``crossroads/__init__.py``, which imports the client lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import crossroads

SOURCE = Path(crossroads.__file__).parent

#: Packages and modules by layer, bottom first: a module imports only from its own
#: package or module and from lower layers.
LAYERS = [
    {"errors"},
    {"paths", "registry", "checks"},
    {"pretrained"},
    {"objective"},
    {"data"},
    {"upstream", "store"},
    {"embeddings"},
    {"routers", "online", "grading"},
    {"evaluate", "route"},
    {"serve"},  # the server shows what crossroads report computes (its dashboard)
    {"client", "cli"},
]
LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def component(module: str) -> str:
    """``crossroads.serve.app`` -> ``serve``; ``crossroads.route`` -> ``route``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def modules() -> dict[str, Path]:
    found = {}
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        found[name] = path
    return found


def imports(path: Path, module: str) -> set[str]:
    """The crossroads modules ``path`` imports, resolved to full names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("crossroads"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target == "crossroads":  # from crossroads import client
                found.update(f"crossroads.{alias.name}" for alias in node.names)
            elif target.startswith("crossroads."):
                found.add(target)
    return found


def test_every_module_belongs_to_a_layer():
    unplaced = sorted({component(m) for m in modules()} - set(LAYER_OF) - {""})
    assert unplaced == [], f"add these to LAYERS (and to docs/architecture.md): {unplaced}"


def test_imports_only_run_down_the_layers():
    wrong = []
    for module, path in sorted(modules().items()):
        if module == "crossroads":
            continue  # the front door: imports the client on first use
        mine = component(module)
        for target in sorted(imports(path, module)):
            theirs = component(target)
            if theirs == mine or theirs in ("", "__version__"):
                continue
            if LAYER_OF[theirs] >= LAYER_OF[mine]:
                wrong.append(f"{module} -> {target} (layer {LAYER_OF[mine]} -> {LAYER_OF[theirs]})")
    assert wrong == []


@pytest.mark.parametrize("importer, imported", [("evaluate", "serve"), ("routers", "serve"), ("objective", "data")])
def test_the_checker_sees_an_upward_import(importer, imported, tmp_path):
    """The check can fail: a module written to import upwards is caught."""
    path = tmp_path / "bad.py"
    path.write_text(f"def f():\n    from crossroads.{imported}.x import y\n")
    target = next(iter(imports(path, f"crossroads.{importer}.bad")))
    assert LAYER_OF[component(target)] >= LAYER_OF[importer]
