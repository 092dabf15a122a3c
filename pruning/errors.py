"""Errors raised by the pruning workflow.

PruneguardError                    (registry.errors)
 ├── ConfigError(ValueError)       (registry.errors)
 │    ├── TargetUnreachable        a ratio / MAC / sparsity target the model cannot reach
 │    └── WeightsError             weights that are missing, mismatched or unsafe (pickle)
 └── AcceptanceFailed              the pruned model missed the recipe's accuracy budget
"""

from __future__ import annotations

from pruneguard.registry.errors import ConfigError, PruneguardError

__all__ = [
    "AcceptanceFailed",
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
    """The pruned model's accuracy dropped more than `accept.max_accuracy_drop` allows."""

    def __init__(self, *, baseline_accuracy: float, accuracy: float, max_drop: float) -> None:
        self.baseline_accuracy = baseline_accuracy
        self.accuracy = accuracy
        self.max_drop = max_drop
        drop = baseline_accuracy - accuracy
        super().__init__(
            f"pruned accuracy {accuracy:.4f} is {drop * 100:.2f} points below the dense "
            f"{baseline_accuracy:.4f}; accept.max_accuracy_drop allows {max_drop * 100:.2f} points. "
            "Fix: prune less (lower the target), use schedule kind: iterative with more steps, "
            "or finetune longer."
        )
