"""The package's shape: no import cycle between mmgen's subpackages, and no module over 500 lines.

Every `import` and `from ... import` in mmgen/ counts, at module level or inside a function
(a lazy import is still a dependency); only imports under `if TYPE_CHECKING:` are left out.
A unit is a subpackage (`mmgen.index`) or a top-level module (`mmgen.search`).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import mmgen

ROOT = Path(mmgen.__file__).resolve().parent


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, package: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((".".join(base + ([node.module] if node.module else [])), node.lineno))
            elif node.module:
                found.append((node.module, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    """Edges between units of mmgen, and where each edge comes from (module:line)."""
    edges: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        module = ".".join(rel.parts)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        module = module.removesuffix(".__init__")
        for target, line in _imports(ast.parse(path.read_text(encoding="utf-8")), package):
            if target == "mmgen" or not target.startswith("mmgen."):
                continue
            a, b = _unit(module), _unit(target)
            if a != b:
                edges[a].add(b)
                where[(a, b)].append(f"{module}:{line}")
    return edges, where


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle (as a path whose last node is its first), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            found = dfs(start)
            if found:
                return found
    return None


def test_no_import_cycle_between_subpackages() -> None:
    edges, where = import_graph()
    cycle = find_cycle(edges)
    if cycle:
        steps = [f"{a} -> {b} ({', '.join(where[(a, b)][:3])})" for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle:\n  " + "\n  ".join(steps))


def test_the_cycle_finder_finds_cycles(tmp_path: Path) -> None:
    pkg = tmp_path / "mmgen"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "b" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from mmgen.b.y import g\n")
    (pkg / "b" / "y.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mmgen.a.x import f\n"
    )
    edges, _ = import_graph(pkg)
    assert find_cycle(edges) is None  # a TYPE_CHECKING import is not a dependency
    (pkg / "b" / "y.py").write_text("from ..a import x\n")
    edges, where = import_graph(pkg)
    assert find_cycle(edges) == ["mmgen.a", "mmgen.b", "mmgen.a"]
    assert where[("mmgen.b", "mmgen.a")] == ["mmgen.b.y:1"]


def test_no_module_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT.parent)): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}, f"split these modules: {long}"
