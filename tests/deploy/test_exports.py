"""Each deploy module declares its public surface, and every name in it exists."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "pruneguard.deploy.config",
    "pruneguard.deploy.validation",
    "pruneguard.deploy.model",
    "pruneguard.deploy.swap",
    "pruneguard.deploy.shadow",
    "pruneguard.deploy.logwriter",
    "pruneguard.deploy.metrics",
    "pruneguard.deploy.runtime",
    "pruneguard.deploy.admin",
    "pruneguard.deploy.service",
    "pruneguard.deploy.boundary",
    "pruneguard.deploy.launch",
    "pruneguard.deploy.cli",
    "pruneguard.registry.predictions",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__, f"{name} declares no public names"
    missing = [attr for attr in module.__all__ if not hasattr(module, attr)]
    assert not missing, f"{name}.__all__ lists missing names {missing}"


def test_metric_names_match_the_defined_families() -> None:
    from prometheus_client import CollectorRegistry

    from pruneguard.deploy.metrics import METRIC_NAMES, ServingMetrics

    registry = CollectorRegistry()
    ServingMetrics(registry)
    defined = set()
    for family in registry.collect():
        defined.add(f"{family.name}_total" if family.type == "counter" else family.name)
    assert defined == set(METRIC_NAMES)
    assert all(name.startswith("pruneguard_") for name in METRIC_NAMES)
