"""No import cycle anywhere in `src/`: the package's modules import in one direction (the model files at the bottom,
`llava_vr.hub` under `conversion` and `training`, the commands on top). Every import counts, including those inside
functions and under `if TYPE_CHECKING:`, so a cycle cannot hide behind a lazy import."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports: `from P import N` counts as `P.N` where that is a module, else
    as `P` (its `__init__`); relative imports resolved against `path`'s package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(SRC.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as `[a, b, ..., a]`, or None (depth-first search, iterative)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = "open"
        while stack:
            following = next(stack[-1], None)
            if following is None:
                state[path.pop()] = "done"
                stack.pop()
            elif state.get(following) == "open":
                return [*path[path.index(following) :], following]
            elif following not in state:
                state[following] = "open"
                path.append(following)
                stack.append(iter(sorted(graph[following])))
    return None


def test_the_graph_sees_relative_lazy_and_type_checking_imports():
    graph = import_graph()
    assert "llava_vr.hub.refusals" in graph["llava_vr.conversion.convert"]  # from ..hub.refusals import ...
    assert "llava_vr.configuration_llava_vr" in graph["llava_vr.modeling_llava_vr"]  # from .configuration_llava_vr
    assert "llava_vr.training.model_card" in graph["llava_vr.training.trainer"]  # inside a method
    assert "llava_vr.hub" in graph["llava_vr.experiments.visual_forgetting_results"]  # from llava_vr.hub import ...
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_src():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_hub_imports_neither_conversion_nor_training():
    graph = import_graph()
    upward = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("llava_vr.hub")
        for target in targets
        if target.startswith(("llava_vr.conversion", "llava_vr.training"))
    }
    assert not upward, upward
