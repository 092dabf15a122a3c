"""The pipeline for ``task: embedding`` recipes (all-MiniLM-L6-v2).

dense evaluation → head or layer pruning (scored on unlabelled sentences) → recovery by
distillation (token hidden-state MSE to the dense teacher) → ONNX export with dynamic batch
and sequence axes → parity → ONNX Runtime latency at sequence length 128 → two artifacts.

An embedding model has no class labels, so its "accuracy" is paraphrase retrieval on
held-out pairs (is each sentence's paraphrase its nearest neighbour?) and its closeness to
the dense model is the mean cosine between pruned and dense embeddings; the manifest's
notes say so.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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

# not "embedding": the exporter already names the output of aten.embedding that way
OUTPUT_NAME = "sentence_embedding"
EMBEDDING_NOTE = (
    "Embedding model: metrics.accuracy / baseline_accuracy are paraphrase-retrieval accuracy on "
    "held-out pairs (pruning/data/paraphrases.tsv: is each sentence's paraphrase its nearest "
    "neighbour among all paraphrases?); metrics.mean_cosine_to_dense is the mean cosine between "
    "this model's and the dense model's embeddings of the same held-out sentences; "
    "agreement_with_baseline is the share of retrieval answers equal to the dense model's."
)
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


@dataclass(frozen=True)
class EmbeddingEval:
    embeddings: np.ndarray  # (2n, hidden): the left sentences, then the right ones
    predictions: np.ndarray  # retrieved partner index per query
    labels: np.ndarray  # true partner index per query
    retrieval_accuracy: float


def _say(progress: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if progress:
            print(f"[embedding] {message}", file=sys.stderr, flush=True)

    return say


# --- evaluation ------------------------------------------------------------------------------


def evaluate(model: nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> EmbeddingEval:
    """Paraphrase retrieval in both directions: for a_i, is b_i the nearest b (and vice versa)?"""
    from pruneguard.pruning.text import embed

    left = embed(model, tokenizer, [a for a, _ in pairs]).numpy()
    right = embed(model, tokenizer, [b for _, b in pairs]).numpy()
    sim = left @ right.T
    predictions = np.concatenate([sim.argmax(1), sim.argmax(0)])
    labels = np.concatenate([np.arange(len(pairs))] * 2)
    return EmbeddingEval(
        embeddings=np.concatenate([left, right]),
        predictions=predictions,
        labels=labels,
        retrieval_accuracy=float((predictions == labels).mean()),
    )


def mean_cosine(a: EmbeddingEval, b: EmbeddingEval) -> float:
    """Mean cosine between two models' (normalised) embeddings of the same sentences."""
    return float((a.embeddings * b.embeddings).sum(1).mean())


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
    """Prune ``model`` in place as the recipe says; ``recover(step)`` runs between steps."""
    from pruneguard.pruning.heads import HeadPruner
    from pruneguard.pruning.layers import LayerPruner

    criterion = "taylor" if recipe.criterion == "gradient" else recipe.criterion
    common: dict[str, Any] = {
        "criterion": criterion,
        "steps": recipe.schedule.steps,
        "calibration": calibration,
        "forward": encode_batch,
        "seed": recipe.seed,
    }
    pruner: HeadPruner | LayerPruner
    if recipe.method == "head":
        pruner = HeadPruner(model, target=recipe.target.value, scope=recipe.scope, **common)
    elif recipe.method == "layer":
        pruner = LayerPruner(model, target=int(recipe.target.value), **common)
    else:
        raise ConfigError(f"method={recipe.method!r} with task embedding: use method head or layer")
    for step in range(recipe.schedule.steps):
        pruner.step()
        if step < recipe.schedule.steps - 1:
            recover(step)
    pruner.finish()
    return {"criterion_used": criterion, **pruner.report()}


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


def export_encoder(model: nn.Module, path: Path, *, opset: int = 18) -> None:
    """ONNX: input_ids/attention_mask/token_type_ids [batch, seq] → sentence_embedding."""
    import onnx
    import torch
    from torch.export import Dim

    from pruneguard.pruning.export import exporter_output
    from pruneguard.pruning.text import INPUT_NAMES

    batch, seq = Dim("batch"), Dim("seq")
    example = tuple(torch.ones(2, 16, dtype=torch.int64) for _ in INPUT_NAMES)
    dynamic = {name: {0: batch, 1: seq} for name in INPUT_NAMES}
    model.eval()
    with exporter_output(), torch.no_grad(), warnings.catch_warnings():
        # the three inputs share the batch and seq dims on purpose; torch notes it as a warning
        warnings.filterwarnings("ignore", message=r".*The axis name: \w+ will not be used")
        torch.onnx.export(
            model, example, str(path), dynamo=True, external_data=False,
            dynamic_shapes=dynamic, opset_version=opset, input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
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


def latency_feeds(batch: int, seq_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1000, 29000, size=(batch, seq_len), dtype=np.int64),
        "attention_mask": np.ones((batch, seq_len), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq_len), dtype=np.int64),
    }


