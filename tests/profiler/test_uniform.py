"""Uniform sampling: independent, seeded, roughly even use of every choice."""

from __future__ import annotations

import numpy as np

from widthwise.device_agents.spaces import make_space
from widthwise.profiler.sampling import make_sampler


def test_every_choice_drawn_about_equally_often():
    space = make_space("mobilenet_v1", {"resolution": 32, "levels": 4})
    plan = np.array(make_sampler("uniform", space, seed=0).plan(2000))
    for k, layer in enumerate(space.layers):
        shares = np.array([(plan[:, k] == w).mean() for w in layer.choices])
        np.testing.assert_allclose(shares, 1 / len(layer.choices), atol=0.05)


def test_layers_are_independent():
    space = make_space("mobilenet_v1", {"resolution": 32, "levels": 4})
    plan = np.array(make_sampler("uniform", space, seed=1).plan(2000), dtype=float)
    corr = np.corrcoef(plan[:, 3], plan[:, 4])[0, 1]
    assert abs(corr) < 0.1
