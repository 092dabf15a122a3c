"""Registering a prune run's artifacts, and which of them the run offers as champion.

A run writes ``dense/`` and ``pruned/``, and ``quantized/`` when the recipe quantizes. Its
*candidate* is the int8 version when there is one and it passed its gate, else the pruned
one: an int8 version that misses the budget, or is not faster than its fp32 parent, is
registered (its lineage and its refusal stay on record) but never offered as champion.

:func:`candidate` decides (a pure function of the verdicts); :func:`register_out` does it,
through the registry, and records each verdict in the history.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pruneguard.registry.artifact import read_manifest

__all__ = ["PROMOTE_MODES", "candidate", "register_out", "verdicts"]

PROMOTE_MODES = ("auto", "always", "never")


def verdicts(out: Path) -> dict[str, dict[str, Any]]:
    """The gate's verdict of each non-dense artifact under ``out`` ("pruned", "quantized")."""
    found = {}
    for kind in ("pruned", "quantized"):
        if (out / kind).is_dir():
            found[kind] = dict(read_manifest(out / kind)["pruning"]["acceptance"])
    return found


def candidate(found: Mapping[str, Mapping[str, Any]]) -> str:
    """The run's version to offer as champion: int8 when it passed, else pruned."""
    quantized = found.get("quantized")
    return "quantized" if quantized is not None and quantized["passed"] else "pruned"


def register_out(out: Path, promote: str, *, actor: str) -> dict[str, Any]:
    """Register every artifact under ``out``; the candidate's gate (and ``promote``) decides
    the first champion. Returns the ``registration`` block of ``--json`` (docs/pruning.md)."""
    from pruneguard.registry import open_registry

    found = verdicts(out)
    pick = candidate(found)
    acceptance = found[pick]
    passed = acceptance["passed"]
    aliases = {"champion": pick, "shadow": "dense", "baseline": "dense"}
    reason = f"first prune run registered; champion: the {pick} version"
    if not passed and promote != "always":  # a new model is served by its dense parent
        aliases = {"champion": "dense", "baseline": "dense"}
        reason = f"first prune run registered; {pick} not accepted: {acceptance['reason']}"
    quantized = out / "quantized" if "quantized" in found else None
    with open_registry() as registry:
        registered = registry.register_run(
            out / "dense", out / "pruned", quantized_dir=quantized, actor=actor,
            set_aliases=promote != "never", aliases=aliases, reason=reason,
        )  # fmt: skip
        tags = dict(zip(("dense", *found), (v.tag for v in registered), strict=True))
        for kind, verdict in found.items():
            registry.record(
                tags[kind], action="accepted" if verdict["passed"] else "refused", actor=actor,
                reason=verdict["reason"], evidence={"acceptance": verdict},
            )  # fmt: skip
        override = promote == "always" and not passed
        if (
            promote == "always"
            and registry.aliases(registered[0].name).get("champion") != tags[pick]
        ):
            why = (
                f"override (--promote always): {acceptance['reason']}"
                if override
                else "--promote always"
            )
            registry.promote(tags[pick], actor=actor, reason=why)
        versions = {kind: registry.get(tag) for kind, tag in tags.items()}
    return {
        **{kind: {"tag": v.tag, "aliases": sorted(v.aliases)} for kind, v in versions.items()},
        "candidate": pick,
        "accepted": passed,
        "promoted": "champion" in versions[pick].aliases,
        "override": override,
        "reason": acceptance["reason"],
        "verdicts": {
            kind: {"passed": v["passed"], "reason": v["reason"]} for kind, v in found.items()
        },
    }
