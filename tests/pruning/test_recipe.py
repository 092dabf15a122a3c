"""The recipe validator: each bad key or value gives a message naming it and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pruneguard.pruning.recipe import Target, builtin_recipes, load_recipe, parse_recipe
from pruneguard.registry.errors import ConfigError

GOOD: dict[str, Any] = {
    "name": "digits-cnn",
    "model": {"builtin": "digits-cnn"},
    "data": {"builtin": "digits"},
    "train": {"epochs": 2},
    "method": "channel",
    "criterion": "taylor",
    "target": {"ratio": 0.5},
    "schedule": {"kind": "iterative", "steps": 3},
    "finetune": {"epochs": 1, "lr": 0.001, "distill": True},
    "accept": {"max_accuracy_drop": 0.01},
    "export": {"opset": 18, "batch_sizes": [1, 8]},
}


def _with(**changes: Any) -> dict[str, Any]:
    recipe = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = recipe
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return recipe


DELETE = object()

BAD = [
    # (changes, fragments the one-line message must contain)
    ({"targt": {"ratio": 0.5}}, ["targt: unknown key", "did you mean 'target'", "allowed"]),
    ({"model__wieghts": "x"}, ["model.wieghts: unknown key", "weights"]),
    (
        {"target": {"ratio": 1.5}},
        ["target.ratio=1.5", "must be > 0 and < 1", "fraction of channels"],
    ),
    ({"target": {"ratio": 0}}, ["target.ratio=0", "must be > 0 and < 1"]),
    ({"target": {"ratio": 1}}, ["target.ratio=1", "must be > 0 and < 1"]),
    ({"target": {"ratio": -0.2}}, ["target.ratio=-0.2", "must be > 0 and < 1"]),
    ({"target": {"ratio": "half"}}, ["target.ratio='half'", "must be a number"]),
    (
        {"target": {"sparsity": 0.8}},
        ["target.sparsity", "method channel", "ratio or macs_reduction"],
    ),
    ({"target": {"ratio": 0.5, "macs_reduction": 0.5}}, ["exactly one of"]),
    ({"target": {}}, ["exactly one of"]),
    ({"target": DELETE}, ["target: must be a mapping, got missing"]),
    ({"method": "channels"}, ["method='channels'", "channel, head, layer, unstructured, nm"]),
    ({"method": DELETE}, ["method is missing"]),
    ({"criterion": "magnitude"}, ["criterion='magnitude'", "for method channel"]),
    ({"schedule__kind": "gradual"}, ["schedule.kind='gradual'", "one-shot, iterative"]),
    ({"schedule": {"kind": "one-shot", "steps": 3}}, ["schedule.steps=3", "one-shot"]),
    ({"schedule__steps": 1}, ["schedule.steps=1", ">= 2"]),
    ({"finetune__distill": "yes"}, ["finetune.distill='yes'", "true or false"]),
    ({"finetune__lr": 5}, ["finetune.lr=5", "> 0 and < 1"]),
    ({"finetune__epochs": -1}, ["finetune.epochs=-1", "integer >= 0"]),
    ({"accept__max_accuracy_drop": 2}, ["accept.max_accuracy_drop=2", "between 0 and 1"]),
    ({"export__batch_sizes": [0]}, ["export.batch_sizes=[0]", "positive integers"]),
    ({"export__opset": 9}, ["export.opset=9", "between 17 and 23"]),
    ({"export__ort_threads": -1}, ["export.ort_threads=-1", "integer >= 0"]),
    ({"name": "Digits CNN"}, ["name='Digits CNN'", "lowercase"]),
    ({"model": {"builtin": "digits-cnn", "factory": "a:b"}}, ["model: give exactly one of"]),
    (
        {"model": {"factory": "not a factory", "input_shape": [1, 8, 8]}},
        ["model.factory=", "module:callable"],
    ),
    (
        {"model": {"builtin": "digits-cnn", "weights": "w.safetensors"}},
        ["model.weights", "factory"],
    ),
    ({"data": {"builtin": "mnist"}}, ["data.builtin='mnist'", "digits, synthetic"]),
    ({"data": {"builtin": "synthetic"}}, ["data.shape is missing"]),
    ({"data": {"builtin": "digits", "classes": 3}}, ["data.classes", "synthetic"]),
    (
        {"round_to": 8, "method": "unstructured", "criterion": "l1", "target": {"sparsity": 0.5}},
        ["round_to=8", "only method channel"],
    ),
    (
        {"scope": "layer", "method": "nm", "criterion": "l1", "target": {"sparsity": 0.5}},
        ["scope=layer", "only methods channel, head, unstructured"],
    ),
    ({"scope": "everywhere"}, ["scope='everywhere'", "global, layer, auto"]),
    (
        {"scope": "auto", "method": "unstructured", "criterion": "l1", "target": {"sparsity": 0.5}},
        ["scope=auto", "method channel only", "use scope: global or layer"],
    ),
    (
        {"method": "nm", "criterion": "l1", "target": {"sparsity": 0.7}},
        ["target.sparsity=0.7", "2:4"],
    ),
    (
        {"method": "layer", "criterion": "ablation", "target": {"layers": 0}},
        ["target.layers=0", "integer >= 1"],
    ),
    ({"task": "detection"}, ["task='detection'", "classification, embedding"]),
    ({"embedding": {"x": 1}}, ["embedding:", "task: embedding"]),
]


@pytest.mark.parametrize(("changes", "fragments"), BAD, ids=[str(c)[:60] for c, _ in BAD])
def test_bad_recipe_names_key_value_and_allowed(
    changes: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_recipe(_with(**changes))
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_good_recipe_parses_into_frozen_config() -> None:
    recipe = parse_recipe(GOOD)
    assert recipe.target == Target("ratio", 0.5)
    assert recipe.schedule.steps == 3
    assert recipe.finetune.distill is True
    assert recipe.export.batch_sizes == (1, 8)
    with pytest.raises(AttributeError):
        recipe.method = "nm"  # type: ignore[misc]
    assert recipe.pruning_section()["target"] == {"ratio": 0.5}


def test_defaults_fill_optional_sections() -> None:
    recipe = parse_recipe(_with(schedule=DELETE, finetune=DELETE, accept=DELETE, criterion=DELETE))
    assert recipe.schedule.kind == "one-shot" and recipe.schedule.steps == 1
    assert recipe.accept is None
    assert recipe.criterion == "l2"
    assert recipe.export.ort_threads == 1  # what `pruneguard serve` gives a session by default
    assert recipe.task == "classification"


def test_nm_implies_half_sparsity() -> None:
    recipe = parse_recipe(_with(method="nm", criterion="l1", target=DELETE))
    assert recipe.target == Target("sparsity", 0.5)


def test_head_and_layer_methods_accept_their_fields() -> None:
    heads = parse_recipe(_with(method="head", criterion="ablation", target={"heads": 0.4}))
    layers = parse_recipe(_with(method="layer", criterion="magnitude", target={"layers": 3}))
    assert heads.target == Target("heads", 0.4)
    assert layers.target.as_dict() == {"layers": 3}


def test_embedding_task_takes_its_own_section() -> None:
    raw = _with(task="embedding", data={"builtin": "sentences"}, method="head", criterion="taylor")
    raw["target"] = {"heads": 0.4}
    raw["embedding"] = {"min_cosine": 0.95}
    recipe = parse_recipe(raw)
    assert recipe.task == "embedding" and recipe.extra == {"min_cosine": 0.95}


@pytest.mark.parametrize("name", builtin_recipes())
def test_builtin_recipes_load_by_name(name: str) -> None:
    assert load_recipe(name).source == f"built-in:{name}"


def test_load_recipe_from_path_resolves_weights_next_to_it(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: mine\nmodel: {factory: 'pkg.mod:make', weights: w.safetensors, input_shape: [1, 8, 8]}\n"
        "data: {builtin: digits}\nmethod: channel\ntarget: {ratio: 0.3}\n"
    )
    recipe = load_recipe(path)
    assert recipe.model.weights == tmp_path / "w.safetensors"
    assert recipe.base_dir == tmp_path


def test_unknown_recipe_name_lists_builtins() -> None:
    with pytest.raises(ConfigError, match=r"neither a file nor a built-in recipe.*digits-cnn"):
        load_recipe("no-such-recipe")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nmodel: {builtin: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(path)


EMBEDDING: dict[str, Any] = {
    "name": "minilm-combined",
    "task": "embedding",
    "model": {"builtin": "all-minilm-l6-v2"},
    "data": {"builtin": "sentences"},
    "method": ["head", "ffn"],
    "criterion": "taylor",
    "target": {"heads": 0.3, "ffn": 0.5},
    "finetune": {"epochs": 2, "distill": True},
}


def test_ffn_method_takes_a_fraction_of_neurons() -> None:
    raw = {**EMBEDDING, "method": "ffn", "target": {"ffn": 0.5}, "scope": "layer"}
    recipe = parse_recipe(raw)
    assert (recipe.method, recipe.criterion, recipe.target) == ("ffn", "taylor", Target("ffn", 0.5))
    assert recipe.combined == () and [s.method for s in recipe.stages] == ["ffn"]
    assert recipe.pruning_section()["target"] == {"ffn": 0.5}


def test_combined_methods_run_layers_heads_then_ffn() -> None:
    raw = {**EMBEDDING, "method": ["ffn", "layer", "head"],
           "criterion": {"layer": "ablation"}, "target": {"heads": 0.3, "ffn": 0.5, "layers": 1}}  # fmt: skip
    recipe = parse_recipe(raw)
    assert recipe.method == "layer+head+ffn"
    assert [(s.method, s.criterion, s.target) for s in recipe.stages] == [
        ("layer", "ablation", Target("layers", 1)),
        ("head", "taylor", Target("heads", 0.3)),
        ("ffn", "taylor", Target("ffn", 0.5)),
    ]
    section = recipe.pruning_section()
    assert section["target"] == {"layers": 1, "heads": 0.3, "ffn": 0.5}
    assert section["criterion"] == {"layer": "ablation", "head": "taylor", "ffn": "taylor"}
    assert set(section) == set(parse_recipe(GOOD).pruning_section())  # the same keys


def test_single_method_pruning_section_is_unchanged() -> None:
    assert parse_recipe(GOOD).pruning_section() == {
        "method": "channel", "criterion": "taylor", "target": {"ratio": 0.5}, "scope": None,
        "round_to": None, "schedule": {"kind": "iterative", "steps": 3},
        "finetune": {"epochs": 1, "lr": 0.001, "distill": True, "recovery_epochs": 1},
        "recipe": "digits-cnn", "seed": 0,
    }  # fmt: skip


COMBINED_BAD = [
    (
        {"task": "classification", "data": {"builtin": "digits"}},
        ["method=[head, ffn]", "only for transformer encoders of text", "model.hf",
         "use one method of"],
    ),
    ({"method": ["head"]}, ["method=[head]", "two or more different methods", "layer, head, ffn"]),
    ({"method": ["head", "head"]}, ["method=[head, head]", "two or more different"]),
    ({"method": ["head", "channel"]}, ["method=[head, channel]", "layer, head, ffn"]),
    ({"target": {"heads": 0.3}}, ["target.ffn is missing", "one target per method",
                                  "heads: 0.5, ffn: 0.5"]),
    ({"target": {"heads": 0.3, "ffn": 0.5, "layers": 1}},
     ["target.layers: fits no method of [head, ffn]", "add that method"]),
    ({"target": {"heads": 0.3, "ffn": 1.2}}, ["target.ffn=1.2", "must be > 0 and < 1",
                                              "FFN intermediate neurons"]),
    ({"target": {"heads": 0.3, "ffn": 0.5, "ratio": 0.5}}, ["target.ratio: fits no method"]),
    ({"target": {"heads": 0.3, "fnn": 0.5}}, ["target.fnn: unknown key", "did you mean 'ffn'"]),
    ({"criterion": "ablation"}, ["criterion='ablation'", "for method ffn", "one per method"]),
    ({"criterion": {"ffn": "ablation"}}, ["criterion.ffn='ablation'", "for method ffn"]),
    ({"criterion": {"layer": "taylor"}}, ["criterion.layer: unknown key", "head, ffn"]),
    ({"round_to": 8}, ["round_to=8", "only method channel"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "fragments"), COMBINED_BAD, ids=[str(c)[:60] for c, _ in COMBINED_BAD]
)
def test_bad_combined_recipe_names_key_value_and_fix(
    changes: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_recipe({**EMBEDDING, **changes})
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_ffn_scope_is_per_layer_only() -> None:
    with pytest.raises(ConfigError, match=r"scope=global with method ffn.*use scope: layer"):
        parse_recipe({**EMBEDDING, "method": "ffn", "target": {"ffn": 0.5}, "scope": "global"})
    # combined: scope is the heads' ranking; the FFN is per layer whatever it says
    assert parse_recipe({**EMBEDDING, "scope": "global"}).scope == "global"


def test_combined_recipe_is_not_varied_by_one_number() -> None:
    from pruneguard.pruning.recipe import variant

    with pytest.raises(ConfigError, match=r"method=head\+ffn: a combined recipe.*single-method"):
        variant(parse_recipe(EMBEDDING), target=0.4)


def test_minilm_fast_combines_heads_and_ffn_with_distillation() -> None:
    recipe = load_recipe("minilm-fast")
    assert recipe.task == "embedding" and recipe.finetune.distill
    assert {"head", "ffn"} <= {s.method for s in recipe.stages}
