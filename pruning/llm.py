"""The front half of a ``task: causal-lm`` run: a decoder LLM scored, cut uniformly across
layers, recovered by distillation and judged on held-out data; then its graphs' spec
(:class:`DecoderGraphs`) for :func:`pruning.artifacts.write_run`.

The recipe's stages (``layer``, ``head``, ``ffn``, in that order) are all scored on the
dense model and applied as one :class:`~pruning.methods.decoder.DecoderPlan`: KV groups by
measured ablation, Taylor or L2; FFN channels by activation or Taylor; layers by Block
Influence. Recovery distils the dense model's next-token distributions on its own answers
to the training chat prompts and on plain sentences (``finetune.epochs`` passes at
``finetune.lr``); its minutes go into the manifest.

What a run's artifact holds (DESIGN §3.8): ``model.onnx`` (onnxruntime-genai's decoder graph
with its KV cache, in one file), ``genai_config.json`` and the tokenizer files beside it (the
folder is what genai loads), ``hf/`` (the transformers folder), ``reference.parquet`` (the
held-out prompts with the model's scores on them).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.pruning.progress import reporter
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from pruneguard.pruning.artifacts import RunRecord, Side
    from pruneguard.pruning.methods.decoder import CausalLM, DecoderPlan
    from pruneguard.pruning.methods.decoder_scores import Batch
    from pruneguard.pruning.recipe import Recipe
    from pruneguard.pruning.tasks.causal_lm import Answer, LMEval

__all__ = ["DecoderEval", "DecoderGraphs", "LMOptions", "plan", "prune_causal_lm"]

HF = "hf"  # the transformers folder inside an artifact
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "special_tokens_map.json", "tokenizer.model")  # fmt: skip


@dataclass(frozen=True)
class LMOptions:
    """``data.options`` of a causal-lm recipe (``data: {builtin: chat, options: {...}}``):
    how much of the built-in chat prompts and sentences a run uses, and the generation and
    timing lengths. None: all of them."""

    train_prompts: int | None = None  # of pruning/data/chat_train.txt (190)
    eval_prompts: int | None = None  # of chat_heldout.txt (32)
    eval_sentences: int | None = None  # held-out paraphrase sentences (406)
    plain: int = 140  # plain sentences mixed into recovery
    calibration: int = 4  # chat answers and plain sentences each, for scoring
    max_new_tokens: int = 32  # of each held-out answer
    train_new_tokens: int = 64  # of each training answer
    batch_size: int = 8
    prompt_tokens: int = 64  # the prompt that TTFT is timed on
    decode_tokens: int = 32  # tokens generated when timing decode

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> LMOptions:
        names = [f.name for f in fields(cls)]
        for key, value in raw.items():
            if key not in names:
                raise ConfigError(f"data.options.{key}: unknown; allowed: {', '.join(names)}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.options.{key}={value!r}: must be an integer >= 1")
        return cls(**raw)


@dataclass(frozen=True)
class DecoderEval:
    """A decoder judged against the dense model on held-out data (a :class:`Side`'s
    evaluation): ``accuracy`` is next-token accuracy on the held-out sentences;
    ``predictions`` is 1 where it ranks the dense answer's token first (so their mean, the
    manifest's ``agreement_with_baseline``, is the teacher-forced agreement)."""

    figures: LMEval
    accuracy: float
    predictions: np.ndarray
    per_prompt: list[dict[str, Any]]  # reference.parquet: chars (f0), prompt tokens (f1), scores

    @property
    def labels(self) -> np.ndarray:
        return np.ones_like(self.predictions)


