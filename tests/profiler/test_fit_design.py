"""The linear system over factor entries: numbering, design matrix, exact counts, prior groups, monotone pairs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from widthwise.device_agents.spaces import block_counts, make_space
from widthwise.profiler.fit_design import block_activations, prior_group, term_layout
from widthwise.profiler.fit_monotone import monotone_projection
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


# --- option variables: ofa_mbv3 -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ofa():
    return make_space("ofa_mbv3", {"resolution": 32, "levels": 3})


def _factor(space, name):
    return next(i for i, f in enumerate(space.factors) if f.name == name)


def test_prior_groups_tell_kernel_activation_se_and_add_apart(ofa):
    layout = term_layout(ofa)
    groups = layout.split(np.arange(layout.num_terms))

    def group(name, width, code):
        f = _factor(ofa, name)
        return layout.term_groups[groups[f][width, code]]

    k3e3, k7e3 = 1, 7  # codes of a skippable block
    assert group("stage1.block3", 0, k3e3) == "mb_block/k3/relu/add"
    assert group("stage1.block3", 0, k7e3) == "mb_block/k7/relu/add"
    assert group("stage2.block3", 0, k3e3) == "mb_block/k3/relu/se/add"
    assert group("stage3.block3", 0, k3e3) == "mb_block/k3/hswish/add"
    assert group("stage4.block3", 0, k3e3) == group("stage5.block3", 1, k3e3) == "mb_block/k3/hswish/se/add"
    assert group("stage1.block3", 0, 0) == "identity/k1"
    f = _factor(ofa, "stage2.block1.expand")
    assert layout.term_groups[groups[f][0, 0]] == "mb_expand/k3/relu/se"
    # the shared basis pools per term group: kernels of one factor land in different columns
    shared = layout.shared_prior_basis().toarray()
    assert shared.shape[1] == len(set(layout.term_groups)) * layout.features.shape[1]
    b3 = groups[_factor(ofa, "stage1.block3")]
    assert set(np.flatnonzero(shared[b3[0, k3e3]])).isdisjoint(np.flatnonzero(shared[b3[0, k7e3]]))
    # the default activation keeps the groups of the spaces that do not set one
    assert prior_group(make_space("mobilenet_v2").factor_op(0, (32,))) == "conv/k3"


def test_skipped_entries_are_fixed_at_zero_not_unknowns(ofa):
    layout = term_layout(ofa)
    f = _factor(ofa, "stage4.block4")
    terms = layout.split(np.arange(layout.num_terms))[f]
    assert layout.fixed[terms[:, 0]].all() and not layout.fixed[terms[:, 1:]].any()  # code 0 is skip
    skippable = [spec for spec in ofa.factors if spec.name.endswith((".block3", ".block4"))]
    assert int(layout.fixed.sum()) == sum(len(ofa.layers[spec.variables[0]].choices) for spec in skippable)
    assert not layout.features[layout.fixed].any() and not layout.macs[layout.fixed].any()
    design = layout.design(np.array([ofa.smallest(), ofa.largest()])).toarray()
    assert not design[:, layout.fixed].any()
    assert design[0].sum() == len(ofa.factors) - 10 and design[1].sum() == len(ofa.factors)  # 10 blocks skipped


def test_monotonicity_never_runs_along_an_option_axis(ofa):
    layout = term_layout(ofa)
    lo, hi = layout.monotone_pairs()
    for f, axes in enumerate(layout.monotone_axes):
        assert axes == tuple(not ofa.layers[v].is_option for v in ofa.factors[f].variables)
    owner = layout.factor_of_term
    for a, b in zip(lo, hi):
        f = owner[a]
        ia = np.unravel_index(a - layout.offsets[f], layout.shapes[f])
        ib = np.unravel_index(b - layout.offsets[f], layout.shapes[f])
        moved = [k for k in range(len(ia)) if ia[k] != ib[k]]
        assert len(moved) == 1 and layout.monotone_axes[f][moved[0]]
    # the projection keeps option axes free: a table falling along its option axis stays as it is,
    # one falling along its width axis is lifted
    f = _factor(ofa, "stage3.block2")
    o, shape = layout.offsets[f], layout.shapes[f]
    table = np.tile(np.arange(shape[1], 0, -1, dtype=float), (shape[0], 1))  # falls with the code
    terms = np.zeros(layout.num_terms)
    terms[o:o + table.size] = table.ravel()
    out = monotone_projection(layout, terms, np.ones(layout.num_terms))
    np.testing.assert_array_equal(out[o:o + table.size], table.ravel())
    terms[o:o + table.size] = (table.T * np.arange(shape[0], 0, -1)).T.ravel()  # falls with the width too
    out = monotone_projection(layout, terms, np.ones(layout.num_terms)).reshape(-1)[o:o + table.size].reshape(shape)
    assert (np.diff(out, axis=0) >= 0).all() and (np.diff(out[0]) < 0).all()


def test_se_and_the_whole_block_count_their_activation_traffic(ofa):
    f = _factor(ofa, "stage2.block2")
    op = ofa.factor_op(f, [c[-1] for c in ofa.factor_choices(f)])
    assert op.kind == "mb_block" and op.se and op.residual
    x = op.hidden * op.out_hw * op.out_hw
    no_se = replace(op, se=False)
    a_in, a_out = block_activations(op)
    b_in, b_out = block_activations(no_se)
    assert (a_in - b_in, a_out - b_out) == (2 * x, x)  # the pool and the gate read it, the gate writes it
    expand = block_activations(replace(no_se, kind="mb_expand", residual_from=-1))
    out = op.cout * op.out_hw * op.out_hw
    assert (b_in - expand[0], b_out - expand[1]) == (x + 2 * out, 2 * out)  # the project, then the Add
    assert block_activations(replace(op, kind="identity")) == (0, 0)
