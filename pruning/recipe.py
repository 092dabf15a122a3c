"""The pruning recipe (DESIGN §3.1): YAML validated once, at the edge, into frozen dataclasses.

Every error names the key path (``target.ratio``), the value, what is allowed and the fix::

    target.ratio=1.5: must be > 0 and < 1 (the fraction of channels to remove)

Only ``yaml`` is imported here, so the CLI can validate a recipe without loading torch.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from pruneguard.registry.errors import ConfigError

__all__ = [
    "METHODS",
    "SPARSE_METHODS",
    "TARGETS",
    "Accept",
    "DataSpec",
    "Export",
    "Finetune",
    "ModelSpec",
    "Quantize",
    "Recipe",
    "Schedule",
    "Stage",
    "Target",
    "Train",
    "builtin_recipes",
    "load_recipe",
    "parse_recipe",
    "variant",
]

TASKS = ("classification", "embedding", "causal-lm")
METHODS = ("channel", "head", "layer", "unstructured", "nm", "ffn")
SPARSE_METHODS = ("unstructured", "nm")  # weights zeroed, not removed: zeros that compress
# methods a recipe may list together (``method: [head, ffn]``), in the order they run: layers
# first (no head or neuron is scored in a layer about to go), FFN neurons last
COMBINABLE = ("layer", "head", "ffn")
STRUCTURED_CRITERIA = ("l1", "l2", "gradient", "taylor", "activation", "random")
# which criteria each method accepts (magnitude pruning ranks weights by |w|: l1 and l2 agree)
# ``auto``: chosen by a short trial on the user's own model (pruning/selection.py)
CRITERIA: dict[str, tuple[str, ...]] = {
    "channel": (*STRUCTURED_CRITERIA, "auto"),
    "head": (*STRUCTURED_CRITERIA, "magnitude", "ablation"),
    "layer": (*STRUCTURED_CRITERIA, "magnitude", "ablation", "influence"),
    "ffn": (*STRUCTURED_CRITERIA, "magnitude"),
    "unstructured": ("l1", "l2", "magnitude"),
    "nm": ("l1", "l2", "magnitude"),
}
DEFAULT_CRITERION = {
    "channel": "l2",
    "head": "taylor",
    "layer": "taylor",
    "ffn": "taylor",
    "unstructured": "l1",
    "nm": "l1",
}
# a decoder (task causal-lm) is cut uniformly across layers (pruning/methods/decoder.py) and
# scored by pruning/methods/decoder_scores.py: KV groups by measured ablation, Taylor or L2,
# FFN channels by activation or Taylor, layers by Block Influence (ShortGPT)
DECODER_CRITERIA: dict[str, tuple[str, ...]] = {
    "head": ("ablation", "taylor", "l2", "magnitude"),
    "ffn": ("activation", "taylor"),
    "layer": ("influence",),
}
DECODER_DEFAULT = {"head": "ablation", "ffn": "activation", "layer": "influence"}
DECODER_MODELS = ("smollm2-135m",)
# target key -> (methods it fits, what it means)
TARGETS: dict[str, tuple[tuple[str, ...], str]] = {
    "ratio": (("channel",), "the fraction of channels to remove"),
    "macs_reduction": (("channel",), "the fraction of MACs to remove"),
    "sparsity": (SPARSE_METHODS, "the fraction of weights set to zero"),
    "heads": (("head",), "the fraction of attention heads to remove"),
    "layers": (("layer",), "the number of layers to remove"),
    "ffn": (("ffn",), "the fraction of FFN intermediate neurons to remove"),
}
SCHEDULES = ("one-shot", "iterative", "auto")  # auto: one-shot or iterative, by trial
SELECTING_METHODS = ("channel",)  # the methods whose criterion/schedule may be auto
SCOPES = ("global", "layer", "auto")  # auto: global or layer widths, by trial (channel only)
SCOPED_METHODS = ("channel", "head", "unstructured", "ffn")
DATA_BUILTINS = {
    "classification": ("digits", "synthetic", "topics"),
    "embedding": ("sentences",),
    "causal-lm": ("chat",),  # the chat prompts and plain sentences in pruning/data
}
TEXT_CLASSIFIER = "minilm-topics"  # the built-in text classifier (pruning.tasks)
RECIPES_PACKAGE = "pruneguard.pruning.recipes"  # read through importlib.resources (wheel-safe)
NM_SPARSITY = 0.5  # 2:4 keeps 2 of every 4 weights
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


# --- the frozen config -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    builtin: str | None = None
    factory: str | None = None
    hf: Path | None = None  # a local Hugging Face folder (transformers)
    weights: Path | None = None
    input_shape: tuple[int, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    builtin: str | None = None
    factory: str | None = None
    file: Path | None = None  # texts, CSV or JSONL (labelled for a text classifier)
    text: str = "text"  # the file's text column
    label: str | None = None  # its label column (optional for an encoder)
    val_file: Path | None = None  # held-out texts; else val_share of each class, by seed
    val_share: float = 0.2
    shape: tuple[int, ...] | None = None
    classes: int | None = None
    samples: int | None = None
    batch_size: int = 64
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Train:
    epochs: int = 0
    lr: float = 1e-3


@dataclass(frozen=True)
class Target:
    kind: str  # one of TARGETS
    value: float

    def as_dict(self) -> dict[str, float | int]:
        return {self.kind: int(self.value) if self.kind == "layers" else self.value}


@dataclass(frozen=True)
class Stage:
    """One method of a recipe: what it removes, ranked how, and how much."""

    method: str
    criterion: str
    target: Target


@dataclass(frozen=True)
class Schedule:
    kind: str = "one-shot"
    steps: int = 1


@dataclass(frozen=True)
class Finetune:
    epochs: int = 0
    lr: float = 1e-3
    distill: bool = False
    recovery_epochs: int = 1


@dataclass(frozen=True)
class Accept:
    """The budget a pruned version must meet to become champion (``pruning/gate.py``); a field
    left ``None`` takes the gate's default."""

    max_accuracy_drop: float | None = None
    min_speedup: float | None = None


