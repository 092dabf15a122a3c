"""Progress on stderr: a bar per stage on a terminal (tqdm), a plain line per step elsewhere
(logs, pipes, CI), nothing when disabled (``--quiet``). stdout is never touched."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["VERBOSE_ENV", "Steps", "reporter", "steps"]

# 1: also show what third-party tools print (the ONNX exporter); `pruneguard prune --verbose`
VERBOSE_ENV = "PRUNEGUARD_VERBOSE"


def reporter(enabled: bool, prefix: str = "pruneguard") -> Callable[[str], None]:
    """``say(message)``: one ``[prefix] message`` line on stderr, or nothing when disabled."""

    def say(message: str) -> None:
        if enabled:
            print(f"[{prefix}] {message}", file=sys.stderr, flush=True)

    return say


class Steps(Protocol):
    def advance(self, note: str = "") -> None:
        """One step done; ``note`` (e.g. ``loss 0.1234``) describes it."""


class _Bar:
    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def advance(self, note: str = "") -> None:
        if note:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.update(1)


class _Lines:
    def __init__(self, total: int, desc: str) -> None:
        self._total, self._desc, self._done = total, desc, 0

    def advance(self, note: str = "") -> None:
        self._done += 1
        tail = f" {note}" if note else ""
        print(f"{self._desc} {self._done}/{self._total}{tail}", file=sys.stderr, flush=True)


class _Silent:
    def advance(self, note: str = "") -> None:
        pass


@contextmanager
def steps(total: int, desc: str, *, enabled: bool = True) -> Iterator[Steps]:
    """A stage of ``total`` steps named ``desc``: a bar on a TTY, else one line per step."""
    if not enabled:
        yield _Silent()
        return
    if not sys.stderr.isatty():
        yield _Lines(total, desc)
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, file=sys.stderr, leave=True, dynamic_ncols=True) as bar:
        yield _Bar(bar)
