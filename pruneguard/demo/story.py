"""The demo's steps in order: prune, register, measure, serve, replay, watch, summarise."""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import httpx

    from pruneguard.pruning.recipe import Recipe
    from pruneguard.registry import Registry

from pruneguard.demo.config import (
    SEED,
    WARM_PASSES,
    DemoConfig,
    DemoError,
    Timeline,
    parse_args,
    prepare_home,
    section,
)
from pruneguard.demo.processes import Process, free_port, start_agent, start_service, wait_http
from pruneguard.demo.shifts import Shift, ShiftChoice, measure_shifts, pick_shift
from pruneguard.demo.summary import (
    Outcome,
    history_table,
    models_cli,
    rollback_events,
    write_summary,
)
from pruneguard.demo.watch import PhaseStats, Traffic, Watcher, batches
from pruneguard.demo.workload import WORKLOADS, Workload

__all__ = [
    "ACTOR",
    "Story",
    "main",
    "prune",
    "register",
    "run_demo",
]


# --- 1. prune --------------------------------------------------------------------------------


def prune(
    config: DemoConfig, workload: Workload, timeline: Timeline
) -> tuple[Recipe, dict[str, Any], dict[str, Any]]:
    import torch

    from pruneguard.pruning.advice import advise_recipe
    from pruneguard.pruning.demo import summary
    from pruneguard.pruning.pipeline import run

    if workload.prune_threads:
        torch.set_num_threads(workload.prune_threads)
    recipe = workload.recipe(config.quick)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # torch 2.13's ONNX exporter trips its own deprecation while copying pytree specs
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)
        dense, pruned = run(recipe, config.artifacts, progress=True)
    timeline.add(f"artifacts written: {config.artifacts / 'dense'}, {config.artifacts / 'pruned'}")
    print(summary(dense, pruned, advise_recipe(recipe).text(), time.perf_counter() - started))
    return recipe, dense, pruned


# --- 2. register -----------------------------------------------------------------------------

ACTOR = "cli:demo"


def register(registry: Registry, config: DemoConfig, timeline: Timeline) -> tuple[str, str]:
    """Dense serves first; the pruned model is then promoted with dense as shadow (and
    baseline), so the history holds the version a rollback returns to."""
    dense, pruned = registry.register_run(
        config.artifacts / "dense",
        config.artifacts / "pruned",
        actor=ACTOR,
        aliases={"champion": "dense", "baseline": "dense"},
    )
    acceptance = pruned.manifest["pruning"]["acceptance"]
    if not acceptance["passed"]:  # the story needs a pruned champion the gate let through
        raise DemoError(f"the pruned model was not accepted: {acceptance['reason']}")
    registry.record(pruned.tag, action="accepted", actor=ACTOR, reason=acceptance["reason"],
                    evidence={"acceptance": acceptance})  # fmt: skip
    registry.promote(pruned.tag, actor=ACTOR, reason=acceptance["reason"], shadow_previous=True)
    aliases = registry.aliases(pruned.name)
    timeline.add(
        f"registered {dense.tag} (dense) and {pruned.tag} (pruned); aliases "
        + ", ".join(f"{k}={v}" for k, v in sorted(aliases.items()))
    )
    return dense.tag, pruned.tag


# --- the story -------------------------------------------------------------------------------


@dataclass
class Story:
    """The state the steps share: processes to stop, what was found."""

    config: DemoConfig
    timeline: Timeline
    workload: Workload | None  # None: the LLM story (pruneguard.demo.llm) sends prompts itself
    processes: list[Process] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            code = process.stop()
            self.timeline.add(f"{process.name} stopped (exit {code})")
        self.processes.clear()


