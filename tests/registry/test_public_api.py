"""The registry's public surface (notes/registry-api.md) is what `registry` exports."""

from __future__ import annotations

import inspect

from pruneguard import registry


def test_exports_match_the_contract() -> None:
    contract = {
        "Registry",
        "Version",
        "Event",
        "open_registry",
        "default_home",
        "PruneguardError",
        "ConfigError",
        "ArtifactError",
        "ArtifactCorrupt",
        "NotFound",
        "Conflict",
        "Unavailable",
    }
    assert contract <= set(registry.__all__)
    for name in registry.__all__:
        assert hasattr(registry, name), name


def test_registry_methods_match_the_contract() -> None:
    methods = {
        "register": ["artifact_dir", "actor", "parent_tag"],
        "register_run": ["dense_dir", "pruned_dir", "actor", "set_aliases"],
        "list": ["name", "kind", "labels"],
        "get": ["tag"],
        "path": ["tag", "verify"],
        "aliases": ["name"],
        "resolve": ["name", "alias"],
        "revision": [],
        "set_alias": ["name", "alias", "tag", "actor", "reason", "evidence", "expected"],
        "promote": ["tag", "actor", "reason", "shadow_previous", "expected"],
        "rollback": ["name", "actor", "reason", "to", "evidence", "expected"],
        "history": ["name", "limit"],
        "lineage": ["tag"],
        "verify": ["tag"],
        "gc": ["dry_run"],
        "export": ["tag", "dest"],
        "import_archive": ["archive", "actor"],
        "try_lock": ["key", "owner", "ttl_s"],
        "close": [],
    }
    for method, params in methods.items():
        signature = inspect.signature(getattr(registry.Registry, method))
        assert set(params) <= set(signature.parameters), (method, signature)
    assert {f for f in registry.Version.__dataclass_fields__} >= {
        "tag", "name", "version", "kind", "labels", "manifest", "created_at", "aliases",
    }  # fmt: skip
    assert list(registry.Event.__dataclass_fields__) == [
        "id", "ts", "actor", "action", "model", "alias", "from_version", "to_version",
        "reason", "evidence",
    ]  # fmt: skip
