"""The registry's values: :class:`Version` and :class:`Event`, built from database rows."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pruneguard.registry.errors import ConfigError

__all__ = [
    "ALIASES",
    "Event",
    "Version",
    "now_iso",
    "split_tag",
    "unknown_tag",
    "validate_alias",
    "validate_name",
]

ALIASES = ("champion", "shadow", "baseline")
_TAG_PART = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Version:
    """One registered version: a BentoML model ``name:version`` and its manifest."""

    tag: str
    name: str
    version: str
    kind: str
    labels: dict[str, str]
    manifest: dict[str, Any] = field(repr=False)
    created_at: str
    aliases: tuple[str, ...] = ()
    parent_tag: str | None = None
    model_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["aliases"] = list(self.aliases)
        return data

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], aliases: tuple[str, ...] = ()) -> Version:
        return cls(
            tag=row["tag"],
            name=row["name"],
            version=row["version"],
            kind=row["kind"],
            labels=dict(row["labels"]),
            manifest=dict(row["manifest"]),
            created_at=row["created_at"],
            aliases=aliases,
            parent_tag=row["parent_tag"],
            model_sha256=row["model_sha256"],
        )


@dataclass(frozen=True)
class Event:
    """One line of the append-only history: a registration or an alias move."""

    id: int
    ts: str
    actor: str
    action: str
    model: str
    alias: str | None
    from_version: str | None
    to_version: str | None
    reason: str
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Event:
        return cls(
            id=int(row["id"]),
            ts=row["ts"],
            actor=row["actor"],
            action=row["action"],
            model=row["model"],
            alias=row["alias"],
            from_version=row["from_version"],
            to_version=row["to_version"],
            reason=row["reason"],
            evidence=dict(row["evidence"] or {}),
        )


def now_iso() -> str:
    """The current time, ISO-8601 in UTC, millisecond precision."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def split_tag(tag: str) -> tuple[str, str]:
    """``"name:version"`` -> ``(name, version)``; :class:`ConfigError` for anything else."""
    name, sep, version = str(tag).partition(":")
    if not sep or not _TAG_PART.match(name) or not _TAG_PART.match(version):
        raise ConfigError(
            f"{tag!r} is not a version tag; expected NAME:VERSION as shown by "
            "`pruneguard models list` (lowercase letters, digits, '-', '_', '.')"
        )
    return name, version


def validate_name(name: str) -> str:
    if not _TAG_PART.match(name) or len(name) > 63:
        raise ConfigError(
            f"model name {name!r} is not allowed; use at most 63 lowercase letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    return name


def validate_alias(alias: str) -> str:
    if alias not in ALIASES:
        raise ConfigError(f"alias {alias!r} is not one of {', '.join(ALIASES)}")
    return alias


def unknown_tag(tag: str) -> str:
    """The message for a tag that is not registered, with where to find the right one."""
    name = tag.partition(":")[0]
    return (
        f"version {tag} is not registered; see `pruneguard models list {name}` for the "
        "registered tags"
    )
