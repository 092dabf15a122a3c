"""ONNX export (dynamo exporter, one file, dynamic batch) and torch-vs-ONNX Runtime parity."""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from pruneguard.pruning.progress import VERBOSE_ENV

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["export_onnx", "exporter_output", "parity"]


@contextlib.contextmanager
def exporter_output(verbose: bool | None = None) -> Iterator[None]:
    """Hold back what the exporter prints (its progress lines, its own warnings such as
    "torchvision is not installed"), Python and C level, stdout and stderr alike.

    It reaches stderr only when ``verbose`` (default: ``$PRUNEGUARD_VERBOSE`` is 1) or when
    the export fails; stdout stays clean for ``--json`` either way.
    """
    if verbose is None:
        verbose = os.environ.get(VERBOSE_ENV) == "1"
    if verbose:
        with _fd_redirect(1, 2), contextlib.redirect_stdout(sys.stderr):
            yield
        return
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as held:
        try:
            with (
                _fd_redirect(1, held.fileno()),
                _fd_redirect(2, held.fileno()),
                contextlib.redirect_stdout(held),
                contextlib.redirect_stderr(held),
            ):
                yield
        except BaseException:
            held.seek(0)
            sys.stderr.write(held.read())
            raise


@contextlib.contextmanager
def _fd_redirect(fd: int, target: int) -> Iterator[None]:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(fd)
    try:
        os.dup2(target, fd)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved, fd)
        os.close(saved)


def _forward_arg(model: nn.Module) -> str:
    params = list(inspect.signature(model.forward).parameters)
    if not params:
        raise TypeError(f"{type(model).__name__}.forward takes no input to export")
    return params[0]


def _exportable(model: nn.Module) -> nn.Module:
    """An eval-mode model without pruning masks (a copy if masks must be baked in)."""
    from torch.nn.utils import prune

    from pruneguard.pruning.methods.masks import remove_masks

    masked = [m for m in model.modules() if prune.is_pruned(m) and hasattr(m, "weight_orig")]
    if masked:
        # prune's computed ``weight`` is a non-leaf tensor that deepcopy refuses: copy a stand-in.
        weights = [cast("torch.Tensor", m.weight) for m in masked]
        memo = {id(w): w.detach().clone() for w in weights}
        model = copy.deepcopy(model, memo)
        remove_masks(model)
    return model.eval()


def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor,
    path: str | Path,
    *,
    opset: int = 18,
    input_name: str = "input",
    output_name: str = "logits",
    verbose: bool | None = None,
) -> None:
    """Write ``model`` as one ONNX file with a symbolic batch axis, checked by ``onnx.checker``.

    The example batch is widened to 2 when it has one row (a batch of 1 would be
    specialised as a constant by torch.export). Masks from ``unstructured`` are baked in on
    a copy. The exporter's own output is shown only when ``verbose`` or when it fails.
    """
    import onnx
    import torch

    was_training = model.training
    net = _exportable(model)
    x = (
        example_inputs
        if example_inputs.shape[0] > 1
        else example_inputs.repeat(2, *[1] * (example_inputs.dim() - 1))
    )
    dynamic = {_forward_arg(net): {0: torch.export.Dim("batch")}}
    try:
        with exporter_output(verbose), torch.no_grad():
            torch.onnx.export(
                net,
                (x,),
                str(path),
                dynamo=True,
                external_data=False,
                dynamic_shapes=dynamic,
                opset_version=opset,
                input_names=[input_name],
                output_names=[output_name],
            )
    finally:
        model.train(was_training)
    onnx.checker.check_model(str(path), full_check=True)


def parity(
    model: nn.Module, onnx_path: str | Path, inputs: torch.Tensor | Mapping[str, np.ndarray]
) -> float:
    """Max |torch − ONNX Runtime| over the first output, for one input tensor or for named
    feeds (in the graph's input order, passed to the model positionally)."""
    import torch

    from pruneguard.pruning.latency import make_session

    session = make_session(onnx_path)
    if isinstance(inputs, torch.Tensor):
        feeds = {session.get_inputs()[0].name: inputs.numpy().astype(np.float32)}
    else:
        feeds = dict(inputs)
    (onnx_out, *_) = session.run(None, feeds)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch_out = model(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    finally:
        model.train(was_training)
    return float(np.max(np.abs(torch_out - onnx_out)))
