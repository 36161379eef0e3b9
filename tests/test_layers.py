"""The layers contract: ir -> passes -> targets -> compiler, read from the source with ``ast``.

* every import of mapc code is absolute (``from mapc.ir import load``), so it can be followed;
* no module imports a higher layer (``mapc.ir`` never imports ``mapc.passes``, ...);
* a layer uses another only through the packages it exposes (``mapc.ir``, ``mapc.passes.quantize``),
  never through a plain module of it (``mapc.ir.compare``): what a package exports is its API;
* no import cycle between modules (imports at module level, outside ``TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folder of each layer's package (pyproject's package-dir), lowest layer first.
LAYERS = {"mapc.ir": "ir", "mapc.passes": "passes", "mapc.targets": "targets", "mapc": "compiler"}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    module_level: bool
    relative: bool


def module_files() -> dict[str, Path]:
    modules = {}
    for package, folder in LAYERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


MODULES = module_files()
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def layer_of(module: str) -> str:
    """The layer package a module belongs to (``mapc`` for the compiler's own modules)."""
    for package in LAYERS:
        if package != "mapc" and (module == package or module.startswith(package + ".")):
            return package
    return "mapc"


def rank(module: str) -> int:
    return list(LAYERS).index(layer_of(module))


def resolve(name: str) -> str:
    """The longest known module that ``name`` (a module, or a module plus an attribute) names."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _reexports(package: str) -> dict[str, str]:
    """Names a package's ``__init__`` imports from elsewhere, with the module each comes from."""
    tree = ast.parse(MODULES[package].read_text())
    return {alias.asname or alias.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}


REEXPORTS = {package: _reexports(package) for package in PACKAGES}


def resolve_from(module: str, name: str) -> str:
    """What ``from module import name`` imports: a submodule, or the package re-exporting a name
    (``from mapc.ir import walk`` is the function ``mapc.ir`` re-exports, not ``mapc.ir.walk``)."""
    source = REEXPORTS.get(module, {}).get(name)
    if source is not None and source != module:
        return module
    return resolve(f"{module}.{name}")


def imports_of(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, False)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "mapc":
                        found.append(Import(module, resolve(alias.name), child.lineno, module_level, False))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    found.append(Import(module, child.module or "", child.lineno, module_level, True))
                elif child.module and child.module.split(".")[0] == "mapc":
                    for alias in child.names:
                        found.append(Import(module, resolve_from(child.module, alias.name), child.lineno, module_level, False))
            else:
                visit(child, module_level)

    visit(tree, True)
    return found


IMPORTS = [item for module, path in MODULES.items() for item in imports_of(module, path)]


def where(item: Import) -> str:
    return f"{MODULES[item.importer].relative_to(ROOT)}:{item.line} imports {item.imported}"


def test_the_scan_sees_the_whole_package():
    assert {"mapc", "mapc.ir", "mapc.passes", "mapc.targets", "mapc.api", "mapc.ir.graph"} <= set(MODULES)
    assert len(IMPORTS) > 200


def test_imports_of_mapc_code_are_absolute():
    relative = sorted({where(item) for item in IMPORTS if item.relative})
    assert not relative, "use absolute mapc. imports:\n" + "\n".join(relative)


def test_no_module_imports_a_higher_layer():
    upward = sorted({where(item) for item in IMPORTS if not item.relative and rank(item.imported) > rank(item.importer)})
    assert not upward, "the layers are ir -> passes -> targets -> compiler:\n" + "\n".join(upward)


def test_other_layers_are_used_through_their_packages():
    internal = sorted({
        where(item)
        for item in IMPORTS
        if not item.relative and layer_of(item.imported) != layer_of(item.importer) and item.imported not in PACKAGES
    })
    assert not internal, "import what the package exports (add it to its __init__):\n" + "\n".join(internal)


def test_no_import_cycle():
    graph = nx.DiGraph()
    graph.add_edges_from((i.importer, i.imported) for i in IMPORTS if i.module_level and not i.relative and i.importer != i.imported)
    cycles = sorted(sorted(cycle) for cycle in nx.simple_cycles(graph))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles[:10])


@pytest.mark.parametrize("module", sorted(PACKAGES))
def test_package_exports_are_declared(module):
    """Every package that others may import says what it exports, and exports only what it has."""
    tree = ast.parse(MODULES[module].read_text())
    exported = next(
        (ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)),
        None,
    )
    used_from_outside = {item for item in IMPORTS if item.imported == module and layer_of(item.importer) != layer_of(module)}
    if not used_from_outside:
        return
    assert exported is not None, f"{module} is used by other layers but has no __all__"
    bound = {alias.asname or alias.name for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    bound |= {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    bound |= {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    assert set(exported) <= bound, f"{module}.__all__ names what it does not define: {sorted(set(exported) - bound)}"
