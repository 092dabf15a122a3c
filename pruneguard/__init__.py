"""pruneguard: prune models, register every version, serve it behind a dense shadow, roll back.

One import package. Its subpackages live at the repository's top level (DESIGN §2) and are
mapped here by ``pyproject.toml`` (setuptools ``package-dir``); in a checkout the links in this
folder give tools that read the source tree (mypy, ``python`` run from the root) the same names:

    pruneguard.pruning    recipe → importance → removal → recovery → ONNX artifacts
    pruneguard.registry   artifact format, BentoML model store, aliases and event history
    pruneguard.deploy     the BentoML service: champion answers, shadow compares
    pruneguard.agent      windows of traffic → checks → rollback
    pruneguard.demo       ``python -m pruneguard.demo``: the whole loop on one machine
    pruneguard.cli        the ``pruneguard`` command

Importing this package imports nothing heavy.
"""

from pathlib import Path

__all__ = ["SOURCE_ROOT"]

# The directory that holds this package: a working dir from which `pruneguard.*` imports
# (site-packages when installed, the repository root in a checkout).
SOURCE_ROOT = Path(__file__).parent.parent