def measure_latency(
    paths: Mapping[str, Path],
    *,
    batch_sizes: Sequence[int],
    seq_len: int,
    blocks: int,
    runs: int,
    threads: int = 1,
) -> dict[str, dict[str, dict[str, float]]]:
    """p50/p95 per model label and batch size (str), timed in alternating blocks."""
    from pruneguard.pruning.latency import compare_latency, make_session

    sessions = {label: make_session(p, threads) for label, p in paths.items()}
    result: dict[str, dict[str, dict[str, float]]] = {label: {} for label in paths}
    for b in batch_sizes:
        stats = compare_latency(
            sessions, latency_feeds(b, seq_len), blocks=blocks, runs_per_block=runs
        )
        for label, s in stats.items():
            result[label][str(b)] = s.as_dict()
    return result


def count_macs(model: nn.Module, seq_len: int) -> int:
    """Multiply-accumulates of one sequence of ``seq_len`` tokens (torch's FLOP counter / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    feeds = {k: torch.from_numpy(v) for k, v in latency_feeds(1, seq_len).items()}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(**feeds)
    return int(counter.get_total_flops() // 2)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class _Side:
    """What is measured for one of the two models."""

    model: nn.Module
    evaluation: EmbeddingEval
    params: int
    macs: int
    memory: dict[str, Any]
    seq_len: int


def _load(recipe: Recipe) -> tuple[SentenceEncoder, Any]:
    from pruneguard.pruning.text import MINILM, load_minilm

    if recipe.model.builtin != MINILM:
        raise ConfigError(
            f"model={recipe.model.builtin or recipe.model.factory!r} with task embedding: "
            f"only model: {{builtin: {MINILM}}} is supported"
        )
    return load_minilm()


def _side(model: nn.Module, tokenizer: Any, pairs: Any, seq_len: int) -> _Side:
    from pruneguard.pruning.heads import attention_memory

    return _Side(
        model=model,
        evaluation=evaluate(model, tokenizer, pairs),
        params=sum(p.numel() for p in model.parameters()),
        macs=count_macs(model, seq_len),
        memory=attention_memory(model),
        seq_len=seq_len,
    )


def run(
    recipe: Recipe, out_dir: str | os.PathLike[str], *, progress: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run an embedding recipe end to end; write ``out_dir/dense`` and ``out_dir/pruned``."""
    import torch

    from pruneguard.pruning.text import load_paraphrases, load_sentences

    say = _say(progress)
    opts = EmbeddingOptions.from_mapping(recipe.extra)
    torch.manual_seed(recipe.seed)
    teacher, tokenizer = _load(recipe)
    pairs = load_paraphrases()[: opts.eval_pairs]
    sentences = load_sentences()[: opts.train_sentences]
    dense = _side(teacher, tokenizer, pairs, opts.seq_len)
    say(f"dense: retrieval {dense.evaluation.retrieval_accuracy:.4f}")
    student = copy.deepcopy(teacher)
    train = sentence_batches(tokenizer, sentences, opts)
    calibration = sentence_batches(tokenizer, sentences[: opts.calibration], opts)

    def recover(step: int, epochs: int | None = None) -> None:
        n = recipe.finetune.recovery_epochs if epochs is None else epochs
        distill(student, teacher, train, epochs=n, lr=recipe.finetune.lr, seed=step, say=say)

    report = prune_encoder(student, recipe, calibration, recover)
    before = mean_cosine(evaluate(student, tokenizer, pairs), dense.evaluation)
    say(f"pruned: cosine to dense before recovery {before:.4f}")
    recover(recipe.schedule.steps, recipe.finetune.epochs)
    pruned = _side(student, tokenizer, pairs, opts.seq_len)
    report["mean_cosine_before_recovery"] = before
    say(f"pruned: retrieval {pruned.evaluation.retrieval_accuracy:.4f}, cosine "
        f"{mean_cosine(pruned.evaluation, dense.evaluation):.4f}")  # fmt: skip
    return _write(recipe, Path(out_dir), dense, pruned, report, tokenizer, pairs, opts, say)


