"""The package's layers, read from the source: every import of every module of imgworker/, the ones inside
functions included (they run too), checked against one rule written below as data.

It fails on (a) an import cycle between modules, naming the cycle; (b) an import against the layer rule, naming
file, line and rule; (c) an import inside a function that is not of an optional dependency (an imgworker module
imported late only hides a cycle or a cost); (d) an ``importlib.import_module`` outside the CLI's command table.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "imgworker"

# The layers, top to bottom: a module may import its own package and the packages of the rows below its own;
# packages that share a row may not import each other. Why this order (it differs from "analysis / backends"
# as one row because the code says so): the CPU backend computes a job's facts from the pixels it decoded
# (backends/cpu.py asks analysis for them), so analysis sits below backends; the array engine hands its pixels
# to libvips to encode them with the metadata the job keeps (arrays/executor.py), so arrays sits above
# imaging; imaging (libvips) and stores know nothing of each other; core is the contract and its types,
# standard library only, under everything.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"commands"}),
    frozenset({"worker"}),
    frozenset({"features"}),
    frozenset({"jobs"}),
    frozenset({"pipeline"}),
    frozenset({"backends"}),
    frozenset({"analysis"}),
    frozenset({"arrays"}),
    frozenset({"imaging", "stores"}),
    frozenset({"core"}),
)

# Standing apart from the rows: what each may import, and which packages may import it.
# ``imgworker`` is the package's own __init__ (its public names) and ``client`` the Python client module.
ABOVE_CORE = frozenset().union(*LAYERS[:-1])
APART: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "gearman": (frozenset(), ABOVE_CORE | {"client"}),  # our Gearman protocol: imports nothing of ours
    "client": (frozenset({"gearman", "core"}), ABOVE_CORE | {"imgworker"}),
    "testing": (frozenset({"core"}), frozenset({"commands"})),  # a throwaway gearmand, for the demo and tests
    "imgworker": (frozenset({"client", "core"}), frozenset({"commands", "worker"})),  # __version__, Client
    "__main__": (frozenset({"commands"}), frozenset()),
}

# Imports allowed inside functions: optional dependencies only, loaded when a job or a flag needs them.
OPTIONAL = ("cupy", "cupyx", "nvidia", "boto3", "botocore", "cv2", "pillow_heif", "PIL")

# The one place that loads modules by name: the CLI, which imports only the command it runs.
DYNAMIC_IMPORTERS = ("imgworker.commands.cli",)

# Known faults waiting for the branch that owns their files: none left (the job-lifecycle branch removed the
# runner <-> process cycle). Each entry must still be true: the test fails on a stale one, so the list cannot
# outlive the fault it names.
PENDING_CYCLES: frozenset[frozenset[str]] = frozenset()
PENDING_LATE: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Import:
    source: str  # importing module
    target: str  # imported module (of ours) or top-level name (of others)
    path: Path
    line: int
    late: bool  # inside a function
    typing_only: bool  # under ``if TYPE_CHECKING:``

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def module_files(package: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package __init__)."""
    out: dict[str, tuple[Path, bool]] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_init else parts)] = (path, is_init)
    return out


def _ours(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _in_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, is_init: bool, modules: dict[str, tuple[Path, bool]]) -> list[Import]:
    found: list[Import] = []
    package = name if is_init else name.rpartition(".")[0]

    def visit(node: ast.AST, late: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, True, typing_only)
                continue
            if isinstance(child, ast.If) and _in_type_checking(child):
                for stmt in child.body:
                    visit_one(stmt, late, True)
                for stmt in child.orelse:
                    visit_one(stmt, late, typing_only)
                continue
            visit_one(child, late, typing_only)

    def visit_one(node: ast.AST, late: bool, typing_only: bool) -> None:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import name``: the submodule pkg.name where there is one, else pkg itself.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        else:
            visit(node, late, typing_only)
            return
        for target in targets:
            ours = _ours(target, modules) if target.split(".")[0] == "imgworker" else None
            if ours is not None and ours != name:
                found.append(Import(name, ours, path, node.lineno, late, typing_only))
            elif ours is None:
                found.append(Import(name, target.split(".")[0], path, node.lineno, late, typing_only))

    visit(ast.parse(path.read_text(), str(path)), False, False)
    return found


def all_imports(package: Path = PACKAGE) -> tuple[dict[str, tuple[Path, bool]], list[Import]]:
    modules = module_files(package)
    found = [imp for name, (path, is_init) in modules.items() for imp in imports_of(name, path, is_init, modules)]
    return modules, found


