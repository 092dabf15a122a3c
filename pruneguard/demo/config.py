"""The demo's settings, its home folder and the timeline it prints."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pruneguard.agent.checks import CheckConfig

__all__ = [
    "AGENT_MARGIN",
    "AGREEMENT_MARGIN",
    "DEFAULT_HOME",
    "MARKER",
    "MIN_GAP",
    "SEED",
    "WARM_PASSES",
    "DemoConfig",
    "DemoError",
    "Timeline",
    "parse_args",
    "prepare_home",
    "section",
]


DEFAULT_HOME = Path(".pruneguard") / "demo"
MARKER = ".pruneguard-demo"  # only a folder holding this file is wiped at start
MIN_GAP = 0.05  # the pruned model must trail the dense one by at least 5 accuracy points
# the agent runs on its default margins
AGENT_MARGIN = CheckConfig().accuracy_margin
AGREEMENT_MARGIN = CheckConfig().agreement_margin
SEED = 7
WARM_PASSES = 2  # conclusive passing ticks the in-distribution phase waits for


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what is missing and what to do."""


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    home: Path
    quick: bool = False
    workload: str = "digits"  # a key of pruneguard.demo.workload.WORKLOADS, or "llm"
    interval_s: float = 4.0  # agent tick
    window_s: float = 20.0  # seconds of traffic each tick analyses
    threshold: int = 3  # consecutive failing ticks before a rollback
    min_samples: int = 100  # labelled pairs a window needs to be conclusive
    batch: int = 10  # rows per /predict request
    rows_per_s: float = 60.0  # traffic pace (keeps 2 cores free for the service and agent)
    warm_rows: int = 400  # in-distribution rows at least
    warm_max_s: float = 90.0  # in-distribution phase at most (waits for a conclusive pass)
    rollback_wait_s: float = 240.0  # bounded wait for the agent's rollback

    @classmethod
    def for_run(cls, home: Path, quick: bool, workload: str = "digits") -> DemoConfig:
        config = cls(home=home.absolute(), quick=quick, workload=workload)
        if workload == "llm":  # one request at a time, ~0.5 s each: fewer, longer windows
            return replace(config, interval_s=6.0, window_s=45.0, min_samples=24,
                           warm_max_s=300.0, rollback_wait_s=420.0)  # fmt: skip
        if quick:
            config = replace(config, interval_s=3.0, window_s=15.0, warm_rows=300)
        return config

    @property
    def window_rows(self) -> int:
        """Labelled pairs a window holds at the traffic pace, with half left for slowdowns."""
        return int(self.rows_per_s * self.window_s * 0.5)

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def logs(self) -> Path:
        return self.home / "logs"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pruneguard.demo",
        description="Prune → register → serve → shift → the agent rolls back, end to end.",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=DEFAULT_HOME,
        help=f"demo home, wiped at start (default {DEFAULT_HOME})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer epochs and pruning steps (tests, CI)"
    )
    parser.add_argument(
        "--llm",
        action="store_true",
        help="the loop on a decoder LLM: SmolLM2-135M with a KV group pruned per layer (recipe "
        "smollm2-heads), served on /generate, its answers rated by the dense shadow",
    )
    parser.add_argument(
        "--text",
        action="store_true",
        help="the loop on texts: the built-in MiniLM topic classifier (recipe minilm-topics) "
        "instead of the digits CNN",
    )
    return parser.parse_args(argv)


# --- the timeline ----------------------------------------------------------------------------


@dataclass
class Timeline:
    """What happened, in seconds since the demo started; printed as it happens."""

    start: float = field(default_factory=time.time)
    events: list[tuple[float, str]] = field(default_factory=list)

    def add(self, text: str, at: float | None = None) -> None:
        offset = (time.time() if at is None else at) - self.start
        self.events.append((offset, text))
        print(f"[{offset:7.1f} s] {text}", flush=True)

    def lines(self) -> list[str]:
        return [f"{offset:7.1f} s  {text}" for offset, text in sorted(self.events)]


def section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)


# --- home ------------------------------------------------------------------------------------


def prepare_home(home: Path) -> None:
    """Wipe a previous demo home (only one holding the demo's marker) and point every
    component at it: the registry, the BentoML store, the prediction log."""
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).is_file():
            raise DemoError(
                f"--home {home} exists, is not empty and is not a demo home (no {MARKER}); "
                "pass an empty or new folder"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("written by python -m pruneguard.demo; wiped at its next start\n")
    (home / "logs").mkdir()
    if os.environ.pop("PRUNEGUARD_DB_URL", None):
        print("note: PRUNEGUARD_DB_URL is ignored; the demo runs on SQLite under its home")
    os.environ["PRUNEGUARD_HOME"] = str(home)
    os.environ["BENTOML_HOME"] = str(home / "bentoml")
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
