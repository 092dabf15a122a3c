"""``python -m pruneguard.deploy.bento [bentoml build options]``: build the serving Bento.

BentoML copies files into a Bento by the bentofile's ``include`` patterns, relative to a build
context, and does not follow links. The Bento must import ``pruneguard.deploy`` and
``pruneguard.registry`` the way an install does, so the context is staged in a temporary
directory with the installed package's layout (the same from a wheel or a checkout) and
``bentoml build`` runs there. No model is pinned: replicas resolve aliases at run time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

__all__ = ["SERVING_PACKAGES", "main", "stage"]

SERVING_PACKAGES = ("deploy", "registry")  # what a replica imports; never pruning or agent


def stage(ctx: Path) -> Path:
    """Lay out ``ctx`` as ``pruneguard/{__init__.py,deploy,registry}`` + the bentofile."""
    package = resources.files("pruneguard")
    target = ctx / "pruneguard"
    target.mkdir(parents=True)
    (target / "__init__.py").write_text(package.joinpath("__init__.py").read_text())
    for name in SERVING_PACKAGES:
        with resources.as_file(package.joinpath(name)) as folder:
            shutil.copytree(folder, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    bentofile = ctx / "bentofile.yaml"
    bentofile.write_text(package.joinpath("deploy", "bentofile.yaml").read_text())
    return bentofile


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="pruneguard-bento-") as tmp:
        bentofile = stage(Path(tmp))
        command = [sys.executable, "-m", "bentoml", "build", "-f", str(bentofile), *args, tmp]
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
