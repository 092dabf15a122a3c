"""`pip install pruneguard` as a user does it: one top-level package, and a wheel that works
without the source tree.

The slow test builds the sdist and the wheel (the wheel from the sdist, as ``python -m build``
does), installs the wheel non-editable into a fresh venv outside the repository with the torch
pin and the constraints, and from a directory that is not the repository runs ``--help``, a
real ``prune digits-cnn --register`` and a real ``serve`` answering one ``/predict``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH_PIN = "torch==2.13.0"  # as the Makefile installs it: unpinned, pip resolves a CUDA build
RUN_TIME_FILES = {
    "pruneguard/pruning/recipes/digits-cnn.yaml",
    "pruneguard/pruning/recipes/minilm-heads.yaml",
    "pruneguard/pruning/data/paraphrases.tsv",
    "pruneguard/pruning/data/sentences_train.txt",
    "pruneguard/deploy/bentofile.yaml",
    "pruneguard/deploy/k8s/deployment.yaml",
}


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stdout


def _build(out: Path) -> tuple[Path, Path]:
    # --no-isolation: build with this venv's setuptools (no index needed for the backend)
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        cwd=out.parent,
        env=dict(os.environ),
    )
    (wheel,) = out.glob("pruneguard-*.whl")
    (sdist,) = out.glob("pruneguard-*.tar.gz")
    return wheel, sdist


def _top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {name.split("/", 1)[0] for name in zf.namelist()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _build(tmp_path_factory.mktemp("dist") / "dist")


@pytest.mark.slow
def test_wheel_holds_one_package_and_its_run_time_files(built: tuple[Path, Path]) -> None:
    wheel, _ = built
    assert _top_level(wheel) == {"pruneguard", "pruneguard-0.1.0.dist-info"}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read("pruneguard-0.1.0.dist-info/entry_points.txt").decode()
    assert names >= RUN_TIME_FILES
    assert {
        f"pruneguard/{p}/__init__.py" for p in ("agent", "registry", "pruning", "deploy")
    } <= names
    assert "pruneguard = pruneguard.cli:main" in entry_points
    assert not any(n.startswith(("tests/", "bench/")) or "__pycache__" in n for n in names)


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    wheel, _ = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, pruneguard = str(venv / "bin" / "python"), str(venv / "bin" / "pruneguard")
    work = tmp_path / "work"  # no checkout here or above
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PRUNEGUARD_"))}
    env.update(PRUNEGUARD_HOME=str(work / "home"), BENTOML_DO_NOT_TRACK="True")
    env.pop("BENTOML_HOME", None)
    env.pop("VIRTUAL_ENV", None)
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, TORCH_PIN], cwd=work, env=env)
    _run([*pip, "-c", str(ROOT / "constraints.txt"), str(wheel)], cwd=work, env=env)

    assert "pruneguard prune RECIPE" in _run([pruneguard, "--help"], cwd=work, env=env)
    for name in ("registry", "agent", "deploy", "pruning", "pruneguard_cli"):
        gone = subprocess.run([python, "-c", f"import {name}"], cwd=work, env=env, check=False)
        assert gone.returncode != 0, f"`import {name}` works: something of ours is top-level"
    located = _run(
        [python, "-c", "import pruneguard; print(pruneguard.__file__)"], cwd=work, env=env
    )
    assert str(venv) in located and str(ROOT) not in located

    printed = _run(
        [pruneguard, "prune", "digits-cnn", "--out", "out", "--register", "--json", "--quiet"],
        cwd=work,
        env=env,
    )
    manifest = json.loads(printed)
    assert manifest["name"] == "digits-cnn" and manifest["kind"] == "pruned"
    _serve_one_prediction(pruneguard, manifest["name"], work, env)


def _serve_one_prediction(pruneguard: str, model: str, work: Path, env: dict[str, str]) -> None:
    port = _free_port()
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(
        [pruneguard, "serve", model, "--port", str(port)],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a speed target
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        assert proc.poll() is None, (work / "serve.log").read_text(errors="replace")[-4000:]
        answer = httpx.post(f"{url}/predict", json={"inputs": [[[[0.0] * 8] * 8]]}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == model and len(body["predictions"]) == 1
        assert 0 <= body["predictions"][0] < 10
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
