"""`bentoml models list` (BentoML's own CLI) shows registered versions and nothing partial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bentoml_models_list_shows_a_registered_version(pruneguard_home, artifact_factory) -> None:
    from pruneguard.registry import open_registry

    with open_registry(home=pruneguard_home) as reg:
        dense, pruned = reg.register_run(
            artifact_factory(name="digits", kind="dense", seed=0),
            artifact_factory(name="digits", kind="pruned", seed=1),
            actor="t",
        )
    env = {**os.environ, "BENTOML_HOME": str(pruneguard_home / "bentoml")}
    bentoml = Path(sys.executable).with_name("bentoml")
    out = subprocess.run(
        [str(bentoml), "models", "list", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    listed = {m["tag"]: m for m in json.loads(out.stdout)}
    assert set(listed) == {dense.tag, pruned.tag}
    got = subprocess.run(
        [str(bentoml), "models", "get", pruned.tag, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(got.stdout)
    assert info["labels"] == {"kind": "pruned", "method": "channel", "parent": dense.tag}
    assert info["metadata"]["schema"] == "pruneguard.artifact/v1"
    assert info["metadata"]["files"]["model.onnx"] == pruned.model_sha256
