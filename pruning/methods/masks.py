"""Unstructured and N:M weight sparsity: masks that zero individual weights.

Deciding is separate from doing: :func:`compute_masks` is pure (it reads the model and
returns masks), :func:`apply_masks` installs them with ``torch.nn.utils.prune`` so the
zeros survive finetuning, :func:`remove_masks` bakes them into plain weights for export.

Masked weights are still stored and multiplied densely: ONNX Runtime's CPU kernels run no
faster on them (see docs/pruning-engine.md). The gain is compressibility, not latency.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import nn
from torch.nn.utils import prune

from pruneguard.registry.errors import ConfigError, Conflict

__all__ = [
    "MaskPruner",
    "apply_masks",
    "compute_masks",
    "nm_mask",
    "remove_masks",
    "sparsity_report",
]

Scope = Literal["global", "layer"]
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def _effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight as forward uses it (``weight_orig * weight_mask`` while a mask is installed)."""
    if hasattr(module, "weight_orig"):
        orig, mask = cast(torch.Tensor, module.weight_orig), cast(torch.Tensor, module.weight_mask)
        return (orig * mask).detach()
    return cast(torch.Tensor, module.weight).detach()


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: _effective_weight(m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED)}


def _keep_largest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    n_zero = round(sparsity * scores.numel())
    mask = torch.ones(scores.numel(), dtype=torch.bool)
    if n_zero:
        mask[torch.topk(scores.flatten(), n_zero, largest=False).indices] = False
    return mask.view_as(scores)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor | None:
    """Keep the ``n`` largest |w| in every ``m`` consecutive weights along the input dimension.

    Conv weights group along input channels at each kernel position. Returns ``None`` when
    the input dimension is not a multiple of ``m`` (such a layer stays dense).
    """
    w = weight.movedim(1, -1) if weight.dim() > 2 else weight  # (..., in)
    if w.shape[-1] % m:
        return None
    groups = w.abs().reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
    keep = keep.reshape(w.shape)
    return keep.movedim(-1, 1) if weight.dim() > 2 else keep


def _validate(sparsity: float, scope: str, nm: tuple[int, int] | None) -> None:
    if scope not in ("global", "layer"):
        raise ConfigError(f"scope {scope!r} is unknown; allowed: global, layer.")
    if nm is not None:
        n, m = nm
        if not 0 < n < m:
            raise ConfigError(f"nm={nm}: need 0 < N < M (e.g. (2, 4) keeps 2 of every 4 weights).")
    elif not 0.0 <= sparsity < 1.0:
        raise ConfigError(
            f"sparsity {sparsity} is out of range; allowed: 0 <= sparsity < 1 "
            "(the fraction of weights zeroed). Fix: e.g. sparsity: 0.8."
        )


def compute_masks(
    model: nn.Module, *, sparsity: float, scope: Scope = "global", nm: tuple[int, int] | None = None
) -> dict[str, torch.Tensor]:
    """Boolean keep-masks (True = keep) for every conv/linear weight, keyed by module name.

    ``scope="global"`` ranks |w| across all layers together (layers with larger weights keep
    more); ``"layer"`` zeros ``sparsity`` of every layer. With ``nm=(N, M)`` each layer keeps
    N of every M weights along its input dimension and ``sparsity`` is ignored; layers whose
    input dimension is not a multiple of M are left out. The model is not modified.
    """
    _validate(sparsity, scope, nm)
    weights = _weights(model)
    if nm is not None:
        nm_masks = {}
        for name, w in weights.items():
            mask = nm_mask(w, *nm)
            if mask is not None:
                nm_masks[name] = mask
        return nm_masks
    if scope == "layer":
        return {name: _keep_largest(w.abs(), sparsity) for name, w in weights.items()}
    flat = torch.cat([w.abs().flatten() for w in weights.values()])
    keep = _keep_largest(flat, sparsity)
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start : start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Install ``masks`` so the masked weights stay zero through training.

    A second call combines with the installed mask (a weight once zeroed stays zero).
    """
    for name, mask in masks.items():
        module = model.get_submodule(name)
        device = _effective_weight(module).device
        prune.custom_from_mask(module, "weight", mask.to(device))


def remove_masks(model: nn.Module) -> None:
    """Bake the installed masks into plain ``weight`` parameters (zeros stay; hooks go)."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")


def sparsity_report(model: nn.Module) -> dict:
    """Counts of the zeros the model really has, over all parameters and per conv/linear weight.

    ``sparsity``/``zero_params``/``params`` cover every parameter (biases and norms too);
    ``weight_sparsity`` covers conv/linear weights; ``layers`` maps each such layer to its own.
    """
    layers = {name: w for name, w in _weights(model).items()}
    weight_ids = {
        id(m.weight_orig if hasattr(m, "weight_orig") else m.weight)
        for n, m in model.named_modules()
        if n in layers
    }
    zero = sum(int((w == 0).sum()) for w in layers.values())
    total = sum(w.numel() for w in layers.values())
    others = [p.detach() for p in model.parameters() if id(p) not in weight_ids]
    all_zero = zero + sum(int((p == 0).sum()) for p in others)
    all_total = total + sum(p.numel() for p in others)
    return {
        "sparsity": all_zero / all_total if all_total else 0.0,
        "zero_params": all_zero,
        "params": all_total,
        "weight_sparsity": zero / total if total else 0.0,
        "layers": {name: float((w == 0).float().mean()) for name, w in layers.items()},
    }


class MaskPruner:
    """Unstructured (or N:M) magnitude pruning on a schedule: the Pruner protocol.

    With ``steps > 1`` the sparsity ramps linearly (step k of K zeros ``sparsity·k/K``),
    re-ranking the surviving weights after each round of finetuning. N:M applies its full
    pattern at the first step. :meth:`finish` reaches the final target if steps remain;
    masks stay installed (so a final finetune keeps the zeros) until :func:`remove_masks`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        sparsity: float,
        steps: int = 1,
        scope: Scope = "global",
        nm: tuple[int, int] | None = None,
    ) -> None:
        _validate(sparsity, scope, nm)
        if steps < 1:
            raise ConfigError(f"steps={steps}: need at least 1. Fix: schedule steps >= 1.")
        self.model = model
        self.sparsity = sparsity
        self.steps = steps
        self.scope: Scope = scope
        self.nm = nm
        self.steps_done = 0

    def step(self) -> None:
        if self.steps_done >= self.steps:
            raise Conflict(
                f"MaskPruner already ran all {self.steps} steps. Fix: call step() at most `steps` times."
            )
        self.steps_done += 1
        target = self.sparsity * self.steps_done / self.steps
        masks = compute_masks(self.model, sparsity=target, scope=self.scope, nm=self.nm)
        apply_masks(self.model, masks)

    def finish(self) -> None:
        while self.steps_done < self.steps:
            self.step()

    def report(self) -> dict[str, Any]:
        """JSON-able: the sparsity reached (the manifest measures it again on the model)."""
        return {"mask_sparsity": self.sparsity * self.steps_done / self.steps}
