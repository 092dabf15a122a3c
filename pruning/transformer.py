"""The pipeline for text models: sentence encoders (``task: embedding``) and text
classifiers (a ``model: {hf: PATH}`` classifier, or the built-in ``minilm-topics``).

dense evaluation → head, FFN and layer pruning (scored on training texts) → recovery by
distillation (token hidden-state MSE to the dense teacher) → ONNX export with dynamic batch
and sequence axes → parity → dynamic int8 (when the recipe quantizes) → ONNX Runtime latency
at sequence length 128 → two artifacts (three with int8), each with its tokenizer. What
differs per task (data, evaluation, metrics, io, reference) is a :mod:`pruning.tasks` adapter.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.pruning.progress import reporter
from pruneguard.pruning.staging import staged_pair
from pruneguard.pruning.tasks import TextAdapter, TextEval, mean_cosine, text_adapter
from pruneguard.pruning.tasks.embedding import retrieval
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pruneguard.pruning.recipe import Recipe
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
    "run",
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
    the caller's final finetune follows). The order is fixed: layers first, so no head or
    neuron is scored in, or spent on, a layer about to go; then heads; FFN neurons last, the
    biggest cut, scored against the attention that stays and judged by Taylor scores on a
    network that has recovered from the earlier cuts. Each pruner is built only when its turn
    comes, so it finds the modules the earlier stages left. The reports are merged (their keys
    are disjoint); ``criterion_used`` is a mapping per method for a combined recipe.
    """
    from pruneguard.pruning.methods import PruneContext, build_pruner

    ctx = PruneContext(calibration=calibration, forward=encode_batch)
    for stage in recipe.stages:  # refuse before anything is cut
        if stage.method not in ("head", "layer", "ffn"):
            raise ConfigError(
                f"method={stage.method!r} with task embedding: use method head, layer or ffn "
                "(or a list of them, e.g. [head, ffn])"
            )
    used: dict[str, str] = {}
    report: dict[str, Any] = {}
    cuts, total = 0, recipe.schedule.steps * len(recipe.stages)
    for stage in recipe.stages:
        used[stage.method] = "taylor" if stage.criterion == "gradient" else stage.criterion
        scored = replace(stage, criterion=used[stage.method])
        pruner = build_pruner(recipe, model, stage.target.value, ctx, scored)
        for _ in range(recipe.schedule.steps):
            pruner.step()
            cuts += 1
            if cuts < total:
                recover(cuts - 1)
        pruner.finish()
        report.update(pruner.report())
    criterion_used: Any = used if recipe.combined else used[recipe.method]
    return {"criterion_used": criterion_used, **report}


def distill(
    student: SentenceEncoder,
    teacher: SentenceEncoder,
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    epochs: int,
    lr: float,
    seed: int = 0,
    say: Callable[[str], None] = lambda _m: None,
) -> None:
    """Train ``student`` to match ``teacher``'s last hidden states (MSE over real tokens)."""
    import torch

    if epochs < 1:
        return
    with torch.no_grad():
        targets = [teacher.hidden(**b) for b in batches]
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    student.train()
    try:
        for epoch in range(epochs):
            total = 0.0
            for i in torch.randperm(len(batches), generator=gen).tolist():
                mask = batches[i]["attention_mask"].unsqueeze(-1).float()
                diff = (student.hidden(**batches[i]) - targets[i]) * mask
                loss = diff.pow(2).sum() / (mask.sum() * diff.shape[-1])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
            say(f"distill epoch {epoch + 1}/{epochs}: hidden-state mse {total / len(batches):.5f}")
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


def parity(model: nn.Module, path: Path, feeds: Mapping[str, torch.Tensor]) -> float:
    """Max |torch − ONNX Runtime| of the embeddings for ``feeds``."""
    import torch

    from pruneguard.pruning.latency import make_session

    session = make_session(path)
    (onnx_out,) = session.run(None, {k: v.numpy() for k, v in feeds.items()})
    with torch.no_grad():
        torch_out = model.eval()(**feeds).numpy()
    return float(np.abs(torch_out - onnx_out).max())


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
    """p50/p95 per model label and batch size (str), timed in alternating blocks."""
    from pruneguard.pruning.latency import compare_latency, make_session

    sessions = {label: make_session(p, threads) for label, p in paths.items()}
    result: dict[str, dict[str, dict[str, float]]] = {label: {} for label in paths}
    for b in batch_sizes:
        feeds = latency_feeds(b, seq_len, names=names, vocab=vocab)
        stats = compare_latency(sessions, feeds, blocks=blocks, runs_per_block=runs)
        for label, s in stats.items():
            result[label][str(b)] = s.as_dict()
    return result


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


# --- the run ---------------------------------------------------------------------------------


@dataclass
class _Side:
    """What is measured for one of the two models."""

    model: SentenceEncoder
    evaluation: TextEval
    params: int
    macs: int
    memory: dict[str, Any]
    seq_len: int


