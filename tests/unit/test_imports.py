"""The project's imports point one way and form no cycle (module- and function-level imports),
and the programs that need no model start without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest
from conftest import ROOT, with_project_on_path

PACKAGES = ("configs", "utils", "datasets", "model", "solver", "processor", "serving")
# What each package may import besides itself: configs at the bottom, the run loop at the top.
ALLOWED = {
    "configs": set(),
    "utils": {"configs"},
    "datasets": {"configs", "utils"},
    "model": {"configs", "utils", "datasets"},
    "solver": {"configs", "utils"},
    "processor": {"configs", "utils", "datasets", "model", "solver"},
    "serving": {"configs", "utils", "datasets", "model", "processor"},  # inference beside training, not inside it
}


def project_modules(root: Path = ROOT) -> Dict[str, Path]:
    """Dotted module name -> file, for the packages and the top-level programs."""
    modules = {path.stem: path for path in root.glob("*.py")}
    for package in PACKAGES + ("benchmarks",):
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """Project modules imported anywhere in ``path`` (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> Dict[str, Set[str]]:
    modules = project_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as a list of modules (first == last), or [] when there is none."""
    state: Dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def forbidden_edges(graph: Dict[str, Set[str]]) -> List[str]:
    bad = []
    for source, targets in graph.items():
        top = source.split(".")[0]
        if top not in ALLOWED:
            continue  # programs, benchmarks: anything
        for target in targets:
            other = target.split(".")[0]
            if other != top and other not in ALLOWED[top]:
                bad.append(f"{source} -> {target}")
    return sorted(bad)


def test_no_import_cycles():
    assert find_cycle(import_graph()) == []


def test_imports_point_one_way():
    assert forbidden_edges(import_graph()) == []


@pytest.mark.parametrize(
    "files, expect_cycle, expect_forbidden",
    [
        # a cycle held together by an import inside a function, as configs once had with the model
        (
            {"configs/a.py": "def f():\n    from model.b import X\n", "model/b.py": "from configs.a import f\nX = 1\n"},
            True,
            ["configs.a -> model.b"],
        ),
        ({"utils/a.py": "from processor.b import Y\n", "processor/b.py": "Y = 1\n"}, False, ["utils.a -> processor.b"]),
        ({"datasets/a.py": "from .b import Z\n", "datasets/b.py": "from . import a\nZ = 1\n"}, True, []),
        ({"model/a.py": "from configs.c import K\n", "configs/c.py": "K = 1\n"}, False, []),
    ],
)
def test_the_walk_sees_cycles_and_wrong_directions(tmp_path, files, expect_cycle, expect_forbidden):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert bool(find_cycle(graph)) == expect_cycle
    assert forbidden_edges(graph) == expect_forbidden


# Programs that read or write files only: importing torch (about 4 s here) would dominate them.
TORCH_FREE = ("datasets.synthetic", "utils.report", "utils.io", "utils.run_layout", "utils.metric_names")


def test_file_only_programs_start_without_torch():
    check = (
        f"import sys\nfor name in {TORCH_FREE!r}:\n    __import__(name)\n    assert 'torch' not in sys.modules, name"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, env=with_project_on_path(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_programs_exit_with_a_status():
    """A program's ``exit_skipping_final_gc(main())`` hands ``main``'s result to ``sys.exit``:
    only an int or None is an exit status (a dict would be printed and exit 1)."""
    wrong = []
    for name, path in project_modules().items():
        source = path.read_text(encoding="utf-8")
        if "exit_skipping_final_gc(main())" not in source:
            continue
        tree = ast.parse(source)
        mains = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
        returns = ast.unparse(mains[0].returns) if mains and mains[0].returns else "unannotated"
        if returns not in ("int", "None"):
            wrong.append(f"{name}: main() -> {returns}")
    assert not wrong, wrong