QUANTIZE_MODES = ("static", "dynamic")


@dataclass(frozen=True)
class Quantize:
    """The recipe's ``quantize:`` section: a third, int8 artifact made from the pruned one with
    ONNX Runtime's quantization tools (``pruning/quantize.py``)."""

    mode: str  # static: QDQ with calibration batches (CNNs); dynamic: transformers
    per_channel: bool = True
    calibration: int = 16  # batches of the recipe's training data (static only)
    # int8 must answer as its fp32 parent does: the mean similarity of their outputs on the
    # held-out rows (1 - total variation of the class probabilities, or the embeddings'
    # cosine; registry.tasks) must be at least this, or the version is not a candidate
    min_similarity: float = 0.98
    reduce_range: bool | None = None  # None: ONNX Runtime's advice (7-bit weights without VNNI)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Export:
    opset: int = 18
    batch_sizes: tuple[int, ...] = (1, 8)
    latency_blocks: int = 6
    latency_runs: int = 11
    # ONNX Runtime intra-op threads for the latency figures; 0 lets ORT choose (one per core).
    # 1 matches what `pruneguard serve` gives each session by default (PRUNEGUARD_ORT_THREADS),
    # so the manifest's speed-up is the one the service will see.
    ort_threads: int = 1

    def latency_setup(self) -> dict[str, Any]:
        """How the latency figures were taken, for the manifest next to them."""
        return {
            "runtime": "onnxruntime",
            "provider": "CPUExecutionProvider",
            "ort_threads": self.ort_threads,
            "blocks": self.latency_blocks,
            "runs_per_block": self.latency_runs,
            "cpus": os.cpu_count(),
        }


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelSpec
    data: DataSpec
    method: str
    criterion: str
    target: Target
    task: str = "classification"
    train: Train | None = None
    scope: str | None = None
    schedule: Schedule = Schedule()
    finetune: Finetune = Finetune()
    accept: Accept | None = None
    export: Export = Export()
    quantize: Quantize | None = None
    round_to: int | None = None
    seed: int = 0
    source: str | None = None  # the file it came from (for messages and relative paths)
    extra: Mapping[str, Any] = field(default_factory=dict)  # task-specific keys (embedding)
    # a combined recipe (``method: [head, ffn]``): its methods in the order they run; then
    # ``method`` is their names joined by "+" and ``target`` is the first stage's
    combined: tuple[Stage, ...] = ()

    @property
    def is_text(self) -> bool:
        """Whether the transformer pipeline runs this recipe (an encoder of texts)."""
        if self.is_decoder:
            return False
        return (
            self.task == "embedding"
            or self.model.hf is not None
            or self.model.builtin == TEXT_CLASSIFIER
            or self.data.file is not None
            or self.data.builtin == "topics"
        )

    @property
    def is_decoder(self) -> bool:
        """Whether the decoder pipeline (:mod:`pruning.llm`) runs this recipe."""
        return self.task == "causal-lm"

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The methods to run, in order: one stage, or a combined recipe's stages."""
        return self.combined or (Stage(self.method, self.criterion, self.target),)

    @property
    def base_dir(self) -> Path | None:
        """The recipe file's folder (relative paths and factory imports start there)."""
        if self.source is None or self.source.startswith("built-in:"):
            return None
        return Path(self.source).resolve().parent

    def with_seed(self, seed: int) -> Recipe:
        return replace(self, seed=seed)

    @property
    def selects(self) -> bool:
        """Whether a trial picks the criterion, schedule or scope (``auto``) before pruning."""
        return "auto" in (self.criterion, self.schedule.kind, self.scope)

    def acceptance(self, metrics: Mapping[str, Any], *, quantized: bool = False) -> dict[str, Any]:
        """The gate's verdict on a pruned (or, ``quantized``, the int8) version's ``metrics``
        under this recipe's budget."""
        from pruneguard.pruning.gate import decide, decide_quantized

        a = self.accept or Accept()
        budget = {"max_accuracy_drop": a.max_accuracy_drop, "min_speedup": a.min_speedup}
        if quantized and self.quantize is not None:
            return decide_quantized(
                metrics, min_similarity=self.quantize.min_similarity, **budget
            ).as_dict()
        return decide(metrics, **budget).as_dict()

    def pruning_section(self) -> dict[str, Any]:
        """The manifest's ``pruning`` block: what was done, in the recipe's own words."""
        criterion: str | dict[str, str] = self.criterion
        target = self.target.as_dict()
        if self.combined:
            criterion = {s.method: s.criterion for s in self.combined}
            target = {k: v for s in self.combined for k, v in s.target.as_dict().items()}
        return {
            "method": self.method,
            "criterion": criterion,
            "target": target,
            "scope": self.scope,
            "round_to": self.round_to,
            "schedule": asdict(self.schedule),
            "finetune": asdict(self.finetune),
            "recipe": self.name,
            "seed": self.seed,
        }


