"""`python -m pruneguard.deploy.bento` builds a Bento that pins no model and imports as installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def test_bentoml_build_packages_the_service_without_models(tmp_path: Path) -> None:
    env = dict(os.environ, BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="True")
    result = subprocess.run(
        [sys.executable, "-m", "pruneguard.deploy.bento", "-o", "tag"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (bento_dir,) = [
        p for p in (tmp_path / "bentoml" / "bentos" / "pruneguard").iterdir() if p.name != "latest"
    ]
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert info["service"] == "pruneguard.deploy.service:PruneguardService"
    assert info["models"] == []  # aliases are resolved at run time, not at build time
    routes = {route["route"] for route in info["schema"]["routes"]}
    assert {"/predict", "/feedback"} <= routes
    src = bento_dir / "src"
    # the sidecar is started as `python -m pruneguard.deploy.sidecar` from src/: it must be there
    for module in ("__init__.py", "deploy/service.py", "deploy/sidecar.py", "registry/store.py"):
        assert (src / "pruneguard" / module).is_file(), module
    assert sorted(p.name for p in src.iterdir()) == ["bentofile.yaml", "pruneguard"]
    assert sorted(p.name for p in (src / "pruneguard").iterdir()) == [
        "__init__.py", "deploy", "registry",
    ]  # fmt: skip