class Judge:
    """The held-out data and the dense model's answers, shared by both sides."""

    def __init__(self, dense: CausalLM, tokenizer: Any, opts: LMOptions) -> None:
        from pruneguard.pruning.tasks import causal_lm as lm

        self.dense, self.tokenizer, self.opts = dense, tokenizer, opts
        self.prompts = lm.held_out_prompts()[: opts.eval_prompts]
        sentences = lm.text_sequences(tokenizer, lm.held_out_sentences()[: opts.eval_sentences])
        self.text = lm.batches(sentences, size=16, pad_id=lm.padding_id(tokenizer))
        self.answers = lm.answer(dense, tokenizer, self.prompts, max_new_tokens=opts.max_new_tokens)

    def __call__(self, model: CausalLM) -> DecoderEval:
        from pruneguard.pruning.tasks import causal_lm as lm

        figures = lm.evaluate(
            model, self.dense, self.tokenizer, text=self.text, dense_answers=self.answers,
            prompts=self.prompts, max_new_tokens=self.opts.max_new_tokens,
        )  # fmt: skip
        rows = [lm.teacher_forced(model, [a]) for a in self.answers]
        per_prompt = [  # f0, f1: what serving logs of a request (deploy.generation), for drift
            {"f0": float(len(p)), "f1": float(len(a.prompt)), "text": p,
             "answer_tokens": len(a.tokens), "teacher_forced_agreement": s.agreement,
             "logprob_gap": s.mean_gap}
            for p, a, s in zip(self.prompts, self.answers, rows, strict=True)
        ]  # fmt: skip
        agree = np.concatenate([s.agree for s in rows]) if rows else np.zeros(0, dtype=bool)
        return DecoderEval(figures, lm.next_token_accuracy(model, self.text),
                           agree.astype(np.int64), per_prompt)  # fmt: skip


def plan(recipe: Recipe, dense: CausalLM, calibration: list[Batch]) -> tuple[DecoderPlan, dict]:
    """The cut the recipe asks for, every stage scored on ``dense``; and what it chose."""
    from pruneguard.pruning.methods import decoder_scores as ds
    from pruneguard.pruning.methods.decoder import DecoderPlan, shape_of

    shape = shape_of(dense)
    cut: dict[str, Any] = {}
    report: dict[str, Any] = {"shape_before": shape.as_dict()}
    for stage in recipe.stages:
        value = stage.target.value
        if stage.method == "layer":
            count = int(value)
            if count >= shape.layers:
                raise ConfigError(f"target.layers={count}: the model has {shape.layers} layers")
            cut["drop"] = ds.lowest(ds.block_influence(dense, calibration), count)
            report["dropped_layers"] = list(cut["drop"])
        elif stage.method == "head":
            removed = round(value * shape.kv_heads)
            if not 0 < removed < shape.kv_heads:
                raise ConfigError(
                    f"target.heads={value:g}: a decoder loses whole KV groups, the same number "
                    f"in every layer; with {shape.kv_heads} KV heads use a multiple of "
                    f"1/{shape.kv_heads} below 1 (e.g. {1 / shape.kv_heads:.3f})"
                )
            criterion = "l2" if stage.criterion == "magnitude" else stage.criterion
            scores = ds.kv_group_scores(dense, calibration, criterion)
            cut["kv_groups"] = ds.keep_top(scores, shape.kv_heads - removed)
            report["kv_groups_removed_per_layer"] = removed
        else:  # ffn
            keep = shape.ffn - round(value * shape.ffn)
            cut["ffn"] = ds.keep_top(ds.ffn_scores(dense, calibration, stage.criterion), keep)
            report["ffn_kept"] = keep
    return DecoderPlan(**cut), report


