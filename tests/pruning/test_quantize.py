"""int8 on top of pruning: the recipe section, ONNX Runtime's quantizers, the int8 gate, the
third artifact and its lineage, and a quantized version served, shadowed and rolled back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from tiny_recipes import DIGITS_TINY

from pruneguard.pruning.cli import prune
from pruneguard.pruning.gate import decide_quantized
from pruneguard.pruning.latency import make_session
from pruneguard.pruning.quantize import cpu_int8, quantize_onnx
from pruneguard.pruning.recipe import Quantize, parse_recipe
from pruneguard.pruning.registration import candidate, register_out
from pruneguard.registry import open_registry
from pruneguard.registry.artifact import sha256_file, verify
from pruneguard.registry.cli import models
from pruneguard.registry.errors import ConfigError

BASE = {
    "name": "q",
    "model": {"builtin": "digits-cnn"},
    "data": {"builtin": "digits"},
    "method": "channel",
    "target": {"ratio": 0.5},
}

# min_similarity 1.0: no int8 graph answers exactly as its fp32 parent, so this run's int8
# version breaks its budget whatever the machine (its speed against the parent is measured too)
TINY = DIGITS_TINY.replace("name: digits-tiny", "name: digits-int8") + (
    "quantize: {mode: static, calibration: 4, min_similarity: 1.0}\n"
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({}, "quantize.mode is missing: choose one of static, dynamic"),
        ({"mode": "fp16"}, "quantize.mode='fp16'"),
        ({"mode": "dynamic", "calibration": 8}, "needs no calibration"),
        (
            {"mode": "static", "per_channel": "yes"},
            "quantize.per_channel='yes': must be true or false",
        ),
        ({"mode": "static", "min_similarity": 1.5}, "quantize.min_similarity=1.5"),
        ({"mode": "static", "calibration": 0}, "quantize.calibration"),
        ({"mode": "static", "bits": 4}, "bits"),
    ],
)
def test_a_bad_quantize_section_is_refused_by_name(section: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        parse_recipe({**BASE, "quantize": section})


def test_the_quantize_section_defaults() -> None:
    recipe = parse_recipe({**BASE, "quantize": {"mode": "static"}})
    assert recipe.quantize == Quantize(mode="static", per_channel=True, calibration=16)
    assert parse_recipe(BASE).quantize is None


def test_cpu_int8_reads_the_vnni_flags_and_gives_ort_advice_without_them(tmp_path: Path) -> None:
    with_vnni = tmp_path / "a"
    with_vnni.write_text("model name\t: Some CPU\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    without = tmp_path / "b"
    without.write_text("model name\t: Older CPU\nflags\t\t: fpu sse avx2\n")
    yes, no = cpu_int8(with_vnni), cpu_int8(without)
    assert (yes["vnni"], yes["int8_flags"], yes["reduce_range_advised"]) == (
        True,
        ["avx512_vnni"],
        False,
    )
    assert yes["advice"] is None and yes["cpu"] == "Some CPU"
    assert (no["vnni"], no["reduce_range_advised"]) == (False, True)
    assert "reduce_range" in no["advice"]


def _gate_metrics(over_parent: dict[str, float], similarity: float) -> dict[str, Any]:
    return {
        "accuracy": 0.975,
        "baseline_accuracy": 0.98,
        "speedup": {"1": 2.0, "8": 2.2},
        "speedup_over_parent": over_parent,
        "parity_to_parent": {"similarity_mean": similarity},
    }


def test_int8_must_beat_its_parent_and_answer_as_it_does() -> None:
    ok = decide_quantized(_gate_metrics({"1": 1.1, "8": 1.2}, 0.995), min_similarity=0.98)
    assert ok.passed, ok.reason
    slow = decide_quantized(_gate_metrics({"1": 1.1, "8": 0.93}, 0.995), min_similarity=0.98)
    assert not slow.passed
    assert slow.reasons == (
        "int8 is 0.93× its fp32 parent's speed at batch 8 as served: not faster, so not worth "
        "serving; keep the fp32 pruned version",
    )
    off = decide_quantized(_gate_metrics({"1": 1.1}, 0.95), min_similarity=0.98)
    assert off.reasons == (
        "int8 answers follow the fp32 parent's with mean similarity 0.9500; "
        "quantize.min_similarity is 0.9800",
    )
    budget = decide_quantized(_gate_metrics({"1": 1.1}, 0.99), min_similarity=0.98,
                              max_accuracy_drop=0.001)  # fmt: skip
    assert not budget.passed and "accept.max_accuracy_drop allows 0.10" in budget.reason


def test_the_candidate_is_int8_only_when_it_passed() -> None:
    passed, refused = {"passed": True}, {"passed": False}
    assert candidate({"pruned": passed}) == "pruned"
    assert candidate({"pruned": passed, "quantized": refused}) == "pruned"
    assert candidate({"pruned": refused, "quantized": passed}) == "quantized"


def _small_cnn(path: Path) -> np.ndarray:
    from pruneguard.pruning.export import export_onnx
    from pruneguard.pruning.models.digits_cnn import build_digits_cnn

    model = build_digits_cnn(width=16, seed=0).eval()
    export_onnx(model, torch.zeros(1, 1, 8, 8), path, opset=18)
    return np.random.default_rng(0).uniform(0, 16, size=(64, 1, 8, 8)).astype(np.float32)


def test_static_int8_is_qdq_calibrated_on_the_given_batches(tmp_path: Path) -> None:
    rows = _small_cnn(tmp_path / "fp32.onnx")
    feeds = [{"input": rows[i : i + 16]} for i in range(0, 64, 16)]
    record = quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx",
                           Quantize(mode="static", calibration=4), calibration=feeds)  # fmt: skip
    assert (record["calibration"], record["format"], record["mode"]) == (4, "QDQ", "static")
    assert record["machine"]["vnni"] in (True, False)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32 = make_session(tmp_path / "fp32.onnx", 1).run(None, {"input": rows})[0]
    int8 = make_session(tmp_path / "int8.onnx", 1).run(None, {"input": rows})[0]
    assert int8.shape == fp32.shape and not np.array_equal(int8, fp32)
    assert np.corrcoef(int8.ravel(), fp32.ravel())[0, 1] > 0.99  # int8 follows, not equals


def test_static_without_calibration_data_is_a_clear_error(tmp_path: Path) -> None:
    _small_cnn(tmp_path / "fp32.onnx")
    with pytest.raises(ConfigError, match="needs calibration batches"):
        quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", Quantize(mode="static"))
    assert not (tmp_path / "int8.onnx").exists()


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Any]:
    """One CLI run with a quantize section, registered in a registry of its own."""
    tmp = tmp_path_factory.mktemp("int8-run")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(TINY)
    home = tmp / "home"
    env = {
        "PRUNEGUARD_HOME": str(home),
        "BENTOML_HOME": str(home / "bentoml"),
        "PRUNEGUARD_DB_URL": None,
    }
    args = [str(recipe), "--out", str(tmp / "out"), "--json", "--register", "--quiet"]
    result = CliRunner(env=env).invoke(prune, args)
    assert result.exit_code == 0, result.output  # the pruned version passed; int8 did not
    return {"out": tmp / "out", "home": home, "env": env, "stderr": result.stderr, "recipe": recipe,
            "json": json.loads(result.stdout)}  # fmt: skip


@pytest.mark.slow
def test_a_run_writes_a_third_artifact_whose_parent_is_the_pruned_one(
    int8_run: dict[str, Any],
) -> None:
    out = int8_run["out"]
    assert sorted(p.name for p in out.iterdir()) == ["dense", "pruned", "quantized"]
    manifest = verify(out / "quantized")
    assert manifest["kind"] == "quantized"
    assert manifest["parent"]["sha256"] == sha256_file(out / "pruned" / "model.onnx")
    m = manifest["metrics"]
    assert set(m["speedup_over_parent"]) == set(m["speedup"]) == {"1", "4"}
    assert set(m["parent_latency_ms"]) == {"1", "4"}
    q = manifest["pruning"]["quantization"]
    assert (q["mode"], q["calibration"], q["format"]) == ("static", 4, "QDQ")
    assert isinstance(q["machine"]["vnni"], bool)
    assert "VNNI" in manifest["notes"][-1]
    # the recorded int8 predictions and accuracy are what the int8 graph answers
    frame = pd.read_parquet(out / "quantized" / "reference.parquet")
    rows = frame[[f"f{i}" for i in range(64)]].to_numpy(np.float32).reshape(-1, 1, 8, 8)
    logits = make_session(out / "quantized" / "model.onnx", 1).run(None, {"input": rows})[0]
    assert np.array_equal(logits.argmax(1), frame["prediction"].to_numpy())
    assert m["accuracy"] == pytest.approx(float((frame["prediction"] == frame["label"]).mean()))
    parity = m["parity_to_parent"]
    assert 0.9 < parity["similarity_mean"] < 1.0 and parity["rows"] == len(frame)
    assert m["agreement_with_parent"] == parity["agreement"]


@pytest.mark.slow
def test_int8_that_breaks_its_budget_is_refused_as_champion(int8_run: dict[str, Any]) -> None:
    stderr, printed = int8_run["stderr"], int8_run["json"]
    assert "[pruneguard] int8 NOT accepted:" in stderr
    assert "quantize.min_similarity is 1.0000" in stderr
    verdict = printed["quantized"]["pruning"]["acceptance"]
    assert verdict["passed"] is False and "quantize.min_similarity is 1.0000" in verdict["reason"]
    block = printed["registration"]
    assert block["candidate"] == "pruned" and block["pruned"]["aliases"] == ["champion"]
    assert block["quantized"]["aliases"] == []
    assert block["verdicts"]["quantized"] == {"passed": False, "reason": verdict["reason"]}
    runner = CliRunner(env=int8_run["env"])
    history = json.loads(runner.invoke(models, ["history", "digits-int8", "--json"]).stdout)
    refused = [e for e in history if e["action"] == "refused"]
    assert [e["to_version"] for e in refused] == [block["quantized"]["tag"]]
    lineage = json.loads(
        runner.invoke(models, ["lineage", block["quantized"]["tag"], "--json"]).stdout
    )
    assert [(e["kind"], e["parent"]) for e in lineage] == [
        ("dense", None), ("pruned", block["dense"]["tag"]), ("quantized", block["pruned"]["tag"]),
    ]  # fmt: skip


@pytest.mark.slow
def test_int8_that_passes_becomes_the_first_champion(
    int8_run: dict[str, Any], tmp_path: Path, pruneguard_home: Path
) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(int8_run["out"], out)
    manifest = json.loads((out / "quantized" / "manifest.json").read_text())
    manifest["pruning"]["acceptance"].update(passed=True, reasons=[], reason="meets the budget")
    (out / "quantized" / "manifest.json").write_text(
        json.dumps(manifest)
    )  # as a passing run writes it
    block = register_out(out, "auto", actor="test")
    assert block["candidate"] == "quantized" and block["promoted"] is True
    assert block["quantized"]["aliases"] == ["champion"]
    assert block["dense"]["aliases"] == ["baseline", "shadow"]


@pytest.mark.slow
def test_a_quantized_champion_is_served_shadowed_and_rolled_back(
    int8_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving_support import Server, wait_for

    for key, value in int8_run["env"].items():  # the run's registry and store, whatever is set
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)

    block, home = int8_run["json"]["registration"], int8_run["home"]
    tags = {kind: block[kind]["tag"] for kind in ("dense", "pruned", "quantized")}
    version = {kind: tag.split(":")[1] for kind, tag in tags.items()}
    with open_registry(None, home=home) as registry:
        registry.promote(tags["quantized"], actor="test", reason="serve the int8 version")
    server = Server(home, model="digits-int8", extra=("--shadow-sample", "1.0"))
    try:
        server.wait_ready()
        rows = np.random.default_rng(1).uniform(0, 16, size=(6, 1, 8, 8)).astype(np.float32)
        answer = httpx.post(
            f"{server.url}/predict", json={"inputs": rows.tolist()}, timeout=30
        ).json()
        assert answer["model_version"] == version["quantized"]
        int8 = make_session(int8_run["out"] / "quantized" / "model.onnx", 1)
        assert answer["predictions"] == int8.run(None, {"input": rows})[0].argmax(1).tolist()
        metrics = lambda: httpx.get(f"{server.url}/metrics", timeout=10).text  # noqa: E731
        wait_for(lambda: "pruneguard_shadow_comparisons_total{" in metrics())
        with open_registry(None, home=home) as registry:
            back = registry.rollback("digits-int8", actor="agent:test", reason="int8 drifted")
        assert (back.from_version, back.to_version) == (tags["quantized"], tags["pruned"])

        def served_version() -> bool:
            body = {"inputs": rows[:1].tolist()}
            return (
                httpx.post(f"{server.url}/predict", json=body, timeout=30).json()["model_version"]
                == version["pruned"]
            )

        assert wait_for(served_version)
    finally:
        server.stop()


@pytest.mark.slow
def test_a_text_encoder_gets_dynamic_int8_after_the_transformer_optimizer(tmp_path: Path) -> None:
    from dataclasses import replace

    from hf_models import make_hf_folder, tiny_recipe

    from pruneguard.pruning import pipeline

    folder = make_hf_folder(tmp_path / "hf", "bert")
    recipe = replace(tiny_recipe(folder, method="head"), quantize=Quantize(mode="dynamic"))
    pipeline.run(recipe, tmp_path / "out", progress=False)
    manifest = verify(tmp_path / "out" / "quantized")
    assert manifest["io"]["task"] == "embedding"
    assert any(name.startswith("tokenizer/") for name in manifest["files"])
    q = manifest["pruning"]["quantization"]
    assert (q["mode"], q["format"]) == ("dynamic", "QOperator (dynamic)")
    assert q["fused_operators"].get("LayerNormalization", 0) > 0  # the optimizer ran
    ops = {
        n.op_type for n in onnx.load(str(tmp_path / "out" / "quantized" / "model.onnx")).graph.node
    }
    assert (
        "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    )
    parity = manifest["metrics"]["parity_to_parent"]  # embeddings: cosine to the fp32 parent's
    assert parity["similarity_mean"] > 0.99 and parity["rows"] > 0
    assert (
        manifest["metrics"]["onnx_bytes"]
        < verify(tmp_path / "out" / "pruned")["metrics"]["onnx_bytes"]
    )


def test_static_int8_for_a_text_model_is_refused_with_the_mode_it_needs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a text model is quantized with mode: dynamic"):
        parse_recipe({"name": "t", "task": "embedding", "model": {"builtin": "all-minilm-l6-v2"}, "data": {"builtin": "sentences"},
                      "method": "head", "target": {"heads": 0.25},
                      "quantize": {"mode": "static"}})  # fmt: skip
    with pytest.raises(
        ConfigError, match="a tensor model \\(CNN\\) is quantized with mode: static"
    ):
        parse_recipe({**BASE, "quantize": {"mode": "dynamic"}})


@pytest.mark.slow
def test_plan_says_whether_int8_helps_here_and_quotes_the_measured_run(
    int8_run: dict[str, Any], tmp_path: Path
) -> None:
    runner = CliRunner(env=int8_run["env"])
    shown = runner.invoke(prune, ["plan", str(int8_run["recipe"]), "--json"])
    assert shown.exit_code == 0, shown.output
    int8 = json.loads(shown.stdout)["int8"]
    assert int8["likely_to_help"] == cpu_int8()["vnni"] and int8["mode"] == "static"
    assert int8["recipe_quantizes"] is True
    measured = int8["measured"]
    assert measured["tag"] == int8_run["json"]["registration"]["quantized"]["tag"]
    assert (
        measured["speedup_over_parent"]
        == int8_run["json"]["quantized"]["metrics"]["speedup_over_parent"]
    )
    assert measured["accepted"] is False
    text = runner.invoke(prune, ["plan", str(int8_run["recipe"])]).stdout
    assert "int8: " in text and f"measured: {measured['tag']} (refused)" in text

    empty = tmp_path / "nowhere"
    fresh = CliRunner(env={"PRUNEGUARD_HOME": str(empty), "PRUNEGUARD_DB_URL": None})
    plan = json.loads(fresh.invoke(prune, ["plan", str(int8_run["recipe"]), "--json"]).stdout)
    assert plan["int8"]["measured"] is None and not empty.exists()  # plan creates nothing


def test_int8_advice_without_vnni_names_reduce_range() -> None:
    from pruneguard.pruning.advice import int8_plan

    recipe = parse_recipe({**BASE, "quantize": {"mode": "static"}})
    plan = int8_plan(recipe, {"vnni": False, "reduce_range_advised": True,
                              "advice": "no VNNI on this CPU: ... reduce_range ...", "cpu": "x"})  # fmt: skip
    assert plan["likely_to_help"] is False and plan["reduce_range_advised"] is True
    assert "reduce_range" in plan["why"] and plan["measured"] is None
