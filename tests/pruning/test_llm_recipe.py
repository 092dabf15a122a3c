"""``task: causal-lm`` recipes: what they may say, and the errors that say what to do."""

from __future__ import annotations

from typing import Any

import pytest

from pruneguard.pruning.llm import LMOptions, plan
from pruneguard.pruning.recipe import load_recipe, parse_recipe
from pruneguard.registry.errors import ConfigError

from .test_decoder import batch, tiny_llama


def recipe(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "llm", "task": "causal-lm", "model": {"builtin": "smollm2-135m"},
        "data": {"builtin": "chat"}, "method": "head", "target": {"heads": 0.334},
        "finetune": {"epochs": 1, "lr": 1e-4, "distill": True},
    }  # fmt: skip
    base.update(changes)
    return base


def test_the_built_in_decoder_recipes_parse_with_their_stages() -> None:
    heads = load_recipe("smollm2-heads")
    assert heads.is_decoder and not heads.is_text
    assert [(s.method, s.criterion) for s in heads.stages] == [("head", "ablation")]
    width = load_recipe("smollm2-width")
    assert [(s.method, s.criterion) for s in width.stages] == [
        ("head", "ablation"),
        ("ffn", "activation"),
    ]


def test_decoder_criteria_and_defaults_are_the_decoder_ones() -> None:
    assert parse_recipe(recipe()).criterion == "ablation"
    assert parse_recipe(recipe(method="layer", target={"layers": 2})).criterion == "influence"
    with pytest.raises(ConfigError, match=r"criterion='gradient'.*ablation, taylor, l2"):
        parse_recipe(recipe(criterion="gradient"))
    with pytest.raises(ConfigError, match=r"method='channel'.*for task causal-lm"):
        parse_recipe(recipe(method="channel", target={"ratio": 0.5}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": {"factory": "x.y:z"}}, "model='x.y:z' with task causal-lm"),
        ({"model": {"builtin": "digits-cnn"}}, "use model: {builtin: smollm2-135m}"),
        ({"quantize": {"mode": "dynamic"}}, "quantize: not supported with task causal-lm"),
        ({"schedule": {"kind": "iterative", "steps": 2}}, "schedule: not supported"),
        ({"data": {"builtin": "digits"}}, "data.builtin='digits'.*for task causal-lm"),
    ],
)
def test_what_a_decoder_recipe_cannot_say_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_recipe(recipe(**changes))


def test_data_options_are_checked_by_name_and_value() -> None:
    assert LMOptions.from_mapping({"train_prompts": 5}).train_prompts == 5
    with pytest.raises(ConfigError, match=r"data.options.prompts: unknown; allowed: train_prompts"):
        LMOptions.from_mapping({"prompts": 5})
    with pytest.raises(ConfigError, match=r"data.options.plain=0: must be an integer >= 1"):
        LMOptions.from_mapping({"plain": 0})


def test_a_head_target_must_remove_whole_kv_groups() -> None:
    model = tiny_llama()  # 2 KV groups per layer
    parsed = parse_recipe(recipe(target={"heads": 0.2}))
    with pytest.raises(ConfigError, match=r"target.heads=0.2: .*multiple of 1/2"):
        plan(parsed, model, [batch()])
    cut, report = plan(parse_recipe(recipe(target={"heads": 0.5})), model, [batch()])
    assert cut.kv_groups is not None and all(len(kept) == 1 for kept in cut.kv_groups)
    assert report["kv_groups_removed_per_layer"] == 1