def _side(model: SentenceEncoder, adapter: TextAdapter, seq_len: int) -> _Side:
    from pruneguard.pruning.methods.heads import attention_memory

    return _Side(
        model=model,
        evaluation=adapter.evaluate(model),
        params=sum(p.numel() for p in model.parameters()),
        macs=count_macs(model, seq_len),
        memory=attention_memory(model),
        seq_len=seq_len,
    )


def _closeness(adapter: TextAdapter, a: TextEval, b: TextEval) -> tuple[str, float]:
    if adapter.output_name == "logits":
        return "agreement", float((a.predictions == b.predictions).mean())
    return "cosine", mean_cosine(a, b)


def run(
    recipe: Recipe, out_dir: str | os.PathLike[str], *, progress: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a text recipe end to end; write ``out_dir/dense`` and ``out_dir/pruned`` (and
    ``out_dir/quantized``)."""
    import torch

    say = reporter(progress, "text")
    opts = EmbeddingOptions.from_mapping(recipe.extra)
    torch.manual_seed(recipe.seed)
    adapter = text_adapter(
        recipe, train_limit=opts.train_sentences, eval_pairs=opts.eval_pairs,
        max_length=opts.max_length,
    )  # fmt: skip
    adapter.prepare(recipe, say)
    teacher, tokenizer = adapter.model, adapter.tokenizer
    dense = _side(teacher, adapter, opts.seq_len)
    say(f"dense: accuracy {dense.evaluation.accuracy:.4f}")
    student = copy.deepcopy(teacher)
    train = sentence_batches(tokenizer, adapter.train_texts, opts)
    calibration = sentence_batches(tokenizer, adapter.train_texts[: opts.calibration], opts)

    def recover(step: int, epochs: int | None = None) -> None:
        n = recipe.finetune.recovery_epochs if epochs is None else epochs
        distill(student, teacher, train, epochs=n, lr=recipe.finetune.lr, seed=step, say=say)

    report = prune_encoder(student, recipe, calibration, recover)
    what, before = _closeness(adapter, adapter.evaluate(student), dense.evaluation)
    say(f"pruned: {what} with dense before recovery {before:.4f}")
    recover(recipe.schedule.steps, recipe.finetune.epochs)
    pruned = _side(student, adapter, opts.seq_len)
    report[f"{'mean_cosine' if what == 'cosine' else what}_before_recovery"] = before
    _, after = _closeness(adapter, pruned.evaluation, dense.evaluation)
    say(f"pruned: accuracy {pruned.evaluation.accuracy:.4f}, {what} {after:.4f}")
    return _write(recipe, Path(out_dir), dense, pruned, report, adapter, opts, say)


def _write(
    recipe: Recipe, out: Path, dense: _Side, pruned: _Side, report: dict[str, Any],
    adapter: TextAdapter, opts: EmbeddingOptions, say: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    from pruneguard.pruning.text import tokenize
    from pruneguard.registry.artifact import sha256_file

    with staged_pair(out) as staging:
        say("exporting to ONNX; measuring parity and latency")
        paths = {"dense": staging / "dense.onnx", "pruned": staging / "pruned.onnx"}
        sample = tokenize(adapter.tokenizer, adapter.sample_texts(), max_length=opts.max_length)
        diffs = {}
        for label, side in (("dense", dense), ("pruned", pruned)):
            export_encoder(side.model, paths[label], opset=recipe.export.opset,
                           output_name=adapter.output_name)  # fmt: skip
            diffs[label] = parity(side.model, paths[label], sample)
        record = None
        if recipe.quantize is not None:
            from pruneguard.pruning.quantize import quantize_onnx

            say(f"int8: ONNX Runtime {recipe.quantize.mode} quantization of the pruned graph")
            paths["quantized"] = staging / "quantized.onnx"
            record = quantize_onnx(paths["pruned"], paths["quantized"], recipe.quantize)
        lat = measure_latency(
            paths, batch_sizes=recipe.export.batch_sizes, seq_len=opts.seq_len,
            blocks=recipe.export.latency_blocks, runs=recipe.export.latency_runs,
            threads=recipe.export.ort_threads, names=dense.model.input_names,
            vocab=vocab_size(dense.model),
        )  # fmt: skip
        parent = {"sha256": sha256_file(paths["dense"]), "tag": None}
        manifests = _artifacts(
            recipe, staging, dense, pruned, report, diffs, lat, parent, adapter, opts
        )
        if record is not None:
            _write_int8(recipe, staging, dense, manifests[1], adapter, lat, record)
    say(f"wrote {', '.join(str(out / side) for side in paths)}")
    return manifests


def _write_int8(
    recipe: Recipe, staging: Path, dense: _Side, pm: dict[str, Any], adapter: TextAdapter,
    lat: dict[str, Any], record: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The int8 artifact: its graph evaluated by the adapter as the torch models were, its
    outputs compared with the fp32 parent graph's on the same held-out texts."""
    from pruneguard.pruning.manifest import quantized_manifest
    from pruneguard.pruning.quantize import OnnxModule, parent_parity
    from pruneguard.registry.artifact import sha256_file, write_artifact

    threads = recipe.export.ort_threads
    int8, fp32 = (adapter.evaluate(OnnxModule(staging / f"{side}.onnx", threads))  # type: ignore[arg-type]
                  for side in ("quantized", "pruned"))  # fmt: skip
    quality = {
        "accuracy": int8.accuracy,
        **adapter.metrics(int8, dense.evaluation),
        "agreement_with_baseline": float((int8.predictions == dense.evaluation.predictions).mean()),
    }
    qm = quantized_manifest(
        pm, {"sha256": sha256_file(staging / "pruned.onnx"), "tag": None}, recipe=recipe,
        quality=quality, latency=lat, onnx_bytes=(staging / "quantized.onnx").stat().st_size,
        parity=parent_parity(pm, int8.outputs, fp32.outputs), quantization=record,
    )  # fmt: skip
    return write_artifact(staging / "quantized", qm, _files(staging, "quantized", int8, adapter))


def _artifacts(
    recipe: Recipe, staging: Path, dense: _Side, pruned: _Side, report: dict[str, Any],
    diffs: dict[str, float], lat: dict[str, Any], parent: dict[str, Any], adapter: TextAdapter,
    opts: EmbeddingOptions,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    from pruneguard.pruning.manifest import build_manifest, latency_metrics
    from pruneguard.registry.artifact import write_artifact

    def metrics(side: _Side, label: str) -> dict[str, Any]:
        agree = float((side.evaluation.predictions == dense.evaluation.predictions).mean())
        timing = latency_metrics(lat["dense"], lat[label], recipe.export.latency_setup())
        return {
            "accuracy": side.evaluation.accuracy,
            "baseline_accuracy": dense.evaluation.accuracy,
            "accuracy_drop": dense.evaluation.accuracy - side.evaluation.accuracy,
            **adapter.metrics(side.evaluation, dense.evaluation),
            "params": side.params, "baseline_params": dense.params,
            "params_reduction": 1.0 - side.params / dense.params,
            "macs": side.macs, "baseline_macs": dense.macs,
            "macs_reduction": 1.0 - side.macs / dense.macs,
            "macs_at_seq_len": side.seq_len,
            "onnx_bytes": (staging / f"{label}.onnx").stat().st_size,
            "baseline_onnx_bytes": (staging / "dense.onnx").stat().st_size,
            **timing,
            "parity_max_abs_diff": diffs[label],
            "agreement_with_baseline": agree,
            "attention_memory": {"before": dense.memory, "after": side.memory},
            "kv_bytes_per_token": side.memory["kv_bytes_per_token"],
            "baseline_kv_bytes_per_token": dense.memory["kv_bytes_per_token"],
        }  # fmt: skip

    notes = [adapter.note] + ([GRADIENT_NOTE] if "gradient" in str(recipe.criterion) else [])
    model_name = recipe.model.builtin or (recipe.model.hf and recipe.model.hf.name)
    source = {"model": model_name, "transformers": _version("transformers")}
    io = _io(dense, adapter, opts)
    dm = build_manifest(
        name=recipe.name,
        kind="dense",
        parent=None,
        pruning=None,
        metrics=metrics(dense, "dense"),
        io=io,
        notes=notes,
        source=source,
    )
    pruned_metrics = metrics(pruned, "pruned")
    pruning = {
        **recipe.pruning_section(),
        **report,
        "acceptance": recipe.acceptance(pruned_metrics),
    }
    pm = build_manifest(name=recipe.name, kind="pruned", parent=parent, pruning=pruning,
                        metrics=pruned_metrics, io=io, notes=notes, source=source)  # fmt: skip
    return (
        write_artifact(staging / "dense", dm, _files(staging, "dense", dense.evaluation, adapter)),
        write_artifact(
            staging / "pruned", pm, _files(staging, "pruned", pruned.evaluation, adapter)
        ),
    )


def _files(
    staging: Path, label: str, evaluation: TextEval, adapter: TextAdapter
) -> Callable[[Path], None]:
    """What goes into an artifact beside its manifest: the graph, the reference, the tokenizer."""
    from pruneguard.pruning.text import save_tokenizer

    def write_files(tmp: Path) -> None:
        shutil.copyfile(staging / f"{label}.onnx", tmp / "model.onnx")
        adapter.reference(evaluation).to_parquet(tmp / "reference.parquet", index=False)
        save_tokenizer(adapter.tokenizer, tmp)

    return write_files


def _io(dense: _Side, adapter: TextAdapter, opts: EmbeddingOptions) -> dict[str, Any]:
    from pruneguard.pruning.text import input_names, text_io

    names = input_names(adapter.tokenizer)
    width = int(dense.evaluation.outputs.shape[1])
    inputs = [{"name": n, "dtype": "int64", "shape": ["batch", "seq"]} for n in names]
    return {
        "inputs": inputs,
        "outputs": [{"name": adapter.output_name, "dtype": "float32", "shape": ["batch", width]}],
        "text": text_io(adapter.tokenizer, max_length=opts.max_length),
        **adapter.io(width),
    }


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
