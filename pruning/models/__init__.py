"""Built-in models, by name (``model: {builtin: NAME}`` in a recipe)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pruneguard.pruning.models.digits_cnn import build_digits_cnn
from pruneguard.pruning.models.digits_transformer import build_digits_transformer
from pruneguard.pruning.models.resnet import build_resnet50
from pruneguard.registry.errors import ConfigError

__all__ = ["BUILTIN_MODELS", "build_builtin"]

# Other packages add a model with one line here (a factory returning an nn.Module).
BUILTIN_MODELS: dict[str, Callable[..., Any]] = {
    "digits-cnn": build_digits_cnn,
    "resnet50": build_resnet50,
    "digits-transformer": build_digits_transformer,
}


def build_builtin(name: str, **kwargs: Any) -> Any:
    """Build the built-in model ``name``; kwargs go to its factory (e.g. ``width=``, ``seed=``)."""
    try:
        factory = BUILTIN_MODELS[name]
    except KeyError:
        allowed = ", ".join(sorted(BUILTIN_MODELS))
        raise ConfigError(
            f"model builtin {name!r} is unknown; allowed: {allowed}. "
            "Fix: use one of those names, or model: {factory: 'pkg.mod:make_model'}."
        ) from None
    return factory(**kwargs)
