"""The space model: configurations, factors and their ops, chain helpers, validation, JSON."""

import numpy as np
import pytest

from widthwise.device_agents.errors import BadRequest, BadWidths
from widthwise.device_agents.spaces import SPACES, block_counts, make_space


@pytest.mark.parametrize("name", sorted(SPACES))
def test_blocks_are_the_factor_ops_and_counts_their_sum(name):
    space = make_space(name)
    rng = np.random.default_rng(1)
    for _ in range(3):
        widths = tuple(int(rng.choice(l.choices)) for l in space.layers)
        ops = [space.factor_op(f, space.factor_values(f, widths)) for f in range(len(space.factors))]
        assert ops == space.blocks(widths)
        assert tuple(np.sum([block_counts(op) for op in ops], axis=0)) == space.counts(widths)
        assert all(op.kind == f.kind and op.name == f.name for op, f in zip(ops, space.factors))
        assert all(1 <= len(f.variables) <= 2 for f in space.factors)


def test_chain_factor_ops_are_the_chain_blocks():
    space = make_space("mobilenet_v1")
    widths = space.base_widths()
    for k in range(space.num_layers + 1):
        cin = 3 if k == 0 else widths[k - 1]
        cout = 1000 if k == space.num_layers else widths[k]
        op = space.factor_op(k, space.factor_values(k, widths))
        assert op == space.block_at(k, cin, cout)
        assert space.factor_choices(k) == tuple(space.layers[v].choices for v in space.factors[k].variables)
    assert space.block_in_choices(3) == space.layers[2].choices


def test_chain_helpers_refuse_a_tree_space_by_name():
    tree = make_space("mobilenet_v2", {"resolution": 32})
    for call in (lambda: tree.block_in_choices(1), lambda: tree.block_out_choices(1), lambda: tree.block_at(1, 8, 8)):
        with pytest.raises(BadRequest, match="chain spaces only; space mobilenet_v2 is a tree"):
            call()


def test_factor_op_with_the_wrong_number_of_values_names_the_factor():
    space = make_space("mobilenet_v2")
    with pytest.raises(BadWidths, match=r"factor 3 \(stage2.block1.project\) is over 2 variables "
                                        r"\(stage2.block1.expand, stage2\), got 1 values"):
        space.factor_op(3, [96])


@pytest.mark.parametrize(
    "widths, match",
    [
        ([32] * 13, "14 searchable layers, got 13"),
        ([32] * 13 + [0], "must be positive"),
        ([32] * 13 + [-8], "must be positive"),
        ([32] * 13 + [8.5], "not an integer"),
        ([32] * 13 + [float("nan")], "not an integer"),
        ([32] * 13 + [float("inf")], "not an integer"),
        ("32,64", "list of 14"),
    ],
)
def test_bad_width_lists_are_named(widths, match):
    with pytest.raises(BadWidths, match=match):
        make_space("mobilenet_v1").validate_widths(widths)


def test_on_grid_validation_names_the_layer():
    space = make_space("mobilenet_v1")
    widths = list(space.smallest())
    widths[3] = 25
    with pytest.raises(BadWidths, match=r"layer 3 \(dwsep3\)"):
        space.validate_widths(widths, on_grid=True)


def test_numpy_integer_widths_are_accepted():
    space = make_space("mobilenet_v2")
    widths = np.array(space.base_widths(), dtype=np.int64)
    assert space.validate_widths(list(widths)) == space.base_widths()
    assert all(type(w) is int for w in space.validate_widths(list(widths)))
    assert space.validate_widths(widths) == space.base_widths()  # the row itself, not only its list
    assert space.counts(widths) == space.counts(space.base_widths())
    with pytest.raises(BadWidths, match="has 25 variables, got 2 widths"):  # two rows are not one configuration
        space.validate_widths(np.array([widths, widths]))


def test_to_json_keeps_its_keys_and_adds_groups_when_set():
    v1 = make_space("mobilenet_v1").to_json()
    assert set(v1) == {"name", "input_channels", "output_channels", "layers", "params", "resolution"}
    assert all(set(l) == {"name", "choices"} for l in v1["layers"])
    v2 = make_space("mobilenet_v2").to_json()
    assert v2["layers"][2] == {"name": "stage2.block1.expand", "choices": list(make_space("mobilenet_v2").layers[2].choices),
                               "group": "stage2"}
    assert v2["params"] == {"resolution": 224, "levels": 14} and v2["output_channels"] == 1000
