"""Where the registry keeps its state: the home directory, the database URL, the BentoML store.

Resolved once, at the edge (CLI option, env var, default), into a frozen :class:`Settings`
that is passed down. ``BENTOML_HOME`` must be in the environment before ``bentoml`` is first
imported, so :func:`prepare_bentoml_env` runs before any import of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DB_URL_ENV",
    "HOME_ENV",
    "Settings",
    "default_home",
    "mask_url",
    "prepare_bentoml_env",
    "resolve_settings",
]

HOME_ENV = "PRUNEGUARD_HOME"
DB_URL_ENV = "PRUNEGUARD_DB_URL"
BENTOML_HOME_ENV = "BENTOML_HOME"


@dataclass(frozen=True)
class Settings:
    """The registry's resolved locations."""

    home: Path
    db_url: str
    bentoml_home: Path


def default_home() -> Path:
    """``$PRUNEGUARD_HOME``, or ``./.pruneguard``."""
    return Path(os.environ.get(HOME_ENV) or ".pruneguard").expanduser()


def resolve_settings(url: str | None = None, *, home: Path | None = None) -> Settings:
    """URL: the argument, else ``$PRUNEGUARD_DB_URL``, else ``sqlite:///<home>/registry.db``.

    Store: ``$BENTOML_HOME`` if set, else ``<home>/bentoml``.
    """
    home = Path(home).expanduser() if home is not None else default_home()
    db_url = url or os.environ.get(DB_URL_ENV) or f"sqlite:///{home.absolute() / 'registry.db'}"
    bentoml_home = Path(os.environ.get(BENTOML_HOME_ENV) or home / "bentoml").expanduser()
    return Settings(home=home, db_url=db_url, bentoml_home=bentoml_home.absolute())


def prepare_bentoml_env(bentoml_home: Path) -> None:
    """Point BentoML at ``bentoml_home`` (unless already set) before it is imported.

    pruneguard passes its own store object to every BentoML call, so this only keeps
    BentoML's globals (and the ``bentoml`` CLI run from here) off ``~/bentoml``.
    """
    os.environ.setdefault(BENTOML_HOME_ENV, str(bentoml_home))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe for messages and logs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"
