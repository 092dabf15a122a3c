"""`pruneguard prune` as a person sees it: in a real terminal (tmux) a bar per stage and none of
the exporter's chatter; in a pipe, plain lines; stdout holds the JSON alone either way."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pruneguard.pruning.cli import prune

RECIPE = """
name: screen
model: {builtin: digits-cnn, options: {width: 8}}
data: {builtin: digits}
train: {epochs: 3, lr: 0.01}
method: channel
criterion: l2
target: {ratio: 0.5}
schedule: {kind: iterative, steps: 2}
finetune: {epochs: 2, lr: 0.005, recovery_epochs: 1}
accept: {max_accuracy_drop: 0.5, min_speedup: 0.1}
export: {batch_sizes: [1, 4], latency_blocks: 2, latency_runs: 3}
"""
CHATTER = ("[torch.onnx]", "torchvision", "Skipping")
PRUNEGUARD = str(Path(sys.executable).parent / "pruneguard")


def _screen(tmux: str, session: str, command: str, tmp_path: Path) -> str:
    """Run ``command`` in a 120×40 tmux pane until it prints EXIT=; the whole pane's text."""
    env = {**os.environ, "PRUNEGUARD_HOME": str(tmp_path / "home")}
    env.pop("PRUNEGUARD_VERBOSE", None)
    shell = f"cd {shlex.quote(str(tmp_path))} && {command}; echo EXIT=$?; sleep 120"
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "120", "-y", "40", shell],
        env=env,
        check=True,
    )
    try:
        deadline, text = time.monotonic() + 300, ""  # a hang guard, not a speed target
        while time.monotonic() < deadline and "EXIT=" not in text:
            time.sleep(1)
            text = subprocess.run(
                [tmux, "capture-pane", "-p", "-t", session, "-S", "-100"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
        return text
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False)


@pytest.mark.slow
def test_a_terminal_shows_bars_and_no_exporter_chatter(tmp_path: Path, tmux_bin: str) -> None:
    tmux = tmux_bin
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    command = f"{shlex.quote(PRUNEGUARD)} prune recipe.yaml --out out --json > stdout.json"
    screen = _screen(tmux, f"pruneguard-test-{os.getpid()}", command, tmp_path)
    assert "EXIT=0" in screen, screen
    for stage in ("train dense:", "recovery 1/2:", "final finetune:", "export:", "latency:"):
        line = next((ln for ln in screen.splitlines() if ln.startswith(stage)), "")
        assert "100%|" in line and "█" in line, (stage, screen)
    assert not [word for word in CHATTER if word in screen], screen
    assert "[pruneguard] accepted:" in screen
    printed = json.loads((tmp_path / "stdout.json").read_text())  # stdout: the JSON alone
    assert printed["kind"] == "pruned" and printed["name"] == "screen"


def test_a_pipe_gets_plain_lines_and_verbose_brings_the_chatter_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE.replace("epochs: 3,", "epochs: 1,"))
    monkeypatch.setenv("PRUNEGUARD_VERBOSE", "0")  # restored after; --verbose sets it to 1
    runs = {}
    for out, extra in (("quiet", []), ("verbose", ["--verbose"])):
        args = [str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / out), "--json", *extra]
        runs[out] = CliRunner().invoke(prune, args)
        assert runs[out].exit_code == 0, runs[out].output
        json.loads(runs[out].stdout)
    plain = runs["quiet"].stderr
    assert "train dense 1/1 loss" in plain and "recovery 1/2 1/1 loss" in plain
    assert "export 2/2 pruned: parity" in plain and "latency 2/2 batch 4" in plain
    assert "█" not in plain and not [word for word in CHATTER if word in plain]
    assert "[torch.onnx]" in runs["verbose"].stderr
