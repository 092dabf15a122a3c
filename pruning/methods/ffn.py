"""Feed-forward width pruning: find FFN blocks, score their neurons, remove the weakest.

An FFN block is two linears around an activation, ``second(act(first(x)))``; its *neurons*
are the ``first.out_features`` intermediate units. Understood here:

- BERT-family layers from transformers 5 (BERT, MiniLM, RoBERTa, ELECTRA…):
  ``layer.intermediate.dense`` → ``layer.output.dense``;
- DistilBERT: ``ffn.lin1`` → ``ffn.lin2``;
- :class:`pruning.methods.attention.PrunableEncoderLayer` (what :func:`convert_attention` makes of
  ``nn.TransformerEncoderLayer``): ``linear1`` → ``linear2``.

Neurons are *gated* by a forward pre-hook on the second linear, whose input is the activation:
multiplying neuron ``j`` by ``g_j = 0`` gives the same outputs as removing row ``j`` of the
first linear and column ``j`` of the second. The width stays uniform across layers (every
layer keeps the same number of neurons, rounded to a multiple of 8 for the kernels), so a
transformers model's ``config.intermediate_size`` (DistilBERT: ``hidden_dim``) still describes
it and it saves and reloads with ``save_pretrained`` / ``from_pretrained``.

Deciding is separate from doing: :func:`score_neurons` and :func:`plan_neurons` are pure,
:func:`remove_neurons` applies a plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneguard.pruning.methods.attention import PrunableEncoderLayer, convert_attention
from pruneguard.pruning.methods.heads import (
    Batch,
    Forward,
    Loss,
    _batch_size,
    _default_forward,
    _eval_mode,
    _label_loss,
    _slice,
    target_value,
)
from pruneguard.registry.errors import ConfigError

__all__ = [
    "FFN_CRITERIA",
    "FfnExhausted",
    "FfnPruner",
    "FfnSite",
    "NoFfn",
    "find_ffn",
    "gate_neurons",
    "kept_width",
    "plan_neurons",
    "remove_neurons",
    "score_neurons",
    "sync_config",
]

FFN_CRITERIA = ("taylor", "gradient", "activation", "magnitude", "l1", "l2", "random")
MULTIPLE = 8  # kept widths are rounded to this: GEMM kernels like multiples of 8
# transformers config attributes that hold the FFN width
WIDTH_ATTRS = ("intermediate_size", "hidden_dim")


class NoFfn(ConfigError):
    """The model has no feed-forward block that FFN pruning understands."""


class FfnExhausted(ConfigError):
    """The FFN target would leave a layer with no neurons (after rounding)."""


@dataclass(frozen=True)
class FfnSite:
    """One FFN block: the layer that holds its two linears, and their attribute paths."""

    name: str
    module: nn.Module
    first_path: str  # e.g. "intermediate.dense"
    second_path: str  # e.g. "output.dense"

    def first(self) -> nn.Linear:
        return self._get(self.first_path)

    def second(self) -> nn.Linear:
        return self._get(self.second_path)

    @property
    def width(self) -> int:
        return self.first().out_features

    def replace(self, first: nn.Linear, second: nn.Linear) -> None:
        for path, linear in ((self.first_path, first), (self.second_path, second)):
            owner, _, attr = path.rpartition(".")
            setattr(self.module.get_submodule(owner) if owner else self.module, attr, linear)

    def _get(self, path: str) -> nn.Linear:
        linear = self.module.get_submodule(path)
        assert isinstance(linear, nn.Linear)
        return linear


# (first, second) attribute paths of each known FFN layout
LAYOUTS = (("intermediate.dense", "output.dense"), ("lin1", "lin2"), ("linear1", "linear2"))


def _layout(module: nn.Module) -> tuple[str, str] | None:
    for first, second in LAYOUTS:
        try:
            a, b = module.get_submodule(first), module.get_submodule(second)
        except AttributeError:
            continue
        linears = isinstance(a, nn.Linear) and isinstance(b, nn.Linear)
        if linears and a.out_features == b.in_features and a.in_features == b.out_features:
            return first, second
    return None


def find_ffn(model: nn.Module) -> list[FfnSite]:
    """Every prunable FFN block of ``model``, in module order.

    Raises :class:`NoFfn` when there is none, and when the model still holds
    ``nn.TransformerEncoderLayer`` (its fused fast path skips hooks; convert it first with
    :func:`convert_attention`).
    """
    sites: list[FfnSite] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            raise NoFfn(
                f"{name or 'the model'} is an nn.TransformerEncoderLayer, whose fused fast path "
                "bypasses the FFN gates; convert the model first with "
                "pruning.methods.attention.convert_attention(model)"
            )
        layout = _layout(module)
        if layout is not None and (
            layout[0] != "linear1" or isinstance(module, PrunableEncoderLayer)
        ):
            sites.append(FfnSite(name, module, *layout))
    if not sites:
        raise NoFfn(
            f"{type(model).__name__} has no feed-forward block to prune (BERT-style "
            "intermediate/output, DistilBERT lin1/lin2 or nn.TransformerEncoderLayer); "
            "use method channel instead"
        )
    return sites


# --- gating ----------------------------------------------------------------------------------


@contextmanager
def gate_neurons(sites: Sequence[FfnSite], gates: Sequence[Tensor]) -> Iterator[None]:
    """Multiply each FFN neuron's activation by its gate while the context is open.

    ``gates[i]`` has shape ``(width,)`` or ``(batch, width)`` (a gate per sample; the batch
    is the first axis of the activation).
    """

    def hook_for(gate: Tensor) -> Callable[[nn.Module, tuple[Tensor, ...]], tuple[Tensor, ...]]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            x = args[0]
            g = gate.view(gate.shape[0], *([1] * (x.dim() - 2)), -1) if gate.dim() == 2 else gate
            return (x * g, *args[1:])

        return hook

    handles = [
        s.second().register_forward_pre_hook(hook_for(g)) for s, g in zip(sites, gates, strict=True)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# --- scoring ---------------------------------------------------------------------------------


def score_neurons(
    model: nn.Module,
    sites: Sequence[FfnSite],
    criterion: str,
    batches: Iterable[Batch] = (),
    *,
    forward: Forward | None = None,
    loss: Loss | None = None,
    seed: int = 0,
) -> list[Tensor]:
    """One importance score per FFN neuron (higher = keep), one tensor per site.

    - ``taylor``: first-order estimate of how far removing the neuron moves the output,
      ``Σ_samples ‖∂output/∂gate‖²`` (label-free; right for embedding models, where a loss
      against the dense model has zero gradient at gate = 1);
    - ``gradient``: mean over batches of ``|∂loss/∂gate|`` at gate = 1 (needs ``loss``);
    - ``activation``: mean ``|activation|`` over every token of the calibration batches;
    - ``magnitude``/``l2``/``l1``: norm of the neuron's row of the first linear (with its
      bias) and column of the second;
    - ``random``: seeded noise (a control).
    """
    _check_criterion(criterion)
    if criterion in ("magnitude", "l2", "l1"):
        return [_weight_norm(s, 1 if criterion == "l1" else 2) for s in sites]
    if criterion == "random":
        gen = torch.Generator().manual_seed(seed)
        return [torch.rand(s.width, generator=gen) for s in sites]
    data = list(batches)
    if not data:
        raise ConfigError(
            f"criterion {criterion!r} needs calibration batches; pass some, or use magnitude"
        )
    if criterion == "gradient" and loss is None:
        raise ConfigError(
            "criterion 'gradient' needs a loss on labels; for a model without labels "
            "(an embedding model) use criterion taylor"
        )
    fwd = forward or _default_forward
    scorers: dict[str, Callable[..., list[Tensor]]] = {
        "taylor": _taylor,
        "gradient": _gradient,
        "activation": _activation,
    }
    with _eval_mode(model):
        return scorers[criterion](model, sites, data, fwd, loss, seed)


def _check_criterion(criterion: str) -> None:
    if criterion not in FFN_CRITERIA:
        raise ConfigError(
            f"criterion={criterion!r} for ffn: must be one of {', '.join(FFN_CRITERIA)}"
        )


def _weight_norm(site: FfnSite, p: int) -> Tensor:
    first, second = site.first(), site.second()
    parts = [first.weight.detach(), second.weight.detach().t()]
    if first.bias is not None:
        parts.append(first.bias.detach()[:, None])
    return torch.cat(parts, 1).norm(p=p, dim=1)


def _taylor(
    model: nn.Module, sites: Sequence[FfnSite], data: list[Batch], fwd: Forward, _loss: Loss | None,
    seed: int, probes: int = 4,
) -> list[Tensor]:  # fmt: skip
    # Σ_s ‖J_s‖² per neuron, J_s = ∂out_s/∂gate_s, by random projections (as heads.py does):
    # E_r[(rᵀ J_s)²] = ‖J_s‖² for r ~ N(0, I); per-sample gates keep the samples apart.
    gen = torch.Generator().manual_seed(seed)
    total = [torch.zeros(s.width) for s in sites]
    for batch in data:
        n = _batch_size(batch)
        gates = [torch.ones(n, s.width, requires_grad=True) for s in sites]
        with gate_neurons(sites, gates):
            out = fwd(model, batch)
        for i in range(probes):
            r = torch.randn(out.shape, generator=gen)
            grads = torch.autograd.grad((out * r).sum(), gates, retain_graph=i < probes - 1)
            for acc, g in zip(total, grads, strict=True):
                acc += g.pow(2).sum(0) / probes
    return total


def _gradient(
    model: nn.Module, sites: Sequence[FfnSite], data: list[Batch], fwd: Forward, loss: Loss | None,
    _seed: int,
) -> list[Tensor]:  # fmt: skip
    assert loss is not None
    total = [torch.zeros(s.width) for s in sites]
    for batch in data:
        gates = [torch.ones(s.width, requires_grad=True) for s in sites]
        with gate_neurons(sites, gates):
            value = loss(fwd(model, batch), batch)
        for acc, g in zip(total, torch.autograd.grad(value, gates), strict=True):
            acc += g.abs()
    return [t / len(data) for t in total]


def _activation(
    model: nn.Module, sites: Sequence[FfnSite], data: list[Batch], fwd: Forward, _loss: Loss | None,
    _seed: int,
) -> list[Tensor]:  # fmt: skip
    total = [torch.zeros(s.width) for s in sites]
    counts = [0] * len(sites)

    def recorder(i: int) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            total[i] += x.abs().sum(0)
            counts[i] += x.shape[0]

        return hook

    handles = [s.second().register_forward_pre_hook(recorder(i)) for i, s in enumerate(sites)]
    try:
        with torch.no_grad():
            for batch in data:
                fwd(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return [t / max(c, 1) for t, c in zip(total, counts, strict=True)]


# --- choosing --------------------------------------------------------------------------------


def kept_width(width: int, fraction: float, *, multiple: int = MULTIPLE, name: str = "") -> int:
    """Neurons a layer of ``width`` keeps when ``fraction`` of them go, rounded to ``multiple``.

    Raises :class:`FfnExhausted` when the rounded width would be 0.
    """
    if not 0 <= fraction < 1:
        raise ConfigError(
            f"target.ffn={fraction}: must be > 0 and < 1 (the fraction of FFN neurons to remove)"
        )
    keep = min(width, multiple * round(width * (1 - fraction) / multiple))
    if keep < 1:
        where = f" in {name}" if name else ""
        raise FfnExhausted(
            f"target.ffn={fraction} keeps {width * (1 - fraction):.1f} of {width} neurons{where}, "
            f"which rounds to 0 (widths are multiples of {multiple}); use target.ffn <= "
            f"{1 - multiple / 2 / width:.3f}"
        )
    return keep


def plan_neurons(scores: Sequence[Tensor], keep: int) -> list[list[int]]:
    """Which neurons to remove from each site: all but its ``keep`` highest-scored ones."""
    plan = []
    for s in scores:
        n = max(0, len(s) - keep)
        plan.append(sorted(s.argsort()[:n].tolist()))
    return plan


# --- doing -----------------------------------------------------------------------------------


def remove_neurons(sites: Sequence[FfnSite], plan: Sequence[Sequence[int]]) -> None:
    """Physically remove ``plan[i]`` (neuron indices) from ``sites[i]``, in place.

    The transformers configs inside the model get the new width when every site has it.
    """
    for site, drop in zip(sites, plan, strict=True):
        if not drop:
            continue
        gone = set(drop)
        keep = torch.tensor([j for j in range(site.width) if j not in gone], dtype=torch.long)
        if len(keep) == 0:
            raise FfnExhausted(f"removing {len(gone)} neurons would leave {site.name} with none")
        site.replace(_slice(site.first(), keep, dim=0), _slice(site.second(), keep, dim=1))


def sync_config(model: nn.Module, sites: Sequence[FfnSite]) -> None:
    """Write the (uniform) FFN width into every transformers config inside ``model``."""
    widths = {s.width for s in sites}
    if len(widths) != 1:
        raise ConfigError(
            f"FFN widths {sorted(widths)} differ across layers; config.intermediate_size cannot "
            "describe them: prune with scope layer (the same width in every layer)"
        )
    width = widths.pop()
    for module in model.modules():  # a transformers model may sit inside a wrapper
        config = getattr(module, "config", None)
        for attr in WIDTH_ATTRS:
            if config is not None and hasattr(config, attr):
                setattr(config, attr, width)


# --- the Pruner ------------------------------------------------------------------------------


class FfnPruner:
    """The Pruner protocol for FFN neurons (``step()`` removes the next share).

    ``target`` is the fraction of every layer's neurons to remove (``0.5``, ``{"ffn": 0.5}``
    or a recipe ``Target``); each layer keeps the same width, rounded to a multiple of
    ``multiple``. With ``steps > 1`` the fraction ramps linearly and neurons are re-scored on
    the current weights before each step. ``nn.TransformerEncoderLayer`` modules are
    converted in place first.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        criterion: str = "taylor",
        target: Any,
        scope: str | None = "layer",
        steps: int = 1,
        calibration: Iterable[Batch] | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        forward: Forward | None = None,
        seed: int = 0,
        multiple: int = MULTIPLE,
    ) -> None:
        _check_criterion(criterion)
        fraction = target_value(target, "ffn")
        if not 0 < fraction < 1:
            raise ConfigError(
                f"target.ffn={fraction}: must be > 0 and < 1 (the fraction of FFN neurons to remove)"
            )
        if (scope or "layer") != "layer":
            raise ConfigError(
                f"scope={scope!r} for ffn: only scope layer (the same width in every layer, so "
                "config.intermediate_size still describes the model); use scope: layer"
            )
        convert_attention(model)
        self.model, self.criterion, self.steps, self.seed = model, criterion, steps, seed
        self.fraction, self.multiple = fraction, multiple
        self.sites = find_ffn(model)
        self.original = [s.width for s in self.sites]
        sync_config(model, self.sites)  # refuse non-uniform widths before cutting anything
        kept_width(self.original[0], self.fraction, multiple=multiple, name=self.sites[0].name)
        self.calibration = list(calibration) if calibration is not None else []
        self.forward = forward
        self.loss = _label_loss(loss_fn) if loss_fn is not None else None
        self.done = 0

    def step(self) -> None:
        if self.done >= self.steps:
            return
        self.done += 1
        keep = kept_width(self.original[0], self.fraction * self.done / self.steps,
                          multiple=self.multiple)  # fmt: skip
        if all(s.width <= keep for s in self.sites):
            return
        scores = score_neurons(
            self.model, self.sites, self.criterion, self.calibration,
            forward=self.forward, loss=self.loss, seed=self.seed + self.done - 1,
        )  # fmt: skip
        remove_neurons(self.sites, plan_neurons(scores, keep))
        sync_config(self.model, self.sites)

    def finish(self) -> None:
        while self.done < self.steps:
            self.step()

    def report(self) -> dict[str, Any]:
        """JSON-able: FFN width before/after per layer and in total."""
        return {
            "ffn_neurons_before": sum(self.original),
            "ffn_neurons_after": sum(s.width for s in self.sites),
            "ffn_width_before": {s.name: w for s, w in zip(self.sites, self.original, strict=True)},
            "ffn_width_after": {s.name: s.width for s in self.sites},
            "ffn_width_multiple": self.multiple,
        }
