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

PACKAGES = ("configs", "utils", "datasets", "dataset_tools", "model", "solver", "processor", "serving")
# What each package may import besides itself: configs at the bottom, the run loop at the top.
ALLOWED = {
    "configs": set(),
    "utils": {"configs"},
    "datasets": {"configs", "utils"},
    "dataset_tools": {"configs", "utils", "datasets"},  # tooling on the data's readers; the method never imports it
    "model": {"configs", "utils", "datasets"},
    "solver": {"configs", "utils"},
    "processor": {"configs", "utils", "datasets", "model", "solver"},
    "serving": {"configs", "utils", "datasets", "model", "processor"},  # inference beside training, not inside it
}
# The one form of a program's exit: main()'s result is the process' exit status.
MAIN_TEXT = 'if __name__ == "__main__":\n    raise SystemExit(main())\n'
MAIN_BLOCK = ast.unparse(ast.parse(MAIN_TEXT))


def project_modules(root: Path = ROOT) -> Dict[str, Path]:
    """Dotted module name -> file, for the packages and the top-level programs."""
    modules = {path.stem: path for path in root.glob("*.py")}
    for package in PACKAGES + ("benchmarks",):
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def is_command_entry(path: Path) -> bool:
    """A module that only gives a command its documented name (``python -m datasets.check``): a
    docstring, ``from <module> import main`` and the :data:`MAIN_BLOCK`, nothing else."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return (
        len(body) == 3
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[1], ast.ImportFrom)
        and [alias.name for alias in body[1].names] == ["main"]
        and ast.unparse(body[2]) == MAIN_BLOCK
    )


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


def forbidden_edges(graph: Dict[str, Set[str]], root: Path = ROOT) -> List[str]:
    """Imports against :data:`ALLOWED`, and any import of a command's entry module. An entry
    module may import its command's code from any package (``datasets.check`` from
    ``dataset_tools``), as the programs do."""
    modules = project_modules(root)
    entries = {name for name in graph if is_command_entry(modules[name])}
    bad = []
    for source, targets in graph.items():
        top = source.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if target in entries or (
                top in ALLOWED and source not in entries and other != top and other not in ALLOWED[top]
            ):
                bad.append(f"{source} -> {target}")
    return sorted(bad)


def test_no_import_cycles():
    assert find_cycle(import_graph()) == []


def test_imports_point_one_way():
    assert forbidden_edges(import_graph()) == []


ENTRY = '"""The command."""\nfrom dataset_tools.a import main\n' + MAIN_TEXT


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
        # the method importing tooling; a command's entry module importing it; an import of an entry module
        (
            {"datasets/a.py": "from dataset_tools.b import M\n", "dataset_tools/b.py": "M = 1\n"},
            False,
            ["datasets.a -> dataset_tools.b"],
        ),
        ({"datasets/a.py": ENTRY, "dataset_tools/a.py": "def main():\n    return 0\n"}, False, []),
        (
            {
                "datasets/a.py": ENTRY,
                "dataset_tools/a.py": "def main():\n    return 0\n",
                "train.py": "import datasets.a\n",
            },
            False,
            ["train -> datasets.a"],
        ),
        # an entry module holding anything more is a module of its package
        (
            {"datasets/a.py": ENTRY + "X = 1\n", "dataset_tools/a.py": "def main():\n    return 0\n"},
            False,
            ["datasets.a -> dataset_tools.a"],
        ),
    ],
)
def test_the_walk_sees_cycles_and_wrong_directions(tmp_path, files, expect_cycle, expect_forbidden):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert bool(find_cycle(graph)) == expect_cycle
    assert forbidden_edges(graph, tmp_path) == expect_forbidden


# Programs that read or write files only: importing torch (about 4 s here) would dominate them.
TORCH_FREE = ("datasets.synthetic", "dataset_tools.synthetic", "utils.report", "utils.io", "utils.run_folder")


def test_file_only_programs_start_without_torch():
    check = (
        f"import sys\nfor name in {TORCH_FREE!r}:\n    __import__(name)\n    assert 'torch' not in sys.modules, name"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, env=with_project_on_path(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def exit_statuses(root: Path = ROOT) -> Dict[str, str]:
    """Program -> the return annotation of the ``main`` whose result it exits with (the
    :data:`MAIN_BLOCK`), following an entry module to the module it imports ``main`` from."""
    modules, found = project_modules(root), {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not any(ast.unparse(node) == MAIN_BLOCK for node in tree.body):
            continue
        imported = [
            node.module
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and any(alias.name == "main" for alias in node.names)
        ]
        if imported and imported[0] in modules:
            tree = ast.parse(modules[imported[0]].read_text(encoding="utf-8"))
        mains = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
        found[name] = ast.unparse(mains[0].returns) if mains and mains[0].returns else "unannotated"
    return found


def test_programs_exit_with_a_status():
    """A program's ``raise SystemExit(main())`` makes ``main``'s result the exit status: only an
    int or None is one (a dict would be printed and exit 1)."""
    statuses = exit_statuses()
    assert {"train", "test", "datasets.check", "datasets.synthetic", "utils.report"} <= statuses.keys()
    assert {name: returns for name, returns in statuses.items() if returns not in ("int", "None")} == {}


def test_the_exit_check_sees_a_main_returning_a_dict(tmp_path):
    files = {
        "train.py": "def main() -> dict:\n    return {}\n" + MAIN_TEXT,
        "datasets/a.py": ENTRY,
        "dataset_tools/a.py": "def main() -> dict:\n    return {}\n",
        "test.py": "def main() -> int:\n    return 0\n" + MAIN_TEXT,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert exit_statuses(tmp_path) == {"train": "dict", "datasets.a": "dict", "test": "int"}
