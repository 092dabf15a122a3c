"""Registry test fixtures: a database per test (SQLite file, or a fresh PostgreSQL schema),
an open registry on it, and a snapshot of everything a failing operation must not change."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# tests/ (on sys.path via the root conftest) holds a folder named "registry" without an
# __init__.py; the real package must come first or `import registry` finds that namespace.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MODEL = "digits"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, pruneguard_home: Path) -> Iterator[str]:
    """The registry database URL: a SQLite file in the test's home, or a PostgreSQL schema
    of its own (dropped afterwards) so tests never see each other's rows."""
    if request.param == "sqlite":
        yield f"sqlite:///{pruneguard_home / 'registry.db'}"
        return
    from pg_support import postgres_schema

    with postgres_schema(request.getfixturevalue("postgres_url"), "reg_test") as url:
        yield url


@pytest.fixture
def registry(db_url: str, pruneguard_home: Path) -> Iterator[Any]:
    from pruneguard.registry import open_registry

    reg = open_registry(db_url, home=pruneguard_home)
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def base_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three real artifacts of model "digits", made once: dense and two pruned."""
    from artifact_factory import make_artifact

    root = tmp_path_factory.mktemp("artifacts")
    dense = make_artifact(root / "dense", name=MODEL, kind="dense", seed=0, reference_rows=50)
    pruned = make_artifact(root / "pruned", name=MODEL, kind="pruned", seed=1, reference_rows=50)
    pruned2 = make_artifact(root / "pruned2", name=MODEL, kind="pruned", seed=2, reference_rows=50)
    return {"dense": dense, "pruned": pruned, "pruned2": pruned2}


@pytest.fixture
def variant(tmp_path: Path, base_artifacts: dict[str, Path]) -> Callable[..., Path]:
    """``variant(seed, kind="pruned", name=MODEL) -> Path``: a copy of a base artifact with a
    different real ONNX model (so a different version), made in milliseconds."""
    return lambda seed, **kw: make_variant(tmp_path / "variants", base_artifacts, seed, **kw)


def make_variant(
    root: Path, base: dict[str, Path], seed: int, *, kind: str = "pruned", name: str = MODEL
) -> Path:
    from artifact_factory import make_onnx

    from pruneguard.registry.artifact import sha256_file

    dest = root / f"{name}-{kind}-{seed}"
    if dest.exists():
        return dest
    shutil.copytree(base[kind], dest)
    make_onnx(dest / "model.onnx", seed=seed + 100, input_shape=(1, 8, 8), n_classes=10)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["name"] = name
    manifest["files"]["model.onnx"] = sha256_file(dest / "model.onnx")
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def snapshot(reg: Any) -> dict[str, Any]:
    """Everything an operation can change: versions, aliases, events, revision, store."""
    names = reg.models()
    return {
        "versions": [v.to_dict() for v in reg.list()],
        "aliases": {name: reg.aliases(name) for name in names},
        "events": [e.to_dict() for e in reg.history()],
        "revision": reg.revision(),
        "store": reg.store.tags(),
    }


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def state() -> Callable[[Any], dict[str, Any]]:
    return snapshot


@pytest.fixture
def corrupt() -> Callable[[Path], None]:
    return flip_byte
