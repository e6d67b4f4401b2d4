"""The space model: configurations, factors and their ops, chain helpers, validation, JSON."""

import numpy as np
import pytest

from widthwise.device_agents.block_kinds import BlockTemplate
from widthwise.device_agents.errors import BadRequest, BadWidths
from widthwise.device_agents.space_model import LayerSpec, Space, option_label
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
        # a skipped block resolves to an identity, whatever its factor's kind
        assert all(op.kind in (f.kind, "identity") and op.name == f.name for op, f in zip(ops, space.factors))
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


# --- option variables: kernel, expansion and keep as one variable ------------------------------

OPTS = ((("expand", 3), ("keep", 1), ("kernel", 3)), (("expand", 6), ("keep", 1), ("kernel", 5)))
SKIPPABLE = ((("keep", 0),),) + OPTS


def _option_space() -> Space:
    """width a (8/16), an expansion block into width b (16/24) with expand_base 8, then three
    stride-1 blocks over b whose options may skip (hidden = expand x the actual width)."""
    layers = (LayerSpec("a", 8, (8, 16)), LayerSpec("o1", 1, (0, 1), "s", OPTS), LayerSpec("b", 16, (16, 24), "s"),
              LayerSpec("o2", 1, (0, 1, 2), "s", SKIPPABLE), LayerSpec("o3", 1, (0, 1, 2), "s", SKIPPABLE),
              LayerSpec("o4", 1, (0, 1, 2), "s", SKIPPABLE))
    templates = [
        BlockTemplate("stem", "conv", 2, 3, 16, 8, cin=3, cout_from=0),
        BlockTemplate("b1.expand", "mb_expand", 2, 0, 8, 4, cin_from=0, option_from=1, expand_base=8, se=True),
        BlockTemplate("b1.project", "ir_project", 1, 1, 4, 4, cout_from=2, option_from=1, expand_base=8),
    ]
    for k, v in enumerate((3, 4, 5)):
        templates.append(BlockTemplate(f"b{k + 2}", "mb_block", 1, 0, 4, 4, cin_from=2, cout_from=2, option_from=v,
                                       residual_from=len(templates), activation="hswish"))
    templates.append(BlockTemplate("fc", "pool_fc", in_hw=4, out_hw=1, cin_from=2, cout=10))
    return Space("opt", (), 3, 10, (1, 3, 16, 16), "float32", layers, tuple(templates))


def test_an_option_sets_kernel_and_hidden_width_and_keep_zero_is_an_identity():
    space = _option_space()
    assert space.templates[1].variables() == (0, 1) and space.templates[2].variables() == (1, 2)
    blocks = space.blocks((16, 1, 24, 1, 0, 2))
    expand, project, kept, skipped, last = blocks[1:6]
    # expand_base 8: hidden 6 x 8 = 48 whatever the input width; the project reads it
    assert (expand.cin, expand.hidden, expand.cout, expand.kernel, expand.se) == (16, 48, 48, 5, True)
    assert (project.cin, project.cout, project.kernel) == (48, 24, 1)
    # no expand_base: hidden = expand x the actual input width
    assert (kept.hidden, kept.kernel, kept.activation, kept.residual_from) == (72, 3, "hswish", 3)
    assert (skipped.kind, skipped.cin, skipped.cout, skipped.residual_from) == ("identity", 24, 24, -1)
    assert block_counts(skipped) == (0, 0) and (last.hidden, last.kernel) == (144, 5)


def test_option_codes_are_validated_always_and_labelled():
    space = _option_space()
    assert space.validate_widths((8, 0, 16, 0, 0, 0)) == (8, 0, 16, 0, 0, 0)
    with pytest.raises(BadWidths, match=r"option 3 of variable 3 \(o2\) is not one of its codes 0=skip, 1=k3e3, 2=k5e6"):
        space.validate_widths((8, 0, 16, 3, 0, 0))
    with pytest.raises(BadWidths, match=r"option -1 of variable 1 \(o1\)"):
        space.factor_op(1, (8, -1))
    assert [space.layers[3].label(c) for c in space.layers[3].choices] == ["skip", "k3e3", "k5e6"]
    assert space.layers[0].label(16) == "16" and not space.layers[0].is_option
    assert option_label({"kernel": 7, "expand": 4, "keep": 1}) == "k7e4" and option_label({"keep": 0}) == "skip"


def test_canonical_moves_skipped_blocks_after_the_kept_ones_of_a_run():
    space = _option_space()
    assert space.depth_runs == ((3, 4, 5),)
    assert space.canonical((8, 0, 16, 0, 2, 0)) == (8, 0, 16, 2, 0, 0)
    assert space.canonical((8, 0, 16, 0, 1, 2)) == (8, 0, 16, 1, 2, 0)
    assert space.canonical((8, 0, 16, 2, 0, 1)) == (8, 0, 16, 2, 1, 0)
    assert space.canonical((8, 1, 24, 1, 2, 0)) == (8, 1, 24, 1, 2, 0)
    assert space.counts((8, 0, 16, 0, 1, 2)) == space.counts((8, 0, 16, 1, 2, 0))
    assert make_space("mobilenet_v2").depth_runs == () and make_space("mobilenet_v1").canonical([8] * 14) == (8,) * 14
    with pytest.raises(BadWidths):
        space.canonical((8, 0, 16, 5, 0, 0))
