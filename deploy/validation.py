"""Input checks at the service boundary, against the manifest's io spec.

Everything a client can get wrong ends here as a :class:`ValidationError` whose message
names the problem, what was expected and how to fix it; the service answers it with a 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from pruneguard.registry.errors import ConfigError

__all__ = [
    "InputSpec",
    "ValidationError",
    "input_specs",
    "validate_feedback",
    "validate_inputs",
]

SUPPORTED_DTYPES = ("float32", "float64", "float16", "int64", "int32")
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ValidationError(ConfigError):
    """A request does not match the model's io spec. ``problem`` is a short, bounded code."""

    def __init__(self, message: str, *, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class InputSpec:
    """The one input of a model: name, dtype and shape (``shape[0]`` is the batch axis;
    a string dimension is dynamic)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_entry(cls, entry: Any) -> InputSpec:
        try:
            name, dtype, shape = entry["name"], entry["dtype"], tuple(entry["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"manifest io.inputs entry {entry!r} must be {{name, dtype, shape}} ({exc!r}); "
                "rebuild the artifact with `pruneguard prune`"
            ) from exc
        if dtype not in SUPPORTED_DTYPES:
            raise ConfigError(
                f"input dtype {dtype!r} is not servable; expected one of {SUPPORTED_DTYPES}"
            )
        if len(shape) < 1:
            raise ConfigError("input shape must start with the batch axis")
        return cls(name=str(name), dtype=str(dtype), shape=shape)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> InputSpec:
        """The one input of a tensor model (a text model has several: :func:`input_specs`)."""
        specs = input_specs(manifest)
        if len(specs) != 1:
            raise ConfigError(
                f"manifest io.inputs holds {len(specs)} entries; a tensor model is served with "
                "exactly one input (a text model's inputs come from its tokenizer)"
            )
        return specs[0]

    def row_shape_text(self) -> str:
        return "[" + ", ".join(str(dim) for dim in self.shape) + "]"


def input_specs(manifest: dict[str, Any]) -> tuple[InputSpec, ...]:
    """Every named input of the manifest's io spec, in order."""
    inputs = (manifest.get("io") or {}).get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ConfigError(
            "manifest io.inputs must be a non-empty list of {name, dtype, shape}; "
            "rebuild the artifact with `pruneguard prune`"
        )
    return tuple(InputSpec.from_entry(entry) for entry in inputs)


def _fail(problem: str, message: str) -> ValidationError:
    return ValidationError(message, problem=problem)


def _to_array(inputs: Any, spec: InputSpec) -> np.ndarray:
    expected = spec.row_shape_text()
    try:
        array = np.asarray(inputs)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise _fail(
            "shape",
            f"inputs is not a rectangular array ({str(exc).splitlines()[0][:120]}); "
            f"every row must have shape {expected}",
        ) from exc
    kind = array.dtype.kind
    if kind == "b":
        raise _fail("dtype", f"inputs holds booleans; expected numbers ({spec.dtype})")
    if kind in "US":
        raise _fail("dtype", f"inputs holds strings; expected numbers ({spec.dtype})")
    if kind not in "iuf":
        raise _fail(
            "dtype",
            f"inputs holds non-numeric values (null, objects, or integers too large) or is "
            f"ragged; expected numbers ({spec.dtype}) in rows of shape {expected}",
        )
    return array


def _check_shape(array: np.ndarray, spec: InputSpec) -> None:
    got = list(array.shape)
    if len(got) != len(spec.shape) or any(
        isinstance(want, int) and want != have
        for want, have in zip(spec.shape[1:], got[1:], strict=False)
    ):
        raise _fail(
            "shape",
            f"inputs has shape {got}, expected {spec.row_shape_text()} (batch first); "
            "wrap a single example in a list",
        )
    if any(have == 0 for have in got[1:]):
        raise _fail("shape", f"inputs has an empty dimension: shape {got}")


def _cast(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    target = np.dtype(spec.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        if target.kind == "f":
            cast = array.astype(target)
            bad = ~np.isfinite(cast)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise _fail(
                    "non_finite",
                    f"inputs row {row} holds NaN or inf (or a value too large for {spec.dtype}); "
                    "send finite numbers",
                )
            return cast
        if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
            raise _fail("dtype", f"inputs holds non-integer values; expected {spec.dtype}")
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise _fail("dtype", f"inputs holds values outside the {spec.dtype} range")
        return array.astype(target)


def validate_inputs(inputs: Any, spec: InputSpec, *, max_batch: int) -> np.ndarray:
    """Return ``inputs`` as an array of ``spec``'s dtype, or raise :class:`ValidationError`."""
    if not isinstance(inputs, list):
        raise _fail(
            "type",
            f"inputs must be a JSON array of rows (batch first, each {spec.row_shape_text()}), "
            f"got {type(inputs).__name__}",
        )
    if not inputs:
        raise _fail("batch_size", "inputs is empty; send at least one row")
    if len(inputs) > max_batch:
        raise _fail(
            "batch_size",
            f"batch of {len(inputs)} rows exceeds the limit of {max_batch}; "
            "split the request into smaller batches",
        )
    array = _to_array(inputs, spec)
    _check_shape(array, spec)
    return _cast(array, spec)


def validate_feedback(request_id: Any, label: Any, *, n_classes: int | None) -> tuple[str, int]:
    """Check a /feedback body; return (request_id, label)."""
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.match(request_id):
        raise _fail(
            "request_id",
            "request_id must be the 1-64 character id a /predict response returned "
            f"(letters, digits, '_-.:'), got {str(request_id)[:80]!r}",
        )
    if isinstance(label, bool) or not isinstance(label, int):
        raise _fail("label", f"label must be an integer class index, got {type(label).__name__}")
    if label < 0 or (n_classes is not None and label >= n_classes):
        allowed = f"0..{n_classes - 1}" if n_classes is not None else ">= 0"
        raise _fail("label", f"label {label} is not a class index; allowed: {allowed}")
    return request_id, label
