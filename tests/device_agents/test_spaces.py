"""The space definitions: width grids, chain geometry, exact counts, validation."""

import pytest

from widthwise.device_agents.errors import BadRequest, BadWidths, UnknownSpace
from widthwise.device_agents.spaces import SPACES, block_counts, make_space, width_grid


def test_mobilenet_grid_has_6_11_then_14_choices_and_about_2400_unknowns():
    space = make_space("mobilenet_v1")
    assert [len(l.choices) for l in space.layers] == [6, 11] + [14] * 12
    assert space.layers[0].choices == (8, 16, 24, 32, 40, 48)
    unknowns = sum(
        len(space.block_in_choices(k)) * len(space.block_out_choices(k)) for k in range(space.num_layers + 1)
    )
    assert unknowns == 2396


def test_width_grid_is_rounded_to_multiples_of_8_at_least_8_and_deduplicated():
    grid = width_grid(128, 14)
    assert grid == (24, 40, 48, 64, 80, 88, 104, 112, 128, 144, 152, 168, 176, 192)
    assert all(w % 8 == 0 and w >= 8 for w in width_grid(16, 30))
    assert len(set(width_grid(16, 30))) == len(width_grid(16, 30))


def test_mobilenet_base_counts_match_the_published_network():
    # MobileNet-V1 1.0 at 224: about 569 M multiply-accumulates and 4.2 M parameters.
    macs, params = make_space("mobilenet_v1").counts(make_space("mobilenet_v1").base_widths())
    assert macs == 568_740_352
    assert params == 4_221_032


def test_spatial_sizes_follow_the_strides_with_same_padding():
    space = make_space("mobilenet_v1", {"resolution": 200})
    hws = [(t.in_hw, t.out_hw) for t in space.templates]
    assert hws[0] == (200, 100)
    assert hws[-2][1] == 7  # 200 -> 100 -> 50 -> 25 -> 13 -> 7
    assert space.templates[-1].kind == "pool_fc"


def test_blocks_chain_input_and_output_channels():
    space = make_space("mobilenet_v1")
    blocks = space.blocks(space.smallest())
    assert blocks[0].cin == 3 and blocks[-1].cout == 1000
    assert all(a.cout == b.cin for a, b in zip(blocks, blocks[1:]))


def test_counts_per_kind_by_hand():
    space = make_space("mobilenet_v1")
    stem = space.block_at(0, 3, 32)
    assert block_counts(stem) == (112 * 112 * 27 * 32, 27 * 32 + 32)
    dw = space.block_at(2, 64, 128)  # stride 2: 112 -> 56
    assert block_counts(dw) == (56 * 56 * (9 * 64 + 64 * 128), 9 * 64 + 64 + 64 * 128 + 128)
    text = make_space("text_lowrank", {"vocab": 1000, "dim": 300, "tokens": 32})
    emb, proj, cls = text.blocks((30, 128))
    assert block_counts(emb) == (0, 1000 * 30)
    assert block_counts(proj) == (32 * 30 * 300 + 300 * 128, 30 * 300 + 300 * 128 + 128)
    assert block_counts(cls) == (128 * 20, 128 * 20 + 20)


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


def test_unknown_space_and_parameters_are_refused():
    with pytest.raises(UnknownSpace, match="unknown space 'resnet'"):
        make_space("resnet")
    with pytest.raises(BadRequest, match="no parameter 'depth'"):
        make_space("mobilenet_v1", {"depth": 3})
    with pytest.raises(BadRequest, match="must be an integer"):
        make_space("mobilenet_v1", {"resolution": "224"})
    with pytest.raises(BadRequest, match="strictly increasing"):
        make_space("text_lowrank", {"ranks": [30, 10]})


def test_to_json_is_the_table_space_object():
    for name in SPACES:
        obj = make_space(name).to_json()
        assert obj["name"] == name
        assert len(obj["layers"]) == make_space(name).num_layers
        assert all(isinstance(c, int) for l in obj["layers"] for c in l["choices"])


def test_numpy_integer_widths_are_accepted():
    import numpy as np

    space = make_space("mobilenet_v1")
    widths = np.array(space.base_widths(), dtype=np.int64)
    assert space.validate_widths(list(widths)) == space.base_widths()
    assert all(type(w) is int for w in space.validate_widths(list(widths)))


# --- block kinds: six registries keyed by kind, one set of kinds ---------------------------------


def test_every_registry_of_block_kinds_has_the_same_kinds():
    from widthwise.device_agents.build_onnx import EMITTERS
    from widthwise.device_agents.build_tflite import BLOCK_WRITERS
    from widthwise.device_agents.int8_calibration import FORWARDS
    from widthwise.device_agents.spaces import BLOCK_COUNTERS
    from widthwise.device_agents.weights import WEIGHT_MAKERS
    from widthwise.profiler.fit_design import ACTIVATION_COUNTERS

    registries = {
        "spaces.BLOCK_COUNTERS": BLOCK_COUNTERS,
        "weights.WEIGHT_MAKERS": WEIGHT_MAKERS,
        "build_onnx.EMITTERS": EMITTERS,
        "build_tflite.BLOCK_WRITERS": BLOCK_WRITERS,
        "int8_calibration.FORWARDS": FORWARDS,
        "profiler.fit_design.ACTIVATION_COUNTERS": ACTIVATION_COUNTERS,
    }
    used = {t.kind for factory in SPACES.values() for t in factory.build().templates}
    for name, registry in registries.items():
        assert set(registry) == set(BLOCK_COUNTERS), f"{name} has {sorted(registry)}, the counters {sorted(BLOCK_COUNTERS)}"
    assert used == set(BLOCK_COUNTERS), "every kind a space uses is registered, and every registered kind is used"


def test_a_kind_the_fit_design_lacks_is_an_error_naming_it():
    from widthwise.device_agents.spaces import BlockSpec
    from widthwise.profiler.fit_design import block_activations

    lstm = BlockSpec(0, "rnn", "lstm", 8, 16, 1, 1, 4, 4)
    with pytest.raises(UnknownSpace, match="'lstm'"):
        block_activations(lstm)
    with pytest.raises(UnknownSpace, match="'lstm'"):
        block_counts(lstm)