def _serve_and_watch(
    story: Story, registry: Registry, model: str, tags: tuple[str, str]
) -> tuple[str, Process, Watcher]:
    config, timeline = story.config, story.timeline
    service_port, agent_port = free_port(), free_port()
    service = start_service(config, model, service_port)
    story.processes.append(service)
    service_url = f"http://127.0.0.1:{service_port}"
    wait_http(service, f"{service_url}/readyz", 120)
    timeline.add(f"serving {model}: champion {tags[1]}, shadow {tags[0]} on {service_url}")
    agent = start_agent(config, model, agent_port)
    story.processes.append(agent)
    agent_url = f"http://127.0.0.1:{agent_port}"
    wait_http(agent, f"{agent_url}/healthz", 120)
    timeline.add(
        f"agent started (pid {agent.pid}): interval {config.interval_s:g} s, window "
        f"{config.window_s:g} s, threshold {config.threshold}, min samples {config.min_samples}"
    )
    story.outcome.urls = {
        "service /predict": f"{service_url}/predict",
        "service /feedback": f"{service_url}/feedback",
        "service /metrics (Prometheus)": f"{service_url}/metrics",
        "agent /metrics (Prometheus)": f"{agent_url}/metrics",
        "agent latest report": f"{agent_url}/reports/latest/{model}",
    }
    watcher = Watcher(registry, model, tags[1], agent.log_path, agent_url, timeline)
    return service_url, agent, watcher


def _replay(
    story: Story,
    client: httpx.Client,
    watcher: Watcher,
    data: tuple[np.ndarray, np.ndarray],
    shift: Shift,
    dense_version: str,
) -> None:
    config, timeline, workload = story.config, story.timeline, story.workload
    assert workload is not None
    traffic = Traffic(client, config, workload.body)
    x, y = data
    warm = PhaseStats("in-distribution")
    passes = len(watcher.ticks)

    def warmed(_: str) -> bool:
        seen = [t["message"] for t in watcher.ticks[passes:]]
        healthy = sum(m.startswith("healthy (pass") for m in seen)
        return warm.rows >= config.warm_rows and healthy >= WARM_PASSES

    timeline.add(f"traffic phase 1: {workload.rows_are} as they are, with labels")
    traffic.run(warm, batches(x, y, config.batch, None, SEED), warmed, watcher, config.warm_max_s)
    timeline.add(f"phase 1 done: {warm.rows} rows, served accuracy {warm.accuracy:.3f}")
    shifted = PhaseStats("shifted")
    labelled = workload.labelled_shift
    timeline.add(
        f"traffic phase 2: shifted inputs ({shift}), "
        + ("with labels" if labelled else "WITHOUT labels (they come late or never), so the "
           "agent's label-free agreement check decides once the labelled rows leave its window")
    )  # fmt: skip
    switched = traffic.run(
        shifted,
        batches(x, y, config.batch, shift, SEED + 1),
        lambda version: version == dense_version,
        watcher,
        config.rollback_wait_s,
        labelled=labelled,
    )
    timeline.add(
        f"phase 2 done: {shifted.rows} rows, served accuracy {shifted.accuracy:.3f}; "
        f"rows per version {shifted.versions}"
    )
    if switched:
        # The answer can show the switch before the throttled alias check has run.
        watcher.poll(force=True)
        timeline.add(f"service switched to version {dense_version} (seen in /predict answers)")
    story.outcome.closed = switched and watcher.rollback is not None


def _wait_report(story: Story, model: str, agent_url: str) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{agent_url}/reports/latest/{model}", timeout=5).status_code == 200:
                found = sorted((story.config.home / "reports" / model).glob("*/report.html"))
                story.outcome.report = found[-1].parent if found else None
                story.timeline.add(f"agent's Evidently report: {story.outcome.report}")
                return
        time.sleep(1)
    story.outcome.missing.append("the agent wrote no Evidently report within 120 s")


def _check_history(story: Story) -> None:
    section(f"pruneguard models history --all --json --home {shlex.quote(str(story.config.home))}")
    text = models_cli(story.config, "history", "--all", "--json")
    print(history_table(json.loads(text)))
    events = rollback_events(text)
    by_agent = [e for e in events if str(e.get("actor", "")).startswith("agent:")]
    if not by_agent:
        story.outcome.closed = False
        story.outcome.missing.append("the history holds no rollback with an agent as actor")
        return
    story.outcome.rollback = by_agent[-1]
    print("\nthe rollback event, as recorded:")
    print(json.dumps(by_agent[-1], indent=2))
    print(f"\nrollback actor: {by_agent[-1]['actor']} (the agent process, not this script)")


