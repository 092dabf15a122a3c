"""Turn wide input rows into a few tens of columns that drift tests can run on.

An 8×8 image is 64 pixels, a 3×224×224 one 150,528: testing each pixel finds noise (and
thousands of tests). Images are summarised per channel instead: mean, standard deviation and
quantiles of the pixels, and the mean of each of up to 8 horizontal and 8 vertical bands
(where in the image the mass is). Flat vectors up to ``max_raw`` values are kept as they are;
longer ones are cut into ``max_raw`` contiguous groups, each summarised by its mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pruneguard.registry.errors import ConfigError

__all__ = ["MAX_BANDS", "TEXT_COLUMNS", "extract", "input_shape", "stack_rows"]

MAX_BANDS = 8
QUANTILES = (0.1, 0.5, 0.9)


# A text model logs a summary per text (deploy.text.text_features); drift runs on these of
# its numbers, which a text artifact's reference.parquet holds as f0, f1.
TEXT_COLUMNS = ("chars", "tokens")


def stack_rows(rows: Sequence[Any], width: int | None = None) -> np.ndarray:
    """A list of flattened input rows (lists of floats) as a float32 matrix; a text's
    summary (a mapping) gives its :data:`TEXT_COLUMNS`."""
    if len(rows) == 0:
        return np.zeros((0, width or 0), dtype=np.float32)
    if isinstance(rows[0], Mapping):
        rows = [[float(row.get(k, np.nan)) for k in TEXT_COLUMNS] for row in rows]
    matrix = np.asarray(list(rows), dtype=np.float32)
    if matrix.ndim != 2:
        raise ConfigError(
            f"feature rows have uneven lengths (array of ndim {matrix.ndim}); every logged row "
            "must be the flattened input of the same io shape"
        )
    return matrix


def input_shape(manifest: dict[str, Any]) -> tuple[int, ...] | None:
    """The per-row input shape from the manifest's io spec (batch axis dropped), if static."""
    try:
        shape = manifest["io"]["inputs"][0]["shape"][1:]
    except (KeyError, IndexError, TypeError):
        return None
    return tuple(int(d) for d in shape) if all(isinstance(d, int) for d in shape) else None


def extract(
    matrix: np.ndarray, shape: tuple[int, ...] | None, *, max_raw: int = 64
) -> tuple[list[str], np.ndarray]:
    """Column names and the (rows × columns) summary of ``matrix`` (rows × flattened input)."""
    width = matrix.shape[1]
    if shape is not None and int(np.prod(shape)) != width:
        raise ConfigError(
            f"input shape {shape} has {int(np.prod(shape))} values but rows have {width}; "
            "the manifest's io spec and the logged features disagree"
        )
    if shape is not None and len(shape) >= 2:
        return _image_summary(matrix, shape)
    if width <= max_raw:
        return [f"f{i}" for i in range(width)], matrix.astype(np.float64)
    return _group_means(matrix, max_raw)


def _image_summary(matrix: np.ndarray, shape: tuple[int, ...]) -> tuple[list[str], np.ndarray]:
    height, width = shape[-2], shape[-1]
    channels = int(np.prod(shape[:-2]))
    images = matrix.reshape(len(matrix), channels, height, width).astype(np.float64)
    names: list[str] = []
    columns: list[np.ndarray] = []
    for ch in range(channels):
        pixels = images[:, ch].reshape(len(matrix), -1)
        names += [f"c{ch}_mean", f"c{ch}_std", *(f"c{ch}_q{int(q * 100)}" for q in QUANTILES)]
        columns += [pixels.mean(axis=1), pixels.std(axis=1)]
        columns += list(np.quantile(pixels, QUANTILES, axis=1))
        for axis, label, size in ((1, "row", height), (2, "col", width)):
            for band, idx in enumerate(np.array_split(np.arange(size), min(size, MAX_BANDS))):
                names.append(f"c{ch}_{label}{band}")
                columns.append(images[:, ch].take(idx, axis=axis).mean(axis=(1, 2)))
    return names, np.column_stack(columns)


def _group_means(matrix: np.ndarray, groups: int) -> tuple[list[str], np.ndarray]:
    parts = np.array_split(np.arange(matrix.shape[1]), groups)
    names = [f"g{i}_mean" for i in range(groups)]
    return names, np.column_stack([matrix[:, idx].mean(axis=1) for idx in parts])