def prune_causal_lm(
    recipe: Recipe, *, progress: bool = True
) -> tuple[DecoderGraphs, Side, Side, RunRecord]:
    """Dense figures, the cut, recovery, pruned figures; the graphs' spec and the record."""
    import torch

    from pruneguard.pruning.artifacts import RunRecord, Side
    from pruneguard.pruning.methods import decoder as dec
    from pruneguard.pruning.tasks import causal_lm as lm
    from pruneguard.pruning.text import load_sentences

    say = reporter(progress, "llm")
    opts = LMOptions.from_mapping(recipe.data.options)
    torch.manual_seed(recipe.seed)
    dense, tokenizer, source = _load(recipe)
    say(f"loaded {source}: {dec.shape_of(dense).as_dict()}")
    judge = Judge(dense, tokenizer, opts)
    base = judge(dense)
    say(f"dense: perplexity {base.figures.perplexity:.2f}")
    answers = lm.answer(dense, tokenizer, lm.train_prompts()[: opts.train_prompts],
                        max_new_tokens=opts.train_new_tokens)  # fmt: skip
    chat, plain = [a.sequence for a in answers], lm.text_sequences(tokenizer, load_sentences())
    pad, n = lm.padding_id(tokenizer), opts.calibration
    calibration = lm.batches(chat[:n] + plain[:n], size=opts.batch_size, pad_id=pad)
    cut, report = plan(recipe, dense, calibration)
    student = dec.apply_plan(copy.deepcopy(dense), cut)
    report["before_recovery"] = judge(student).figures.as_dict()
    say(f"cut: {dec.shape_of(student).as_dict()}; before recovery {report['before_recovery']}")
    train = lm.batches(chat + plain[: opts.plain], size=opts.batch_size, pad_id=pad)
    ft = recipe.finetune
    minutes = lm.distill(student, dense, train, epochs=ft.epochs, lr=ft.lr, seed=recipe.seed,
                         say=say) if ft.epochs else 0.0  # fmt: skip
    report.update(recovery_minutes=round(minutes, 2), shape_after=dec.shape_of(student).as_dict(),
                  recovery_sequences={"chat": len(chat), "plain": min(opts.plain, len(plain))})  # fmt: skip
    pruned = judge(student)
    say(f"pruned: perplexity {pruned.figures.perplexity:.2f}, "
        f"agreement {pruned.figures.agreement:.3f}")  # fmt: skip
    record = RunRecord(pruning={**recipe.pruning_section(), **report}, source={"model": source})
    graphs = DecoderGraphs(tokenizer, opts, judge.answers, recipe.export.ort_threads)
    kv = {"baseline_kv_bytes_per_token": dec.shape_of(dense).kv_bytes_per_token()}
    return (
        graphs,
        Side(dense, base, dec.params(dense), _macs(dense), {**_extra(dense, base), **kv}),
        Side(student, pruned, dec.params(student), _macs(student),
             {**_extra(student, pruned), **kv}),
        record,
    )  # fmt: skip


def _load(recipe: Recipe) -> tuple[CausalLM, Any, str]:
    from pruneguard.pruning.models.smollm2 import load_causal_lm, smollm2_folder

    if recipe.model.hf is not None:
        model, tokenizer = load_causal_lm(recipe.model.hf)
        return model, tokenizer, recipe.model.hf.name
    model, tokenizer = load_causal_lm(smollm2_folder())
    return model, tokenizer, str(recipe.model.builtin)


def _macs(model: CausalLM) -> int:
    """Multiply-accumulates per generated token (the matmuls of every weight but embeddings;
    attention over the cache grows with context and is left out)."""
    embed = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    from pruneguard.pruning.methods.decoder import params

    return params(model) - embed + (embed if tied else 0)


def _extra(model: CausalLM, evaluation: DecoderEval) -> dict[str, Any]:
    from pruneguard.pruning.methods.decoder import shape_of

    return {
        **evaluation.figures.as_dict(),
        "kv_bytes_per_token": shape_of(model).kv_bytes_per_token(),
    }


