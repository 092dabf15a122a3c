"""Input checks against the manifest io spec: every bad input is a ValidationError naming it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pruneguard.deploy.validation import (
    InputSpec,
    ValidationError,
    validate_feedback,
    validate_inputs,
)
from pruneguard.registry.errors import ConfigError

SPEC = InputSpec(name="input", dtype="float32", shape=("batch", 1, 8, 8))
ROW = [[[0.5] * 8 for _ in range(8)]]


def _with(value: object) -> list[object]:
    row: list[list[list[object]]] = [[[0.5] * 8 for _ in range(8)]]
    row[0][3][4] = value
    return [row]


def test_valid_batch_is_cast_to_the_spec_dtype() -> None:
    out = validate_inputs([ROW, ROW], SPEC, max_batch=8)
    assert out.shape == (2, 1, 8, 8)
    assert out.dtype == np.float32


def test_integers_are_accepted_for_a_float_model() -> None:
    out = validate_inputs([[[[1] * 8 for _ in range(8)]]], SPEC, max_batch=8)
    assert out.dtype == np.float32 and float(out.sum()) == 64.0


@pytest.mark.parametrize(
    ("inputs", "problem", "words"),
    [
        ("abc", "type", "must be a JSON array"),
        ({"a": 1}, "type", "got dict"),
        (None, "type", "got NoneType"),
        ([], "batch_size", "empty"),
        ([ROW] * 9, "batch_size", "exceeds the limit of 8"),
        (ROW, "shape", "expected [batch, 1, 8, 8]"),  # a row without its batch axis
        ([[[[0.5] * 7 for _ in range(8)]]], "shape", "[1, 1, 8, 7]"),
        ([ROW, [[[0.5] * 8 for _ in range(7)]]], "shape", "rectangular"),
        ([[[[0.5] * 8 for _ in range(8)], [[0.5] * 8 for _ in range(8)]]], "shape", "[1, 2, 8, 8]"),
        (_with("1.0"), "dtype", "strings"),
        (_with(None), "dtype", "non-numeric"),
        (_with({"x": 1}), "dtype", "non-numeric"),
        (_with(10**40), "dtype", "non-numeric"),
        ([[[[True] * 8 for _ in range(8)]]], "dtype", "booleans"),
        (_with(math.nan), "non_finite", "NaN or inf"),
        (_with(math.inf), "non_finite", "NaN or inf"),
        (_with(1e39), "non_finite", "too large for float32"),
        ([[[]]], "shape", "shape"),
    ],
)
def test_bad_inputs_name_the_problem(inputs: object, problem: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_inputs(inputs, SPEC, max_batch=8)
    assert info.value.problem == problem
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)  # a ConfigError: the CLI and the service map it


def test_integer_models_refuse_fractions() -> None:
    spec = InputSpec(name="ids", dtype="int64", shape=("batch", 3))
    assert validate_inputs([[1, 2, 3]], spec, max_batch=4).dtype == np.int64
    with pytest.raises(ValidationError, match="non-integer"):
        validate_inputs([[1, 2.5, 3]], spec, max_batch=4)


def test_dynamic_dimensions_accept_any_size() -> None:
    spec = InputSpec(name="tokens", dtype="float32", shape=("batch", "seq"))
    assert validate_inputs([[1.0, 2.0, 3.0]], spec, max_batch=4).shape == (1, 3)


def test_spec_from_manifest_refuses_multi_input_models() -> None:
    manifest = {"io": {"inputs": [{"name": "a", "dtype": "float32", "shape": ["batch", 2]}] * 2}}
    with pytest.raises(ConfigError, match="exactly one"):
        InputSpec.from_manifest(manifest)


@pytest.mark.parametrize(
    ("request_id", "label", "problem"),
    [
        ("", 1, "request_id"),
        ("x" * 65, 1, "request_id"),
        ("bad id!", 1, "request_id"),
        (5, 1, "request_id"),
        ("abc", 10, "label"),
        ("abc", -1, "label"),
        ("abc", True, "label"),
        ("abc", 1.5, "label"),
    ],
)
def test_bad_feedback_names_the_problem(request_id: object, label: object, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_feedback(request_id, label, n_classes=10)
    assert info.value.problem == problem


def test_good_feedback_passes() -> None:
    assert validate_feedback("0123abcd", 9, n_classes=10) == ("0123abcd", 9)
