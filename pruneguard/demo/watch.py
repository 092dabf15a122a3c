"""Labelled traffic to the service, and a read-only watch on the agent and registry."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import httpx

    from pruneguard.registry import Registry

from pruneguard.demo.config import DemoConfig, DemoError, Timeline
from pruneguard.demo.shifts import Shift

__all__ = [
    "PhaseStats",
    "Traffic",
    "Watcher",
    "batches",
]


# --- watching the agent ----------------------------------------------------------------------

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+) (\w+) (.*)$")


def _agent_metric(text: str, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def _tick_numbers(tick: dict[str, Any]) -> str:
    """The window behind a tick: labelled accuracies when it has labels, agreement always."""
    parts = []
    if tick.get("labelled"):
        parts.append(
            f"labelled {tick['labelled']:.0f}, champion acc {tick['champion_acc']:.3f}, "
            f"shadow acc {tick['shadow_acc']:.3f}"
        )
    if tick.get("pairs") and tick.get("agreement") == tick.get("agreement"):  # not NaN
        parts.append(f"pairs {tick['pairs']:.0f}, agreement {tick['agreement']:.3f}")
    return f" [{'; '.join(parts)}]" if parts else ""


@dataclass
class Watcher:
    """Reads the agent's log and /metrics and the registry; never changes anything."""

    registry: Registry
    model: str
    champion: str
    agent_log: Path
    agent_url: str
    timeline: Timeline
    ticks: list[dict[str, Any]] = field(default_factory=list)
    rollback: dict[str, Any] | None = None
    _offset: int = 0
    _last_alias_check: float = 0.0

    def poll(self, *, force: bool = False) -> None:
        """Read new agent log lines and, at most every 0.5 s (always with ``force``), the
        registry's champion."""
        self._read_log()
        due = force or time.monotonic() - self._last_alias_check >= 0.5
        if self.rollback is None and due:
            self._last_alias_check = time.monotonic()
            self._check_champion()

    def _read_log(self) -> None:
        with self.agent_log.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            match = _LOG_LINE.match(line)
            if match and match.group(2).startswith("pruneguard.agent"):
                self._on_log(match.group(1), match.group(4))

    def _on_log(self, stamp: str, message: str) -> None:
        at = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if not message.startswith(f"{self.model}: "):
            if "roll" in message:
                self.timeline.add(f"agent log: {message}", at)
            return
        tick: dict[str, Any] = {
            "at": at,
            "message": message.removeprefix(f"{self.model}: "),
            **self._numbers(),
        }
        self.ticks.append(tick)
        numbers = ""
        if not tick["message"].startswith("cooldown"):
            numbers = _tick_numbers(tick)
        self.timeline.add(f"agent tick: {tick['message']}{numbers}", at)

    def _numbers(self) -> dict[str, float]:
        import httpx

        try:
            text = httpx.get(f"{self.agent_url}/metrics", timeout=5).text
        except httpx.HTTPError:
            return {}
        m = self.model
        found = {
            "pairs": _agent_metric(text, "pruneguard_window_samples", model=m, kind="pairs"),
            "agreement": _agent_metric(text, "pruneguard_agreement_ratio", model=m),
            "labelled": _agent_metric(text, "pruneguard_window_samples", model=m, kind="labelled"),
            "champion_acc": _agent_metric(text, "pruneguard_accuracy", model=m, variant="champion"),
            "shadow_acc": _agent_metric(text, "pruneguard_accuracy", model=m, variant="shadow"),
        }
        return {k: v for k, v in found.items() if v is not None}

    def _check_champion(self) -> None:
        current = self.registry.aliases(self.model).get("champion")
        if current == self.champion:
            return
        events = [e for e in self.registry.history(self.model) if e.action == "rollback"]
        event = events[-1].to_dict() if events else {"actor": "?", "to_version": current}
        self.rollback = event
        at = dt.datetime.fromisoformat(str(event["ts"])).timestamp() if "ts" in event else None
        self.timeline.add(
            f"ROLLBACK by {event['actor']}: champion {event.get('from_version')} -> "
            f"{event.get('to_version')}; reason: {event.get('reason', '')}",
            at,
        )


# --- 5. traffic ------------------------------------------------------------------------------


@dataclass
class PhaseStats:
    name: str
    rows: int = 0
    correct: int = 0
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.rows if self.rows else float("nan")


class Traffic:
    """Traffic: ``/predict`` a batch, then (when labelled) ``/feedback`` each row's label."""

    def __init__(
        self,
        client: httpx.Client,
        config: DemoConfig,
        body: Callable[[np.ndarray], dict[str, Any]],
    ) -> None:
        self.client = client
        self.config = config
        self.body = body  # a batch of rows -> the /predict request

    def send(self, x: np.ndarray, y: np.ndarray, stats: PhaseStats, *, labelled: bool) -> str:
        """One batch; with ``labelled``, each row's label to ``/feedback`` (the demo knows the
        labels either way, for its own served-accuracy figure)."""
        reply = self.client.post("/predict", json=self.body(x))
        if reply.status_code != 200:
            raise DemoError(f"/predict answered {reply.status_code}: {reply.text[:300]}")
        body = reply.json()
        if labelled:
            self._feedback(body["request_ids"], y)
        version = str(body["model_version"])
        stats.rows += len(y)
        stats.correct += int((np.asarray(body["predictions"]) == y).sum())
        stats.versions[version] = stats.versions.get(version, 0) + len(y)
        return version

    def _feedback(self, request_ids: list[str], y: np.ndarray) -> None:
        for request_id, label in zip(request_ids, y.tolist(), strict=True):
            fb = self.client.post("/feedback", json={"request_id": request_id, "label": label})
            if fb.status_code >= 300:
                raise DemoError(f"/feedback answered {fb.status_code}: {fb.text[:300]}")

    def run(
        self,
        stats: PhaseStats,
        batches: Iterator[tuple[np.ndarray, np.ndarray]],
        done: Callable[[str], bool],
        watcher: Watcher,
        max_s: float,
        *,
        labelled: bool = True,
    ) -> bool:
        """Send batches at the configured pace until ``done(last_version)`` or ``max_s``."""
        deadline = time.monotonic() + max_s
        pause = self.config.batch / self.config.rows_per_s
        while time.monotonic() < deadline:
            started = time.monotonic()
            version = self.send(*next(batches), stats, labelled=labelled)
            watcher.poll()
            if done(version):
                return True
            time.sleep(max(0.0, pause - (time.monotonic() - started)))
        return False


def batches(
    x: np.ndarray, y: np.ndarray, size: int, shift: Shift | None, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless shuffled batches of the held-out rows; ``shift`` drawn afresh for each batch."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(y))
        for start in range(0, len(order) - size + 1, size):
            idx = order[start : start + size]
            rows = x[idx] if shift is None else shift.apply(x[idx], rng)
            yield rows, y[idx]
