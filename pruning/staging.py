"""Writing a run's artifacts so that ``OUT`` holds all of them or none.

``dense/`` and ``pruned/`` (and ``quantized/`` when the recipe quantizes) are built in a
staging folder next to ``OUT`` and renamed into place together; if a rename fails, the ones
before it are undone. Every pipeline writes through :func:`staged_pair`.
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

SIDES = ("dense", "pruned", "quantized")  # quantized: only when the recipe asks


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
    """A staging folder to write ``dense/``, ``pruned/`` (and ``quantized/``) into; they move
    into ``out`` when the block ends without error, and the staging folder is removed either way."""
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
    moved: list[str] = []
    try:
        for side in SIDES:
            if side == "quantized" and not (staging / side).exists():
                continue
            os.rename(staging / side, out / side)
            moved.append(side)
    except BaseException:
        for side in reversed(moved):
            os.rename(out / side, staging / side)
        if created:
            out.rmdir()
        raise
