"""`pruneguard models ...` through click's CliRunner: output, JSON and exit codes."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pruneguard.cli import main

MODEL = "digits"


def run(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["models", "--db-url", db_url, *args])


@pytest.fixture
def three_versions(registry, base_artifacts):
    dense, pruned = registry.register_run(
        base_artifacts["dense"], base_artifacts["pruned"], actor="prune"
    )
    newer = registry.register(base_artifacts["pruned2"], actor="t", parent_tag=dense.tag)
    return dense.tag, pruned.tag, newer.tag


def test_rollback_restores_the_prior_champion_and_history_shows_who_when_why(
    registry, db_url, three_versions, monkeypatch
) -> None:
    monkeypatch.setenv("LOGNAME", "carol")
    _, pruned, newer = three_versions
    promoted = run(db_url, "promote", newer, "--reason", "better on review")
    assert promoted.exit_code == 0, promoted.output
    assert f"{pruned} -> {newer}" in promoted.output

    result = run(db_url, "rollback", MODEL, "--reason", "accuracy fell in prod")
    assert result.exit_code == 0, result.output
    assert f"{newer} -> {pruned}" in result.output and "cli:carol" in result.output
    assert registry.resolve(MODEL, "champion") == pruned

    history = run(db_url, "history", MODEL)
    assert history.exit_code == 0, history.output
    last = history.output.strip().splitlines()[-1]
    assert "cli:carol" in last and "rollback" in last and "accuracy fell in prod" in last
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", last)

    events = json.loads(run(db_url, "history", "--all", "--json").stdout)
    assert events[-1]["actor"] == "cli:carol" and events[-1]["reason"] == "accuracy fell in prod"
    assert events[-1]["from_version"] == newer and events[-1]["to_version"] == pruned
    when = dt.datetime.fromisoformat(events[-1]["ts"])
    assert when.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 3600


def test_corrupted_version_is_refused_by_verify_and_rollback_to(
    registry, db_url, three_versions, state, corrupt
) -> None:
    dense, _, _ = three_versions
    stored = registry.store.path_of(dense) / "model.onnx"
    corrupt(stored)
    before = state(registry)

    verify = run(db_url, "verify", dense)
    assert verify.exit_code == 1
    assert str(stored) in verify.output and "fails its sha256 check" in verify.output
    verify_all = run(db_url, "verify", "--json")
    assert verify_all.exit_code == 1
    assert [r["ok"] for r in json.loads(verify_all.stdout)].count(False) == 1

    rollback = run(db_url, "rollback", MODEL, "--to", dense, "--reason", "try dense")
    assert rollback.exit_code == 1
    assert rollback.output.startswith("Error: ") and str(stored) in rollback.output
    assert len(rollback.output.strip().splitlines()) == 1
    assert state(registry) == before

    from pruneguard.registry import ArtifactCorrupt

    with pytest.raises(ArtifactCorrupt) as info:
        registry.path(dense)
    assert info.value.path == str(stored)
    assert registry.path(dense, verify=False) == stored.parent


def test_every_command_prints_json(registry, db_url, three_versions, tmp_path) -> None:
    dense, pruned, newer = three_versions
    listed = json.loads(run(db_url, "list", "--json").stdout)
    assert [v["tag"] for v in listed] == [dense, pruned, newer]
    assert json.loads(run(db_url, "list", "--kind", "dense", "--json").stdout)[0]["tag"] == dense
    shown = json.loads(run(db_url, "show", pruned, "--json").stdout)
    assert shown["parent_tag"] == dense and shown["aliases"] == ["champion"]
    chain = json.loads(run(db_url, "lineage", pruned, "--json").stdout)
    assert [c["tag"] for c in chain] == [dense, pruned]
    aliases = json.loads(run(db_url, "aliases", MODEL, "--json").stdout)
    assert aliases["aliases"]["champion"] == pruned and aliases["revision"] == registry.revision()
    moved = json.loads(run(db_url, "promote", newer, "--shadow-previous", "--json").stdout)
    assert moved["to_version"] == newer
    assert json.loads(run(db_url, "verify", "--json").stdout)[0]["ok"] is True
    assert json.loads(run(db_url, "gc", "--dry-run", "--json").stdout)["removed"] == []
    exported = json.loads(run(db_url, "export", newer, str(tmp_path), "--json").stdout)
    assert Path(exported["path"]).is_file()
    imported = json.loads(run(db_url, "import", exported["path"], "--json").stdout)
    assert imported["tag"] == newer


def test_register_command_and_tables(pruneguard_home, base_artifacts) -> None:
    url = f"sqlite:///{pruneguard_home / 'registry.db'}"
    result = run(url, "register", str(base_artifacts["dense"]), "--alias", "baseline")
    assert result.exit_code == 0, result.output
    tag = result.output.split()[1]
    assert "(baseline)" in result.output
    table = run(url, "list").output.splitlines()
    assert table[0].split()[:3] == ["TAG", "KIND", "METHOD"] and tag in table[2]
    assert "baseline" in table[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", f"{MODEL}:ffff"], "is not registered"),
        (["show", "nocolon"], "NAME:VERSION"),
        (["rollback", "nope", "--reason", "x"], "no model named 'nope'"),
        (["history"], "give a model NAME or --all"),
        (["rollback", MODEL, "--to", "other:abc"], "model 'other', not 'digits'"),
    ],
)
def test_errors_are_one_line_and_exit_non_zero(pruneguard_home, base_artifacts, args, message):
    url = f"sqlite:///{pruneguard_home / 'registry.db'}"
    run(url, "register", str(base_artifacts["dense"]), "--alias", "champion")
    result = run(url, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_unreachable_database_is_one_line(pruneguard_home) -> None:
    result = run("postgresql+psycopg://u:hunter2@127.0.0.1:1/db", "list")
    assert result.exit_code == 1
    assert "cannot reach the registry database" in result.output
    assert "hunter2" not in result.output and "u:***@" in result.output


def test_every_command_has_help_with_an_example() -> None:
    from pruneguard.registry.cli import models

    for name, command in models.commands.items():
        text = CliRunner().invoke(main, ["models", name, "--help"]).output
        assert "Example" in text and f"pruneguard models {name}" in text, name
        assert command.help


def test_models_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from pruneguard.cli import main; "
        "r = CliRunner().invoke(main, ['models', 'list', '--help']); assert r.exit_code == 0; "
        "print([m for m in ('bentoml', 'torch', 'pandas', 'onnxruntime') if m in sys.modules])"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_importing_a_file_that_is_not_an_archive_is_one_line(pruneguard_home, tmp_path) -> None:
    junk = tmp_path / "junk.bentomodel"
    junk.write_text("not an archive")
    result = run(f"sqlite:///{pruneguard_home / 'registry.db'}", "import", str(junk))
    assert result.exit_code == 1
    assert "is not a BentoML model archive" in result.output and "Traceback" not in result.output


def test_lineage_table_formats_ratios_and_accuracy_changes(registry, db_url, three_versions):
    _, pruned, _ = three_versions
    chain = json.loads(run(db_url, "lineage", pruned, "--json").stdout)
    metrics, delta = chain[1]["metrics"], chain[1]["delta"]
    table = run(db_url, "lineage", pruned)
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.startswith(pruned))
    points = delta["accuracy"] * 100
    sign = "−" if points < 0 else "+"
    assert f"{metrics['accuracy']:.4f} ({sign}{abs(points):.2f})" in row
    assert f"{delta['macs_ratio']:.2f}×" in row
    speedups = sorted(metrics["speedup"].items(), key=lambda kv: int(kv[0]))
    assert " / ".join(f"{v:.2f}× ({b})" for b, v in speedups) in row
    assert "{" not in table.stdout  # no raw JSON in a table
