"""The solver registry's names: each method under the name of what it fits, the former names as aliases."""

from __future__ import annotations

import numpy as np
import pytest

from widthwise.device_agents.spaces import make_space
from widthwise.profiler.fit import fit_table
from widthwise.profiler.fit_solvers import METHOD_ALIASES, METHODS, resolve_method
from tests.support.fit_synthetic import make_ground_truth, synthetic_samples


def test_methods_are_named_by_what_they_fit_and_the_former_names_resolve() -> None:
    assert set(METHODS) == {"pooled-prior", "pooled-prior-monotone", "nnls-monotone", "nnls", "flops"}
    assert METHOD_ALIASES == {"shipped": "pooled-prior", "paper": "nnls-monotone", "pooled-prior-free": "pooled-prior"}
    assert [resolve_method(m) for m in ("shipped", "paper", "nnls", "flops")] == ["pooled-prior", "nnls-monotone", "nnls", "flops"]
    with pytest.raises(KeyError):
        resolve_method("magic")


@pytest.mark.parametrize("alias, name", sorted(METHOD_ALIASES.items()))
def test_an_alias_fits_the_same_table_as_its_method(alias: str, name: str) -> None:
    space = make_space("mobilenet_v1", {"resolution": 32, "levels": 3})
    data = synthetic_samples(make_ground_truth(space, seed=1), 60, seed=2).data
    by_alias = fit_table(data, holdout=0.2, seed=3, method=alias)
    by_name = fit_table(data, holdout=0.2, seed=3, method=name)
    assert by_alias.table.fit["method"] == by_name.table.fit["method"] == name  # the table names the method itself
    assert by_alias.report["method"] == name
    for a, b in zip(by_alias.table.blocks, by_name.table.blocks):
        np.testing.assert_allclose(a.ms, b.ms, rtol=1e-9)