def layer_of(module: str) -> str:
    """``imgworker.pipeline.steps.crop`` -> ``pipeline``; ``imgworker`` (the __init__) -> ``imgworker``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _row(package: str) -> int | None:
    return next((i for i, row in enumerate(LAYERS) if package in row), None)


def rule_broken(source: str, target: str) -> str | None:
    """Why ``source`` may not import ``target`` (both our modules), or None when it may."""
    src, dst = layer_of(source), layer_of(target)
    if src == dst:
        return None
    if src in APART:
        may, _ = APART[src]
        return None if dst in may else f"{src} may import only {sorted(may) or 'nothing of ours'}"
    if dst in APART:
        _, by = APART[dst]
        return None if src in by else f"{dst} may be imported only by {sorted(by) or 'no module of ours'}"
    row_src, row_dst = _row(src), _row(dst)
    if row_src is None or row_dst is None:
        return f"{src if row_src is None else dst} is in no row of LAYERS (tests/unit/test_layers.py)"
    if row_dst <= row_src:
        return (f"{src} may import only the layers below it "
                f"({', '.join('/'.join(sorted(r)) for r in LAYERS[row_src + 1:]) or 'none'})")
    return None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(root: str) -> None:
        # Iterative: the package is deep enough for recursion to be a needless risk.
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(_one_cycle(sorted(component), edges))

    for node in sorted(edges):
        if node not in index:
            strongconnect(node)
    return found


def _one_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A path from the component's first module back to itself, inside the component (breadth first)."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(edges.get(node, ()) & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                todo.append(nxt)
    return component  # unreachable for a strongly connected component


def runtime_edges(found: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in found:
        if imp.target.startswith("imgworker") and not imp.typing_only:
            edges.setdefault(imp.source, set()).add(imp.target)
    return edges


def dynamic_imports(modules: dict[str, tuple[Path, bool]]) -> list[tuple[str, Path, int, str | None]]:
    """``importlib.import_module(...)`` / ``__import__(...)`` calls: (module, file, line, the literal name or None)."""
    out: list[tuple[str, Path, int, str | None]] = []
    for name, (path, _) in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr in ("import_module", "__import__")) or (
                    isinstance(func, ast.Name) and func.id in ("import_module", "__import__")):
                arg = node.args[0] if node.args else None
                literal = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
                out.append((name, path, node.lineno, literal))
    return out


# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, tuple[Path, bool]], list[Import]]:
    return all_imports()


def test_every_package_has_a_place(graph: tuple[dict[str, tuple[Path, bool]], list[Import]]) -> None:
    modules, _ = graph
    placed = ABOVE_CORE | LAYERS[-1] | set(APART)
    assert sorted({layer_of(m) for m in modules} - placed) == []


def test_no_import_cycles(graph: tuple[dict[str, tuple[Path, bool]], list[Import]]) -> None:
    _, found = graph
    found_cycles = cycles(runtime_edges(found))
    pending = [c for c in found_cycles if frozenset(c) in PENDING_CYCLES]
    new = [" -> ".join(c) for c in found_cycles if frozenset(c) not in PENDING_CYCLES]
    assert new == [], "import cycles:\n" + "\n".join(new)
    stale = PENDING_CYCLES - {frozenset(c) for c in pending}
    assert not stale, f"PENDING_CYCLES lists cycles that are gone; remove them: {sorted(map(sorted, stale))}"


def test_imports_follow_the_layers(graph: tuple[dict[str, tuple[Path, bool]], list[Import]]) -> None:
    _, found = graph
    broken = sorted({f"{imp.where}: {imp.source} imports {imp.target}: {why}"
                     for imp in found if imp.target.startswith("imgworker")
                     if (why := rule_broken(imp.source, imp.target)) is not None})
    assert broken == [], "imports against the layer rule:\n" + "\n".join(broken)


def test_core_is_standard_library_only(graph: tuple[dict[str, tuple[Path, bool]], list[Import]]) -> None:
    _, found = graph
    bad = sorted({f"{imp.where}: {imp.source} imports {imp.target}" for imp in found
                  if layer_of(imp.source) == "core" and not imp.target.startswith("imgworker")
                  and imp.target not in sys.stdlib_module_names and imp.target != "__future__"})
    assert bad == [], "core/ imports beyond the standard library:\n" + "\n".join(bad)


def test_late_imports_only_for_optional_dependencies(
        graph: tuple[dict[str, tuple[Path, bool]], list[Import]]) -> None:
    _, found = graph
    late = [imp for imp in found if imp.late and imp.target not in OPTIONAL]
    pending = {(imp.source, imp.target) for imp in late} & PENDING_LATE
    bad = sorted({f"{imp.where}: {imp.source} imports {imp.target} inside a function"
                  for imp in late if (imp.source, imp.target) not in PENDING_LATE})
    assert bad == [], (f"imports inside functions (only optional dependencies may be: {', '.join(OPTIONAL)}); "
                       "import these at the top:\n" + "\n".join(bad))
    assert pending == PENDING_LATE, f"PENDING_LATE lists late imports that are gone: {PENDING_LATE - pending}"


def test_modules_loaded_by_name(graph: tuple[dict[str, tuple[Path, bool]], list[Import]]) -> None:
    """By name: an optional dependency (as a late import), or, in the CLI alone, the command it runs."""
    modules, _ = graph
    bad = []
    for name, path, line, literal in dynamic_imports(modules):
        where = f"{path.relative_to(ROOT)}:{line}"
        if literal is not None and literal.split(".")[0] not in OPTIONAL:
            bad.append(f"{where}: {name} loads {literal} by name; import it at the top")
        elif literal is None and name not in DYNAMIC_IMPORTERS:
            bad.append(f"{where}: {name} loads a module by a computed name (only {DYNAMIC_IMPORTERS} may)")
    assert bad == []


def test_no_getattr_on_a_backend(graph: tuple[dict[str, tuple[Path, bool]], list[Import]]) -> None:
    """Callers use what backends/base.py's protocols declare; a getattr with a default would hide a gap."""
    modules, _ = graph
    bad = []
    for path, _ in modules.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr")
                    and node.args and re.search(r"(^|\.)\w*backend$", ast.unparse(node.args[0]))):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert bad == []


