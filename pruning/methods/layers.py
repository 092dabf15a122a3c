"""Layer dropping: score each encoder layer by what skipping it costs, then remove the weakest.

A layer is *gated* by a forward hook that returns ``x + g · (layer(x) − x)``: ``g = 1`` is the
layer, ``g = 0`` skips it (its input passes straight through). Scores:

- ``ablation``: skip each layer alone; the loss increase (with labels) or the mean squared
  change of the output (without) is its score;
- ``taylor``/``gradient``: the first-order estimate of the same, ``Σ‖∂output/∂g‖²`` or
  ``|∂loss/∂g|``, from one backward pass;
- ``activation``: the mean relative size of the layer's update ``‖layer(x) − x‖ / ‖x‖``;
- ``magnitude``/``l1``/``l2``: the norm of the layer's weights; ``random``: a control.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from pruneguard.pruning.methods.attention import PrunableEncoderLayer, PrunableSelfAttention
from pruneguard.pruning.methods.heads import (
    Batch,
    Forward,
    Loss,
    NoAttention,
    _batch_size,
    _default_forward,
    _eval_mode,
    _label_loss,
    target_value,
)
from pruneguard.registry.errors import ConfigError

__all__ = [
    "LAYER_CRITERIA",
    "LayerCountError",
    "LayerPruner",
    "drop_layers",
    "find_layers",
    "gate_layers",
    "plan_layers",
    "score_layers",
]

LAYER_CRITERIA = ("ablation", "taylor", "gradient", "activation", "magnitude", "l1", "l2", "random")


class LayerCountError(ConfigError):
    """The number of layers to drop is not below the model's layer count."""


def _has_attention(module: nn.Module) -> bool:
    from pruneguard.pruning.methods.heads import _is_bert_attention, _is_distilbert_attention

    kinds: tuple[type[nn.Module], ...] = (
        nn.MultiheadAttention,
        nn.TransformerEncoderLayer,
        PrunableSelfAttention,
        PrunableEncoderLayer,
    )
    return any(
        isinstance(m, kinds) or _is_bert_attention(m) or _is_distilbert_attention(m)
        for m in module.modules()
    )


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's stack of encoder layers: the longest ``nn.ModuleList`` of attention blocks."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        is_stack = isinstance(module, nn.ModuleList) and all(map(_has_attention, module))
        if is_stack and len(module) > (len(best[1]) if best else 0):
            best = (name, module)
    if best is None:
        raise NoAttention(
            f"{type(model).__name__} has no stack of attention layers to drop from (an "
            "nn.ModuleList of transformer blocks); use method channel instead"
        )
    return best


