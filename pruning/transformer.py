"""The front half of a run for text models: sentence encoders (``task: embedding``) and text
classifiers (a ``model: {hf: PATH}`` classifier, or the built-in ``minilm-topics``).

dense evaluation → head, FFN and layer pruning (scored on training texts) → recovery by
distillation (the task's loss, :mod:`pruning.tasks.losses`); :func:`prune_text` hands the
two models and their export spec (:class:`TextGraphs`: dynamic batch and sequence axes,
latency at sequence length 128, the tokenizer in every artifact) to
:func:`pruning.artifacts.write_run`, as the tensor front half does. What differs per task
(data, evaluation, metrics, io, reference) is a :mod:`pruning.tasks` adapter.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.pruning.progress import reporter
from pruneguard.pruning.tasks import TextAdapter, TextEval, mean_cosine, text_adapter
from pruneguard.pruning.tasks.embedding import retrieval
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn

    from pruneguard.pruning.artifacts import RunRecord, Side
    from pruneguard.pruning.recipe import Recipe
    from pruneguard.pruning.tasks.losses import DistillLoss
    from pruneguard.pruning.text import SentenceEncoder

__all__ = [
    "EmbeddingEval",
    "EmbeddingOptions",
    "distill",
    "encode_batch",
    "evaluate",
    "export_encoder",
    "measure_latency",
    "prune_encoder",
    "prune_text",
    "sentence_batches",
]

GRADIENT_NOTE = (
    "criterion gradient on an embedding model is scored as taylor: a loss measured against the "
    "dense model itself has zero gradient at mask = 1, so Michel-style |dL/dmask| is noise there; "
    "the Taylor estimate of how far each head moves the normalised embedding is used instead."
)


@dataclass(frozen=True)
class EmbeddingOptions:
    """The recipe's ``embedding:`` section."""

    calibration: int = 96  # training sentences used to score heads/layers
    batch_size: int = 16
    seq_len: int = 128  # latency is measured at this sequence length
    max_length: int = 128  # tokeniser truncation
    train_sentences: int | None = None  # distil on the first N training sentences (None: all)
    eval_pairs: int | None = None  # evaluate on the first N paraphrase pairs (None: all)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> EmbeddingOptions:
        allowed = {f.name for f in fields(cls)}
        for key, value in raw.items():
            if key not in allowed:
                raise ConfigError(
                    f"embedding.{key}: unknown key; allowed: {', '.join(sorted(allowed))}"
                )
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"embedding.{key}={value!r}: must be an integer >= 1")
        return cls(**dict(raw))


EmbeddingEval = TextEval  # the name benches were written against


# --- evaluation ------------------------------------------------------------------------------


