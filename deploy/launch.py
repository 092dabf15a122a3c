"""``python -m pruneguard.deploy.launch serve ...``: the ``bentoml`` CLI, run in this process with a
Prometheus multiprocess directory private to this server, removed when it exits.

BentoML keeps prometheus_client's multiprocess files in ``$BENTOML_HOME/
prometheus_multiproc_dir`` (the only setting is BENTOML_HOME; ``PROMETHEUS_MULTIPROC_DIR``
is overwritten) and empties it whenever a server starts. Two servers sharing a
BENTOML_HOME (two replicas on one machine, one model store) would then delete each other's
metric files and report each other's counters. Here the directory is a fresh one under the
system temporary directory (``$TMPDIR``), set on BentoML's container before it serves; the
workers inherit it. A directory left by a server that was killed (its pid is gone) is
removed by the next start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["PREFIX", "main", "private_metrics_dir", "remove_stale"]

PREFIX = "pruneguard-metrics-"


def private_metrics_dir(parent: Path | None = None) -> Path:
    """A new, empty directory named for this process: ``<tmp>/pruneguard-metrics-<pid>-*``."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale(parent: Path | None = None) -> list[Path]:
    """Remove the metrics directories of servers whose process is gone; return them."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    removed: list[Path] = []
    for path in parent.glob(f"{PREFIX}*-*"):
        pid_text = path.name[len(PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def main(argv: list[str] | None = None) -> int:
    """Run ``bentoml <argv>`` with a private metrics directory; return its exit code."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli

    with contextlib.suppress(OSError):
        remove_stale()
    directory = private_metrics_dir()
    BentoMLContainer.prometheus_multiproc_dir.set(str(directory))
    try:
        cli.main(args=argv, prog_name="bentoml")  # click ends with SystemExit
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
