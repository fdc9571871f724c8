"""The package's layering: data flows one way, and the engine stands alone.

    nncli (the package's face) -> __main__ -> cli | api -> commands -> output -> training
        -> builder -> config -> data | nn -> shared modules

A module may import from its own folder and from any layer below its own, never from one above
(`nncli.nn` and `nncli.data` are side by side and import neither each other). The shared
modules at the top of the package (errors, registry, validate, fileio, safe_pickle, messages)
import only each other. What is drawn for people (nncli.output) stands above the trainer, so
nothing of the engine, the data or the trainer can import it. The package's `__init__` stands
above everything: its lazy attributes are the Python API (`nncli.train` is `nncli.api.train`,
imported on first use).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nncli"

# higher imports lower; equal ranks in different folders do not import each other
RANKS = {
    "": 9,  # the package itself, nncli/__init__.py
    "__main__": 8,
    "cli": 7,
    "api": 7,
    "commands": 6,
    "output": 5,  # figures: drawn by commands and by training's curves callback, set up in commands
    "training": 4,
    "builder": 3,
    "config": 2,
    "data": 1,
    "nn": 1,
}
SHARED = 0  # every other top-level module


def layer_of(module: str) -> str:
    """`nncli.nn.layers.core` -> `nn`; `nncli` -> `` (the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def rank_of(module: str) -> int:
    return RANKS.get(layer_of(module), SHARED)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def nncli_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of an nncli module in `path`, at any depth (imports
    inside functions count too: deferring an import does not change who depends on whom)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "nncli"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "nncli":
                continue
            # `from nncli import validate` imports the module nncli.validate (and `__version__`
            # is a constant of the package, which depends on nothing)
            if node.module == "nncli":
                found += [(node.lineno, f"nncli.{a.name}") for a in node.names if a.name != "__version__"]
            else:
                found.append((node.lineno, node.module))
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_layer_table_covers_every_folder():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(RANKS), f"give {folders - set(RANKS)} a rank in RANKS"


def test_no_module_imports_from_a_layer_above_its_own():
    wrong = []
    for path in modules():
        source = module_name(path)
        for line, target in nncli_imports(path):
            same_folder = layer_of(target) == layer_of(source) and rank_of(source) != SHARED
            if same_folder or rank_of(target) < rank_of(source):
                continue
            if rank_of(source) == SHARED and rank_of(target) == SHARED:
                continue
            wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} {source} imports {target}")
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


def test_the_rule_catches_an_upward_import(tmp_path):
    """The check above can fail: an nn module importing the trainer is reported."""
    fake = tmp_path / "nncli" / "nn" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from nncli.training.trainer import Trainer\n")
    imports = nncli_imports(fake)
    assert imports == [(2, "nncli.training.trainer")]
    assert rank_of(imports[0][1]) > rank_of("nncli.nn.bad")


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    names = {module_name(p) for p in modules()}
    for path in modules():
        targets = set()
        for _, target in nncli_imports(path):
            # a `from a.b import name` may name a module or an attribute of one
            while target not in names and "." in target:
                target = target.rsplit(".", 1)[0]
            targets.add(target)
        graph[module_name(path)] = targets - {module_name(path)}

    # a package's __init__ re-exporting its own modules is not a cycle of dependence
    def edges(node: str) -> set[str]:
        inside = {t for t in graph.get(node, ()) if node.startswith(t + ".") or t.startswith(node + ".")}
        return graph.get(node, set()) - inside

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges(node)):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_engine_loads_no_cli_progress_or_plotting_library():
    engine = sorted(module_name(p) for p in (PACKAGE / "nn").rglob("*.py"))
    code = (
        "import importlib, sys\n"
        f"for name in {engine!r}:\n"
        "    importlib.import_module(name)\n"
        "print(','.join(m for m in ('click', 'tqdm', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing nncli.nn loaded {out.stdout.strip()}"


def test_only_the_cli_imports_click():
    importers = [
        str(p.relative_to(PACKAGE.parent))
        for p in modules()
        if any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "click" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "click")
            for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        )
    ]
    # the command line's own package, and in it every module that declares commands
    assert importers and all(p.startswith("nncli/cli/") for p in importers), importers
    assert {"nncli/cli/base.py", "nncli/cli/training.py", "nncli/cli/models.py"} <= set(importers)