def _loop(
    story: Story, data: tuple[np.ndarray, np.ndarray], tags: tuple[str, str], shift: Shift
) -> None:
    import httpx

    from pruneguard.registry import open_registry

    model = tags[1].split(":", 1)[0]
    dense_version = tags[0].split(":", 1)[1]
    with open_registry(home=story.config.home) as registry:
        section("3-4. serve, start the agent")
        service_url, agent, watcher = _serve_and_watch(story, registry, model, tags)
        section("5-7. replay traffic; the agent watches")
        with httpx.Client(base_url=service_url, timeout=30) as client:
            _replay(story, client, watcher, data, shift, dense_version)
        if watcher.rollback is None:
            story.outcome.missing.append(
                f"no rollback by the agent within {story.config.rollback_wait_s:.0f} s of "
                f"shifted traffic (agent log: {agent.log_path})"
            )
        elif not story.outcome.closed:
            story.outcome.missing.append(f"the service did not answer with {dense_version}")
        if watcher.rollback is not None:
            _wait_report(story, model, watcher.agent_url)
        watcher.poll()
    print("\n" + models_cli(story.config, "aliases", model).strip())
    _check_history(story)


def run_demo(config: DemoConfig) -> int:
    timeline = Timeline()
    workload = WORKLOADS[config.workload]
    story = Story(config, timeline, workload)
    prepare_home(config.home)
    timeline.add(f"demo home {config.home} (SQLite registry + BentoML store, wiped)")
    section(f"1. train and prune (built-in recipe {workload.recipe_name})")
    recipe, _, pruned = prune(config, workload, timeline)
    from pruneguard.registry import open_registry

    section("2. register")
    with open_registry(home=config.home) as registry:
        tags = register(registry, config, timeline)
    section("measure input shifts offline (both ONNX models, held-out rows)")
    x, y = workload.held_out(recipe, pruned)
    results = measure_shifts(
        workload.scorers(config.artifacts), x, y, draws=workload.shift_draws,
        kinds=workload.shifts,
    )  # fmt: skip
    shifts = pick_shift(config, results, pruned, timeline, labelled=workload.labelled_shift)
    try:
        _loop(story, (x, y), tags, shifts.chosen.shift)
    finally:
        story.stop_all()
    return _finish(story, pruned, shifts)


def try_commands(home: Path, pruned: dict[str, Any]) -> list[str]:
    """Commands that work as typed on the demo's registry (its home is not the default one)."""
    name = str(pruned["name"])
    tag = f"{name}:{str(pruned['files']['model.onnx'])[:16]}"
    where = f"--home {shlex.quote(str(home))}"
    return [
        f"pruneguard models history --all {where}",
        f"pruneguard models list {name} {where}",
        f"pruneguard models aliases {name} {where}",
        f"pruneguard models lineage {tag} {where}",
    ]


def _finish(story: Story, pruned: dict[str, Any], shifts: ShiftChoice) -> int:
    section("timeline")
    print("\n".join(story.timeline.lines()))
    path = write_summary(story.config, pruned, shifts, story.timeline, story.outcome)
    section("where to look")
    for name, url in story.outcome.urls.items():
        print(f"  {name:<32}{url}")
    print("  (while the demo runs; grafana/prometheus/prometheus.yml shows a scrape config)")
    print(f"  logs: {story.config.logs / 'serve.log'}, {story.config.logs / 'agent.log'}")
    print(f"  summary: {path}")
    section("try it yourself (from this directory; the demo's registry is under --home)")
    for command in try_commands(story.config.home, pruned):
        print(f"  {command}")
    return exit_code(story.outcome)


def exit_code(outcome: Outcome) -> int:
    """0 when the loop closed (said on stdout), else 1 with what was missing (on stderr)."""
    if outcome.closed:
        print("\nthe loop closed: the agent rolled the pruned champion back by itself")
        return 0
    print("\nthe loop did NOT close: " + "; ".join(outcome.missing), file=sys.stderr)
    return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    from pruneguard.registry.errors import PruneguardError

    args = parse_args(argv)
    workload = "llm" if args.llm else "texts" if args.text else "digits"
    config = DemoConfig.for_run(args.home, args.quick, workload)
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children on SIGTERM too
    try:
        if args.llm:
            from pruneguard.demo.llm import run_llm_demo

            code = run_llm_demo(config)
        else:
            code = run_demo(config)
    except KeyboardInterrupt:
        print("\ninterrupted; the service and agent were stopped", file=sys.stderr)
        return 130
    except (DemoError, PruneguardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return code
