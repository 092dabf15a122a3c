"""Pure functions over the event history and lineage (no database, no files)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pruneguard.registry.records import Event

__all__ = ["champion_stack", "lineage_entry", "previous_champion"]


def champion_stack(events: Iterable[Event]) -> list[str]:
    """Replay champion moves as an undo stack of tags, oldest first.

    A move to the version just below the top pops the top (it undoes the last move, as a
    rollback does); any other move pushes. So repeated rollbacks walk back through the
    versions that served, and never bounce between the last two.
    """
    stack: list[str] = []
    for event in events:
        if event.alias != "champion" or event.to_version is None:
            continue
        if len(stack) >= 2 and stack[-2] == event.to_version:
            stack.pop()
        elif not stack or stack[-1] != event.to_version:
            stack.append(event.to_version)
    return stack


def previous_champion(events: Iterable[Event], current: str) -> str | None:
    """The version that served before ``current`` (the rollback target), or None."""
    stack = champion_stack(events)
    if not stack or stack[-1] != current:
        # The history does not end at the current champion (an edited database): the best
        # answer is the last other version that held it.
        earlier = [tag for tag in stack if tag != current]
        return earlier[-1] if earlier else None
    return stack[-2] if len(stack) >= 2 else None


_METRICS = ("accuracy", "params", "macs", "speedup")


def lineage_entry(
    tag: str, kind: str, manifest: Mapping[str, Any], parent: tuple[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """One link of a lineage chain: this version's metrics and their change from its parent."""
    metrics = manifest.get("metrics") or {}
    own = {key: metrics.get(key) for key in _METRICS}
    entry: dict[str, Any] = {
        "tag": tag,
        "kind": kind,
        "parent": None,
        "metrics": own,
        "delta": None,
    }
    if parent is None:
        return entry
    parent_tag, parent_manifest = parent
    base = parent_manifest.get("metrics") or {}
    entry["parent"] = parent_tag
    entry["delta"] = {
        "accuracy": _diff(own["accuracy"], base.get("accuracy")),
        "params_ratio": _ratio(own["params"], base.get("params")),
        "macs_ratio": _ratio(own["macs"], base.get("macs")),
        "speedup": own["speedup"],
    }
    return entry


def _diff(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) - float(b)
    return None


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return float(a) / float(b)
    return None
