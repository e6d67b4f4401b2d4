"""The agent package as a whole: what it may import, and an import graph without cycles.

The agent runs on a board as the top-level `device_agents` of a zip bundle, beside python3,
numpy and one runtime: so every import of our own is relative, and the rest is the standard
library or one of the few packages below. Its modules import each other without a cycle, at
the top of a module or inside a function alike, so any one of them can be read and changed alone.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "device_agents"
#: what the agent may import besides the standard library: numpy, the runtimes, the TFLite
#: writer's flatbuffers (bundled), pyserial (serial lines only), threadpoolctl (optional)
ALLOWED = {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime", "flatbuffers", "serial", "threadpoolctl"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, path: Path, node: ast.ImportFrom, known: set[str]) -> list[str]:
    """The package modules a relative `from ... import ...` loads (a name may itself be a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    base = ".".join(package.split(".")[: len(package.split(".")) - (node.level - 1)])
    target = f"{base}.{node.module}" if node.module else base
    loaded = [target] if target in known else []
    loaded += [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    return loaded


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in its body), from the source alone."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, (path, tree) in modules.items():
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                edges.update(_resolve(name, path, node, known))
        # importing a.b first imports a: that edge is no cycle of ours
        graph[name] = {e for e in edges if e != name and not name.startswith(e + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_agent_imports_nothing_but_the_standard_library_numpy_and_a_runtime():
    for name, (path, tree) in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in sys.stdlib_module_names or root in ALLOWED, (
                    f"{path.name}:{node.lineno} imports {root}: the agent imports our own modules relatively, "
                    "and nothing a board lacks"
                )


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "device_agents.pair_handler" in graph["device_agents.handlers"]  # the graph sees the imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import():
    # handlers -> pair_handler -> handlers (inside a function) was such a cycle
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