def _write(
    recipe: Recipe, out: Path, dense: _Side, pruned: _Side, report: dict[str, Any],
    tokenizer: Any, pairs: Any, opts: EmbeddingOptions, say: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    from pruneguard.pruning.text import tokenize
    from pruneguard.registry.artifact import sha256_file

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        say("exporting to ONNX; measuring parity and latency")
        paths = {"dense": staging / "dense.onnx", "pruned": staging / "pruned.onnx"}
        sample = tokenize(tokenizer, [a for a, _ in pairs[:16]], max_length=opts.max_length)
        diffs = {}
        for label, side in (("dense", dense), ("pruned", pruned)):
            export_encoder(side.model, paths[label], opset=recipe.export.opset)
            diffs[label] = parity(side.model, paths[label], sample)
        lat = measure_latency(
            paths, batch_sizes=recipe.export.batch_sizes, seq_len=opts.seq_len,
            blocks=recipe.export.latency_blocks, runs=recipe.export.latency_runs,
            threads=recipe.export.ort_threads,
        )  # fmt: skip
        parent = {"sha256": sha256_file(paths["dense"]), "tag": None}
        manifests = _artifacts(recipe, staging, dense, pruned, report, diffs, lat, parent)
        _move_into(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"wrote {out / 'dense'} and {out / 'pruned'}")
    return manifests


def _move_into(staging: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("dense", "pruned"):
        if (out / sub).exists():
            raise ConfigError(f"{out / sub} already exists; choose another --out or remove it")
    os.rename(staging / "dense", out / "dense")
    try:
        os.rename(staging / "pruned", out / "pruned")
    except BaseException:
        os.rename(out / "dense", staging / "dense")
        raise


def _artifacts(
    recipe: Recipe, staging: Path, dense: _Side, pruned: _Side, report: dict[str, Any],
    diffs: dict[str, float], lat: dict[str, Any], parent: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    from pruneguard.pruning.manifest import build_manifest, latency_metrics
    from pruneguard.registry.artifact import write_artifact

    def metrics(side: _Side, label: str) -> dict[str, Any]:
        cosine = mean_cosine(side.evaluation, dense.evaluation)
        agree = float((side.evaluation.predictions == dense.evaluation.predictions).mean())
        timing = latency_metrics(lat["dense"], lat[label], recipe.export.latency_setup())
        return {
            "accuracy": side.evaluation.retrieval_accuracy,
            "baseline_accuracy": dense.evaluation.retrieval_accuracy,
            "retrieval_accuracy": side.evaluation.retrieval_accuracy,
            "mean_cosine_to_dense": cosine,
            "params": side.params, "baseline_params": dense.params,
            "macs": side.macs, "baseline_macs": dense.macs,
            "macs_at_seq_len": side.seq_len,
            "onnx_bytes": (staging / f"{label}.onnx").stat().st_size,
            **timing,
            "parity_max_abs_diff": diffs[label],
            "agreement_with_baseline": agree,
            "attention_memory": {"before": dense.memory, "after": side.memory},
            "kv_bytes_per_token": side.memory["kv_bytes_per_token"],
            "baseline_kv_bytes_per_token": dense.memory["kv_bytes_per_token"],
        }  # fmt: skip

    def writer(label: str, side: _Side) -> Callable[[Path], None]:
        def write_files(tmp: Path) -> None:
            shutil.copyfile(staging / f"{label}.onnx", tmp / "model.onnx")
            _reference(side.evaluation).to_parquet(tmp / "reference.parquet", index=False)

        return write_files

    notes = [EMBEDDING_NOTE] + ([GRADIENT_NOTE] if recipe.criterion == "gradient" else [])
    source = {"model": recipe.model.builtin, "transformers": _version("transformers")}
    io = _io(dense.evaluation.embeddings.shape[1])
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
        write_artifact(staging / "dense", dm, writer("dense", dense)),
        write_artifact(staging / "pruned", pm, writer("pruned", pruned)),
    )


def _io(hidden: int) -> dict[str, Any]:
    from pruneguard.pruning.text import INPUT_NAMES

    inputs = [{"name": n, "dtype": "int64", "shape": ["batch", "seq"]} for n in INPUT_NAMES]
    return {
        "inputs": inputs,
        "outputs": [{"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", hidden]}],
        "class_labels": [],
        "description": "all-MiniLM-L6-v2 tokens (BERT WordPiece, max 128) → L2-normalised "
        "mean-pooled sentence embedding",
    }


def _reference(evaluation: EmbeddingEval) -> Any:
    """Held-out embeddings as f0..fN, with the true and retrieved paraphrase index."""
    import pandas as pd

    emb = evaluation.embeddings
    frame = pd.DataFrame({f"f{i}": emb[:, i].astype("float32") for i in range(emb.shape[1])})
    frame["label"] = evaluation.labels.astype("int64")
    frame["prediction"] = evaluation.predictions.astype("int64")
    return frame


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
