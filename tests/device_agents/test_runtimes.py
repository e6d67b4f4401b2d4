"""The runtime registry: lazy, typed failures, honest availability."""

import pytest

from widthwise.device_agents.errors import RuntimeUnavailable
from widthwise.device_agents.runtimes import RUNTIME_MODULES, available_runtimes, get_runtime, unavailable_runtimes


def test_unknown_runtime_is_refused_by_name():
    with pytest.raises(RuntimeUnavailable, match="unknown runtime 'tensorrt'"):
        get_runtime("tensorrt")


def test_every_known_runtime_is_either_available_or_has_a_reason():
    available = available_runtimes()
    reasons = unavailable_runtimes()
    assert set(available) | set(reasons) == set(RUNTIME_MODULES)
    assert not set(available) & set(reasons)
    assert "onnxruntime" in available
    for name, reason in reasons.items():
        assert reason
        with pytest.raises(RuntimeUnavailable, match=name):
            get_runtime(name)
