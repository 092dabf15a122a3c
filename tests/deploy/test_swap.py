"""Hot swap against a real registry: alias moves are followed; a bad version is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from serving_support import MODEL, Models

from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.model import LoadedModel
from pruneguard.deploy.swap import ModelSwapper


def _swapper(models: Models, reg: CollectorRegistry) -> ModelSwapper:
    return ModelSwapper(
        models.registry,
        model=MODEL,
        loader=lambda path, tag: LoadedModel.load(path, tag=tag),
        metrics=ServingMetrics(reg),
        poll_interval_s=0.1,
    )


def _reloads(reg: CollectorRegistry, result: str) -> float:
    return (
        reg.get_sample_value("pruneguard_model_reloads_total", {"model": MODEL, "result": result})
        or 0.0
    )


def _info(reg: CollectorRegistry, variant: str, version: str, kind: str) -> float | None:
    labels = {"model": MODEL, "variant": variant, "version": version, "kind": kind}
    return reg.get_sample_value("pruneguard_model_info", labels)


def test_follows_promote_and_rollback(models: Models) -> None:
    reg = CollectorRegistry()
    swapper = _swapper(models, reg)
    assert swapper.refresh()
    first = swapper.current
    assert (first.champion.tag, first.shadow.tag) == (models.champion, models.shadow)  # type: ignore[union-attr]
    assert not swapper.refresh()  # same revision: nothing reloaded
    models.registry.promote(models.shadow, actor="test")
    assert swapper.refresh()
    assert swapper.current.champion.tag == models.shadow  # type: ignore[union-attr]
    assert swapper.current.shadow is first.shadow  # unchanged alias: same session kept
    assert _info(reg, "champion", models.shadow_version, "dense") == 1
    assert _info(reg, "champion", models.champion_version, "pruned") == 0
    models.registry.rollback(MODEL, actor="test")
    assert swapper.refresh()
    assert swapper.current.champion.tag == models.champion  # type: ignore[union-attr]
    assert _reloads(reg, "success") == 4 and _reloads(reg, "error") == 0


def test_refuses_a_corrupted_version_and_keeps_serving_the_old(
    models: Models, artifact_factory: Any
) -> None:
    reg = CollectorRegistry()
    swapper = _swapper(models, reg)
    swapper.refresh()
    old = swapper.current.champion
    bad = models.registry.register(
        artifact_factory(name=MODEL, kind="pruned", seed=7), actor="test"
    ).tag
    models.registry.promote(bad, actor="test")  # the registry accepts it: it verifies fine now
    onnx = models.registry.path(bad, verify=False) / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-16] + b"\x00" * 16)  # damaged on disk after promotion
    assert not swapper.refresh()
    assert swapper.current.champion is old
    assert _reloads(reg, "error") == 1
    batch = np.zeros((2, 1, 8, 8), np.float32)
    assert swapper.current.champion.predict(batch).classes.shape == (2,)  # type: ignore[union-attr]
    assert not swapper.refresh()  # not retried until the registry moves again
    assert _reloads(reg, "error") == 1
    models.registry.rollback(MODEL, actor="test", to=models.shadow)
    assert swapper.refresh()
    assert swapper.current.champion.tag == models.shadow  # type: ignore[union-attr]


def test_a_graph_that_cannot_run_is_refused(models: Models, tmp_path: Path) -> None:
    reg = CollectorRegistry()
    calls: list[str] = []

    def loader(path: Path, tag: str) -> LoadedModel:
        calls.append(tag)
        if tag == models.shadow:
            raise RuntimeError("session creation failed")
        return LoadedModel.load(path, tag=tag)

    swapper = ModelSwapper(
        models.registry,
        model=MODEL,
        loader=loader,
        metrics=ServingMetrics(reg),
        poll_interval_s=1.0,
    )
    swapper.refresh()
    assert swapper.current.champion.tag == models.champion  # type: ignore[union-attr]
    assert swapper.current.shadow is None  # refused shadow: the replica serves without one
    assert _reloads(reg, "error") == 1


def test_background_poller_notices_a_move(models: Models) -> None:
    from serving_support import wait_for

    swapper = _swapper(models, CollectorRegistry())
    swapper.start()
    try:
        wait_for(lambda: swapper.current.champion is not None)
        models.registry.promote(models.shadow, actor="test")
        wait_for(lambda: swapper.current.champion.tag == models.shadow)  # type: ignore[union-attr]
    finally:
        swapper.stop()


def test_recent_versions_swap_back_without_reloading(models: Models) -> None:
    loads: list[str] = []

    def loader(path: Path, tag: str) -> LoadedModel:
        loads.append(tag)
        return LoadedModel.load(path, tag=tag)

    reg = CollectorRegistry()
    swapper = ModelSwapper(
        models.registry,
        model=MODEL,
        loader=loader,
        metrics=ServingMetrics(reg),
        poll_interval_s=1.0,
    )
    swapper.refresh()
    first = swapper.current
    models.registry.promote(models.shadow, actor="test")
    swapper.refresh()
    assert swapper.current.champion is first.shadow  # one session serves both aliases
    models.registry.rollback(MODEL, actor="test")
    swapper.refresh()
    assert swapper.current.champion is first.champion
    assert sorted(loads) == sorted([models.champion, models.shadow])  # loaded once each
    assert _reloads(reg, "success") == 4
