"""The package's structure, read from the source with ``ast`` (nothing is imported).

The rules:

* **No import cycle** between modules of ``src/retrieval_kit``. Every import counts, also one
  inside a function: a lazy import hides a cycle from the interpreter but not from a reader, so
  it is allowed only for optional third-party dependencies (timm, safetensors, OpenCV), never to
  break a cycle inside the package. Imports under ``if TYPE_CHECKING:`` never run and are left out.
* **Public seams between subpackages.** A module of subpackage ``a`` (``retrieval_kit.a``) may
  use only public modules and public names of another subpackage ``b``: no ``retrieval_kit.b._x``
  module and no ``_name``. The top-level private modules (``retrieval_kit/_io.py``,
  ``_checks.py``, ``_registry.py``, ``_progress.py``, ``_version.py``) are shared infrastructure
  that any subpackage may import, but only their public names.
* **Examples and benchmarks use the public API**: no private module or name of
  ``retrieval_kit`` (``__version__`` aside).
* **No file in src/ is longer than 600 lines.**
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "retrieval_kit"
MAX_LINES = 600


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every runtime import."""
    found: list[tuple[str, str | None, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")
                drop = node.level - 1 if is_package else node.level
                parent = parent[: len(parent) - drop] if drop else parent
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                found.append((base, alias.name, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _read_package(src: Path) -> dict[str, tuple[Path, ast.AST]]:
    modules = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        modules[_module_name(path, src)] = (path, tree)
    return modules


def _edges(modules: dict[str, tuple[Path, ast.AST]]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from pkg import submodule`` counts)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, (path, tree) in modules.items():
        for target, imported, _ in _imports(tree, name, path.name == "__init__.py"):
            if not target.startswith(PACKAGE):
                continue
            if imported and f"{target}.{imported}" in modules:
                target = f"{target}.{imported}"
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def _private(dotted: str) -> bool:
    return any(
        p.startswith("_") and not (p.startswith("__") and p.endswith("__"))
        for p in dotted.split(".")
    )


def _subpackage(module: str) -> str | None:
    """``"index"`` for ``retrieval_kit.index.build``; None for top-level modules."""
    parts = module.split(".")
    return (
        parts[1] if len(parts) > 2 or (len(parts) == 2 and not parts[1].startswith("_")) else None
    )


def _cross_private(modules: dict[str, tuple[Path, ast.AST]], root: Path = ROOT) -> list[str]:
    bad = []
    for name, (path, tree) in modules.items():
        own = _subpackage(name)
        if name == PACKAGE:
            continue
        for target, imported, line in _imports(tree, name, path.name == "__init__.py"):
            if not target.startswith(PACKAGE):
                continue
            other = _subpackage(target) if target != PACKAGE else None
            full = f"{target}.{imported}" if imported else target
            if other is None:  # top-level shared module or the package itself
                if imported and _private(imported) and imported != "__version__":
                    bad.append(f"{path.relative_to(root)}:{line} imports {full}")
                continue
            if other == own:
                continue
            if _private(target) or (imported and _private(imported)):
                bad.append(f"{path.relative_to(root)}:{line} imports {full}")
    return bad


def _private_uses_outside(folders: list[Path], root: Path = ROOT) -> list[str]:
    bad = []
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for target, imported, line in _imports(tree, path.stem, False):
                if not target.startswith(PACKAGE):
                    continue
                full = f"{target}.{imported}" if imported else target
                if _private(full):
                    bad.append(f"{path.relative_to(root)}:{line} imports {full}")
    return bad


def _long_files(src: Path, root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted((src / PACKAGE).rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            out.append(f"{path.relative_to(root)}: {n} lines")
    return out


def test_no_import_cycle():
    cycle = _find_cycle(_edges(_read_package(SRC)))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_subpackages_use_each_others_public_names_only():
    assert _cross_private(_read_package(SRC)) == []


def test_examples_and_benchmarks_use_the_public_api():
    assert _private_uses_outside([ROOT / "examples", ROOT / "benchmarks"]) == []


def test_no_long_file_in_src():
    assert _long_files(SRC) == []


# The checks themselves, on small made-up trees (each rule fails on its violation).


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return tmp_path


def test_a_cycle_is_found_also_through_a_lazy_import(tmp_path):
    src = _tree(
        tmp_path / "src",
        {
            "retrieval_kit/__init__.py": "",
            "retrieval_kit/a/__init__.py": "",
            "retrieval_kit/a/x.py": "from retrieval_kit.a.y import f\n",
            "retrieval_kit/a/y.py": "def f():\n    from retrieval_kit.a import x\n",
            "retrieval_kit/b/__init__.py": "from retrieval_kit.b.z import g\n",
            "retrieval_kit/b/z.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from retrieval_kit.b import g\n",
        },
    )
    cycle = _find_cycle(_edges(_read_package(src)))
    assert cycle == ["retrieval_kit.a.x", "retrieval_kit.a.y", "retrieval_kit.a.x"]


def test_private_seams_are_found(tmp_path):
    src = _tree(
        tmp_path / "src",
        {
            "retrieval_kit/__init__.py": "",
            "retrieval_kit/_io.py": "def atomic_write(): ...\ndef _fsync_dir(): ...\n",
            "retrieval_kit/a/__init__.py": "",
            "retrieval_kit/a/_helpers.py": "def _h(): ...\ndef h(): ...\n",
            "retrieval_kit/a/x.py": "from retrieval_kit.a._helpers import _h\n"  # own: fine
            "from retrieval_kit._io import atomic_write\n",  # shared top-level: fine
            "retrieval_kit/b/__init__.py": "",
            "retrieval_kit/b/y.py": "from retrieval_kit.a._helpers import h\n"
            "from retrieval_kit.a.x import _secret\n"
            "from retrieval_kit._io import _fsync_dir\n"
            "import retrieval_kit.a._helpers\n"
            "from ..a import x\n",  # relative, public: fine
        },
    )
    bad = _cross_private(_read_package(src), tmp_path)
    assert [b.split(" imports ")[1] for b in bad] == [
        "retrieval_kit.a._helpers.h",
        "retrieval_kit.a.x._secret",
        "retrieval_kit._io._fsync_dir",
        "retrieval_kit.a._helpers",
    ]


def test_private_imports_in_examples_are_found(tmp_path):
    _tree(
        tmp_path,
        {
            "examples/run.py": "import retrieval_kit as rk\n"
            "from retrieval_kit._io import atomic_write\n"
            "from retrieval_kit import __version__\n",
        },
    )
    bad = _private_uses_outside([tmp_path / "examples"], tmp_path)
    assert bad == ["examples/run.py:2 imports retrieval_kit._io.atomic_write"]


def test_long_files_are_found(tmp_path):
    src = _tree(tmp_path / "src", {"retrieval_kit/big.py": "x = 1\n" * (MAX_LINES + 1)})
    assert _long_files(src, tmp_path) == [f"src/retrieval_kit/big.py: {MAX_LINES + 1} lines"]
