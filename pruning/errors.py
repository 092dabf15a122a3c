"""Errors raised by the pruning workflow.

PruneguardError                    (registry.errors)
 ├── ConfigError(ValueError)       (registry.errors)
 │    ├── TargetUnreachable        a ratio / MAC / sparsity target the model cannot reach
 │    └── WeightsError             weights that are missing, mismatched or unsafe (pickle)
 ├── AcceptanceFailed              the pruned model missed the acceptance gate (accuracy, speed)
 └── BuildFailed(RuntimeError)     an external graph builder (onnxruntime-genai's) failed
"""

from __future__ import annotations

from pruneguard.registry.errors import ConfigError, PruneguardError

__all__ = [
    "AcceptanceFailed",
    "BuildFailed",
    "ConfigError",
    "PruneguardError",
    "TargetUnreachable",
    "WeightsError",
]


class TargetUnreachable(ConfigError):
    """The pruning target cannot be reached with this model (e.g. too many MACs in ignored layers)."""


class WeightsError(ConfigError):
    """The weights file cannot be loaded safely into the model."""


class AcceptanceFailed(PruneguardError):
    """The pruned version missed the recipe's acceptance budget (``pruning/gate.py``): it was
    written (and, with ``--register``, registered) but is not champion."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"not accepted: {reason}. Fix: prune less (lower the target), use schedule kind: "
            "iterative with more steps, or finetune longer; or promote it by hand "
            "(`pruneguard models promote TAG`) if you accept the cost."
        )


class BuildFailed(PruneguardError, RuntimeError):
    """A tool that builds a graph for us (onnxruntime-genai's model builder) failed; the
    message carries the end of its output."""
