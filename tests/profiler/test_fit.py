"""The fit: recovery of known tables, honest held-out metrics, monotonicity, CV, outliers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from widthwise.device_agents.spaces import block_counts, make_space
from widthwise.profiler.dataset import TrainingData
from widthwise.profiler.fit import (
    FitError,
    SpaceMismatch,
    error_report,
    fit_table,
    flag_outliers,
    split_holdout,
    table_predictions,
)
from widthwise.profiler.fit_design import term_layout
from widthwise.profiler.fit_solvers import METHODS, PRIOR_GRID
from widthwise.profiler.fit_monotone import monotone_matrix
from tests.support.fit_synthetic import make_ground_truth, random_widths, synthetic_samples
from widthwise.search.table import FORMAT, Table, TableError, load_table


@pytest.fixture(scope="module")
def mobilenet():
    return make_space("mobilenet_v1")


@pytest.fixture(scope="module")
def small():
    return make_space("mobilenet_v1", {"resolution": 32, "levels": 5})


def _fresh_error(table: Table, truth, space, n: int = 400, seed: int = 99) -> np.ndarray:
    widths = random_widths(space, n, np.random.default_rng(seed))
    clean = truth.latency(widths)
    return np.abs(table_predictions(table, widths) - clean) / clean


def test_recovers_a_table_inside_the_prior_from_300_samples(mobilenet):
    truth = make_ground_truth(mobilenet, seed=3, tile=1, jitter=0.0)
    run = synthetic_samples(truth, 300, seed=4, noise=0.01, burst_rate=0.0)
    result = fit_table(run.data, holdout=0.0)
    err = _fresh_error(result.table, truth, mobilenet)
    assert err.max() < 0.02, err.max()
    assert np.mean(err) < 0.006


def test_pooled_prior_beats_the_baselines_on_a_table_outside_the_prior(mobilenet):
    # tile-padded pointwise work and per-term jitter: the prior alone cannot express it
    truth = make_ground_truth(mobilenet, seed=1)
    run = synthetic_samples(truth, 300, seed=2)
    within5 = {}
    for method in METHODS:
        table = fit_table(run.data, holdout=0.0, method=method).table
        within5[method] = float(np.mean(_fresh_error(table, truth, mobilenet) <= 0.05))
    assert within5["pooled-prior"] >= 0.97, within5
    assert within5["pooled-prior"] > max(within5["nnls-monotone"], within5["nnls"], within5["flops"]), within5
    assert within5["nnls-monotone"] > within5["nnls"], within5


def test_holdout_metrics_are_computed_on_unseen_samples(small):
    truth = make_ground_truth(small, seed=5)
    run = synthetic_samples(truth, 120, seed=6)
    result = fit_table(run.data, holdout=0.25, seed=7)
    train, held = split_holdout(len(run.data), 0.25, 7)
    assert len(held) == 30 and len(np.intersect1d(train, held)) == 0
    measured = run.data.latency_ms[held]
    pred = np.array([result.table.predict(w) for w in run.data.widths[held]])
    rel = np.abs(pred - measured) / measured
    report = result.report
    assert report["count"] == report["holdout"] == 30 and report["samples"] == 90
    assert report["mape"] == pytest.approx(np.mean(rel), rel=1e-9)
    assert report["rmse_ms"] == pytest.approx(np.sqrt(np.mean((pred - measured) ** 2)), rel=1e-9)
    assert report["within_5pct"] == pytest.approx(np.mean(rel <= 0.05))
    assert report["within_10pct"] == pytest.approx(np.mean(rel <= 0.10))
    assert result.table.fit["holdout"] == {k: report[k] for k in ("mape", "rmse_ms", "within_5pct", "within_10pct", "count")}
    # the held-out latencies never reach the fit: changing them changes nothing but the report
    y = run.data.latency_ms.copy()
    y[held] *= 3.0
    other = fit_table(TrainingData(small, run.data.widths, y, run.data.sample_ids, "min", run.data.identity), holdout=0.25, seed=7)
    for a, b in zip(result.table.blocks, other.table.blocks):
        np.testing.assert_array_equal(a.ms, b.ms)
    assert other.report["mape"] > 0.5


def test_fitted_tables_are_monotone(mobilenet):
    truth = make_ground_truth(mobilenet, seed=8, jitter=0.05)
    run = synthetic_samples(truth, 200, seed=9, noise=0.03)
    table = fit_table(run.data, holdout=0.0).table
    assert table.fit["monotone"] is True
    assert fit_table(run.data, holdout=0.0, method="pooled-prior-monotone").table.fit["monotone"] is True
    for block in table.blocks:
        assert np.all(np.diff(block.ms, axis=0) >= 0), block.name
        assert np.all(np.diff(block.ms, axis=1) >= 0), block.name


def _off_tile_truth(space, slow: float = 1.3):
    """A device whose kernels run widths off the 16-channel tile (8, 24, 40 ...) on a slow path:
    every factor entry with such a width costs `slow` times more, so 8 channels are slower than 16."""
    truth = make_ground_truth(space, seed=5, jitter=0.0)
    layout = truth.layout
    term = truth.term_ms.copy()
    for f, (offset, variables) in enumerate(zip(layout.offsets, layout.variables)):
        choices = space.factor_choices(f)
        for k, entry in enumerate(np.ndindex(*[len(c) for c in choices])):
            if any(choices[a][i] % 16 for a, i in enumerate(entry)):
                term[offset + k] *= slow
    return type(truth)(layout, term, truth.constant_ms)


def test_pooled_prior_drops_monotonicity_only_where_the_device_is_not_monotone(mobilenet):
    # a device slower at 8 channels than at 16: pooled-prior's cross-validation drops the
    # projection, and its free tables predict fresh configurations better than
    # pooled-prior-monotone's; on a monotone device it keeps the projection
    truth = _off_tile_truth(mobilenet)
    drops = [np.diff(m, axis=a).min() < 0 for m in truth.layout.split(truth.term_ms) for a in range(m.ndim)]
    assert sum(drops) >= 10, "the synthetic device is not slower at 8 channels than at 16"
    run = synthetic_samples(truth, 300, seed=6, noise=0.01, burst_rate=0.0)
    free = fit_table(run.data, holdout=0.0).table
    assert free.fit["monotone"] is False
    err_free = _fresh_error(free, truth, mobilenet)
    projected = fit_table(run.data, holdout=0.0, method="pooled-prior-monotone").table
    assert projected.fit["monotone"] is True
    err_forced = _fresh_error(projected, truth, mobilenet)
    assert np.mean(err_free) < np.mean(err_forced), (np.mean(err_free), np.mean(err_forced))
    assert np.mean(err_free <= 0.05) > np.mean(err_forced <= 0.05)


def test_monotone_projection_is_a_projection():
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 1, size=(6, 7))
    w = rng.uniform(0.5, 2.0, size=m.shape)
    x = monotone_matrix(m, w)
    assert np.all(np.diff(x, axis=0) >= 0) and np.all(np.diff(x, axis=1) >= 0)
    mono = np.add.outer(np.arange(6.0), np.arange(7.0))
    np.testing.assert_allclose(monotone_matrix(mono, w), mono)
    # no monotone matrix of a few random candidates is closer (weighted) than the projection
    dist = float(np.sum(w * (x - m) ** 2))
    for _ in range(20):
        cand = np.maximum.accumulate(np.maximum.accumulate(m + rng.normal(0, 0.2, m.shape), axis=0), axis=1)
        assert float(np.sum(w * (cand - m) ** 2)) >= dist - 1e-9


def test_cross_validation_picks_the_strength_the_data_asks_for(mobilenet):
    inside = make_ground_truth(mobilenet, seed=3, tile=1, jitter=0.0)
    outside = make_ground_truth(mobilenet, seed=3, tile=64, jitter=0.0)
    picked = {}
    for name, truth in (("inside", inside), ("outside", outside)):
        run = synthetic_samples(truth, 300, seed=4, noise=0.01, burst_rate=0.0)
        info = fit_table(run.data, holdout=0.0).solution.info
        scores = info["cv_scores"]
        assert info["prior_strength"] == min(PRIOR_GRID, key=lambda g: scores[f"{g:g}"])
        picked[name] = info["prior_strength"]
    assert picked["inside"] >= 3.0 and picked["outside"] <= 0.3, picked


def test_outliers_flagged_are_the_injected_bursts(mobilenet):
    truth = make_ground_truth(mobilenet, seed=3)
    run = synthetic_samples(truth, 300, seed=11, noise=0.015, burst_range=(0.15, 0.4))
    assert len(run.burst_ids) >= 5
    assert sorted(flag_outliers(run.data)) == sorted(run.burst_ids)
    clean = synthetic_samples(truth, 300, seed=11, noise=0.015, burst_rate=0.0)
    assert flag_outliers(clean.data) == []


def test_table_file_has_the_format_fields(small, tmp_path):
    truth = make_ground_truth(small, seed=1)
    run = synthetic_samples(truth, 80, seed=2, statistic="median")
    result = fit_table(run.data, holdout=0.2)
    path = tmp_path / "t.json"
    result.table.save(path)
    raw = json.loads(path.read_text())
    assert raw["format"] == FORMAT and raw["space"] == small.to_json()
    assert raw["runtime"]["statistic"] == "median" and raw["runtime"]["name"] == "synthetic"
    assert raw["device"]["name"] == "synthetic"
    assert set(raw["fit"]["holdout"]) == {"mape", "rmse_ms", "within_5pct", "within_10pct", "count"}
    assert raw["fit"]["method"] == "pooled-prior" and raw["fit"]["samples"] == 64
    assert raw["created"].endswith("Z")
    table = load_table(path)
    for k, block in enumerate(table.blocks):
        i, j = len(block.in_widths) - 1, len(block.out_widths) - 1
        spec = small.block_at(k, block.in_widths[i], block.out_widths[j])
        assert (block.macs[i, j], block.params[i, j]) == block_counts(spec)
    widths = run.data.widths[:5]
    np.testing.assert_allclose(table_predictions(table, widths), [result.table.predict(w) for w in widths])


def test_corrupted_table_names_the_field(small, tmp_path):
    truth = make_ground_truth(small, seed=1)
    table = fit_table(synthetic_samples(truth, 60, seed=2).data, holdout=0.0, method="flops").table
    raw = table.to_json()
    raw["blocks"][2]["ms"][1][0] = -0.5
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(TableError) as exc:
        load_table(path)
    assert exc.value.field == "blocks[2].ms[1][0]"


def test_error_report_refuses_another_space(small, mobilenet):
    table = fit_table(synthetic_samples(make_ground_truth(small), 60).data, holdout=0.0, method="flops").table
    other = synthetic_samples(make_ground_truth(mobilenet), 20).data
    with pytest.raises(SpaceMismatch, match="width choices|resolution"):
        error_report(table, other)


def test_bad_inputs_are_fit_errors(small):
    data = synthetic_samples(make_ground_truth(small), 40).data
    with pytest.raises(FitError, match="unknown method"):
        fit_table(data, method="magic")
    with pytest.raises(FitError, match="no samples"):
        fit_table(data.subset(np.zeros(len(data), dtype=bool)))
    with pytest.raises(FitError, match="holdout"):
        fit_table(data, holdout=1.0)
    y = data.latency_ms.copy()
    y[3] = np.nan
    with pytest.raises(FitError, match=f"sample {int(data.sample_ids[3])}"):
        fit_table(TrainingData(small, data.widths, y, data.sample_ids))
    off = data.widths.copy()
    off[0, 0] += 1
    with pytest.raises(ValueError, match="not one of its choices"):
        term_layout(small).term_indices(off)


def test_text_space_fits_with_its_own_block_kinds():
    space = make_space("text_lowrank")
    truth = make_ground_truth(space, seed=2)
    run = synthetic_samples(truth, 50, seed=3, noise=0.01, burst_rate=0.0)
    result = fit_table(run.data, holdout=0.0)
    assert np.mean(_fresh_error(result.table, truth, space) <= 0.05) >= 0.95


# --- the prior pooled per block kind: selection adapts, the search's picks stay honest ---------------


@pytest.fixture(scope="module")
def pooled_fit(mobilenet):
    truth = make_ground_truth(mobilenet, seed=5, pooled=True)
    run = synthetic_samples(truth, 250, seed=6, noise=0.025)
    return truth, fit_table(run.data, holdout=0.0)


def test_shared_prior_basis_pools_the_blocks_of_a_kind(small):
    layout = term_layout(small)
    kinds = layout.block_kinds()
    assert kinds[0] == "conv" and kinds[-1] == "pool_fc" and set(kinds[1:-1]) == {"dwsep"}
    shared = layout.shared_prior_basis().toarray()
    per_block = layout.prior_basis().toarray()
    n_features = layout.features.shape[1]
    assert shared.shape == (layout.num_terms, 3 * n_features)
    assert per_block.shape == (layout.num_terms, layout.num_blocks * n_features)
    assert np.allclose(np.abs(shared).max(axis=0)[np.abs(shared).max(axis=0) > 0], 1.0)
    # every dwsep term, whichever block, loads on the same columns; conv and pool_fc on their own
    cols_of = lambda k: {int(c) for c in np.flatnonzero(shared[layout.block_of_term == k].any(axis=0))}
    assert cols_of(1) == cols_of(len(kinds) - 2) and cols_of(0).isdisjoint(cols_of(1))


def test_block_penalty_follows_the_data(mobilenet, pooled_fit):
    from widthwise.profiler.fit_solvers import BLOCK_PENALTY_GRID

    _, pooled = pooled_fit
    assert pooled.solution.info["block_penalty"] == BLOCK_PENALTY_GRID[-1]
    spread = make_ground_truth(mobilenet, seed=5)  # per-block costs spread by up to +-50 %
    info = fit_table(synthetic_samples(spread, 250, seed=6, noise=0.025).data, holdout=0.0).solution.info
    assert info["block_penalty"] <= 1.0, info["block_penalty_scores"]
    assert set(info["block_penalty_scores"]) == {f"{b:g}" for b in BLOCK_PENALTY_GRID}


def test_search_picks_are_predicted_as_fast_as_they_are(pooled_fit):
    from widthwise.search.engine import Searcher, make_objective

    truth, result = pooled_fit
    table = result.table
    widest = table.predict([max(c) for c in table.choices])
    errors = []
    for objective in ("flops", "params"):
        searcher = Searcher(table, make_objective(table, objective))
        for budget in np.linspace(0.3, 0.9, 5) * widest:
            answer = searcher.query(float(budget), method="exact")
            true_ms = float(truth.latency(np.array([answer.widths]))[0])
            errors.append((answer.latency_ms - true_ms) / true_ms)
    # a free per-block prior put the cheapest picks here 3-4 % too fast
    assert max(abs(e) for e in errors) <= 0.025, np.round(errors, 3)


# --- a tree of factors: MobileNet-V2's widths and expansions, a widthwise-table/2 --------------------


@pytest.fixture(scope="module")
def tree():
    return make_space("mobilenet_v2", {"resolution": 64, "levels": 5})


@pytest.fixture(scope="module")
def tree_fit(tree):
    truth = make_ground_truth(tree, seed=7)  # per-factor costs spread, tile padding, per-term jitter
    run = synthetic_samples(truth, 300, seed=8, noise=0.02)
    return truth, run, fit_table(run.data, holdout=0.15, seed=1)


def test_recovers_a_known_factor_table_of_a_tree_space(tree, tree_fit):
    truth, _, result = tree_fit
    assert result.table.format == "widthwise-table/2"
    err = _fresh_error(result.table, truth, tree)
    assert np.mean(err <= 0.05) >= 0.97 and np.mean(err <= 0.10) >= 0.995, (np.mean(err <= 0.05), err.max())
    assert np.mean(err) < 0.015
    assert result.report["within_5pct"] >= 0.9 and result.report["count"] == 45
    flops = fit_table(tree_fit[1].data, holdout=0.15, seed=1, method="flops").table
    assert np.mean(err) < 0.5 * np.mean(_fresh_error(flops, truth, tree))


def test_a_tree_table_is_monotone_along_every_axis_of_every_factor(tree_fit):
    table = tree_fit[2].table
    for factor in table.factors:
        for axis in range(factor.ms.ndim):
            assert np.all(np.diff(factor.ms, axis=axis) >= 0), (factor.name, axis)


def test_a_tree_table_saves_as_version_2_and_loads_back(tree, tree_fit, tmp_path):
    _, run, result = tree_fit
    path = tmp_path / "v2.json"
    result.table.save(path)
    raw = json.loads(path.read_text())
    assert raw["format"] == "widthwise-table/2" and "blocks" not in raw
    assert [v["name"] for v in raw["variables"]] == [l.name for l in tree.layers]
    assert [v["group"] for v in raw["variables"]] == [l.group for l in tree.layers]
    assert [f["kind"] for f in raw["factors"]] == [f.kind for f in tree.factors]
    assert raw["fit"]["method"] == "pooled-prior" and raw["runtime"]["statistic"] == "min"
    table = load_table(path)
    assert table.variable_names == tuple(l.name for l in tree.layers)
    for f, factor in enumerate(table.factors):
        assert factor.variables == tree.factors[f].variables
        choices = tree.factor_choices(f)
        last = tuple(len(c) - 1 for c in choices)
        op = tree.factor_op(f, [c[-1] for c in choices])
        assert (factor.macs[last], factor.params[last]) == block_counts(op)
    widths = run.data.widths[:20]
    np.testing.assert_allclose(table_predictions(table, widths), [result.table.predict(w) for w in widths], rtol=1e-12)
    report = error_report(table, run.data)
    assert report["count"] == len(run.data) and report["within_10pct"] > 0.9
    with pytest.raises(SpaceMismatch):
        error_report(table, synthetic_samples(make_ground_truth(make_space("mobilenet_v1", {"resolution": 64, "levels": 5})), 20).data)


def test_outliers_of_a_tree_space_are_the_injected_bursts(tree):
    truth = make_ground_truth(tree, seed=3)
    run = synthetic_samples(truth, 200, seed=11, noise=0.015, burst_range=(0.2, 0.4))
    assert len(run.burst_ids) >= 3
    assert sorted(flag_outliers(run.data)) == sorted(run.burst_ids)


def test_a_table_fitted_on_option_variables_saves_and_loads_back_with_its_labels(tmp_path):
    # ofa_mbv3's blocks choose kernel x expansion (x skip): codes 0..n-1 that only labels explain
    space = make_space("ofa_mbv3", {"resolution": 32, "levels": 4})
    truth = make_ground_truth(space, seed=2, jitter=0.02)
    run = synthetic_samples(truth, 60, seed=3, noise=0.01)
    table = fit_table(run.data, holdout=0.0).table
    path = tmp_path / "ofa.json"
    table.save(path)
    loaded = load_table(path)
    options = [k for k, layer in enumerate(space.layers) if layer.options]
    assert options, "the space has no option variable"
    for k in options:
        assert loaded.variables[k].labels == tuple(space.layers[k].label(c) for c in space.layers[k].choices)
    skip = [k for k in options if "skip" in loaded.variables[k].labels]
    assert skip and all(loaded.variables[k].labels[0] == "skip" for k in skip)
    widths = random_widths(space, 5, np.random.default_rng(4))
    np.testing.assert_allclose(table_predictions(loaded, widths), table_predictions(table, widths), rtol=1e-9)
