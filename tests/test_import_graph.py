"""The package's structure: no import cycle between realm_hf's modules, and the index kinds behind one contract."""

import ast
from pathlib import Path

import pytest

from realm_hf import RealmIndex, ShardedRealmIndex
from realm_hf.retrieval.protocols import Index, RefreshableIndex

from .utils import make_corpus


PACKAGE = Path(__file__).resolve().parents[1] / "realm_hf"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at module level or inside functions (`from X import a` counts
    as importing `X.a` where that is a module, else `X`)."""
    modules = {_module_name(path, package): path for path in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        own_package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = own_package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
                targets = submodules if len(submodules) == len(node.names) else [base, *submodules]
            else:
                continue
            imported.update(t for t in targets if t in modules and t != name)
        graph[name] = imported
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "realm_hf.training.pretraining" in graph and graph["realm_hf"], "the graph was not read"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")  # in a function: still an edge
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    (package / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(package)) is None


def test_only_the_sharded_module_knows_the_sharded_index():
    """Outside `sharded.py` the sharded index is only re-exported or constructed: every other decision goes through
    the `RefreshableIndex` contract (`is_collective`, `refresh_from`, `save_pretrained`, `from_pretrained`)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("sharded.py", "loading.py") or path == PACKAGE / "__init__.py":
            continue  # its own module, the loader that constructs one, and the package's re-export
        if "ShardedRealmIndex" in path.read_text(encoding="utf-8").replace("[`ShardedRealmIndex`]", ""):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Name) and node.id == "ShardedRealmIndex":
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders


def test_no_test_module_imports_another():
    """Helpers shared by tests live in `tests/utils.py` (fixtures in `conftest.py`), never in a test module."""
    offenders = []
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module or ''}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(part.startswith(("test_", "conftest")) for name in names for part in name.split(".")):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders


@pytest.mark.parametrize("cls", [RealmIndex, ShardedRealmIndex])
def test_both_index_kinds_implement_the_lifecycle_contract(cls):
    for name in ("search", "get_embeddings", "refresh_from", "save_pretrained", "from_pretrained", "is_collective"):
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
    assert RealmIndex.is_collective is False and ShardedRealmIndex.is_collective is True


def test_a_built_index_satisfies_both_protocols(tiny_tokenizer):
    index = RealmIndex.build(
        make_corpus(["a b", "c d"], tiny_tokenizer), [[1.0, 0.0], [0.0, 1.0]], show_progress=False
    )
    assert isinstance(index, Index) and isinstance(index, RefreshableIndex)
