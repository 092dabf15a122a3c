"""Saved Evidently reports: written in the background by the agent, served over HTTP, kept
to the newest N, and written on demand by `pruneguard agent report`."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from agent_env import FAST, MODEL, Env, make_env, value, write_traffic
from click.testing import CliRunner

from pruneguard.agent.cli import agent as agent_cli
from pruneguard.agent.loop import Agent, replace_config
from pruneguard.agent.report_worker import ReportWorker
from pruneguard.agent.reports import HTML_NAME, JSON_NAME, STALE_TMP_S, latest_report, save_report
from pruneguard.agent.server import AgentServer

WAIT = 120.0  # seconds a test waits for a report before failing instead of hanging


@pytest.fixture
def env(pruneguard_home: Path, artifact_factory: Any) -> Iterator[Env]:
    made = make_env(pruneguard_home, artifact_factory)
    yield made
    made.registry.close()


def _metric(snapshot: dict[str, Any], name: str) -> Any:
    """The value of the first Evidently metric called ``name`` in a snapshot's JSON."""
    found = [m["value"] for m in snapshot["metrics"] if m["metric_name"].startswith(f"{name}(")]
    assert found, f"no {name} in {[m['metric_name'] for m in snapshot['metrics']]}"
    return found[0]


def test_report_command_writes_one_now_and_prints_its_path(env: Env) -> None:
    """On demand: drift + quality per variant, saved as HTML and JSON; no decision taken."""
    write_traffic(env, 150, rng=np.random.default_rng(1), labels="shadow")  # champion fails
    args = ["report", MODEL, "--home", str(env.home), "--min-samples", "100", "--threshold", "1"]
    result = CliRunner().invoke(agent_cli, args)
    assert result.exit_code == 0, result.output
    saved = Path(result.output.strip())
    assert saved.parent == env.home / "reports" / MODEL and latest_report(env.home, MODEL) == saved
    assert {p.name for p in saved.iterdir()} == {
        HTML_NAME,
        JSON_NAME,
        "quality-champion.html",
        "quality-shadow.html",
    }
    assert (saved / HTML_NAME).read_bytes().lstrip().lower().startswith(b"<!doctype html")

    data = json.loads((saved / JSON_NAME).read_text())
    assert data["model"] == MODEL and data["analysis"]["champion"] == env.champion
    drift = data["analysis"]["drift"]
    assert len(drift["columns"]) > 20 and drift["n_current"] == 150
    evidently = data["evidently"]
    drifted = _metric(evidently[HTML_NAME], "DriftedColumnsCount")
    assert drifted["count"] >= 0 and 0.0 <= drifted["share"] <= 1.0
    assert _metric(evidently["quality-shadow.html"], "Accuracy") == 1.0  # labels: its answers
    champion = _metric(evidently["quality-champion.html"], "Accuracy")
    assert champion == pytest.approx(data["analysis"]["accuracy"]["champion"]) and champion < 0.5
    assert set(_metric(evidently["quality-champion.html"], "F1ByLabel")) <= {
        str(k) for k in range(10)
    }

    checks = {c["name"]: c["outcome"] for c in data["analysis"]["checks"]}
    assert checks["accuracy_gap"] == "fail" and data["decision"]["action"] == "none"
    assert env.registry.resolve(MODEL, "champion") == env.champion  # nothing rolled back


def test_report_command_on_unknown_model_fails_with_one_line(env: Env) -> None:
    result = CliRunner().invoke(agent_cli, ["report", "nosuch", "--home", str(env.home)])
    assert result.exit_code == 1
    assert "no report written for 'nosuch'" in result.output


