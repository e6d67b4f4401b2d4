"""The linear system over factor entries: numbering, design matrix, exact counts, prior groups, monotone pairs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from widthwise.device_agents.spaces import block_counts, make_space
from widthwise.profiler.fit_design import block_activations, prior_group, term_layout
from tests.support.fit_synthetic import random_widths


@pytest.fixture(scope="module")
def chain():
    return make_space("mobilenet_v1", {"resolution": 32, "levels": 5})


@pytest.fixture(scope="module")
def tree():
    return make_space("mobilenet_v2", {"resolution": 64, "levels": 4})


def test_a_chain_numbers_its_unknowns_block_by_block_in_and_out_width(chain):
    # block k's (i, j) term is offsets[k] + i * n_out + j, the numbering tables and dbs were made with
    layout = term_layout(chain)
    assert layout.num_factors == chain.num_layers + 1
    pos = 0
    for k in range(chain.num_layers + 1):
        ins, outs = chain.block_in_choices(k), chain.block_out_choices(k)
        assert layout.offsets[k] == pos
        for cin in ins:
            for cout in outs:
                assert (layout.macs[pos], layout.params[pos]) == block_counts(chain.block_at(k, cin, cout))
                pos += 1
    assert pos == layout.num_terms


def test_the_design_matrix_picks_exactly_one_entry_of_every_factor(tree):
    layout = term_layout(tree)
    widths = random_widths(tree, 60, np.random.default_rng(0))
    design = layout.design(widths).toarray()
    assert design.shape == (60, layout.num_terms)
    assert set(np.unique(design)) <= {0.0, 1.0}
    for f, (offset, shape) in enumerate(zip(layout.offsets, layout.shapes)):
        block = design[:, offset : offset + int(np.prod(shape))]
        np.testing.assert_array_equal(block.sum(axis=1), 1.0, err_msg=tree.factors[f].name)
    assert int(design.sum()) == 60 * len(tree.factors)


def test_the_picked_entries_hold_the_factor_s_op_and_sum_to_the_network_counts(tree):
    layout = term_layout(tree)
    widths = random_widths(tree, 25, np.random.default_rng(1))
    idx = layout.term_indices(widths)
    for row, config in zip(idx, widths):
        assert (int(layout.macs[row].sum()), int(layout.params[row].sum())) == tree.counts(tuple(config))
        f = 5
        op = tree.factor_op(f, tree.factor_values(f, config))
        assert (layout.macs[row[f]], layout.params[row[f]]) == block_counts(op)
    # a factor's entries run row-major over its variables, in the factor's variable order
    f = next(i for i, spec in enumerate(tree.factors) if len(spec.variables) == 2)
    a, b = tree.factor_choices(f)
    ms = layout.split(np.arange(layout.num_terms))[f]
    assert ms.shape == (len(a), len(b))
    assert layout.macs[ms[1, 2]] == block_counts(tree.factor_op(f, (a[1], b[2])))[0]


def test_a_width_off_the_grid_names_the_variable(tree):
    layout = term_layout(tree)
    widths = np.array([tree.largest()])
    widths[0, 4] += 1
    with pytest.raises(ValueError, match=rf"variable 4 \({tree.layers[4].name}\)"):
        layout.term_indices(widths)


def test_monotone_pairs_run_along_every_axis_of_every_factor(tree):
    layout = term_layout(tree)
    lo, hi = layout.monotone_pairs()
    expected = sum(int(np.prod(s)) - int(np.prod(s)) // k for s in layout.shapes for k in s)
    assert len(lo) == len(hi) == expected
    owner = layout.factor_of_term
    assert np.array_equal(owner[lo], owner[hi])
    # each pair is one choice apart in exactly one of its factor's variables, the larger on the `hi` side
    for a, b in zip(lo[::37], hi[::37]):
        f = owner[a]
        ia = np.unravel_index(a - layout.offsets[f], layout.shapes[f])
        ib = np.unravel_index(b - layout.offsets[f], layout.shapes[f])
        steps = np.array(ib) - np.array(ia)
        assert sorted(steps.tolist()) == sorted([1] + [0] * (len(steps) - 1))


def test_the_prior_pools_per_op_kind_keeping_stem_head_and_residual_projects_apart(tree, chain):
    layout = term_layout(tree)
    group = dict(zip((f.name for f in tree.factors), layout.groups))
    assert group["stem"] != group["head"]  # a 3x3 conv on 3 channels and a 1x1 conv: both `conv`
    assert group["stage2.block1.expand"] == group["stage6.block3.expand"]
    assert group["stage3.block2.project"] == group["stage5.block3.project"] != group["stage3.block1.project"]
    shared = layout.shared_prior_basis().toarray()
    assert shared.shape[1] == len(set(layout.groups)) * layout.features.shape[1]
    names = [f.name for f in tree.factors]

    def cols(name: str) -> set[int]:
        rows = shared[layout.factor_of_term == names.index(name)]
        return {int(c) for c in np.flatnonzero(rows.any(axis=0))}

    assert cols("stem").isdisjoint(cols("head"))
    assert cols("stage2.block2.project") == cols("stage6.block2.project")
    # on a chain the groups are the block kinds, as the chain fit pooled them
    assert len(set(term_layout(chain).groups)) == len(set(term_layout(chain).factor_kinds())) == 3


def test_the_residual_add_counts_as_activation_traffic(tree):
    f = next(i for i, spec in enumerate(tree.factors) if spec.name == "stage3.block2.project")
    op = tree.factor_op(f, [c[-1] for c in tree.factor_choices(f)])
    assert op.residual and prior_group(op).endswith("/add")
    plain = replace(op, residual_from=-1)
    out = op.cout * op.out_hw * op.out_hw
    a_in, a_out = block_activations(op)
    p_in, p_out = block_activations(plain)
    assert (a_in - p_in, a_out - p_out) == (2 * out, out)
    # the expansion reads its input and writes `hidden` channels the depthwise reads again
    e = next(i for i, spec in enumerate(tree.factors) if spec.kind == "ir_expand")
    small, large = (tree.factor_op(e, [c[k] for c in tree.factor_choices(e)]) for k in (0, -1))
    assert all(x < y for x, y in zip(block_activations(small), block_activations(large)))