def evaluate(model: nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> TextEval:
    """Paraphrase retrieval in both directions: for a_i, is b_i the nearest b (and vice versa)?"""
    return retrieval(model, tokenizer, pairs)


# --- pruning and recovery --------------------------------------------------------------------


def sentence_batches(tokenizer: Any, sentences: Sequence[str], opts: EmbeddingOptions) -> list[Any]:
    from pruneguard.pruning.text import tokenize

    return [
        tokenize(tokenizer, sentences[i : i + opts.batch_size], max_length=opts.max_length)
        for i in range(0, len(sentences), opts.batch_size)
    ]


def encode_batch(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch)


def prune_encoder(
    model: nn.Module,
    recipe: Recipe,
    calibration: Sequence[Any],
    recover: Callable[[int], None],
) -> dict[str, Any]:
    """Prune ``model`` in place as the recipe says; ``recover(step)`` runs between steps.

    A combined recipe (``method: [head, ffn]``) runs its stages one after another, each with
    the schedule's steps, and ``recover`` runs between every two cuts (not after the last:
    the caller's final finetune follows); each stage runs on
    :func:`pruning.schedule.run_schedule`, as a channel schedule does (without its safety
    net). The order is fixed: layers first, so no head or neuron is scored in, or spent on, a layer about to go; then heads; FFN neurons last, the
    biggest cut, scored against the attention that stays and judged by Taylor scores on a
    network that has recovered from the earlier cuts. Each pruner is built only when its turn
    comes, so it finds the modules the earlier stages left. The reports are merged (their keys
    are disjoint); ``criterion_used`` is a mapping per method for a combined recipe.
    """
    from pruneguard.pruning.methods import PruneContext, build_pruner
    from pruneguard.pruning.schedule import run_schedule

    ctx = PruneContext(calibration=calibration, forward=encode_batch)
    for stage in recipe.stages:  # refuse before anything is cut
        if stage.method not in ("head", "layer", "ffn"):
            raise ConfigError(
                f"method={stage.method!r} with task embedding: use method head, layer or ffn "
                "(or a list of them, e.g. [head, ffn])"
            )
    used: dict[str, str] = {}
    report: dict[str, Any] = {}
    steps, last = recipe.schedule.steps, len(recipe.stages) - 1
    for k, stage in enumerate(recipe.stages):
        used[stage.method] = "taylor" if stage.criterion == "gradient" else stage.criterion
        scored = replace(stage, criterion=used[stage.method])

        def make(m: nn.Module, *_: Any, s: Any = scored) -> Any:
            return build_pruner(recipe, m, s.target.value, ctx, s)

        def between(_m: nn.Module, i: int, _n: int, k: int = k) -> None:
            recover(k * steps + i)

        _, pruner, _ = run_schedule(model, make, ratio=stage.target.value,
                                    criterion=scored.criterion, steps=steps, recover=between)  # fmt: skip
        if k < last:  # between two stages, as between two steps
            recover((k + 1) * steps - 1)
        pruner.finish()
        report.update(pruner.report())
    criterion_used: Any = used if recipe.combined else used[recipe.method]
    return {"criterion_used": criterion_used, **report}


def distill(
    student: nn.Module,
    teacher: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    epochs: int,
    lr: float,
    seed: int = 0,
    loss: DistillLoss | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> None:
    """Train ``student`` towards ``teacher`` on ``batches`` with the task's distillation
    ``loss`` (default: last-layer token hidden-state MSE, :mod:`pruning.tasks.losses`)."""
    import torch

    from pruneguard.pruning.tasks.losses import HiddenStates

    if epochs < 1:
        return
    loss = loss or HiddenStates()
    with torch.no_grad():
        targets = [loss.targets(teacher, b) for b in batches]
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    student.train()
    try:
        for epoch in range(epochs):
            total = 0.0
            for i in torch.randperm(len(batches), generator=gen).tolist():
                value = loss.loss(student, batches[i], targets[i])
                optimizer.zero_grad()
                value.backward()
                optimizer.step()
                total += float(value.detach())
            say(f"distill epoch {epoch + 1}/{epochs}: loss {total / len(batches):.5f}")
    finally:
        student.eval()


# --- export and measurement ------------------------------------------------------------------


def export_encoder(
    model: SentenceEncoder, path: Path, *, opset: int = 18, output_name: str = "sentence_embedding"
) -> None:
    """ONNX: the encoder's inputs (input_ids, attention_mask[, token_type_ids]) [batch, seq]
    → sentence_embedding."""
    import onnx
    import torch
    from torch.export import Dim

    from pruneguard.pruning.export import exporter_output

    names = list(model.input_names)
    batch, seq = Dim("batch"), Dim("seq")
    example = tuple(torch.ones(2, 16, dtype=torch.int64) for _ in names)
    dynamic = {name: {0: batch, 1: seq} for name in names}
    model.eval()
    with exporter_output(), torch.no_grad(), warnings.catch_warnings():
        # the inputs share the batch and seq dims on purpose; torch notes it as a warning
        warnings.filterwarnings("ignore", message=r".*The axis name: \w+ will not be used")
        torch.onnx.export(
            model, example, str(path), dynamo=True, external_data=False,
            dynamic_shapes=dynamic, opset_version=opset, input_names=names,
            output_names=[output_name],
        )  # fmt: skip
    onnx.checker.check_model(str(path), full_check=True)


def latency_feeds(
    batch: int, seq_len: int, *, names: Sequence[str] | None = None, vocab: int = 30522,
    seed: int = 0,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Random token ids (no padding) for ``names`` (default: BERT's three inputs)."""
    from pruneguard.pruning.text import INPUT_NAMES

    rng = np.random.default_rng(seed)
    values = {
        "input_ids": rng.integers(min(1000, vocab // 4), vocab, size=(batch, seq_len)),
        "attention_mask": np.ones((batch, seq_len)),
        "token_type_ids": np.zeros((batch, seq_len)),
    }
    return {name: values[name].astype(np.int64) for name in names or INPUT_NAMES}


def measure_latency(
    paths: Mapping[str, Path],
    *,
    batch_sizes: Sequence[int],
    seq_len: int,
    blocks: int,
    runs: int,
    threads: int = 1,
    names: Sequence[str] | None = None,
    vocab: int = 30522,
) -> dict[str, dict[str, dict[str, float]]]:
    """p50/p95 per model label and batch size (str), timed in alternating blocks, on random
    tokens at ``seq_len`` (for benches; a run times its graphs in :mod:`pruning.artifacts`)."""
    from pruneguard.pruning.artifacts import time_graphs

    return time_graphs(
        paths, lambda b: latency_feeds(b, seq_len, names=names, vocab=vocab),
        batch_sizes=batch_sizes, blocks=blocks, runs=runs, threads=threads,
    )  # fmt: skip


def count_macs(model: SentenceEncoder, seq_len: int) -> int:
    """Multiply-accumulates of one sequence of ``seq_len`` tokens (torch's FLOP counter / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    raw = latency_feeds(1, seq_len, names=model.input_names, vocab=vocab_size(model))
    feeds = {k: torch.from_numpy(v) for k, v in raw.items()}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(**feeds)
    return int(counter.get_total_flops() // 2)


def vocab_size(model: SentenceEncoder) -> int:
    return int(getattr(model.bert.config, "vocab_size", 30522))


# --- the front half of a text run (pruning.pipeline.run; pruning.artifacts does the rest) ---


def _side(
    model: SentenceEncoder, adapter: TextAdapter, seq_len: int
) -> tuple[Side, dict[str, Any]]:
    """The model measured in torch, and its attention memory."""
    from pruneguard.pruning.artifacts import Side
    from pruneguard.pruning.methods.heads import attention_memory

    params = sum(p.numel() for p in model.parameters())
    side = Side(model, adapter.evaluate(model), params, count_macs(model, seq_len))
    return side, attention_memory(model)


def _closeness(adapter: TextAdapter, a: TextEval, b: TextEval) -> tuple[str, float]:
    if adapter.output_name == "logits":
        return "agreement", float((a.predictions == b.predictions).mean())
    return "cosine", mean_cosine(a, b)


def prune_text(
    recipe: Recipe, *, progress: bool = True
) -> tuple[TextGraphs, Side, Side, RunRecord]:
    """Dense evaluation, pruning (:func:`prune_encoder`) and recovery by the task's
    distillation loss; the dense and pruned sides, the graphs' spec and what the run did."""
    import torch

    from pruneguard.pruning.artifacts import RunRecord, Side

    say = reporter(progress, "text")
    opts = EmbeddingOptions.from_mapping(recipe.extra)
    torch.manual_seed(recipe.seed)
    adapter = text_adapter(
        recipe, train_limit=opts.train_sentences, eval_pairs=opts.eval_pairs,
        max_length=opts.max_length,
    )  # fmt: skip
    adapter.prepare(recipe, say)
    teacher, tokenizer = adapter.model, adapter.tokenizer
    dense, dense_memory = _side(teacher, adapter, opts.seq_len)
    say(f"dense: accuracy {dense.evaluation.accuracy:.4f}")
    student = copy.deepcopy(teacher)
    train = sentence_batches(tokenizer, adapter.train_texts, opts)
    calibration = sentence_batches(tokenizer, adapter.train_texts[: opts.calibration], opts)

    def recover(step: int, epochs: int | None = None) -> None:
        n = recipe.finetune.recovery_epochs if epochs is None else epochs
        distill(student, teacher, train, epochs=n, lr=recipe.finetune.lr, seed=step,
                loss=adapter.distill_loss, say=say)  # fmt: skip

    report = prune_encoder(student, recipe, calibration, recover)
    what, before = _closeness(adapter, adapter.evaluate(student), dense.evaluation)
    say(f"pruned: {what} with dense before recovery {before:.4f}")
    recover(recipe.schedule.steps, recipe.finetune.epochs)
    pruned, memory = _side(student, adapter, opts.seq_len)
    report[f"{'mean_cosine' if what == 'cosine' else what}_before_recovery"] = before
    _, after = _closeness(adapter, pruned.evaluation, dense.evaluation)
    say(f"pruned: accuracy {pruned.evaluation.accuracy:.4f}, {what} {after:.4f}")

    def extra(mem: dict[str, Any]) -> dict[str, Any]:
        return {
            "macs_at_seq_len": opts.seq_len,
            "attention_memory": {"before": dense_memory, "after": mem},
            "kv_bytes_per_token": mem["kv_bytes_per_token"],
            "baseline_kv_bytes_per_token": dense_memory["kv_bytes_per_token"],
        }

    notes = [adapter.note] + ([GRADIENT_NOTE] if "gradient" in str(recipe.criterion) else [])
    model_name = recipe.model.builtin or (recipe.model.hf and recipe.model.hf.name)
    record = RunRecord(
        pruning={**recipe.pruning_section(), **report,
                 "distillation": adapter.distill_loss.as_dict()},
        notes=notes,
        source={"model": model_name, "transformers": _version("transformers")},
    )  # fmt: skip
    return (
        TextGraphs(adapter, opts, teacher, int(dense.evaluation.outputs.shape[1])),
        Side(teacher, dense.evaluation, dense.params, dense.macs, extra(dense_memory)),
        Side(student, pruned.evaluation, pruned.params, pruned.macs, extra(memory)),
        record,
    )


class TextGraphs:
    """How a text model's graphs are made and fed: the tokenizer's inputs [batch, seq] → the
    task's output; parity on held-out texts, latency on random tokens at ``seq_len``; the
    tokenizer travels in every artifact."""

    def __init__(
        self, adapter: TextAdapter, opts: EmbeddingOptions, dense: SentenceEncoder, width: int
    ) -> None:
        self.adapter, self.opts, self.dense, self.width = adapter, opts, dense, width

    def export(self, model: nn.Module, path: Path, opset: int) -> None:
        export_encoder(model, path, opset=opset, output_name=self.adapter.output_name)  # type: ignore[arg-type]

    def parity(self, model: nn.Module, path: Path) -> float:
        from pruneguard.pruning.export import parity

        return parity(model, path, self.parity_feeds())

    def time(
        self, paths: Mapping[str, Path], recipe: Recipe, progress: bool
    ) -> dict[str, dict[str, dict[str, float]]]:
        from pruneguard.pruning.artifacts import time_recipe

        return time_recipe(paths, self.latency_feeds, recipe, progress)

    def parity_feeds(self) -> dict[str, np.ndarray]:
        from pruneguard.pruning.text import tokenize

        texts = self.adapter.sample_texts()
        batch = tokenize(self.adapter.tokenizer, texts, max_length=self.opts.max_length)
        return {name: batch[name].numpy() for name in self.dense.input_names}

    def latency_feeds(self, batch: int) -> dict[str, np.ndarray]:
        return latency_feeds(batch, self.opts.seq_len, names=self.dense.input_names,
                             vocab=vocab_size(self.dense))  # fmt: skip

    def calibration_feeds(self) -> list[dict[str, np.ndarray]]:
        return []  # text models quantize dynamically (recipe validation refuses static)

    def evaluate_graph(self, path: Path, threads: int | None) -> tuple[TextEval, np.ndarray]:
        from pruneguard.pruning.quantize import OnnxModule

        evaluation = self.adapter.evaluate(OnnxModule(path, threads))  # type: ignore[arg-type]
        return evaluation, evaluation.outputs

    def quality(self, evaluation: TextEval, dense: TextEval) -> dict[str, Any]:
        return self.adapter.metrics(evaluation, dense)

    def io(self) -> dict[str, Any]:
        from pruneguard.pruning.text import input_names, text_io

        names, width = input_names(self.adapter.tokenizer), self.width
        inputs = [{"name": n, "dtype": "int64", "shape": ["batch", "seq"]} for n in names]
        output = {"name": self.adapter.output_name, "dtype": "float32", "shape": ["batch", width]}
        return {
            "inputs": inputs,
            "outputs": [output],
            "text": text_io(self.adapter.tokenizer, max_length=self.opts.max_length),
            **self.adapter.io(width),
        }

    def reference(self, evaluation: TextEval) -> pd.DataFrame:
        return self.adapter.reference(evaluation)

    def save_files(self, folder: Path, label: str) -> None:
        from pruneguard.pruning.text import save_tokenizer

        save_tokenizer(self.adapter.tokenizer, folder)


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
