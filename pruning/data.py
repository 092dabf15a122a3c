"""Data for a recipe: ``load_data(spec) -> {"train": DataLoader, "val": DataLoader}``.

Built-ins:

- ``digits``: scikit-learn's 8×8 digits (1,797 images, 10 classes), a stratified, fixed
  80/20 split. Inputs stay the raw pixel intensities 0..16 a client would send, shaped
  ``(1, 8, 8)``; any normalisation belongs inside the model (the digits CNN starts with a
  conv + BatchNorm), so the exported ONNX takes exactly what the serving layer receives.
- ``synthetic``: random images and random labels of a given shape, for latency work
  (ResNet-50). Accuracy on it is meaningless and is reported as such.

A ``factory: "pkg.mod:make_data"`` returns the same mapping itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruneguard.pruning.recipe import DataSpec
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

__all__ = ["DIGITS_SPLIT_SEED", "class_labels", "describe_inputs", "load_data"]

DIGITS_SPLIT_SEED = 0  # the held-out split never moves with the run's seed
DIGITS_TEST_FRACTION = 0.2


def load_data(
    spec: DataSpec, *, seed: int = 0, search_path: Path | None = None
) -> dict[str, DataLoader]:
    """Train and validation loaders for ``spec``; shuffling is seeded with ``seed``."""
    if spec.factory is not None:
        return _from_factory(spec, search_path)
    builders: dict[str, Callable[[DataSpec, int], dict[str, DataLoader]]] = {
        "digits": _digits,
        "synthetic": _synthetic,
    }
    if spec.builtin not in builders:
        raise ConfigError(
            f"data.builtin={spec.builtin!r}: no classification data of that name; "
            f"allowed: {', '.join(builders)}"
        )
    return builders[spec.builtin](spec, seed)


def describe_inputs(spec: DataSpec) -> str:
    """What a client sends as input, in words (recorded in the manifest's ``io``)."""
    if spec.builtin == "digits":
        return "raw 8x8 digit images, pixel intensities 0..16 as float32 (scikit-learn digits); no scaling needed"
    if spec.builtin == "synthetic":
        return "synthetic random images (latency workload); labels are random, so accuracy is meaningless"
    return f"inputs as produced by the data factory {spec.factory}"


def class_labels(spec: DataSpec, n_outputs: int) -> list[str]:
    if spec.builtin == "digits":
        return [str(i) for i in range(10)]
    return [str(i) for i in range(n_outputs)]


def _loaders(
    x_train: Any, y_train: Any, x_val: Any, y_val: Any, batch: int
) -> dict[str, DataLoader]:
    from torch.utils.data import DataLoader, TensorDataset

    # shuffled by torch's global RNG, which finetune.train seeds: each training call sees a
    # reproducible order whatever ran before it
    return {
        "train": DataLoader(TensorDataset(x_train, y_train), batch_size=batch, shuffle=True),
        "val": DataLoader(TensorDataset(x_val, y_val), batch_size=max(batch, 256), shuffle=False),
    }


def _digits(spec: DataSpec, seed: int) -> dict[str, DataLoader]:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.reshape(-1, 1, 8, 8).astype("float32")
    x_tr, x_va, y_tr, y_va = train_test_split(
        x,
        digits.target,
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    return _loaders(
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr).long(),
        torch.from_numpy(x_va),
        torch.from_numpy(y_va).long(),
        spec.batch_size,
    )


def _synthetic(spec: DataSpec, seed: int) -> dict[str, DataLoader]:
    import torch

    shape, classes, n = spec.shape or (), spec.classes or 2, spec.samples or 2
    gen = torch.Generator().manual_seed(seed)

    def draw() -> tuple[Any, Any]:
        x = torch.randn(n, *shape, generator=gen)
        return x, torch.randint(0, classes, (n,), generator=gen)

    (x_tr, y_tr), (x_va, y_va) = draw(), draw()
    return _loaders(x_tr, y_tr, x_va, y_va, spec.batch_size)


def _from_factory(spec: DataSpec, search_path: Path | None) -> dict[str, DataLoader]:
    from torch.utils.data import DataLoader

    from pruneguard.pruning.models.load import import_factory

    assert spec.factory is not None
    result = import_factory(spec.factory, "data.factory", search_path)(**spec.options)
    if not isinstance(result, dict) or not all(
        isinstance(result.get(k), DataLoader) for k in ("train", "val")
    ):
        raise ConfigError(
            f"data.factory {spec.factory} returned {type(result).__name__}; it must return "
            '{"train": DataLoader, "val": DataLoader} yielding (inputs, labels) batches'
        )
    return {"train": result["train"], "val": result["val"]}
