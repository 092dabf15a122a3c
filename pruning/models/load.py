"""Build the recipe's model: a built-in by name, or a user factory plus safe weights.

Weights load only from safetensors, or from ``.pt``/``.pth`` files through
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. A pickle is never
unpickled: the error says how to convert it to safetensors.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruneguard.pruning.errors import WeightsError
from pruneguard.pruning.recipe import ModelSpec
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["import_factory", "load_model", "load_state_dict"]

PICKLE_SUFFIXES = (".pkl", ".pickle")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
CONVERT = (
    "convert it once, on a machine where you trust the file: load its state dict with PyTorch "
    "and write it with safetensors.torch.save_file(state_dict, 'model.safetensors'), then "
    "point model.weights at the .safetensors file"
)


def load_model(spec: ModelSpec, *, seed: int = 0, search_path: Path | None = None) -> nn.Module:
    """The model ``spec`` describes, in eval mode. ``search_path``: extra folder for imports."""
    if spec.builtin is not None:
        from pruneguard.pruning.models import build_builtin

        model = build_builtin(spec.builtin, **_with_seed(spec.builtin, spec.options, seed))
    else:
        assert spec.factory is not None
        model = _call_factory(spec.factory, spec.options, search_path)
        if spec.weights is not None:
            _load_weights(model, spec.weights, spec.factory)
    return model.eval()


def _with_seed(builtin: str, options: Mapping[str, Any], seed: int) -> dict[str, Any]:
    from pruneguard.pruning.models import BUILTIN_MODELS

    kwargs = dict(options)
    factory = BUILTIN_MODELS.get(builtin)
    if factory is not None and "seed" in inspect.signature(factory).parameters:
        kwargs.setdefault("seed", seed)
    return kwargs


def import_factory(target: str, where: str, search_path: Path | None = None) -> Callable[..., Any]:
    """Import ``"pkg.mod:callable"``; one-line ConfigError naming the module and the fix."""
    module_name, _, attr = target.partition(":")
    extra = [str(p) for p in (search_path, Path.cwd()) if p is not None]
    added = [p for p in extra if p not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"{where} {target!r}: module {module_name!r} does not import "
            f"({type(exc).__name__}: {exc}); fix: install the package that provides it, or run "
            "from (or put the recipe in) the folder that contains it"
        ) from exc
    finally:
        for p in added:
            sys.path.remove(p)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(
            f"{where} {target!r}: module {module_name} has no callable {attr!r}; "
            "fix: name a function that returns the object, as 'module:function'"
        )
    return fn


def _call_factory(target: str, options: Mapping[str, Any], search_path: Path | None) -> nn.Module:
    from torch import nn

    model = import_factory(target, "model.factory", search_path)(**options)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.factory {target!r} returned {type(model).__name__}, not a torch.nn.Module; "
            "fix: return the model object"
        )
    return model


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a weights-only torch file; refuses pickles."""
    if not path.is_file():
        raise WeightsError(
            f"model.weights={path}: no such file; fix the path (relative paths start at the recipe's folder)"
        )
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsError(
            f"model.weights={path}: pickle files are never loaded (unsafe); {CONVERT}"
        )
    state = _safetensors(path)
    if state is None:
        state = _torch_weights_only(path)
    return state


def _safetensors(path: Path) -> dict[str, torch.Tensor] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        if path.suffix.lower() == ".safetensors":
            raise WeightsError(
                f"model.weights={path}: not a valid safetensors file ({exc}); "
                "fix: save it with safetensors.torch.save_file(model.state_dict(), path)"
            ) from exc
        return None


def _torch_weights_only(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, or anything else a non-weights file raises
        raise WeightsError(
            f"model.weights={path}: not safetensors, and torch.load(weights_only=True) refuses it "
            f"(a pickle with Python objects, or not a weights file); pruneguard never unpickles: {CONVERT}"
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            f"model.weights={path}: holds a {type(obj).__name__}, not a state_dict of tensors; "
            "fix: save model.state_dict() with safetensors.torch.save_file"
        )
    return dict(obj)


def _load_weights(model: nn.Module, path: Path, factory: str) -> None:
    state = load_state_dict(path)
    problems = _mismatches(model.state_dict(), state)
    if problems:
        raise WeightsError(
            f"model.weights={path} do not match the model from {factory}: {'; '.join(problems)}; "
            "fix: save the weights from this model's state_dict, or give the factory the options "
            "that build the matching architecture"
        )
    model.load_state_dict(state, strict=True)


def _mismatches(expected: Mapping[str, Any], got: Mapping[str, Any], show: int = 3) -> list[str]:
    def listing(keys: list[str]) -> str:
        more = f", … {len(keys) - show} more" if len(keys) > show else ""
        return ", ".join(keys[:show]) + more

    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} file {list(got[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys ({listing(missing)})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys ({listing(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({listing(shapes)})")
    return problems