# What the layers buy: the client and the client-side CLI never load the image libraries (core is standard
# library only, and the CLI imports only the command it runs).

HEAVY = ("pyvips", "numpy", "cupy", "imgworker.backends", "imgworker.imaging", "imgworker.pipeline")


@pytest.mark.parametrize("code", [
    "import imgworker.client",
    "import imgworker.core.contract, imgworker.core.config",
    "import sys; from imgworker.commands.cli import main; sys.argv[1:] = ['submit', '--help']; main()",
])
def test_client_side_loads_no_image_library(code: str) -> None:
    probe = (f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m.startswith({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# The checker itself, on a small made-up package: each rule must be able to fail.

def _imports_of(root: Path, files: dict[str, str]) -> list[Import]:
    """The imports of a made-up ``imgworker`` package of ``files`` (every folder gets an __init__.py)."""
    package = root / "imgworker"
    for rel, text in files.items():
        path = package / rel
        for folder in [path.parent, *path.parent.parents]:
            if folder == package.parent:
                break
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "__init__.py").touch()
        path.write_text(text)
    return all_imports(package)[1]


def test_checker_finds_a_cycle_through_a_late_relative_import(tmp_path: Path) -> None:
    found = _imports_of(tmp_path, {"core/a.py": "from imgworker.core import b\n",
                                   "core/b.py": "def f():\n    from . import c\n",
                                   "core/c.py": "import imgworker.core.a\n"})
    assert cycles(runtime_edges(found)) == [
        ["imgworker.core.a", "imgworker.core.b", "imgworker.core.c", "imgworker.core.a"]]
    late = [(i.source, i.target, i.line) for i in found if i.late]
    assert late == [("imgworker.core.b", "imgworker.core.c", 2)]


def test_checker_names_an_upward_import(tmp_path: Path) -> None:
    found = _imports_of(tmp_path, {
        "core/contract.py": "import json\nfrom imgworker.analysis import facts\n",
        "analysis/facts.py": "from imgworker.core import contract\n",
        "gearman/__init__.py": "from imgworker.core import contract\n",
        "client.py": "from imgworker import gearman\n",
    })
    broken = {(i.source, i.target, i.line): rule_broken(i.source, i.target)
              for i in found if i.target.startswith("imgworker")}
    assert broken[("imgworker.core.contract", "imgworker.analysis.facts", 2)] == (
        "core may import only the layers below it (none)")
    assert broken[("imgworker.analysis.facts", "imgworker.core.contract", 1)] is None
    assert broken[("imgworker.gearman", "imgworker.core.contract", 1)] == "gearman may import only nothing of ours"
    assert broken[("imgworker.client", "imgworker.gearman", 1)] is None
