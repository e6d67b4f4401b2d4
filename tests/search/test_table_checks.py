"""The readers' shared checks: arrays say what each axis stands for, JSON with non-finite literals is refused."""

from __future__ import annotations

import numpy as np
import pytest

from widthwise.search.errors import TableError
from widthwise.search.table_checks import created, metadata, nested_array, parse_json, refuse_non_finite, width_list

AXES = [(2, "choice of a"), (3, "choice of b")]


def test_a_nested_array_of_the_right_shape_is_returned_as_floats():
    out = nested_array([[0, 1, 2], [3.5, 4, 5]], AXES, "f.ms", None)
    assert out.dtype == np.float64 and out.shape == (2, 3) and out[1, 0] == 3.5
    assert nested_array([1, 2], AXES[:1], "u.ms", None).shape == (2,)


@pytest.mark.parametrize("value, field, message", [
    ([[0, 1, 2]], "f.ms", "expected 2 rows (one per choice of a), got 1"),
    ([[0, 1, 2], [0, 1]], "f.ms[1]", "expected 3 values (one per choice of b), got 2"),
    ([[0, 1, 2], 7], "f.ms[1]", "expected 3 values (one per choice of b), got int"),
    ([[0, 1, 2], [0, True, 2]], "f.ms[1][1]", "must be a finite number >= 0, got True"),
    ([[0, 1, 2], [0, 1, -2]], "f.ms[1][2]", "must be a finite number >= 0, got -2"),
    ("x", "f.ms", "expected 2 rows (one per choice of a), got str"),
])
def test_a_wrong_array_names_the_entry_and_its_axis(value, field, message):
    with pytest.raises(TableError) as err:
        nested_array(value, AXES, "f.ms", "t.json")
    assert err.value.field == field and err.value.problem == message


@pytest.mark.parametrize("value, field", [([], "w"), ([8, 0], "w[1]"), ([8, 2.5], "w[1]"), ("8", "w"), ([True], "w[0]")])
def test_width_lists_are_non_empty_positive_integers(value, field):
    with pytest.raises(TableError) as err:
        width_list(value, "w", None)
    assert err.value.field == field
    assert width_list([8, 16.0], "w", None) == (8, 16)


def test_non_finite_literals_parse_and_are_then_refused_by_path():
    obj = parse_json('{"a": [1, {"b": NaN}], "c": Infinity}', "t.json")
    with pytest.raises(TableError) as err:
        refuse_non_finite(obj, "t.json")
    assert err.value.field == "a[1].b" and "NaN" in err.value.problem
    refuse_non_finite({"a": [1, 2.5], "b": "NaN"}, None)  # a string is not a number
    with pytest.raises(TableError, match="file: not valid JSON"):
        parse_json("{", "t.json")


def test_metadata_defaults_and_refusals():
    assert metadata({}, None) == {"device": {}, "runtime": {}, "fit": {}}
    with pytest.raises(TableError, match="runtime.statistic: must be one of"):
        metadata({"runtime": {"statistic": "p99"}}, None)
    assert created({"created": "2024-01-01T00:00:00Z"}, None) == "2024-01-01T00:00:00Z"
    with pytest.raises(TableError, match="created: must be a string"):
        created({"created": 1}, None)
