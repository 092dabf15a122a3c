"""Writing a run's two artifacts so that ``OUT`` holds both or neither.

Both are built in a staging folder next to ``OUT`` and renamed into place together; if the
second rename fails, the first is undone. Every pipeline writes through :func:`staged_pair`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pruneguard.registry.errors import ConfigError

__all__ = ["check_out", "staged_pair"]

SIDES = ("dense", "pruned")


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file or already holds a run (before any work is done)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory")
    for sub in SIDES:
        if (out / sub).exists():
            raise ConfigError(
                f"{out / sub} already exists; choose another --out or remove it first"
            )


@contextlib.contextmanager
def staged_pair(out: Path) -> Iterator[Path]:
    """A staging folder to write ``dense/`` and ``pruned/`` into; both move into ``out`` when
    the block ends without error, and the staging folder is removed either way."""
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=parent))
    try:
        yield staging
        _move_into(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into(staging: Path, out: Path) -> None:
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    check_out(out)
    os.rename(staging / "dense", out / "dense")
    try:
        os.rename(staging / "pruned", out / "pruned")
    except BaseException:
        os.rename(out / "dense", staging / "dense")
        if created:
            out.rmdir()
        raise