class DecoderGraphs:
    """How a decoder's graphs are made (onnxruntime-genai's builder), checked (its one-pass
    logits against torch's on held-out answers), timed (TTFT and decode tokens/s through
    genai, side by side) and what travels with them (genai's config, tokenizer, ``hf/``)."""

    def __init__(
        self, tokenizer: Any, opts: LMOptions, answers: list[Answer], threads: int
    ) -> None:
        self.tokenizer, self.opts, self.answers, self.threads = tokenizer, opts, answers, threads
        self._cache = Path(tempfile.mkdtemp(prefix="pruneguard-genai-"))
        self._built: dict[str, tuple[Path, Path]] = {}  # label -> (hf folder, genai folder)

    def export(self, model: CausalLM, path: Path, opset: int) -> None:
        from pruneguard.pruning import genai

        hf, folder = path.with_suffix(".hf"), path.with_suffix(".genai")
        self._built[path.stem] = (hf, folder)
        model.save_pretrained(hf)
        self.tokenizer.save_pretrained(hf)
        genai.build(hf, folder, cache=self._cache)
        genai.set_threads(folder, self.threads)
        genai.one_file(folder / "model.onnx", path)

    def parity(self, model: CausalLM, path: Path) -> float:
        import torch

        from pruneguard.pruning import genai
        from pruneguard.pruning.latency import make_session

        session, head_dim = make_session(path), genai.head_size(self._built[path.stem][1])
        worst = 0.0
        for item in self.answers[:2]:
            ids = np.array([item.sequence], dtype=np.int64)
            feeds = genai.empty_cache_feeds(session, ids, head_dim)
            (logits, *_) = session.run(["logits"], feeds)
            with torch.no_grad():
                ref = model(input_ids=torch.from_numpy(ids), use_cache=False).logits.numpy()
            worst = max(worst, float(np.abs(logits - ref).max()))
        return worst

    def time(
        self, paths: Mapping[str, Path], recipe: Recipe, progress: bool
    ) -> dict[str, dict[str, dict[str, float]]]:
        from pruneguard.pruning import genai

        folders = {label: self._built[label][1] for label in paths}
        prompt = _timing_prompt(self.answers, self.opts.prompt_tokens)
        e = recipe.export
        stats = genai.time_decoders(folders, prompt, new_tokens=self.opts.decode_tokens,
                                    threads=e.ort_threads, blocks=e.latency_blocks,
                                    runs=e.latency_runs)  # fmt: skip
        return {label: {"1": s} for label, s in stats.items()}

    def calibration_feeds(self) -> list[dict[str, np.ndarray]]:
        return []  # recipe validation refuses quantize for decoders

    def evaluate_graph(self, path: Path, threads: int | None) -> tuple[Any, np.ndarray]:
        raise ConfigError("quantize: not supported with task causal-lm; remove it")

    def quality(self, evaluation: DecoderEval, dense: DecoderEval) -> dict[str, Any]:
        return {
            "accuracy_metric": "next-token accuracy on the held-out sentences",
            "agreement_metric": "teacher-forced agreement on the dense answers to held-out prompts",
            "held_out_prompts": len(self.answers),
        }

    def io(self) -> dict[str, Any]:
        from pruneguard.pruning.tasks import causal_lm as lm

        return {
            "task": "causal-lm",
            "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
                       {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "total_seq"]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "seq", "vocab"]}],
            "runtime": "onnxruntime-genai",
            "transformers_folder": HF,
            "generation": {
                "chat_template": bool(getattr(self.tokenizer, "chat_template", None)),
                "eos_token_id": self.tokenizer.eos_token_id,
                "pad_token_id": lm.padding_id(self.tokenizer),
                "vocab_size": len(self.tokenizer),
            },
        }  # fmt: skip

    def reference(self, evaluation: DecoderEval) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(evaluation.per_prompt)

    def save_files(self, folder: Path, label: str) -> None:
        hf, built = self._built[label]
        shutil.copytree(hf, folder / HF)
        for item in built.iterdir():  # genai's config and tokenizer, beside model.onnx
            if item.name not in ("model.onnx", "model.onnx.data"):
                shutil.copy2(item, folder / item.name)


def _timing_prompt(answers: list[Answer], length: int) -> list[int]:
    """``length`` tokens of held-out chat (prompts and answers end to end, repeated)."""
    tokens = [t for a in answers for t in a.sequence] or [0]
    return (tokens * (length // len(tokens) + 1))[:length]
