"""The classification task on tensor inputs (CNNs, MLPs: one ``input`` tensor, class logits
out). Its adapter, :class:`TensorClassifier`, loads the recipe's model and data, evaluates
(accuracy on the held-out loader, agreement with dense on it), names the recovery loss
(:class:`pruning.tasks.losses.LabelsAndLogits`) and gives the export spec of its graphs
(:class:`TensorGraphs`, one :class:`pruning.artifacts.Graphs`), as the text adapters of
:mod:`pruning.tasks` do for texts."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.pruning.tasks.losses import LabelsAndLogits

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from pruneguard.pruning.recipe import Recipe

__all__ = [
    "PARITY_ROWS",
    "Evaluation",
    "TensorClassifier",
    "TensorGraphs",
    "calibration_feeds",
    "evaluate",
    "in_order",
    "reference_frame",
]

PARITY_ROWS = 64
REFERENCE_ROWS = 1000
MAX_REFERENCE_FEATURES = 4096


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    params: int
    macs: int
    inputs: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray


@dataclass(frozen=True)
class TensorClassifier:
    """The adapter of a tensor classification recipe (the front half of
    :func:`pruning.pipeline.run` asks it for everything that is the task's)."""

    recipe: Recipe
    distill_loss: LabelsAndLogits = field(default_factory=LabelsAndLogits)  # CE + T²·KL

    def load(self) -> tuple[dict[str, DataLoader], nn.Module]:
        """The recipe's ``{"train", "val"}`` loaders and its (untrained or loaded) model."""
        from pruneguard.pruning.data import load_data
        from pruneguard.pruning.models.load import load_model

        recipe = self.recipe
        data = load_data(recipe.data, seed=recipe.seed, search_path=recipe.base_dir)
        model = load_model(recipe.model, seed=recipe.seed, search_path=recipe.base_dir)
        return data, model

    def evaluate(self, model: nn.Module, loader: DataLoader, example: torch.Tensor) -> Evaluation:
        return evaluate(model, loader, example)

    def graphs(
        self, baseline: Evaluation, example: torch.Tensor, n_outputs: int, train: DataLoader
    ) -> TensorGraphs:
        return TensorGraphs(self.recipe, baseline, example, n_outputs, train)

    def distillation(self) -> dict[str, Any] | None:
        """What the manifest records as ``pruning.distillation`` (None: no teacher)."""
        return self.distill_loss.as_dict() if self.recipe.finetune.distill else None


def evaluate(model: nn.Module, loader: DataLoader, example: torch.Tensor) -> Evaluation:
    """Held-out accuracy, parameters and per-sample MACs of ``model``."""
    from pruneguard.pruning.finetune import predict
    from pruneguard.pruning.measure import count_macs, count_params

    inputs, labels, predictions = predict(model, loader)
    accuracy = float((labels == predictions).mean()) if len(labels) else 0.0
    return Evaluation(
        accuracy=accuracy,
        params=count_params(model),
        macs=count_macs(model, example),
        inputs=inputs,
        labels=labels,
        predictions=predictions,
    )


def in_order(loader: DataLoader) -> DataLoader:
    """The same batches without shuffling: calibration must not depend on what ran before."""
    from torch.utils.data import DataLoader

    if loader.batch_size is None:  # a custom batch sampler: use it as it is
        return loader
    return DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=False)


def calibration_feeds(recipe: Recipe, train: DataLoader) -> list[dict[str, np.ndarray]]:
    """The first ``quantize.calibration`` training batches, in order (static int8 only)."""
    q = recipe.quantize
    if q is None or q.mode != "static":
        return []
    batches = itertools.islice(iter(in_order(train)), q.calibration)
    return [{"input": x.numpy().astype(np.float32)} for x, _ in batches]


def reference_frame(
    evaluation: Evaluation, rows: int = REFERENCE_ROWS, max_features: int = MAX_REFERENCE_FEATURES
) -> pd.DataFrame:
    """Validation rows as the drift reference: ``f0..fN`` (flattened input), ``label``, ``prediction``.

    Inputs wider than ``max_features`` (images) keep only label and prediction: per-pixel
    drift columns would be meaningless and huge.
    """
    import pandas as pd

    flat = evaluation.inputs[:rows].reshape(min(rows, len(evaluation.inputs)), -1)
    columns: dict[str, Any] = {}
    if flat.shape[1] <= max_features:
        columns = {f"f{i}": flat[:, i].astype("float32") for i in range(flat.shape[1])}
    frame = pd.DataFrame(columns, index=range(len(flat)))
    frame["label"] = evaluation.labels[:rows].astype("int64")
    frame["prediction"] = evaluation.predictions[:rows].astype("int64")
    return frame


class TensorGraphs:
    """How a tensor classifier's models become graphs (input ``input`` [batch, ...] → ``logits``)
    and how they are fed: held-out rows for parity and latency, training batches in order
    for static int8 calibration."""

    def __init__(
        self, recipe: Recipe, baseline: Evaluation, example: torch.Tensor, n_outputs: int,
        train: DataLoader,
    ) -> None:  # fmt: skip
        self.recipe, self.baseline, self.example = recipe, baseline, example
        self.n_outputs, self.train = n_outputs, train

    def export(self, model: nn.Module, path: Path, opset: int) -> None:
        from pruneguard.pruning.export import export_onnx

        export_onnx(model, self.example, path, opset=opset)

    def parity(self, model: nn.Module, path: Path) -> float:
        from pruneguard.pruning.export import parity

        return parity(model, path, {"input": self.baseline.inputs[:PARITY_ROWS].astype(np.float32)})

    def time(
        self, paths: Mapping[str, Path], recipe: Recipe, progress: bool
    ) -> dict[str, dict[str, dict[str, float]]]:
        from pruneguard.pruning.artifacts import time_recipe

        return time_recipe(paths, self.latency_feeds, recipe, progress)

    def latency_feeds(self, batch: int) -> dict[str, np.ndarray]:
        rows = self.baseline.inputs
        reps = -(-batch // len(rows))
        return {"input": np.concatenate([rows] * reps)[:batch].astype(np.float32)}

    def calibration_feeds(self) -> list[dict[str, np.ndarray]]:
        return calibration_feeds(self.recipe, self.train)

    def evaluate_graph(self, path: Path, threads: int | None) -> tuple[Evaluation, np.ndarray]:
        """The graph's argmax on the held-out rows (params and macs stay the dense model's: a
        graph's are not counted; the int8 manifest takes its parent's)."""
        from dataclasses import replace

        from pruneguard.pruning.quantize import onnx_outputs

        base = self.baseline
        outputs = onnx_outputs(path, {"input": base.inputs.astype(np.float32)}, threads)
        predictions = outputs.argmax(axis=1)
        accuracy = float((base.labels == predictions).mean()) if len(base.labels) else 0.0
        return replace(base, accuracy=accuracy, predictions=predictions), outputs

    def quality(self, evaluation: Evaluation, dense: Evaluation) -> dict[str, Any]:
        return {"validation_rows": len(evaluation.labels)}

    def io(self) -> dict[str, Any]:
        from pruneguard.pruning.data import class_labels, describe_inputs
        from pruneguard.pruning.manifest import io_spec

        return io_spec(
            input_shape=list(self.example.shape[1:]),
            n_outputs=self.n_outputs,
            class_labels=class_labels(self.recipe.data, self.n_outputs),
            description=describe_inputs(self.recipe.data),
        )

    def reference(self, evaluation: Evaluation) -> pd.DataFrame:
        return reference_frame(evaluation)

    def save_files(self, folder: Path, label: str) -> None:
        return None
