"""widthwise: the layer widths that give the best model under a latency budget on your board.

The distribution owns this one import name: the agent is `widthwise.device_agents`, the
host `widthwise.profiler`, the search `widthwise.search`. For a training loop that queries
in-process instead of over HTTP:

    from widthwise import Searcher, load_table, make_objective

    table = load_table("tables/pi4.json")
    searcher = Searcher(table, make_objective(table, "flops"))
    answer = searcher.query(budget_ms=10.0)          # answer.widths, answer.latency_ms, ...

The names below are imported on first use, so `import widthwise.device_agents` (the agent
on the host) does not pay for the search's imports.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_PUBLIC = {
    "Searcher": "widthwise.search.engine",
    "Answer": "widthwise.search.engine",
    "QueryError": "widthwise.search.engine",
    "InfeasibleBudget": "widthwise.search.engine",
    "make_objective": "widthwise.search.engine",
    "load_table": "widthwise.search.table",
    "Table": "widthwise.search.table",
    "TableError": "widthwise.search.table",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'widthwise' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
