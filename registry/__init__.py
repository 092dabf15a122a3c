"""pruneguard's model registry: versioned artifacts in BentoML's model store, movable aliases
(champion / shadow / baseline), an append-only event history, rollback.

    >>> from registry import open_registry
    >>> reg = open_registry()                       # $PRUNEGUARD_HOME/registry.db by default
    >>> v = reg.register("out/pruned", actor="cli:me")
    >>> reg.promote(v.tag, actor="cli:me", reason="passed review")
"""

from pruneguard.registry.errors import (
    ArtifactCorrupt,
    ArtifactError,
    ConfigError,
    Conflict,
    NotFound,
    PruneguardError,
    Unavailable,
)
from pruneguard.registry.records import ALIASES, Event, Version
from pruneguard.registry.registry import UNCHECKED, Registry, open_registry
from pruneguard.registry.settings import default_home

__all__ = [
    "ALIASES",
    "UNCHECKED",
    "ArtifactCorrupt",
    "ArtifactError",
    "ConfigError",
    "Conflict",
    "Event",
    "NotFound",
    "PruneguardError",
    "Registry",
    "Unavailable",
    "Version",
    "default_home",
    "open_registry",
]
