"""int8 from a pruned model, made with ONNX Runtime's own quantization tools.

- ``static`` (CNNs): ``quant_pre_process`` (shape inference and graph clean-up), then
  ``quantize_static`` to QDQ with signed int8 activations and weights, calibrated by min/max
  on batches of the recipe's training data.
- ``dynamic`` (transformers): ONNX Runtime's transformer optimizer first (attention, layer
  norm and GELU fusions, so the int8 graph keeps the fused kernels), then
  ``quantize_dynamic`` (int8 weights; activation ranges computed at run time).

Nothing here writes kernels or quantizes by hand. Whether int8 pays depends on the CPU (VNNI
or not), so :func:`cpu_int8` says what this machine has, and the pipelines measure the
speed-up beside the fp32 parent as served. :class:`OnnxModule` lets the text adapters evaluate
the int8 graph with the same functions they evaluate torch models with.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from pruneguard.pruning.recipe import Quantize

__all__ = ["OnnxModule", "cpu_int8", "onnx_outputs", "parent_parity", "quantize_onnx"]

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot-product instructions (x86)
NO_VNNI_ADVICE = (
    "no VNNI on this CPU: ONNX Runtime advises reduce_range (7-bit weights) for int8 here, "
    "and its int8 kernels gain less; measure before you rely on it"
)


def cpu_int8(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """What this CPU offers int8 (its VNNI flags) and what ONNX Runtime advises for it."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    present = [f for f in VNNI_FLAGS if f in flags]
    model = next((line.partition(":")[2].strip() for line in text.splitlines()
                  if line.startswith("model name")), None)  # fmt: skip
    return {
        "cpu": model,
        "vnni": bool(present),
        "int8_flags": present,
        "reduce_range_advised": not present,
        "advice": None if present else NO_VNNI_ADVICE,
    }


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]) -> None:
        self._feeds = iter([dict(f) for f in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


@contextlib.contextmanager
def _scratch(dst: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=dst.parent) as tmp:
        yield Path(tmp)


def quantize_onnx(
    src: Path,
    dst: Path,
    spec: Quantize,
    *,
    calibration: Iterable[Mapping[str, np.ndarray]] = (),
    cpu: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the int8 version of ``src`` to ``dst``; return how it was made (the manifest's
    ``quantization`` block). ``calibration``: input feeds (static only)."""
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    cpu = dict(cpu or cpu_int8())
    reduce_range = cpu["reduce_range_advised"] if spec.reduce_range is None else spec.reduce_range
    record: dict[str, Any] = {
        **spec.as_dict(),
        "reduce_range": reduce_range,
        "tool": f"onnxruntime.quantization {onnxruntime.__version__}",
        "machine": cpu,
    }
    from pruneguard.pruning.export import exporter_output

    # ONNX Runtime's tools print their own chatter (shape inference, pre-processing advice):
    # held back like the exporter's, shown with --verbose or on failure
    with _scratch(dst) as tmp, exporter_output():
        if spec.mode == "static":
            feeds = list(calibration)
            if not feeds:
                raise ConfigError(
                    "quantize.mode static needs calibration batches and the data gave none; "
                    "check the recipe's training data or use mode: dynamic"
                )
            prepared = _pre_process(src, tmp / "prepared.onnx")
            quantize_static(
                prepared, dst, _Calibration(feeds), quant_format=QuantFormat.QDQ,
                per_channel=spec.per_channel, reduce_range=reduce_range,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            )  # fmt: skip
            record.update(calibration=len(feeds), format="QDQ", activations="int8 (static)")
        else:
            optimized, fused = _optimize_transformer(src, tmp / "optimized.onnx")
            quantize_dynamic(optimized, dst, per_channel=spec.per_channel,
                             reduce_range=reduce_range, weight_type=QuantType.QInt8)  # fmt: skip
            record.update(calibration=0, format="QOperator (dynamic)",
                          activations="int8, ranges at run time", fused_operators=fused)  # fmt: skip
    return record


def _pre_process(src: Path, out: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(out))
    return out


def _optimize_transformer(src: Path, out: Path) -> tuple[Path, dict[str, int]]:
    """ONNX Runtime's BERT fusions (heads and width read from the graph, so a pruned model
    with fewer heads in some layers is optimised as it is)."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0)
    fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    model.save_model_to_file(str(out))
    return out, fused


class OnnxModule:
    """An ONNX graph called like the torch module it was exported from (``model(x)`` or
    ``model(**feeds)`` → a tensor), so the pipelines' evaluation code runs it unchanged."""

    training = False

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from pruneguard.pruning.latency import make_session

        self.session = make_session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *args: torch.Tensor, **feeds: torch.Tensor) -> torch.Tensor:
        import torch

        named = dict(zip(self.input_names, args, strict=False)) | feeds
        arrays = {k: v.numpy() for k, v in named.items() if k in self.input_names}
        return torch.from_numpy(self.session.run(None, arrays)[0])

    def eval(self) -> OnnxModule:
        return self

    def train(self, mode: bool = True) -> OnnxModule:
        return self


def onnx_outputs(
    path: Path, feeds: Mapping[str, np.ndarray], threads: int | None = None, batch: int = 64
) -> np.ndarray:
    """The graph's first output over ``feeds`` (rows first), run ``batch`` rows at a time."""
    from pruneguard.pruning.latency import make_session

    session = make_session(path, threads)
    rows = len(next(iter(feeds.values())))
    parts = [session.run(None, {k: v[i : i + batch] for k, v in feeds.items()})[0]
             for i in range(0, rows, batch)]  # fmt: skip
    return np.concatenate(parts)


def parent_parity(
    manifest: Mapping[str, Any], int8: np.ndarray, fp32: np.ndarray
) -> dict[str, float]:
    """How closely the int8 outputs follow the fp32 parent's on the same held-out rows, in the
    task's own terms (``registry.tasks``): the mean and worst similarity per row, the share
    of rows with the same answer, and the largest raw difference."""
    from pruneguard.registry.tasks import task_for

    output = manifest["io"]["outputs"][0]["name"]
    task = task_for(manifest, output_name=output)
    paired = task.compare(task.decode(int8), task.decode(fp32))
    return {
        "similarity_mean": float(paired.similarity.mean()),
        "similarity_min": float(paired.similarity.min()),
        "agreement": float(paired.agree.mean()),
        "max_abs_diff": float(np.abs(np.asarray(int8) - np.asarray(fp32)).max()),
        "rows": len(int8),
    }
