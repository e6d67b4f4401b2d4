"""Another table of the same space as the fit's prior: refused when the spaces differ, and a scaled
copy of it recovered from few samples with the scale reported."""

from __future__ import annotations

import numpy as np
import pytest

from widthwise.device_agents.spaces import make_space
from widthwise.profiler.dataset import TrainingData
from widthwise.profiler.errors import FitError, SpaceMismatch
from widthwise.profiler.fit import fit_table, table_predictions
from widthwise.profiler.fit_prior import load_prior, table_prior
from tests.support.fit_synthetic import make_ground_truth, random_widths, synthetic_samples


@pytest.fixture(scope="module")
def space():
    return make_space("mobilenet_v1", {"resolution": 224, "levels": 6})


@pytest.fixture(scope="module")
def prior_table(space):
    """A table fitted on 200 samples of one synthetic board."""
    run = synthetic_samples(make_ground_truth(space, seed=11), 200, seed=12, noise=0.01, burst_rate=0.0)
    return fit_table(run.data, holdout=0.0).table


def _board(space, prior_table, scale: float, n: int, seed: int, noise: float = 0.01) -> TrainingData:
    """n samples of a board that runs `scale` x the prior table's latencies, with multiplicative noise."""
    rng = np.random.default_rng(seed)
    widths = random_widths(space, n, rng)
    y = scale * table_predictions(prior_table, widths) * np.exp(noise * rng.standard_normal(n))
    return TrainingData(space, widths, y, np.arange(1, n + 1), "min", {})


def test_a_scaled_copy_is_recovered_from_few_samples_and_the_scale_reported(space, prior_table):
    prior = table_prior(prior_table, space, "a.json")
    data = _board(space, prior_table, 1.4, 15, seed=1)
    fresh = random_widths(space, 300, np.random.default_rng(2))
    truth = 1.4 * table_predictions(prior_table, fresh)
    with_prior = fit_table(data, holdout=0.0, prior=prior)
    without = fit_table(data, holdout=0.0)
    report = with_prior.report["prior"]
    assert report["table"] == "a.json" and report["scale"] == pytest.approx(1.4, rel=0.03)
    assert report["departure_median_abs"] < 0.03 and report["entries_compared"] > 0
    assert with_prior.table.fit["prior"]["scale"] == report["scale"]
    err_prior = np.abs(table_predictions(with_prior.table, fresh) - truth) / truth
    err_plain = np.abs(table_predictions(without.table, fresh) - truth) / truth
    assert np.mean(err_prior <= 0.05) >= 0.95
    assert np.mean(err_prior) < np.mean(err_plain)


def test_departures_grow_when_the_new_board_is_not_a_scaled_copy(space, prior_table):
    prior = table_prior(prior_table, space)
    rng = np.random.default_rng(3)
    widths = random_widths(space, 150, rng)
    other = make_ground_truth(space, seed=99, jitter=0.2)  # another cost model, entries jittered by 20 %
    unlike = TrainingData(space, widths, other.latency(widths), np.arange(1, 151), "min", {})
    like = _board(space, prior_table, 0.7, 150, seed=4)
    far = fit_table(unlike, holdout=0.0, prior=prior).report["prior"]
    near = fit_table(like, holdout=0.0, prior=prior).report["prior"]
    assert near["scale"] == pytest.approx(0.7, rel=0.03)
    assert far["departure_median_abs"] > 2 * near["departure_median_abs"]


def test_another_resolution_is_the_same_space(space, prior_table, tmp_path):
    prior_table.save(tmp_path / "p.json")
    at160 = make_space("mobilenet_v1", {"resolution": 160, "levels": 6})
    prior = load_prior(tmp_path / "p.json", at160)
    assert prior.description["space_resolution"] == 224 and prior.source == str(tmp_path / "p.json")


@pytest.mark.parametrize("space_name, params, field, words", [
    ("mobilenet_v2", {"resolution": 224, "levels": 6}, "prior.space", "'mobilenet_v1', the samples of 'mobilenet_v2'"),
    ("mobilenet_v1", {"resolution": 224, "levels": 5}, "prior.choices", "variable 0 (conv0) has choices"),
    ("text_lowrank", {}, "prior.space", "the samples of 'text_lowrank'"),
])
def test_a_table_of_another_space_is_refused_naming_the_difference(prior_table, space_name, params, field, words):
    with pytest.raises(SpaceMismatch) as err:
        table_prior(prior_table, make_space(space_name, params), "p.json")
    assert err.value.field == field and words in err.value.message and "p.json" in err.value.message


def test_a_prior_needs_a_pooled_prior_method(space, prior_table):
    data = _board(space, prior_table, 1.0, 20, seed=5)
    with pytest.raises(FitError) as err:
        fit_table(data, holdout=0.0, method="nnls", prior=table_prior(prior_table, space))
    assert err.value.field == "method" and "pooled-prior" in err.value.message