@contextmanager
def gate_layers(layers: Sequence[nn.Module], gates: Sequence[Tensor]) -> Iterator[None]:
    """Replace each layer's output by ``x + g · (layer(x) − x)`` while the context is open.

    ``gates[i]`` is a scalar or a per-sample vector (shape ``(batch,)``).
    """

    def hook_for(gate: Tensor) -> Callable[..., Tensor]:
        def hook(_m: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
            x = args[0]
            g = gate.view(-1, *([1] * (x.dim() - 1))) if gate.dim() == 1 else gate
            return x + g * (out - x)

        return hook

    handles = [m.register_forward_hook(hook_for(g)) for m, g in zip(layers, gates, strict=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def score_layers(
    model: nn.Module,
    criterion: str,
    batches: Iterable[Batch] = (),
    *,
    forward: Forward | None = None,
    loss: Loss | None = None,
    seed: int = 0,
) -> Tensor:
    """One importance score per layer of :func:`find_layers` (higher = keep)."""
    if criterion not in LAYER_CRITERIA:
        raise ConfigError(
            f"criterion={criterion!r} for layers: must be one of {', '.join(LAYER_CRITERIA)}"
        )
    _, layers = find_layers(model)
    if criterion in ("magnitude", "l1", "l2"):
        p = 1 if criterion == "l1" else 2
        return torch.stack(
            [torch.cat([w.detach().flatten() for w in m.parameters()]).norm(p=p) for m in layers]
        )
    if criterion == "random":
        return torch.rand(len(layers), generator=torch.Generator().manual_seed(seed))
    data = list(batches)
    if not data:
        raise ConfigError(
            f"criterion {criterion!r} needs calibration batches; pass some, or use magnitude"
        )
    fwd = forward or _default_forward
    with _eval_mode(model):
        if criterion == "ablation":
            return _ablation(model, list(layers), data, fwd, loss)
        if criterion == "activation":
            return _activation(model, list(layers), data, fwd)
        return _first_order(model, list(layers), data, fwd, loss, seed)


def _ablation(
    model: nn.Module, layers: list[nn.Module], data: list[Batch], fwd: Forward, loss: Loss | None
) -> Tensor:
    with torch.no_grad():
        dense = [fwd(model, b) for b in data]

        def damage(skip: int | None) -> float:
            gates = [torch.tensor(0.0 if i == skip else 1.0) for i in range(len(layers))]
            with gate_layers(layers, gates):
                outs = [fwd(model, b) for b in data]
            if loss is not None:
                return sum(float(loss(o, b)) for o, b in zip(outs, data, strict=True))
            return sum(float((o - d).pow(2).mean()) for o, d in zip(outs, dense, strict=True))

        base = damage(None) if loss is not None else 0.0
        return torch.tensor([damage(i) - base for i in range(len(layers))])


def _first_order(
    model: nn.Module, layers: list[nn.Module], data: list[Batch], fwd: Forward, loss: Loss | None,
    seed: int, probes: int = 4,
) -> Tensor:  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(len(layers))
    for batch in data:
        if loss is not None:
            gates = [torch.ones((), requires_grad=True) for _ in layers]
            with gate_layers(layers, gates):
                value = loss(fwd(model, batch), batch)
            total += torch.stack(torch.autograd.grad(value, gates)).abs()
            continue
        n = _batch_size(batch)
        gates = [torch.ones(n, requires_grad=True) for _ in layers]
        with gate_layers(layers, gates):
            out = fwd(model, batch)
        for i in range(probes):
            r = torch.randn(out.shape, generator=gen)
            grads = torch.autograd.grad((out * r).sum(), gates, retain_graph=i < probes - 1)
            total += torch.stack([g.pow(2).sum() for g in grads]) / probes
    return total


def _activation(
    model: nn.Module, layers: list[nn.Module], data: list[Batch], fwd: Forward
) -> Tensor:
    total = torch.zeros(len(layers))

    def recorder(i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
            x = args[0]
            total[i] += float(((out - x).norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-6)).mean())

        return hook

    handles = [m.register_forward_hook(recorder(i)) for i, m in enumerate(layers)]
    try:
        with torch.no_grad():
            for batch in data:
                fwd(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return total / len(data)


def check_layer_count(count: int, available: int) -> None:
    """Raise :class:`LayerCountError` unless ``1 <= count < available``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"target.layers={count!r}: must be an integer >= 1 (layers to remove)")
    if count >= available:
        raise LayerCountError(
            f"target.layers={count}: the model has {available} layers and at least one must stay; "
            f"use target.layers <= {available - 1}"
        )


def plan_layers(scores: Tensor, count: int) -> list[int]:
    """Indices of the ``count`` lowest-scored layers, ascending."""
    check_layer_count(count, len(scores))
    return sorted(scores.argsort()[:count].tolist())


def drop_layers(model: nn.Module, indices: Sequence[int]) -> list[int]:
    """Remove layers ``indices`` of :func:`find_layers` in place; return the kept indices.

    Layer-count attributes that describe the stack (``config.num_hidden_layers`` of a
    transformers model, ``num_layers`` of ``nn.TransformerEncoder``) are updated.
    """
    name, layers = find_layers(model)
    check_layer_count(len(set(indices)), len(layers))
    keep = [i for i in range(len(layers)) if i not in set(indices)]
    kept = nn.ModuleList([layers[i] for i in keep])
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], kept)
    if hasattr(parent, "num_layers"):
        setattr(parent, "num_layers", len(keep))  # noqa: B010 (nn.Module's typing)
    for module in model.modules():  # a transformers model may sit inside a wrapper
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = len(keep)
    return keep


class LayerPruner:
    """The Pruner protocol for whole layers: ``step()`` drops the next share of ``target``."""

    def __init__(
        self,
        model: nn.Module,
        *,
        criterion: str = "ablation",
        target: Any,
        scope: str | None = None,
        steps: int = 1,
        calibration: Iterable[Batch] | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        forward: Forward | None = None,
        seed: int = 0,
    ) -> None:
        if criterion not in LAYER_CRITERIA:
            raise ConfigError(
                f"criterion={criterion!r} for layers: must be one of {', '.join(LAYER_CRITERIA)}"
            )
        value = target_value(target, "layers")
        if not value.is_integer():
            raise ConfigError(f"target.layers={value}: must be a whole number of layers")
        self.count = int(value)
        self.original = len(find_layers(model)[1])
        check_layer_count(self.count, self.original)
        self.model, self.criterion, self.steps, self.seed = model, criterion, steps, seed
        self.calibration = list(calibration) if calibration is not None else []
        self.forward = forward
        self.loss = _label_loss(loss_fn) if loss_fn is not None else None
        self.alive = list(range(self.original))  # original indices of kept layers
        self.done = 0

    def step(self) -> None:
        if self.done >= self.steps:
            return
        self.done += 1
        wanted = round(self.count * self.done / self.steps)
        n = wanted - (self.original - len(self.alive))
        if n <= 0:
            return
        scores = score_layers(
            self.model, self.criterion, self.calibration,
            forward=self.forward, loss=self.loss, seed=self.seed + self.done - 1,
        )  # fmt: skip
        keep = drop_layers(self.model, plan_layers(scores, n))
        self.alive = [self.alive[i] for i in keep]

    def finish(self) -> None:
        while self.done < self.steps:
            self.step()

    def report(self) -> dict[str, Any]:
        """JSON-able: layers before/after and the original indices kept."""
        return {
            "layers_before": self.original,
            "layers_after": len(self.alive),
            "kept_layers": list(self.alive),
        }
