"""pruneguard's exception tree.

Every error pruneguard raises on purpose derives from :class:`PruneguardError` and from the
builtin it refines, and carries the data a caller needs. The CLI turns each into one line
that names the problem and the fix::

    PruneguardError
    ├── ConfigError(ValueError)          a recipe, option or input is invalid
    ├── ArtifactError(ValueError)        an artifact directory is malformed
    │   └── ArtifactCorrupt              a file's sha256 does not match the manifest
    ├── NotFound(LookupError)            an unknown model, tag or alias
    ├── Conflict(RuntimeError)           a compare-and-set lost, or the action is not allowed now
    └── Unavailable(ConnectionError)     a database or service cannot be reached

Packages may subclass these (``pruning`` adds ``TargetUnreachable(ConfigError)``).
"""

from __future__ import annotations

__all__ = [
    "ArtifactCorrupt",
    "ArtifactError",
    "ConfigError",
    "Conflict",
    "NotFound",
    "PruneguardError",
    "Unavailable",
]


class PruneguardError(Exception):
    """Root of pruneguard's errors. ``str(err)`` is one line: the problem, then the fix."""


class ConfigError(PruneguardError, ValueError):
    """A recipe, option or input value is invalid."""


class ArtifactError(PruneguardError, ValueError):
    """An artifact directory is missing a file or has a malformed manifest."""


class ArtifactCorrupt(ArtifactError):
    """A file of an artifact does not match the sha256 in its manifest."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class NotFound(PruneguardError, LookupError):
    """An unknown model, tag or alias."""


class Conflict(PruneguardError, RuntimeError):
    """A compare-and-set lost, or the action is not allowed in the current state."""


class Unavailable(PruneguardError, ConnectionError):
    """A database or service cannot be reached."""
