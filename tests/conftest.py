"""Shared fixtures: an isolated PRUNEGUARD_HOME / BentoML store, and the real services.

A test that needs PostgreSQL or Prometheus skips on a developer machine without them, but
*fails* when ``PRUNEGUARD_REQUIRE_SERVICES`` is set (``.ci/run`` sets it), so CI can never
pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_SERVICES = bool(os.environ.get("PRUNEGUARD_REQUIRE_SERVICES"))


def missing_service(what: str) -> None:
    """Skip locally, fail in CI."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required in CI (PRUNEGUARD_REQUIRE_SERVICES is set) but missing")
    pytest.skip(f"{what} not available")


@pytest.fixture
def pruneguard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh PRUNEGUARD_HOME with its own BentoML store; nothing touches ~/bentoml."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PRUNEGUARD_HOME", str(home))
    monkeypatch.setenv("BENTOML_HOME", str(home / "bentoml"))
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "True")
    yield home


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a real PostgreSQL database (PRUNEGUARD_TEST_POSTGRES_URL)."""
    url = os.environ.get("PRUNEGUARD_TEST_POSTGRES_URL")
    if not url:
        missing_service("PostgreSQL (set PRUNEGUARD_TEST_POSTGRES_URL)")
    assert url is not None
    return url


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        missing_service(f"{name} (apt-get install {package})")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _binary("prometheus", "prometheus")


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    return _binary("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool_bin() -> str:
    return _binary("amtool", "prometheus-alertmanager")


@pytest.fixture(scope="session")
def tmux_bin() -> str:
    """A real terminal for tests that look at the screen as a person would."""
    return _binary("tmux", "tmux")


@pytest.fixture
def artifact_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``artifact_factory(name=..., kind=..., seed=...) -> Path``: a real, valid artifact dir."""
    from artifact_factory import make_artifact

    counter = iter(range(10_000))

    def make(**kwargs: object) -> Path:
        return make_artifact(tmp_path / f"artifact-{next(counter)}", **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def text_artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dense, pruned) artifacts of a small random-weight BERT embedding model, built once."""
    from hf_models import make_text_artifacts

    return make_text_artifacts(tmp_path_factory.mktemp("text-artifacts"))


@pytest.fixture(scope="session")
def decoder_artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dense, pruned) artifacts of a small random Llama (SmolLM2's tokenizer), made by the
    causal-lm pipeline once (every stage: a layer, a KV group, a quarter of the FFN)."""
    import yaml
    from decoders import decoder_recipe, tiny_decoder_folder

    from pruneguard.pruning.pipeline import run
    from pruneguard.pruning.recipe import parse_recipe

    root = tmp_path_factory.mktemp("decoder-artifacts")
    recipe = parse_recipe(yaml.safe_load(decoder_recipe(tiny_decoder_folder(root / "hf"))))
    run(recipe, root / "out", progress=False)
    return root / "out" / "dense", root / "out" / "pruned"


def _served_pair(home: Path, name: str, dense: Path, pruned: Path) -> Iterator[Any]:
    """A fresh registry with ``pruned`` as ``name``'s champion and ``dense`` as its shadow."""
    from serving_support import Models

    from pruneguard.registry import open_registry

    registry = open_registry(None, home=home)
    shadow = registry.register(dense, actor="test").tag
    champion = registry.register(pruned, actor="test").tag
    registry.set_alias(name, "champion", champion, actor="test")
    registry.set_alias(name, "shadow", shadow, actor="test")
    yield Models(registry=registry, champion=champion, shadow=shadow, home=home)
    registry.close()


@pytest.fixture
def decoder_models(pruneguard_home: Path, decoder_artifacts: tuple[Path, Path]) -> Iterator[Any]:
    """The pruned decoder as champion, its dense parent as shadow (name ``tiny-llm``)."""
    yield from _served_pair(pruneguard_home, "tiny-llm", *decoder_artifacts)


@pytest.fixture
def text_models(pruneguard_home: Path, text_artifacts: tuple[Path, Path]) -> Iterator[Any]:
    """The pruned text model as champion, its dense parent as shadow (name ``texts``)."""
    yield from _served_pair(pruneguard_home, "texts", *text_artifacts)
