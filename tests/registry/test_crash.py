"""A registration killed with SIGKILL at random points never leaves a partial version that
`models list` or `verify` shows, nor a partial entry in the BentoML store."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

WORKER = str(Path(__file__).with_name("worker.py"))
KILLS = 20


def _assert_consistent(reg, db_url: str) -> None:
    versions = reg.list()
    for version in versions:
        assert reg.verify(version.tag)["ok"]
    # Every entry BentoML itself would list is complete and intact.
    root = reg.store.root
    for entry in root.glob("*/*"):
        if entry.is_dir():
            manifest = json.loads((entry / "manifest.json").read_text())
            assert (entry / "model.yaml").is_file(), entry
            for name in manifest["files"]:
                assert (entry / name).is_file(), entry / name
    # The CLI shows the same, and every version it lists verifies.
    from pruneguard.registry.cli import models

    runner = CliRunner()
    listed = runner.invoke(models, ["--db-url", db_url, "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [v["tag"] for v in json.loads(listed.output)] == [v.tag for v in versions]
    verified = runner.invoke(models, ["--db-url", db_url, "verify", "--json"])
    assert verified.exit_code == 0, verified.output
    assert all(r["ok"] for r in json.loads(verified.output))


def test_sigkill_during_registration_leaves_no_partial_version(pruneguard_home, variant) -> None:
    # Crash safety rests on the order "store rename, then database commit", the same for
    # every database, so this runs on the default SQLite registry only.
    from pruneguard.registry import open_registry

    registry = open_registry(home=pruneguard_home)
    db_url = registry.url
    artifacts = [str(variant(seed)) for seed in range(120)]
    server = subprocess.Popen(
        [sys.executable, WORKER, "forkserver", db_url, str(pruneguard_home), *artifacts],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    assert json.loads(server.stdout.readline())["ready"]
    rng = random.Random(os.environ.get("PRUNEGUARD_CRASH_SEED", "4"))
    # Kill delays scale with how long one registration takes on this machine, so each child
    # is killed within its first few registrations however fast or loaded the machine is.
    registry.register(artifacts[0], actor="warm-up")
    started = time.perf_counter()
    registry.register(artifacts[1], actor="warm-up")
    one = time.perf_counter() - started
    killed = 0
    try:
        for _ in range(KILLS):
            # Each child starts at the first artifact not yet registered: always new work.
            server.stdin.write(f"{len(registry.list())}\n")
            server.stdin.flush()
            pid = json.loads(server.stdout.readline())["pid"]
            time.sleep(rng.uniform(0.05, 2.5) * one)
            os.kill(pid, signal.SIGKILL)
            killed += json.loads(server.stdout.readline())["killed"]
            _assert_consistent(registry, db_url)
    finally:
        server.stdin.close()
        server.wait(timeout=60)
        server.stdout.close()
    assert killed == KILLS
    registered = len(registry.list())
    assert 0 < registered < len(artifacts)

    # Registering again adopts an entry a kill left in the store without its database row.
    for artifact in artifacts[registered : registered + 3]:
        registry.register(artifact, actor="retry")
    assert len(registry.list()) == registered + 3
    # gc clears the rest of the debris: the store then matches the database exactly.
    registry.gc(grace_s=0)
    assert registry.store.tags() == sorted(v.tag for v in registry.list())
    assert not any((registry.store.home / ".pruneguard-staging").iterdir())
    _assert_consistent(registry, db_url)
    registry.close()
