"""The sampler registry and the properties every strategy shares."""

from __future__ import annotations

import pytest

from widthwise.device_agents.spaces import make_space
from widthwise.profiler.sampling import SAMPLER_MODULES, Sampler, UnknownSampler, factor_terms, make_sampler, sampler_class


@pytest.fixture(scope="module")
def space():
    return make_space("mobilenet_v1", {"resolution": 32, "levels": 6})


def test_registry_names_every_strategy_and_refuses_unknown(space):
    for name in SAMPLER_MODULES:
        cls = sampler_class(name)
        assert issubclass(cls, Sampler) and cls.name == name
    with pytest.raises(UnknownSampler, match="known: coverage, uniform"):
        make_sampler("sobol", space)


@pytest.mark.parametrize("name", sorted(SAMPLER_MODULES))
def test_plans_are_deterministic_prefix_stable_and_on_grid(space, name):
    plan = make_sampler(name, space, seed=3).plan(40)
    assert plan == make_sampler(name, space, seed=3).plan(40)
    assert plan[:25] == make_sampler(name, space, seed=3).plan(25)
    assert plan != make_sampler(name, space, seed=4).plan(40)
    for widths in plan:
        assert space.validate_widths(widths, on_grid=True) == widths


@pytest.mark.parametrize("name", sorted(SAMPLER_MODULES))
def test_plan_restarts_from_the_seed(space, name):
    sampler = make_sampler(name, space, seed=1)
    first = [sampler.draw() for _ in range(5)]
    assert sampler.plan(5) == first


def test_negative_plan_is_refused(space):
    with pytest.raises(ValueError, match="non-negative"):
        make_sampler("uniform", space).plan(-1)


def test_factor_terms_follow_the_chain(space):
    widths = space.largest()
    terms = factor_terms(space, widths)
    assert len(terms) == space.num_layers + 1
    top = len(space.layers[0].choices) - 1
    assert terms[0] == (0, (top,))  # the stem: unary on layer 0
    assert terms[1] == (1, (top, len(space.layers[1].choices) - 1))
    assert terms[-1] == (space.num_layers, (len(space.layers[-1].choices) - 1,))  # the classifier


def test_factor_terms_of_a_tree_name_each_factor_s_own_variables():
    tree = make_space("mobilenet_v2", {"resolution": 32, "levels": 3})
    indices = [k % len(layer.choices) for k, layer in enumerate(tree.layers)]
    widths = tuple(layer.choices[i] for layer, i in zip(tree.layers, indices))
    terms = factor_terms(tree, widths)
    assert [f for f, _ in terms] == list(range(len(tree.factors)))
    for (f, entry), factor in zip(terms, tree.factors):
        assert entry == tuple(indices[v] for v in factor.variables)


@pytest.mark.parametrize("name", sorted(SAMPLER_MODULES))
def test_plans_on_a_tree_space_are_flat_configurations_on_the_grid(name):
    tree = make_space("mobilenet_v2", {"resolution": 32, "levels": 4})
    plan = make_sampler(name, tree, seed=0).plan(30)
    assert plan == make_sampler(name, tree, seed=0).plan(30)
    for widths in plan:
        assert tree.validate_widths(widths, on_grid=True) == widths
