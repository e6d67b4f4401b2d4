"""The space registry: making spaces by name, their JSON, and the registries of block kinds."""

import pytest

from widthwise.device_agents.errors import BadRequest, UnknownSpace
from widthwise.device_agents.spaces import SPACES, block_counts, make_space


def test_unknown_space_and_parameters_are_refused():
    with pytest.raises(UnknownSpace, match="unknown space 'resnet'"):
        make_space("resnet")
    with pytest.raises(BadRequest, match="no parameter 'depth'"):
        make_space("mobilenet_v1", {"depth": 3})
    with pytest.raises(BadRequest, match="must be an integer"):
        make_space("mobilenet_v1", {"resolution": "224"})
    with pytest.raises(BadRequest, match="strictly increasing"):
        make_space("text_lowrank", {"ranks": [30, 10]})
    with pytest.raises(BadRequest, match="must be an integer"):
        make_space("mobilenet_v2", {"levels": 4.0})


def test_the_registry_names_the_four_families_and_their_parameters():
    assert sorted(SPACES) == ["mobilenet_v1", "mobilenet_v2", "ofa_mbv3", "text_lowrank"]
    assert dict(SPACES["mobilenet_v2"].param_types) == {"resolution": int, "levels": int}
    space = make_space("mobilenet_v2", {"resolution": 160, "levels": 6})
    assert space.param_dict == {"resolution": 160, "levels": 6} and space.input_shape == (1, 3, 160, 160)


def test_to_json_is_the_table_space_object():
    for name in SPACES:
        obj = make_space(name).to_json()
        assert obj["name"] == name
        assert len(obj["layers"]) == make_space(name).num_layers
        assert all(isinstance(c, int) for l in obj["layers"] for c in l["choices"])


# --- block kinds: seven registries keyed by kind, one set of kinds ---------------------------------


def test_every_registry_of_block_kinds_has_the_same_kinds():
    from widthwise.device_agents.build_onnx import EMITTERS
    from widthwise.device_agents.build_tflite import BLOCK_WRITERS
    from widthwise.device_agents.int8_calibration import FORWARDS
    from widthwise.device_agents.limits import ACTIVATIONS
    from widthwise.device_agents.spaces import BLOCK_COUNTERS
    from widthwise.device_agents.weights import WEIGHT_MAKERS
    from widthwise.profiler.fit_design import ACTIVATION_COUNTERS

    registries = {
        "spaces.BLOCK_COUNTERS": BLOCK_COUNTERS,
        "weights.WEIGHT_MAKERS": WEIGHT_MAKERS,
        "build_onnx.EMITTERS": EMITTERS,
        "build_tflite.BLOCK_WRITERS": BLOCK_WRITERS,
        "int8_calibration.FORWARDS": FORWARDS,
        "limits.ACTIVATIONS": ACTIVATIONS,
        "profiler.fit_design.ACTIVATION_COUNTERS": ACTIVATION_COUNTERS,
    }
    spaces = [factory.build() for factory in SPACES.values()]
    # the kinds of the templates, and the identity a skipped block resolves to (ofa_mbv3's smallest network)
    used = {t.kind for space in spaces for t in space.templates} | {
        b.kind for space in spaces for b in space.blocks(space.smallest())}
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
