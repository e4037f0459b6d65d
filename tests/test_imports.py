"""The package's import structure: a light `import pyscf_qhflow`, and no import cycles."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pyscf_qhflow"


def test_import_loads_no_torch_and_the_guess_still_works():
    """`import pyscf_qhflow` registers the hook without torch or e3nn; the first guess loads them."""
    code = """
import sys
import pyscf_qhflow
heavy = sorted(m for m in ("torch", "e3nn") if m in sys.modules)
assert not heavy, f"import pyscf_qhflow loaded {heavy}"
from pyscf import gto, scf
mol = gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59", basis="def2-svp", verbose=0)
mf = scf.RHF(mol)
mf.init_guess = "qhflow"
mf.kernel()
assert mf.converged and mf.qhflow_info["used"], mf.qhflow_info
assert "torch" in sys.modules
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _is_type_checking_block(node) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING")


def _import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports anywhere in its source (function-level included)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name, is_package = _module_name(path)
        modules[name] = (path, is_package)
    graph = {}
    for name, (path, is_package) in modules.items():
        targets = set()
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking_block(block)
                       for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # `if TYPE_CHECKING:` imports never run
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # `from . import keys` names a module
                    sub = f"{target}.{alias.name}"
                    targets.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_among_the_package_modules():
    graph = _import_graph()
    assert "pyscf_qhflow.guess.hook" in graph and len(graph) > 30  # the walk saw the package
    assert _cycles(graph) == []


def test_the_network_never_imports_pyscf():
    """nn/ works on tensors only; PySCF stays on the other side of batching and the layout."""
    for path in (PACKAGE / "nn").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            assert not any(n.split(".")[0] == "pyscf" for n in names), path.name


def test_leaf_modules_import_nothing_of_the_package():
    graph = _import_graph()
    for leaf in ("pyscf_qhflow.errors", "pyscf_qhflow.units", "pyscf_qhflow.fileio",
                 "pyscf_qhflow.keys", "pyscf_qhflow.version"):
        assert graph[leaf] == set(), (leaf, graph[leaf])
