"""The text_lowrank space end to end: agent runs it, a fitted table predicts it, the search respects both budgets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from device_agents.spaces import make_space
from profiler.agents import connect
from profiler.collect import CollectSettings, collect
from profiler.fit import fit_table, split_holdout, table_predictions
from profiler.store import SampleStore
from search.engine import InfeasibleBudget, Searcher, make_objective

#: small vocabulary so building is quick; enough tokens that the rank visibly costs time.
PARAMS = {"vocab": 2000, "tokens": 64}
TIMING = {"warmup": 1, "repeat": 7, "min_repeat_ms": 2.0}
SAMPLES = 40
HOLDOUT = 0.2


@pytest.fixture(scope="module")
def agent():
    with connect("local", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def space():
    return make_space("text_lowrank", PARAMS)


@pytest.fixture(scope="module")
def collected(agent, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("lowrank") / "text.sqlite"
    settings = CollectSettings(
        space="text_lowrank", samples=SAMPLES, db=str(db), space_params=PARAMS, timing=TIMING,
        reference_every=10, retime_outliers=True,
    )
    summary = collect(agent, settings, progress=False)
    assert summary["complete"] and summary["samples"] == SAMPLES
    return db


@pytest.fixture(scope="module")
def fitted(collected):
    with SampleStore(collected) as store:
        data = store.training_data()
    return data, fit_table(data, holdout=HOLDOUT, seed=0)


def test_space_builds_and_runs_on_the_agent(agent, space) -> None:
    runtimes = agent.hello()["runtimes"]
    assert "text_lowrank" in agent.hello()["spaces"]
    for widths in (space.smallest(), space.largest(), (30, 128)):
        for runtime in [r for r in ("onnxruntime", "litert") if r in runtimes]:
            spec = {"space": "text_lowrank", "params": PARAMS, "widths": list(widths)}
            res = agent.bench_spec(spec, runtime=runtime, timing=TIMING)
            assert res["stats"]["count"] == TIMING["repeat"] and res["stats"]["median"] > 0
            assert res["runtime"]["name"] == runtime
            _, n_params = space.counts(widths)
            # float32 weights: the model holds at least its parameters, and not much besides
            assert 4 * n_params <= res["model_bytes"] <= 4 * n_params + 64_000


def test_rank_costs_time(agent) -> None:
    """At a fixed hidden width, r = 300 is slower than r = 10 (the per-token projection grows with r)."""
    times = {}
    for r in (10, 300):
        spec = {"space": "text_lowrank", "params": PARAMS, "widths": [r, 256]}
        times[r] = agent.bench_spec(spec, runtime="onnxruntime", timing=TIMING)["stats"]["min"]
    assert times[300] > 1.5 * times[10], times


def test_table_predicts_held_out_configurations(agent, space, fitted) -> None:
    """Held-out samples and never-measured configurations are predicted within a few tens of percent.

    Medians of the relative error, because on a shared machine a minority of timings is
    slowed by other work; the fit itself is robust to those, a mean over 8 samples is not.
    """
    data, result = fitted
    table = result.table
    assert table.space["name"] == "text_lowrank" and result.report["holdout"] == 8
    _, held = split_holdout(len(data), HOLDOUT, 0)
    rel_held = np.abs(table_predictions(table, data.widths[held]) - data.latency_ms[held]) / data.latency_ms[held]
    assert np.median(rel_held) < 0.15, (result.report, rel_held)

    # configurations the collector never measured, timed now and compared with the table
    seen = {tuple(int(v) for v in w) for w in data.widths}
    unseen = [w for w in itertools.product(*(l.choices for l in space.layers)) if w not in seen]
    rng = np.random.default_rng(3)
    picked = [unseen[i] for i in rng.choice(len(unseen), size=min(6, len(unseen)), replace=False)]
    measured = np.array([
        agent.bench_spec({"space": "text_lowrank", "params": PARAMS, "widths": list(w)},
                         runtime="onnxruntime", timing=TIMING)["stats"][data.statistic]
        for w in picked
    ])
    predicted = table_predictions(table, np.array(picked))
    rel = np.abs(predicted - measured) / measured
    assert np.median(rel) < 0.2, list(zip(picked, measured, predicted))


def test_exact_search_respects_latency_and_params_budgets(space, fitted) -> None:
    _, result = fitted
    table = result.table
    searcher = Searcher(table, make_objective(table, "flops"))
    configs = list(itertools.product(*(l.choices for l in space.layers)))
    latency = table_predictions(table, np.array(configs))
    params = np.array([space.counts(w)[1] for w in configs], dtype=float)
    index = {w: i for i, w in enumerate(configs)}

    budgets = np.quantile(latency, [0.2, 0.5, 0.9])
    answers = {}
    for budget, max_params in itertools.product(budgets, (2.5e5, 6e5, None)):
        feasible = (latency <= budget + 1e-9) & (params <= (max_params if max_params is not None else np.inf))
        if not feasible.any():
            with pytest.raises(InfeasibleBudget):
                searcher.query(float(budget), "exact", max_params=max_params)
            continue
        answer = searcher.query(float(budget), "exact", max_params=max_params)
        answers[budget, max_params] = answer.widths
        i = index[answer.widths]
        assert latency[i] <= budget + 1e-9 and answer.latency_ms == pytest.approx(latency[i])
        assert answer.params == pytest.approx(params[i])
        if max_params is not None:
            assert params[i] <= max_params
        # exact: no feasible configuration has a lower cost
        idx_of = lambda w: tuple(l.choices.index(v) for l, v in zip(space.layers, w))  # noqa: E731
        best = min(searcher.chain.cost_of(idx_of(configs[j])) for j in np.flatnonzero(feasible))
        assert answer.cost == pytest.approx(best)

    # the params budget is binding somewhere: it changes the answer the latency alone gives
    assert any(answers[b, p] != answers.get((b, None)) for b, p in answers if p is not None), answers

    # a params budget below the smallest network is refused, naming the fewest reachable
    with pytest.raises(InfeasibleBudget) as info:
        searcher.query(float(latency.max()), "exact", max_params=1000)
    assert info.value.min_params == pytest.approx(params.min())
