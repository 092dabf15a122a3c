"""Register, list, show, promote, rollback, history, lineage, gc, export/import and locks,
on SQLite and PostgreSQL; every bad input is a clear error that changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pruneguard.registry import (
    ArtifactCorrupt,
    ArtifactError,
    ConfigError,
    Conflict,
    NotFound,
    Unavailable,
)

MODEL = "digits"


def test_register_stores_in_bentoml_with_labels_and_metadata(registry, base_artifacts) -> None:
    version = registry.register(base_artifacts["dense"], actor="test")
    assert version.tag == f"{MODEL}:{version.version}"
    assert version.kind == "dense" and version.labels["kind"] == "dense"
    assert version.labels["parent"] == "none"
    entry = registry.path(version.tag)
    assert entry == registry.store.path_of(version.tag)
    assert {"model.onnx", "reference.parquet", "manifest.json", "model.yaml"} <= {
        p.name for p in entry.iterdir()
    }
    model_yaml = (entry / "model.yaml").read_text()
    assert "kind: dense" in model_yaml and "pruneguard.artifact/v1" in model_yaml
    assert [v.tag for v in registry.list()] == [version.tag]
    [event] = registry.history(MODEL)
    assert (event.action, event.actor, event.to_version) == ("register", "test", version.tag)


def test_registering_the_same_model_twice_returns_the_existing_version(
    registry, base_artifacts, tmp_path, state
) -> None:
    first = registry.register(base_artifacts["dense"], actor="test")
    before = state(registry)
    copy = shutil.copytree(base_artifacts["dense"], tmp_path / "copy")
    again = registry.register(copy, actor="someone-else")
    assert again == first
    assert state(registry) == before


def test_register_run_links_lineage_and_sets_first_aliases(registry, base_artifacts) -> None:
    dense, pruned = registry.register_run(
        base_artifacts["dense"], base_artifacts["pruned"], actor="prune"
    )
    assert pruned.parent_tag == dense.tag and pruned.labels["parent"] == dense.tag
    assert pruned.labels["method"] == "channel"
    assert registry.aliases(MODEL) == {
        "champion": pruned.tag,
        "shadow": dense.tag,
        "baseline": dense.tag,
    }
    assert pruned.aliases == ("champion",) and dense.aliases == ("shadow", "baseline")
    chain = registry.lineage(pruned.tag)
    assert [link["tag"] for link in chain] == [dense.tag, pruned.tag]
    assert chain[0]["delta"] is None
    assert chain[1]["parent"] == dense.tag
    assert set(chain[1]["delta"]) == {"accuracy", "params_ratio", "macs_ratio", "speedup"}
    assert chain[1]["delta"]["accuracy"] == pytest.approx(0.0)
    assert [link["tag"] for link in registry.lineage(dense.tag)] == [dense.tag, pruned.tag]
    # The dense baseline is recorded as the first champion, so a pruned champion can be
    # rolled back from the very first run.
    back = registry.rollback(MODEL, actor="agent:test", reason="accuracy fell")
    assert (back.from_version, back.to_version) == (pruned.tag, dense.tag)


def test_a_run_with_int8_registers_dense_pruned_quantized_as_one_chain(
    registry, base_artifacts, variant
) -> None:
    quantized = variant(5, kind="pruned")
    manifest = json.loads((quantized / "manifest.json").read_text())
    manifest["kind"] = "quantized"
    (quantized / "manifest.json").write_text(json.dumps(manifest))
    dense, pruned, int8 = registry.register_run(
        base_artifacts["dense"], base_artifacts["pruned"], actor="prune",
        quantized_dir=quantized,
        aliases={"champion": "quantized", "shadow": "dense", "baseline": "dense"},
    )  # fmt: skip
    assert (int8.kind, int8.parent_tag, pruned.parent_tag) == ("quantized", pruned.tag, dense.tag)
    assert registry.aliases(MODEL) == {
        "champion": int8.tag, "shadow": dense.tag, "baseline": dense.tag,
    }  # fmt: skip
    chain = registry.lineage(int8.tag)
    assert [(link["kind"], link["parent"]) for link in chain] == [
        ("dense", None), ("pruned", dense.tag), ("quantized", pruned.tag),
    ]  # fmt: skip
    assert [v.tag for v in registry.list(MODEL, kind="quantized")] == [int8.tag]
    back = registry.rollback(MODEL, actor="agent:test", reason="int8 answers drifted")
    assert (back.from_version, back.to_version) == (int8.tag, dense.tag)


def test_a_second_run_does_not_move_aliases_and_aliases_are_configurable(
    registry, base_artifacts, variant
) -> None:
    dense, pruned = registry.register_run(
        base_artifacts["dense"],
        base_artifacts["pruned"],
        actor="prune",
        aliases={"champion": "dense", "shadow": "pruned"},
    )
    assert registry.aliases(MODEL) == {"champion": dense.tag, "shadow": pruned.tag}
    revision = registry.revision()
    _, later = registry.register_run(base_artifacts["dense"], variant(7), actor="prune")
    assert registry.aliases(MODEL) == {"champion": dense.tag, "shadow": pruned.tag}
    assert registry.revision() == revision and later.aliases == ()


def test_list_filters_by_name_kind_and_labels(registry, base_artifacts, variant) -> None:
    dense, pruned = registry.register_run(
        base_artifacts["dense"], base_artifacts["pruned"], actor="t"
    )
    other = registry.register(variant(3, name="other"), actor="t", labels={"team": "vision"})
    assert {v.tag for v in registry.list()} == {dense.tag, pruned.tag, other.tag}
    assert [v.tag for v in registry.list(MODEL, kind="pruned")] == [pruned.tag]
    assert [v.tag for v in registry.list(labels={"team": "vision"})] == [other.tag]
    assert [v.tag for v in registry.list(labels={"method": "channel", "kind": "pruned"})] == [
        pruned.tag,
        other.tag,
    ]
    assert registry.list("nobody") == []


def test_promote_rollback_and_history(registry, base_artifacts) -> None:
    dense, pruned = registry.register_run(
        base_artifacts["dense"], base_artifacts["pruned"], actor="prune"
    )
    newer = registry.register(base_artifacts["pruned2"], actor="t", parent_tag=dense.tag)
    revision = registry.revision()
    event = registry.promote(newer.tag, actor="alice", reason="better", shadow_previous=True)
    assert (event.from_version, event.to_version, event.action) == (
        pruned.tag,
        newer.tag,
        "promote",
    )
    assert registry.aliases(MODEL)["shadow"] == pruned.tag
    assert registry.revision() > revision

    back = registry.rollback(MODEL, actor="bob", reason="accuracy fell", evidence={"gap": 0.1})
    assert (back.from_version, back.to_version) == (newer.tag, pruned.tag)
    assert registry.resolve(MODEL, "champion") == pruned.tag
    last = registry.history(MODEL)[-1]
    assert (last.actor, last.reason, last.evidence, last.action) == (
        "bob",
        "accuracy fell",
        {"gap": 0.1},
        "rollback",
    )
    assert last.ts.endswith("+00:00")
    # The rollback undid the promotion; the next one undoes the first prune run, whose dense
    # baseline was recorded as the first champion; before that there is nothing.
    assert registry.rollback(MODEL, actor="bob").to_version == dense.tag
    with pytest.raises(Conflict, match="no prior version"):
        registry.rollback(MODEL, actor="bob")
    to = registry.rollback(MODEL, actor="bob", to=pruned.tag, reason="pruned is fine again")
    assert (to.from_version, to.to_version) == (dense.tag, pruned.tag)
    assert [e.id for e in registry.history(MODEL, limit=2)] == [
        e.id for e in registry.history()[-2:]
    ]


def test_set_alias_compare_and_set(registry, base_artifacts) -> None:
    dense, pruned = registry.register_run(
        base_artifacts["dense"], base_artifacts["pruned"], actor="t"
    )
    with pytest.raises(Conflict, match="another actor moved it"):
        registry.set_alias(MODEL, "champion", dense.tag, actor="t", expected=dense.tag)
    event = registry.set_alias(MODEL, "champion", dense.tag, actor="t", expected=pruned.tag)
    assert event.from_version == pruned.tag
    assert registry.set_alias(MODEL, "shadow", pruned.tag, actor="t").from_version == dense.tag


def test_try_lock_is_a_lease(registry) -> None:
    assert registry.try_lock("agent:digits", "a", ttl_s=30)
    assert not registry.try_lock("agent:digits", "b", ttl_s=30)
    assert registry.try_lock("agent:digits", "a", ttl_s=30)  # renew
    assert registry.try_lock("agent:other", "b", ttl_s=30)
    assert registry.release_lock("agent:digits", "a")
    assert registry.try_lock("agent:digits", "b", ttl_s=-1)  # already expired
    assert registry.try_lock("agent:digits", "c", ttl_s=30)


def test_gc_keeps_referenced_versions(registry, base_artifacts, variant) -> None:
    dense, pruned = registry.register_run(
        base_artifacts["dense"], base_artifacts["pruned"], actor="t"
    )
    newer = registry.register(base_artifacts["pruned2"], actor="t", parent_tag=dense.tag)
    registry.promote(newer.tag, actor="t")  # pruned stays reachable by rollback
    loose = registry.register(variant(5), actor="t")
    dry = registry.gc(dry_run=True)
    assert dry["removed"] == [loose.tag] and registry.get(loose.tag)
    result = registry.gc(grace_s=0)
    assert result["removed"] == [loose.tag]
    assert {v.tag for v in registry.list()} == {dense.tag, pruned.tag, newer.tag}
    assert loose.tag not in registry.store.tags()
    with pytest.raises(NotFound):
        registry.get(loose.tag)
    assert registry.history(MODEL)[-1].action == "gc"


def test_gc_removes_orphaned_store_entries(registry, base_artifacts) -> None:
    version = registry.register(base_artifacts["dense"], actor="t")
    registry.set_alias(MODEL, "baseline", version.tag, actor="t")
    orphan = f"{MODEL}:0123456789abcdef"
    shutil.copytree(registry.store.path_of(version.tag), registry.store.path_of(orphan))
    assert [v.tag for v in registry.list()] == [version.tag]  # an orphan is never listed
    assert registry.gc(grace_s=3600)["orphans"] == []
    assert registry.gc(grace_s=0)["orphans"] == [orphan]
    assert registry.store.tags() == [version.tag]


def test_export_then_import_on_another_machine(
    registry, base_artifacts, tmp_path, monkeypatch
) -> None:
    _, pruned = registry.register_run(base_artifacts["dense"], base_artifacts["pruned"], actor="t")
    archive = registry.export(pruned.tag, tmp_path / "out")
    assert archive.is_file()
    from pruneguard.registry import open_registry

    other_home = tmp_path / "machine-b"
    monkeypatch.setenv("BENTOML_HOME", str(other_home / "bentoml"))
    with open_registry(f"sqlite:///{other_home / 'registry.db'}", home=other_home) as other:
        imported = other.import_archive(archive, actor="ops")
        assert imported.tag == pruned.tag and imported.manifest == pruned.manifest
        assert other.verify(pruned.tag)["ok"]
        assert other.history(MODEL)[-1].action == "import"
        assert other.import_archive(archive, actor="ops") == imported


# --- bad input: a clear error, and nothing changes ---------------------------------------


@pytest.fixture
def populated(registry, base_artifacts) -> Any:
    # Without a baseline alias the pruned champion is the first one: nothing to roll back to.
    registry.register_run(
        base_artifacts["dense"],
        base_artifacts["pruned"],
        actor="t",
        aliases={"champion": "pruned", "shadow": "dense"},
    )
    registry.register(base_artifacts["pruned2"], actor="t")
    registry.register(base_artifacts["dense"], actor="t")
    return registry


def _tags(reg: Any) -> dict[str, str]:
    return {v.kind + str(i): v.tag for i, v in enumerate(reg.list())}


BAD_CALLS = {
    "unknown tag": (lambda r, t: r.get(f"{MODEL}:ffffffffffffffff"), NotFound, "not registered"),
    "malformed tag": (lambda r, t: r.get("no-colon"), ConfigError, "NAME:VERSION"),
    "unknown model rollback": (lambda r, t: r.rollback("nope", actor="x"), NotFound, "'nope'"),
    "unknown model history": (lambda r, t: r.history("nope"), NotFound, "'nope'"),
    "promote unknown": (lambda r, t: r.promote(f"{MODEL}:0000", actor="x"), NotFound, "0000"),
    "rollback to unknown": (
        lambda r, t: r.rollback(MODEL, actor="x", to=f"{MODEL}:0000"),
        NotFound,
        "0000",
    ),
    "rollback with no prior version": (
        lambda r, t: r.rollback(MODEL, actor="x"),
        Conflict,
        "no prior",
    ),
    "tag from another model": (
        lambda r, t: r.rollback(MODEL, actor="x", to="other:" + t["pruned1"].split(":")[1]),
        ConfigError,
        "model 'other', not 'digits'",
    ),
    "bad alias": (
        lambda r, t: r.set_alias(MODEL, "king", t["dense0"], actor="x"),
        ConfigError,
        "king",
    ),
    "stale expected": (
        lambda r, t: r.set_alias(MODEL, "champion", t["dense0"], actor="x", expected=t["pruned2"]),
        Conflict,
        "another actor",
    ),
    "rollback with stale expected": (
        lambda r, t: r.rollback(MODEL, actor="x", to=t["dense0"], expected=t["dense0"]),
        Conflict,
        "another actor",
    ),
    "unknown parent": (
        lambda r, t: r.register(
            Path(r.store.path_of(t["pruned2"])), actor="x", parent_tag=f"{MODEL}:0000"
        ),
        NotFound,
        "0000",
    ),
}


def test_bad_input_is_a_clear_error_and_changes_nothing(populated, state) -> None:
    tags = _tags(populated)
    for case, (call, error, message) in sorted(BAD_CALLS.items()):
        before = state(populated)
        with pytest.raises(error, match=message):
            call(populated, tags)
        assert state(populated) == before, case


def test_a_corrupted_artifact_is_refused_and_changes_nothing(
    registry, base_artifacts, tmp_path, state, corrupt
) -> None:
    registry.register(base_artifacts["dense"], actor="t")
    before = state(registry)
    bad = shutil.copytree(base_artifacts["pruned"], tmp_path / "bad")
    corrupt(bad / "model.onnx")
    with pytest.raises(ArtifactCorrupt, match=r"model\.onnx fails its sha256") as info:
        registry.register(bad, actor="t")
    assert info.value.path == str(bad / "model.onnx")
    not_an_artifact = tmp_path / "empty"
    not_an_artifact.mkdir()
    with pytest.raises(ArtifactError, match=r"manifest\.json is missing"):
        registry.register(not_an_artifact, actor="t")
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["name"] = "Bad Name"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    corrupt(bad / "model.onnx")  # flip back: the files are good, the name is not
    with pytest.raises(ConfigError, match="'Bad Name' is not allowed"):
        registry.register(bad, actor="t")
    assert state(registry) == before


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://prune:s3cret@127.0.0.1:1/prune",
        "postgresql+psycopg://prune:s3cret@127.0.0.1:5432/no_such_database_here",
    ],
)
def test_unreachable_database_names_the_url_without_password(url, pruneguard_home) -> None:
    from pruneguard.registry import open_registry

    with pytest.raises(Unavailable) as info:
        open_registry(url, home=pruneguard_home)
    message = str(info.value)
    assert "s3cret" not in message and "prune:***@127.0.0.1" in message
    assert "check that the server is running" in message


def test_malformed_database_url_is_a_config_error(pruneguard_home) -> None:
    from pruneguard.registry import open_registry

    with pytest.raises(ConfigError, match="not a valid SQLAlchemy URL"):
        open_registry("not a url", home=pruneguard_home)


def test_promote_with_shadow_previous_when_shadow_already_holds_it(
    registry, base_artifacts
) -> None:
    dense, pruned = registry.register_run(
        base_artifacts["dense"], base_artifacts["pruned"], actor="t"
    )
    newer = registry.register(base_artifacts["pruned2"], actor="t")
    registry.set_alias(MODEL, "shadow", pruned.tag, actor="t")
    registry.promote(newer.tag, actor="t", shadow_previous=True)
    assert registry.aliases(MODEL) == {
        "champion": newer.tag,
        "shadow": pruned.tag,
        "baseline": dense.tag,
    }


def test_register_run_refuses_mismatched_names_before_registering(
    registry, base_artifacts, variant, state
) -> None:
    registry.register(variant(1, name="keep"), actor="t")
    before = state(registry)
    with pytest.raises(
        ConfigError, match=r"name different models .*'dense': 'digits', 'pruned': 'other'"
    ):
        registry.register_run(base_artifacts["dense"], variant(2, name="other"), actor="t")
    with pytest.raises(ConfigError, match="'bogus' is not one of the run's dense, pruned"):
        registry.register_run(
            base_artifacts["dense"],
            base_artifacts["pruned"],
            actor="t",
            aliases={"shadow": "bogus"},
        )
    assert state(registry) == before


def test_import_refuses_an_archive_whose_tag_does_not_match_its_files(
    registry, base_artifacts, tmp_path, state
) -> None:
    import bentoml

    from pruneguard.registry.store import ModelStore

    version = registry.register(base_artifacts["dense"], actor="t")
    registry.set_alias(MODEL, "baseline", version.tag, actor="t")
    before = state(registry)
    forged = f"{MODEL}:aaaaaaaaaaaaaaaa"
    elsewhere = ModelStore(tmp_path / "elsewhere")
    with bentoml.models.create(forged, _model_store=elsewhere._bento_store(elsewhere.root)) as m:
        for name in ("model.onnx", "reference.parquet", "manifest.json"):
            shutil.copy(registry.store.path_of(version.tag) / name, Path(m.path) / name)
    archive = elsewhere.export(forged, tmp_path / "forged.bentomodel")
    with pytest.raises(ArtifactCorrupt, match="does not match its manifest"):
        registry.import_archive(archive, actor="t")
    assert state(registry) == before
