"""The README's usage section, run top to bottom as a new user types it.

Every line of its ``bash`` blocks runs, in order, in a fresh directory with the default
``$PRUNEGUARD_HOME`` (``./.pruneguard``). Only two things are filled in: the ``<version>``
the README tells the reader to look up with ``models list``, and free ports instead of 3000
and 3001. The long-running ``serve`` and ``agent run`` are started in the background and must
answer before the next line runs. Each command must exit 0; nothing is timed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serving_support import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVERS = (("serve",), ("agent", "run"))


def usage_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    usage = text.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", usage, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_usage_section_is_commands_of_ours() -> None:
    lines = usage_lines()
    assert len(lines) >= 10
    assert all(shlex.split(line, comments=True)[0] == "pruneguard" for line in lines), lines


def _argv(line: str, fill: dict[str, str]) -> list[str]:
    for placeholder, value in fill.items():
        line = line.replace(placeholder, value)
    words = shlex.split(line, comments=True)
    return [str(BIN / words[0]), *words[1:]]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120  # a hang guard, not a speed target
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.mark.slow
def test_usage_section_runs_top_to_bottom(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRUNEGUARD_", "BENTOML_"))}
    env["BENTOML_DO_NOT_TRACK"] = "True"
    ports = {"3000": str(free_port()), "3001": str(free_port())}
    fill = {f"--port {old}": f"--port {new}" for old, new in ports.items()}
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for number, line in enumerate(usage_lines()):
            if "<version>" in line:
                listed = subprocess.run(
                    [str(BIN / "pruneguard"), "models", "list", "digits-cnn", "--json"],
                    cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                pruned = next(v for v in json.loads(listed.stdout) if v["kind"] == "pruned")
                fill["<version>"] = pruned["version"]
            argv = _argv(line, fill)
            if tuple(argv[1:3]) in SERVERS or tuple(argv[1:2]) in SERVERS:
                log = tmp_path / f"server-{number}.log"
                with log.open("wb") as out:
                    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=out)
                servers.append(proc)
                port = argv[argv.index("--port") + 1]
                path = "/readyz" if argv[1] == "serve" else "/metrics"
                _wait_ready(f"http://127.0.0.1:{port}{path}", proc, log)
                continue
            done = subprocess.run(
                argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
                check=False,
            )  # fmt: skip
            assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            if "--json" in argv:
                json.loads(done.stdout)  # stdout holds the JSON alone
    finally:
        for proc in servers:
            stop_process(proc)
    assert (tmp_path / ".pruneguard" / "registry.db").is_file()  # the default home, as documented
    history = subprocess.run(
        [str(BIN / "pruneguard"), "models", "history", "--all", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    actions = [e["action"] for e in json.loads(history.stdout)]
    assert "accepted" in actions and actions[-1] == "rollback", actions
