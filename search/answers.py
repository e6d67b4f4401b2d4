"""What the search answers, and the one JSON shape of each answer, for the CLI and the daemon alike.

`Answer` is one configuration, `Front` the Pareto front (answers sorted by latency); their
`to_json` are the only serialisations of them. `answer_query`, `answer_pareto` and
`answer_marginals` answer one request each (the request's validated fields in, a JSON-able
dict out): `widthwise query|pareto|marginals --json` print exactly what the daemon's
/v1/query, /v1/pareto and /v1/marginals send, and `encode` is the one encoder of both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence, overload

from .errors import NonFiniteAnswer

if TYPE_CHECKING:
    from .engine import Searcher

__all__ = ["Answer", "Front", "answer_marginals", "answer_pareto", "answer_query", "encode"]


@dataclass(frozen=True)
class Answer:
    """One configuration: its widths, predicted latency, objective cost, and how it was found.

    `exact` says the cost is proven least (the exact method); otherwise `dual_bound` is a proven
    lower bound on the least cost where one is known, and `gap` the cost above it (absolute,
    and `gap_relative` to |cost|). An exact answer is its own bound: gap 0.
    """

    widths: tuple[int, ...]
    latency_ms: float
    cost: float
    method: str
    params: float | None
    macs: float | None
    gamma: float | None
    exact: bool | None = None
    dual_bound: float | None = None
    gap: float | None = None
    gap_relative: float | None = None

    @property
    def is_exact(self) -> bool:
        """Proven optimal: marked so, or (unmarked) found by the exact method."""
        return self.method == "exact" if self.exact is None else self.exact

    def to_json(self) -> dict[str, Any]:
        """widths, latency_ms, cost, method, params, macs, gamma (None where the table has no count),
        exact, dual_bound, gap, gap_relative (None where no bound is known)."""
        exact = self.is_exact
        return {
            "widths": list(self.widths),
            "latency_ms": self.latency_ms,
            "cost": self.cost,
            "method": self.method,
            "params": self.params,
            "macs": self.macs,
            "gamma": self.gamma,
            "exact": exact,
            "dual_bound": self.cost if exact and self.dual_bound is None else self.dual_bound,
            "gap": 0.0 if exact and self.gap is None else self.gap,
            "gap_relative": 0.0 if exact and self.gap_relative is None else self.gap_relative,
        }


@dataclass(frozen=True, eq=False)
class Front(Sequence[Answer]):
    """Every Pareto-optimal configuration of one (table, objective), fastest first (cost strictly falling)."""

    answers: tuple[Answer, ...]
    max_params: float | None = None

    def __len__(self) -> int:
        return len(self.answers)

    @overload
    def __getitem__(self, index: int) -> Answer: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Answer, ...]: ...
    def __getitem__(self, index: int | slice) -> Answer | tuple[Answer, ...]:
        return self.answers[index]

    def __iter__(self) -> Iterator[Answer]:
        return iter(self.answers)

    def to_json(self) -> dict[str, Any]:
        """count, and front: every answer's `to_json`, fastest first."""
        return {"count": len(self.answers), "front": [a.to_json() for a in self.answers]}


def answer_query(searcher: Searcher, table: str, budget_ms: float, method: str = "exact",
                 max_params: float | None = None, *, cached_only: bool = False) -> dict[str, Any] | None:
    """The answer to a query of table `table`; with `cached_only`, None when it needs work (see `Searcher.lookup`).

    After the answer's fields, `named_widths` maps each variable's name to its width (the flat
    `widths` in the table's variable order, named), so a client of a tree table needs no table;
    with option variables, `named_labels` maps each name to its value's label ("k5e4", "skip").
    """
    if cached_only:
        answer = searcher.lookup(budget_ms, method, max_params)
        if answer is None:
            return None
    else:
        answer = searcher.query(budget_ms, method, max_params)
    answer = canonical(searcher, answer)
    named = dict(zip(searcher.tree.names, answer.widths))  # the names kept once, not rebuilt per request
    out = {"table": table, "objective": searcher.objective.name, **answer.to_json(), "named_widths": named}
    if _has_labels(searcher):
        out["named_labels"] = dict(zip(searcher.tree.names, searcher.table.labelled(answer.widths)))
    return out


def canonical(searcher: Searcher, answer: Answer) -> Answer:
    """The answer with its widths in the table's canonical (prefix) depth form: the same network,
    its latency and cost as found (`Table.canonical`; identity for a table without depth runs)."""
    widths = searcher.table.canonical(answer.widths)
    return answer if widths == tuple(answer.widths) else replace(answer, widths=widths)


def _has_labels(searcher: Searcher) -> bool:
    """Whether the table names some variable's choices (option variables: "k5e4", "skip")."""
    return any(v.labels for v in searcher.table.variables or ())


def answer_pareto(searcher: Searcher, table: str, max_params: float | None = None) -> dict[str, Any]:
    """The exact Pareto front of table `table` (within `max_params` when given), widths canonical;
    with option variables, each answer also carries its `labels`."""
    front = [canonical(searcher, a) for a in searcher.pareto(max_params)]
    body = Front(tuple(front)).to_json()
    if _has_labels(searcher):
        for entry, a in zip(body["front"], front):
            entry["labels"] = searcher.table.labelled(a.widths)
    return {"table": table, "objective": searcher.objective.name, **body}


def answer_marginals(searcher: Searcher, table: str, budget_ms: float, temperature: float) -> dict[str, Any]:
    """Per-variable width probabilities at a budget and a temperature: each variable's name, widths and
    probabilities (under `layers`, the key of every table shape)."""
    per_variable = searcher.marginals(budget_ms, temperature)
    source = searcher.table
    layers = [{"name": name, "widths": list(choices), "probabilities": [probs[w] for w in choices]}
              for name, choices, probs in zip(source.variable_names, source.choices, per_variable)]
    for entry, var in zip(layers, source.variables or ()):
        if var.labels:
            entry["labels"] = list(var.labels)
    return {"table": table, "objective": searcher.objective.name, "budget_ms": budget_ms,
            "temperature": temperature, "layers": layers}


def encode(payload: dict[str, Any]) -> bytes:
    """The answer as JSON bytes; NonFiniteAnswer instead of a NaN or an infinity (never valid JSON)."""
    try:
        return json.dumps(payload, allow_nan=False).encode()
    except ValueError:
        raise NonFiniteAnswer("objective: the answer holds a non-finite number; the table or the objective "
                              "overflows a float", field="objective") from None