def test_background_report_is_skipped_while_busy_then_written_and_served(env: Env) -> None:
    """A due report is queued to the worker, never written in the tick; while one is being
    written the next is skipped and counted. The newest is served over HTTP. (No traffic:
    the reports summarise an empty window, which needs no Evidently run.)"""
    agent = Agent(env.registry, config=replace_config(FAST, report_every_s=0.0))
    server = AgentServer(agent, port=0).start()
    url = f"http://127.0.0.1:{server.port}/reports/latest/{MODEL}"
    gate = threading.Event()
    try:

        def blocked() -> Path:  # a report still being written
            gate.wait(WAIT)
            return env.home

        assert agent.reports.submit(MODEL, blocked)
        busy = agent.tick(MODEL)
        assert (busy.report, busy.report_status) == (None, "skipped")
        assert value(agent, "pruneguard_agent_reports_total", result="skipped") == 1
        assert httpx.get(url).status_code == 404
        gate.set()
        assert agent.reports.wait_idle(WAIT)

        saved = []
        for _ in range(2):
            queued = agent.tick(MODEL)
            assert queued.report_status == "queued" and queued.report is not None
            assert agent.reports.wait_idle(WAIT)
            saved.append(Path(queued.report))
        assert saved[0] < saved[1] and latest_report(env.home, MODEL) == saved[1]
        assert value(agent, "pruneguard_agent_reports_total", result="written") == 3
        assert value(agent, "pruneguard_agent_reports_total", result="failed") == 0

        page = httpx.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.content == (saved[1] / HTML_NAME).read_bytes()
        data = httpx.get(f"{url}.json").json()
        assert data == json.loads((saved[1] / JSON_NAME).read_text())
        assert data["ts"] == queued.ts and data["analysis"]["samples"]["rows"] == 0
        assert httpx.get(f"{url}/quality-champion.html").status_code == 404  # no labels
    finally:
        gate.set()
        server.stop()
        assert agent.close()


def test_worker_runs_one_report_per_model_and_shutdown_does_not_wait_for_it() -> None:
    results: list[tuple[str, str]] = []
    worker = ReportWorker(on_result=lambda model, result: results.append((model, result)))
    started, gate = threading.Event(), threading.Event()

    def slow() -> Path:
        started.set()
        gate.wait(WAIT)
        return Path("a")

    assert worker.submit("a", slow)
    assert started.wait(WAIT) and worker.busy("a")
    assert not worker.submit("a", lambda: Path("a"))  # running: skipped
    assert worker.submit("b", lambda: Path("b"))  # another model: queued behind it
    assert not worker.submit("b", lambda: Path("b"))  # queued: skipped
    assert worker.skipped == {"a": 1, "b": 1}
    assert results == [("a", "skipped"), ("b", "skipped")]

    # shutdown drops the queued report and gives the running one a bounded grace
    assert worker.close(timeout=0.01) is False
    assert worker.busy("a") and not worker.busy("b")
    assert not worker.submit("c", lambda: Path("c"))  # closed
    gate.set()
    assert worker.wait_idle(WAIT)
    assert results[-1] == ("a", "written") and ("b", "written") not in results


def test_a_failing_report_is_counted_and_the_worker_keeps_going() -> None:
    results: list[str] = []
    worker = ReportWorker(on_result=lambda model, result: results.append(result))

    def broken() -> Path:
        raise OSError("disk full")

    assert worker.submit("m", broken)
    assert worker.wait_idle(WAIT)
    assert worker.submit("m", lambda: Path("ok"))
    assert worker.wait_idle(WAIT) and worker.close(WAIT)
    assert results == ["failed", "written"]


def test_retention_keeps_the_newest_reports_and_clears_abandoned_temp_dirs(tmp_path: Path) -> None:
    def page(directory: Path) -> None:
        (directory / HTML_NAME).write_text("<!doctype html>")

    parent = tmp_path / "reports" / MODEL
    parent.mkdir(parents=True)
    abandoned, fresh = parent / ".tmp-old", parent / ".tmp-new"
    abandoned.mkdir()
    fresh.mkdir()  # another writer's report in progress
    old = time.time() - STALE_TMP_S - 60
    os.utime(abandoned, (old, old))

    written = [
        save_report(tmp_path, MODEL, {"n": i}, page, now=1_700_000_000.0 + i, keep=3)
        for i in range(5)
    ]
    kept = sorted(p for p in parent.iterdir() if not p.name.startswith("."))
    assert kept == written[-3:]
    assert latest_report(tmp_path, MODEL) == written[-1]
    assert json.loads((written[-1] / JSON_NAME).read_text()) == {"n": 4}
    assert not abandoned.exists() and fresh.exists()
