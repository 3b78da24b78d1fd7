"""The import graph of graddoctor, read from the source with ast: no cycle, and no arrow against the layers.

Every import of a graddoctor module counts: module level, inside a function, under `if TYPE_CHECKING:`.
Imports of other packages (optional ones load lazily inside functions) are not part of the graph.
The layer order is the fenced block under `## Layout` in README.md: one layer per line, lowest first;
a module may import its own layer and the layers above its line (lower ones), never a later line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "graddoctor"


def modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted names relative to the package ("" is its __init__) -> (file, is a package)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(package: Path) -> dict[str, set[str]]:
    """Each module's imports of the package's own modules, wherever they stand in the file."""
    mods = modules(package)
    top = package.name
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, (path, is_package) in mods.items():
        here = [top, *name.split(".")] if name else [top]
        base_of_file = here if is_package else here[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = base_of_file[: len(base_of_file) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" if _relative(f"{module}.{alias.name}", top) in mods else module
                           for alias in node.names]
            else:
                continue
            for target in targets:
                if target == top or target.startswith(top + "."):
                    graph[name].add(_owner(_relative(target, top), mods))
        graph[name].discard(name)
    return graph


def _relative(dotted: str, top: str) -> str:
    return dotted[len(top) + 1:] if dotted.startswith(top + ".") else ""


def _owner(name: str, mods: dict) -> str:
    """The module that defines `name` (a.b.c where a.b is the module and c a name in it)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layers(readme: str) -> list[list[str]]:
    """The fenced block under '## Layout': one layer per line (names before any '#'), lowest first."""
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert section, "README.md has no '## Layout' section"
    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, "the '## Layout' section of README.md has no fenced block of layers"
    lines = [line.split("#")[0].split() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def layer_of(module: str, order: list[list[str]]) -> int | None:
    """The layer whose name is the longest prefix of `module` ('__init__' is the package's own __init__)."""
    best, best_len = None, -1
    for i, names in enumerate(order):
        for prefix in names:
            if prefix == "__init__":
                hit = module == ""
            else:
                hit = module == prefix or module.startswith(prefix + ".")
            if hit and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def upward_arrows(graph: dict[str, set[str]], order: list[list[str]]) -> list[str]:
    wrong = []
    for source in sorted(graph):
        for target in sorted(graph[source]):
            ls, lt = layer_of(source, order), layer_of(target, order)
            if ls is not None and lt is not None and lt > ls:
                wrong.append(f"{source or '__init__'} (layer {ls + 1}: {' '.join(order[ls])}) imports "
                             f"{target or '__init__'} (layer {lt + 1}: {' '.join(order[lt])})")
    return wrong


def test_no_import_cycle():
    found = cycles(imports(PACKAGE))
    assert not found, "import cycles (function-local imports count too): " + "; ".join(" <-> ".join(c) for c in found)


def test_every_module_has_a_layer():
    order = layers((ROOT / "README.md").read_text())
    missing = [name or "__init__" for name in modules(PACKAGE) if layer_of(name, order) is None]
    assert not missing, f"modules in no layer of README.md's '## Layout' block: {missing}"


def test_imports_point_down_the_layers():
    order = layers((ROOT / "README.md").read_text())
    wrong = upward_arrows(imports(PACKAGE), order)
    assert not wrong, "imports against the layer order of README.md's '## Layout':\n" + "\n".join(wrong)


# The checker itself, on a small package written here: it must see what it is meant to see.

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_checker_sees_a_cycle_through_a_function_local_import(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import g\n",
        "sub/__init__.py": "",
        "sub/c.py": "def f():\n    from ..a import g\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub import c\ng = 1\n",
    })
    assert cycles(imports(package)) == [["a", "b", "sub.c"]]


def test_checker_sees_an_upward_arrow_and_ignores_other_packages(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "from . import top\n",
        "low.py": "import numpy\nfrom pkg import top\n",
        "top.py": "def f():\n    import matplotlib\n",
    })
    graph = imports(package)
    assert graph == {"": {"top"}, "low": {"top"}, "top": set()}
    order = [["low"], ["top"], ["__init__"]]
    assert upward_arrows(graph, order) == ["low (layer 1: low) imports top (layer 2: top)"]


@pytest.mark.parametrize("text", ["# x\n", "## Layout\nno block\n"])
def test_layers_refuses_a_readme_without_the_block(text):
    with pytest.raises(AssertionError):
        layers(text)