# --- loading ---------------------------------------------------------------------------------


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped in ``pruneguard.pruning.recipes``."""
    files = resources.files(RECIPES_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def builtin_recipe_text(name: str) -> str:
    """The YAML text of the built-in recipe ``name``."""
    return resources.files(RECIPES_PACKAGE).joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def load_recipe(arg: str | Path) -> Recipe:
    """A recipe from a YAML path, or from a built-in name such as ``digits-cnn``."""
    import yaml

    path = Path(arg)
    if path.is_file():
        text, source, base = path.read_text(encoding="utf-8"), str(path), path.resolve().parent
    elif str(arg) in builtin_recipes():
        text, source, base = builtin_recipe_text(str(arg)), f"built-in:{arg}", None
    else:
        raise ConfigError(
            f"recipe {str(arg)!r} is neither a file nor a built-in recipe; "
            f"pass a YAML path or one of: {', '.join(builtin_recipes())}"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{source}: not valid YAML{line}; fix the syntax") from exc
    return parse_recipe(data, source=source, base_dir=base)


def parse_recipe(data: Any, *, source: str | None = None, base_dir: Path | None = None) -> Recipe:
    """Validate a recipe mapping (as loaded from YAML) into a :class:`Recipe`."""
    top = _mapping(data, "recipe")
    _keys(top, ALLOWED_TOP, "")
    task = _choice(top, "task", TASKS, "", default="classification")
    method, criterion, target, combined = _method(top, task)
    recipe = Recipe(
        name=_name(top),
        task=task,
        model=_model(top.get("model"), base_dir),
        data=_data(top.get("data"), task, base_dir),
        train=_train(top.get("train")),
        method=method,
        criterion=criterion,
        scope=_choice(top, "scope", SCOPES, "", default=None),
        target=target,
        schedule=_schedule(top.get("schedule")),
        finetune=_finetune(top.get("finetune")),
        accept=_accept(top.get("accept")),
        export=_export(top.get("export")),
        quantize=_quantize(top.get("quantize")),
        round_to=_int(top, "round_to", "", lo=1, default=None),
        seed=_int(top, "seed", "", lo=0, default=0),
        source=source,
        extra=_options(top, "", key="embedding"),
        combined=combined,
    )
    _cross_checks(recipe)
    return recipe


ALLOWED_TOP = (
    "name", "task", "model", "data", "train", "method", "criterion", "scope", "target",
    "schedule", "finetune", "accept", "export", "quantize", "round_to", "seed", "embedding",
)  # fmt: skip


def variant(
    recipe: Recipe,
    *,
    target: float | None = None,
    criterion: str | None = None,
    schedule: str | None = None,
) -> Recipe:
    """``recipe`` with another target value (same kind), criterion or schedule kind, validated.

    An iterative schedule keeps the recipe's steps when it iterates already, else takes 4.
    """
    if recipe.combined and (target is not None or criterion is not None):
        raise ConfigError(
            f"method={recipe.method}: a combined recipe has one target and criterion per method, "
            "so it cannot be varied by one number; sweep a single-method recipe, or write one "
            "recipe per combination"
        )
    changes: dict[str, Any] = {}
    if target is not None:
        value: Any = int(target) if recipe.target.kind == "layers" else target
        changes["target"] = _target({recipe.target.kind: value}, recipe.method)
    if criterion is not None:
        changes["criterion"] = _choice(
            {"criterion": criterion}, "criterion", CRITERIA[recipe.method], "",
            why=f"for method {recipe.method}",
        )  # fmt: skip
    if schedule is not None:
        steps = recipe.schedule.steps if recipe.schedule.kind != "one-shot" else 4
        raw = {"kind": schedule} if schedule == "one-shot" else {"kind": schedule, "steps": steps}
        changes["schedule"] = _schedule(raw)
    new = replace(recipe, **changes)
    _cross_checks(new)
    return new


# --- sections --------------------------------------------------------------------------------


def _method(top: Mapping[str, Any], task: str) -> tuple[str, str, Target, tuple[Stage, ...]]:
    """(method, criterion, target, combined stages) from ``method``/``criterion``/``target``."""
    if isinstance(top.get("method"), list):
        stages = _combined(top, task)
        names = {s.criterion for s in stages}
        criterion = names.pop() if len(names) == 1 else "+".join(s.criterion for s in stages)
        return "+".join(s.method for s in stages), criterion, stages[0].target, stages
    methods = tuple(DECODER_CRITERIA) if task == "causal-lm" else METHODS
    method = _choice(top, "method", methods, "", required=True, why=f"for task {task}")
    allowed, default = _criteria(task, method)
    criterion = _choice(
        top, "criterion", allowed, "", default=default, why=f"for method {method} ({task})"
    )
    return method, criterion, _target(top.get("target"), method), ()


def _criteria(task: str, method: str) -> tuple[tuple[str, ...], str]:
    """The criteria ``method`` accepts for ``task``, and its default."""
    if task == "causal-lm":
        return DECODER_CRITERIA[method], DECODER_DEFAULT[method]
    return CRITERIA[method], DEFAULT_CRITERION[method]


def _text_model(top: Mapping[str, Any]) -> bool:
    model, data = top.get("model"), top.get("data")
    model = model if isinstance(model, Mapping) else {}
    data = data if isinstance(data, Mapping) else {}
    return (
        "hf" in model
        or model.get("builtin") == TEXT_CLASSIFIER
        or "file" in data
        or data.get("builtin") == "topics"
    )


def _combined(top: Mapping[str, Any], task: str) -> tuple[Stage, ...]:
    methods = top["method"]
    shown = f"[{', '.join(map(str, methods))}]"
    if task not in ("embedding", "causal-lm") and not _text_model(top):
        raise ConfigError(
            f"method={shown}: combined methods are only for transformer encoders of text "
            f"(task: embedding, or a text classifier: model.hf, model builtin {TEXT_CLASSIFIER}); "
            f"use one method of {', '.join(METHODS)}"
        )
    distinct = len(set(map(str, methods))) == len(methods)
    if len(methods) < 2 or not distinct or not all(m in COMBINABLE for m in methods):
        raise ConfigError(
            f"method={shown}: a list combines two or more different methods of "
            f"{', '.join(COMBINABLE)} (they run in that order), e.g. method: [head, ffn]; "
            "for one method write method: head"
        )
    ordered = [m for m in COMBINABLE if m in methods]
    criteria = _stage_criteria(top.get("criterion"), ordered, shown, task)
    targets = _stage_targets(top.get("target"), ordered, shown)
    return tuple(Stage(m, criteria[m], targets[m]) for m in ordered)


def _stage_criteria(raw: Any, methods: list[str], shown: str, task: str) -> dict[str, str]:
    """One criterion for every method, or a mapping ``{method: criterion}`` (others default)."""
    if raw is None or isinstance(raw, str):
        given = {m: raw for m in methods if raw is not None}
    else:
        example = "criterion: {layer: ablation, head: taylor}"
        given = dict(_mapping(raw, "criterion", example=example))
        _keys(given, tuple(methods), "criterion")
    out = {}
    for m in methods:
        where = "criterion" if isinstance(raw, str) else f"criterion.{m}"
        allowed, default = _criteria(task, m)
        value = given.get(m, default)
        if value not in allowed:
            raise ConfigError(
                f"{where}={value!r}: must be one of {', '.join(allowed)} for method {m} "
                f"(of method {shown}); or give one per method, e.g. criterion: {{{m}: taylor}}"
            )
        out[m] = value
    return out


def _stage_targets(raw: Any, methods: list[str], shown: str) -> dict[str, Target]:
    """One target key per method: ``{heads: 0.3, ffn: 0.5, layers: 1}``."""
    keys = {m: _fitting(m) for m in methods}
    example = ", ".join(f"{k}: {1 if k == 'layers' else 0.5}" for k in keys.values())
    t = _mapping(raw, "target", example=f"target: {{{example}}}")
    _keys(t, tuple(TARGETS), "target")
    for key in t:
        if key not in keys.values():
            raise ConfigError(
                f"target.{key}: fits no method of {shown} ({key} is for "
                f"{' or '.join(TARGETS[key][0])}); remove it, or add that method to the list"
            )
    out = {}
    for m, key in keys.items():
        if key not in t:
            raise ConfigError(
                f"target.{key} is missing: method {shown} needs one target per method, "
                f"e.g. target: {{{example}}}"
            )
        out[m] = _target({key: t[key]}, m)
    return out


def _name(top: Mapping[str, Any]) -> str:
    name = top.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(
            f"name={name!r}: must be 1-63 characters of lowercase letters, digits, '.', '_' or '-' "
            "(it becomes the registry model name); e.g. name: digits-cnn"
        )
    return name


def _model(raw: Any, base_dir: Path | None) -> ModelSpec:
    m = _mapping(raw, "model", example="model: {builtin: digits-cnn}")
    _keys(m, ("builtin", "factory", "hf", "weights", "input_shape", "options"), "model")
    _one_of(m, ("builtin", "factory", "hf"), "model")
    if "hf" in m:
        return ModelSpec(hf=_hf_folder(m, base_dir), options=_options(m, "model"))
    if "factory" in m:
        factory = _factory(m["factory"], "model.factory")
        weights = _weights(m.get("weights"), base_dir)
        # optional: the data's first batch gives it; when given, the data must agree
        shape = _shape(m["input_shape"], "model.input_shape") if "input_shape" in m else None
        return ModelSpec(
            factory=factory, weights=weights, input_shape=shape, options=_options(m, "model")
        )
    if "weights" in m:
        raise ConfigError(
            "model.weights: only a factory model takes weights; built-in models build their own "
            "(use train: to train them); remove weights or use model.factory"
        )
    builtin = _text(m["builtin"], "model.builtin")
    given = _shape(m["input_shape"], "model.input_shape") if "input_shape" in m else None
    return ModelSpec(builtin=builtin, input_shape=given, options=_options(m, "model"))


def _text_file(d: Mapping[str, Any], task: str, base_dir: Path | None, batch: int) -> DataSpec:
    if task not in ("classification", "embedding"):
        raise ConfigError(
            f"data.file with task {task}: files hold texts for a text classifier or an encoder"
        )
    share = d.get("val_share", 0.2)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
        raise ConfigError(f"data.val_share={share!r}: must be > 0 and < 1, e.g. 0.2")
    label = _text(d["label"], "data.label") if "label" in d else None
    if label is None and task == "classification":
        raise ConfigError("data.label is missing: name the file's label column, e.g. label: label")
    return DataSpec(
        file=_path(d["file"], "data.file", base_dir),
        text=_text(d.get("text", "text"), "data.text"),
        label=label,
        val_file=_path(d["val_file"], "data.val_file", base_dir) if "val_file" in d else None,
        val_share=float(share),
        batch_size=batch,
    )


def _path(value: Any, where: str, base_dir: Path | None) -> Path:
    path = Path(_text(value, where)).expanduser()
    return base_dir / path if not path.is_absolute() and base_dir is not None else path


def _data(raw: Any, task: str, base_dir: Path | None = None) -> DataSpec:
    d = _mapping(raw, "data", example="data: {builtin: digits}")
    _keys(d, ("builtin", "factory", "file", "text", "label", "val_file", "val_share", "shape",
              "classes", "samples", "batch_size", "options"), "data")  # fmt: skip
    _one_of(d, ("builtin", "factory", "file"), "data")
    batch = _int(d, "batch_size", "data", lo=1, default=64)
    if "file" in d:
        return _text_file(d, task, base_dir, batch)
    for key in ("text", "label", "val_file", "val_share"):
        if key in d:
            raise ConfigError(f"data.{key}: only data.file takes {key}; remove it")
    if "factory" in d:
        factory = _factory(d["factory"], "data.factory")
        return DataSpec(factory=factory, batch_size=batch, options=_options(d, "data"))
    builtin = _choice(d, "builtin", DATA_BUILTINS[task], "data", why=f"for task {task}")
    if builtin != "synthetic":
        for key in ("shape", "classes", "samples"):
            if key in d:
                raise ConfigError(f"data.{key}: only builtin synthetic takes {key}; remove it")
        return DataSpec(builtin=builtin, batch_size=batch, options=_options(d, "data"))
    if "shape" not in d:
        raise ConfigError("data.shape is missing: synthetic data needs e.g. shape: [3, 224, 224]")
    return DataSpec(
        builtin=builtin,
        shape=_shape(d["shape"], "data.shape"),
        classes=_int(d, "classes", "data", lo=2, default=10),
        samples=_int(d, "samples", "data", lo=2, default=64),
        batch_size=batch,
        options=_options(d, "data"),
    )


def _train(raw: Any) -> Train | None:
    if raw is None:
        return None
    t = _mapping(raw, "train", example="train: {epochs: 15, lr: 0.003}")
    _keys(t, ("epochs", "lr"), "train")
    return Train(epochs=_int(t, "epochs", "train", lo=0, default=0), lr=_lr(t, "train"))


def _target(raw: Any, method: str) -> Target:
    if raw is None and method == "nm":
        return Target("sparsity", NM_SPARSITY)
    t = _mapping(raw, "target", example="target: {ratio: 0.5}")
    _keys(t, tuple(TARGETS), "target")
    if len(t) != 1:
        raise ConfigError(
            f"target={dict(t)}: give exactly one of {', '.join(TARGETS)}; "
            f"for method {method} use {_fitting(method)}"
        )
    kind, value = next(iter(t.items()))
    methods, meaning = TARGETS[kind]
    if method not in methods:
        raise ConfigError(
            f"target.{kind}: does not fit method {method} ({kind} is for {' or '.join(methods)}); "
            f"for method {method} use target.{_fitting(method)}"
        )
    if kind == "layers":
        return Target(kind, _int(t, "layers", "target", lo=1))
    number = _number(value, f"target.{kind}")
    if not 0 < number < 1:
        raise ConfigError(f"target.{kind}={value}: must be > 0 and < 1 ({meaning})")
    if method == "nm" and number != NM_SPARSITY:
        raise ConfigError(
            f"target.sparsity={value}: method nm is 2:4, which is exactly {NM_SPARSITY}; "
            f"set sparsity: {NM_SPARSITY} or use method unstructured"
        )
    return Target(kind, number)


def _fitting(method: str) -> str:
    return " or ".join(k for k, (methods, _) in TARGETS.items() if method in methods)


def _schedule(raw: Any) -> Schedule:
    if raw is None:
        return Schedule()
    s = _mapping(raw, "schedule", example="schedule: {kind: iterative, steps: 4}")
    _keys(s, ("kind", "steps"), "schedule")
    kind = _choice(s, "kind", SCHEDULES, "schedule", default="one-shot")
    if kind == "one-shot":
        steps = _int(s, "steps", "schedule", lo=1, default=1)
        if steps != 1:
            raise ConfigError(
                f"schedule.steps={steps}: a one-shot schedule has 1 step; "
                "use kind: iterative for more"
            )
        return Schedule(kind, 1)
    return Schedule(kind, _int(s, "steps", "schedule", lo=2, default=4))


def _finetune(raw: Any) -> Finetune:
    if raw is None:
        return Finetune()
    f = _mapping(raw, "finetune", example="finetune: {epochs: 3, lr: 0.001, distill: true}")
    _keys(f, ("epochs", "lr", "distill", "recovery_epochs"), "finetune")
    distill = f.get("distill", False)
    if not isinstance(distill, bool):
        raise ConfigError(f"finetune.distill={distill!r}: must be true or false")
    return Finetune(
        epochs=_int(f, "epochs", "finetune", lo=0, default=0),
        lr=_lr(f, "finetune"),
        distill=distill,
        recovery_epochs=_int(f, "recovery_epochs", "finetune", lo=0, default=1),
    )


def _accept(raw: Any) -> Accept | None:
    if raw is None:
        return None
    a = _mapping(raw, "accept", example="accept: {max_accuracy_drop: 0.01, min_speedup: 1.0}")
    _keys(a, ("max_accuracy_drop", "min_speedup"), "accept")
    drop = speed = None
    if "max_accuracy_drop" in a:
        drop = _number(a["max_accuracy_drop"], "accept.max_accuracy_drop")
        if not 0 <= drop <= 1:
            raise ConfigError(
                f"accept.max_accuracy_drop={drop}: must be between 0 and 1 "
                "(a fraction: 0.01 allows one accuracy point)"
            )
    if "min_speedup" in a:
        speed = _number(a["min_speedup"], "accept.min_speedup")
        if speed <= 0:
            raise ConfigError(
                f"accept.min_speedup={speed}: must be > 0 (1.0: at least as fast as dense; "
                "0.9 tolerates 10% slower)"
            )
    return Accept(drop, speed)


def _export(raw: Any) -> Export:
    if raw is None:
        return Export()
    e = _mapping(raw, "export", example="export: {opset: 18, batch_sizes: [1, 8]}")
    _keys(e, ("opset", "batch_sizes", "latency_blocks", "latency_runs", "ort_threads"), "export")
    sizes = e.get("batch_sizes", [1, 8])
    if not isinstance(sizes, list) or not sizes or not all(_is_int(s) and s >= 1 for s in sizes):
        raise ConfigError(
            f"export.batch_sizes={sizes!r}: must be a non-empty list of positive integers, e.g. [1, 8]"
        )
    return Export(
        opset=_int(e, "opset", "export", lo=17, hi=23, default=18),
        batch_sizes=tuple(dict.fromkeys(sizes)),
        latency_blocks=_int(e, "latency_blocks", "export", lo=1, default=6),
        latency_runs=_int(e, "latency_runs", "export", lo=2, default=11),
        ort_threads=_int(e, "ort_threads", "export", lo=0, default=1),
    )


def _quantize(raw: Any) -> Quantize | None:
    if raw is None:
        return None
    example = "quantize: {mode: static, per_channel: true, calibration: 16}"
    q = _mapping(raw, "quantize", example=example)
    _keys(q, ("mode", "per_channel", "calibration", "min_similarity", "reduce_range"), "quantize")
    mode = _choice(q, "mode", QUANTIZE_MODES, "quantize", required=True,
                   why="(static: calibrated QDQ, for CNNs; dynamic: for transformers)")  # fmt: skip
    flags = {}
    for key in ("per_channel", "reduce_range"):
        if key in q and not isinstance(q[key], bool):
            raise ConfigError(f"quantize.{key}={q[key]!r}: must be true or false")
        flags[key] = q.get(key)
    if mode == "dynamic" and "calibration" in q:
        raise ConfigError(
            "quantize.calibration: dynamic quantization computes activation ranges at run "
            "time and needs no calibration; remove it or use mode: static"
        )
    similarity = _number(q.get("min_similarity", 0.98), "quantize.min_similarity")
    if not 0 < similarity <= 1:
        raise ConfigError(
            f"quantize.min_similarity={similarity}: must be > 0 and <= 1 (0.98: int8 answers "
            "as its fp32 parent does to within 2%)"
        )
    return Quantize(
        mode=mode,
        per_channel=True if flags["per_channel"] is None else flags["per_channel"],
        calibration=_int(q, "calibration", "quantize", lo=1, hi=1024, default=16),
        min_similarity=similarity,
        reduce_range=flags["reduce_range"],
    )


def _cross_checks(recipe: Recipe) -> None:
    if recipe.is_decoder:
        _decoder_checks(recipe)
    q = recipe.quantize
    if q is not None and q.mode == "static" and recipe.is_text:
        raise ConfigError(
            "quantize.mode=static: a text model is quantized with mode: dynamic (ONNX Runtime's "
            "transformer optimizer, then int8 weights); static QDQ is for CNNs"
        )
    if q is not None and q.mode == "dynamic" and not recipe.is_text:
        raise ConfigError(
            "quantize.mode=dynamic: a tensor model (CNN) is quantized with mode: static "
            "(calibrated QDQ; dynamic int8 leaves convolutions in float); dynamic is for text models"
        )
    if recipe.schedule.kind == "auto" and recipe.method not in SELECTING_METHODS:
        raise ConfigError(
            f"schedule.kind=auto: the schedule is chosen by trial for method "
            f"{' or '.join(SELECTING_METHODS)} only (method {recipe.method}); "
            "use kind: one-shot or iterative"
        )
    if recipe.scope == "auto" and recipe.method not in SELECTING_METHODS:
        raise ConfigError(
            f"scope=auto: the scope is chosen by trial for method "
            f"{' or '.join(SELECTING_METHODS)} only (method {recipe.method}); "
            "use scope: global or layer"
        )
    if recipe.round_to is not None and recipe.method != "channel":
        raise ConfigError(
            f"round_to={recipe.round_to}: only method channel rounds channel counts; remove it"
        )
    methods = [s.method for s in recipe.stages]
    if recipe.scope is not None and not set(methods) & set(SCOPED_METHODS):
        raise ConfigError(
            f"scope={recipe.scope}: only methods {', '.join(SCOPED_METHODS)} rank globally or per "
            f"layer (method {recipe.method} does not); remove scope"
        )
    if recipe.scope == "global" and methods == ["ffn"]:
        raise ConfigError(
            "scope=global with method ffn: FFN pruning keeps the same width in every layer (so "
            "config.intermediate_size still describes the model); use scope: layer or remove scope"
        )
    if recipe.finetune.distill and recipe.finetune.epochs == 0 and recipe.schedule.steps == 1:
        raise ConfigError(
            "finetune.distill=true with finetune.epochs=0: nothing would be distilled; "
            "set finetune.epochs >= 1 or distill: false"
        )
    if recipe.extra and not recipe.is_text:
        raise ConfigError(
            "embedding: this section is only for text models (task: embedding, model.hf, "
            "data.file); remove it"
        )


def _decoder_checks(recipe: Recipe) -> None:
    """What a ``task: causal-lm`` recipe may say (its methods and criteria are checked as
    they are read)."""
    model = recipe.model
    if model.factory is not None or (model.builtin and model.builtin not in DECODER_MODELS):
        given = model.factory or model.builtin
        raise ConfigError(
            f"model={given!r} with task causal-lm: use model: {{builtin: "
            f"{DECODER_MODELS[0]}}} or your own Llama/Qwen-family decoder as model: "
            "{hf: path/to/folder}"
        )
    refused = {
        "quantize": recipe.quantize is not None,
        "scope": recipe.scope is not None,
        "schedule": recipe.schedule.kind != "one-shot",
        "train": recipe.train is not None,
        "embedding": bool(recipe.extra),
    }
    for key, present in refused.items():
        if present:
            raise ConfigError(
                f"{key}: not supported with task causal-lm (a decoder is cut once, uniformly "
                "across layers, then recovered by distillation); remove it"
            )


# --- small validators ------------------------------------------------------------------------


def _mapping(raw: Any, path: str, *, example: str = "") -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        hint = f", e.g. {example}" if example else ""
        got = "missing" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(f"{path}: must be a mapping, got {got}{hint}")
    return raw


def _keys(m: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in m:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}: unknown key{hint}; allowed {'in ' + path if path else 'at the top level'}: "
                f"{', '.join(allowed)}"
            )


def _one_of(m: Mapping[str, Any], keys: tuple[str, ...], path: str) -> None:
    present = [k for k in keys if k in m]
    if len(present) != 1:
        raise ConfigError(
            f"{path}: give exactly one of {' or '.join(keys)} (got {', '.join(present) or 'none'})"
        )


def _choice(
    m: Mapping[str, Any],
    key: str,
    allowed: tuple[str, ...],
    path: str,
    *,
    default: Any = None,
    required: bool = False,
    why: str = "",
) -> Any:
    where = f"{path}.{key}" if path else key
    if key not in m:
        if required:
            raise ConfigError(f"{where} is missing: choose one of {', '.join(allowed)}")
        return default
    value = m[key]
    if value not in allowed:
        extra = f" {why}" if why else ""
        raise ConfigError(f"{where}={value!r}: must be one of {', '.join(allowed)}{extra}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(
    m: Mapping[str, Any],
    key: str,
    path: str,
    *,
    lo: int,
    hi: int | None = None,
    default: Any = ...,
) -> Any:
    where = f"{path}.{key}" if path else key
    if key not in m:
        if default is ...:
            raise ConfigError(f"{where} is missing: an integer >= {lo}")
        return default
    value = m[key]
    if not _is_int(value) or value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{where}={value!r}: must be an integer {bound}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}={value!r}: must be a number")
    return float(value)


def _lr(m: Mapping[str, Any], path: str) -> float:
    lr = _number(m.get("lr", 1e-3), f"{path}.lr")
    if not 0 < lr < 1:
        raise ConfigError(f"{path}.lr={lr}: must be > 0 and < 1, e.g. 0.001")
    return lr


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}={value!r}: must be a non-empty string")
    return value


def _factory(value: Any, where: str) -> str:
    if not isinstance(value, str) or not FACTORY_RE.match(value):
        raise ConfigError(
            f"{where}={value!r}: must be 'package.module:callable', e.g. 'mypkg.models:make_model'"
        )
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(_is_int(v) and v >= 1 for v in value):
        raise ConfigError(
            f"{where}={value!r}: must be a list of positive integers without the batch axis, "
            "e.g. [1, 8, 8]"
        )
    return tuple(value)


def _hf_folder(m: Mapping[str, Any], base_dir: Path | None) -> Path:
    for key in ("weights", "input_shape"):
        if key in m:
            raise ConfigError(
                f"model.{key}: a Hugging Face folder holds its own weights and config; remove {key}"
            )
    path = Path(_text(m["hf"], "model.hf")).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.hf={m['hf']!r}: {path} is not a Hugging Face model folder (no config.json); "
            "pass the folder `save_pretrained` wrote"
        )
    return path


def _weights(value: Any, base_dir: Path | None) -> Path | None:
    if value is None:
        return None
    path = Path(_text(value, "model.weights")).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def _options(m: Mapping[str, Any], path: str, key: str = "options") -> dict[str, Any]:
    options = m.get(key, {})
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        where = f"{path}.{key}" if path else key
        raise ConfigError(
            f"{where}={options!r}: must be a mapping of names to values, e.g. {{width: 32}}"
        )
    return dict(options)
