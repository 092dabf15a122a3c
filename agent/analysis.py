"""One window of the prediction log, analysed: pairs, accuracy, agreement, drift, checks.

:func:`analyse` is the part of a tick between reading (the window from the prediction log,
the champion's manifest and ``reference.parquet``) and deciding (:mod:`agent.policy`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.agent.checks import (
    CheckConfig,
    accuracy_gap_check,
    agreement_check,
    cosine_check,
    drift_check,
    inconclusive,
    token_checks,
)
from pruneguard.agent.drift import DriftResult, column_drift
from pruneguard.agent.features import extract, input_shape, stack_rows
from pruneguard.agent.policy import CheckResult
from pruneguard.agent.quality import accuracy
from pruneguard.registry.errors import ConfigError
from pruneguard.registry.tasks import CAUSAL_LM, EMBEDDING, task_for, task_name

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Analysis", "Reference", "Window", "analyse", "load_reference", "unavailable"]

CHECK_NAMES = ("accuracy_gap", "agreement", "drift")
_FEATURE = re.compile(r"^f(\d+)$")


@dataclass(frozen=True)
class Reference:
    """The champion's reference sample, summarised the way windows are."""

    names: tuple[str, ...]
    features: np.ndarray
    predictions: np.ndarray | None


@dataclass(frozen=True)
class Window:
    """What a report needs beyond the numbers: summarised features and labelled rows."""

    names: tuple[str, ...]
    features: np.ndarray
    predictions: np.ndarray
    labelled: Mapping[str, tuple[np.ndarray, np.ndarray]]  # variant -> (predictions, labels)


@dataclass(frozen=True)
class Analysis:
    model: str
    champion: str | None
    shadow: str | None
    checks: tuple[CheckResult, ...]
    samples: Mapping[str, int] = field(default_factory=dict)
    accuracy: Mapping[str, float | None] = field(default_factory=dict)
    accuracy_gap: float | None = None
    agreement: float | None = None
    mean_cosine: float | None = None  # embeddings: champion vs shadow in the window
    logprob_gap: float | None = None  # decoders: the shadow's mean gap on champion tokens
    drift: DriftResult | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["checks"] = [c.to_dict() for c in self.checks]
        out["drift"] = self.drift.to_dict() if self.drift else None
        out["samples"], out["accuracy"] = dict(self.samples), dict(self.accuracy)
        return out


def unavailable(model: str, reason: str, champion: str | None = None) -> Analysis:
    """Every check inconclusive: the data could not be read (no rollback on an outage)."""
    names = (*CHECK_NAMES, "cosine", "logprob_gap", "token_agreement")
    checks = tuple(inconclusive(name, 0, reason) for name in names)
    return Analysis(model, champion, None, checks, error=reason)


def load_reference(path: Path, shape: tuple[int, ...] | None) -> Reference:
    """Read ``reference.parquet`` (columns f0..fN, prediction) and summarise its features."""
    import pandas as pd

    frame = pd.read_parquet(path)
    columns = sorted((c for c in frame.columns if _FEATURE.match(str(c))), key=lambda c: int(c[1:]))
    names, features = extract(frame[columns].to_numpy(dtype=np.float32), shape)
    predictions = frame["prediction"].to_numpy() if "prediction" in frame.columns else None
    return Reference(tuple(names), features, predictions)


def _version_of(tag: str | None) -> str | None:
    return tag.split(":", 1)[1] if tag and ":" in tag else tag


def _rows(frame: pd.DataFrame, variant: str, tag: str | None) -> pd.DataFrame:
    version = _version_of(tag)
    keep = (frame["variant"] == variant) & frame["version"].isin([version, tag])
    return frame.loc[keep, ["request_id", "prediction", "probabilities", "features", "label"]]


def analyse(
    frame: pd.DataFrame,
    *,
    model: str,
    champion: str,
    shadow: str | None,
    manifest: Mapping[str, Any],
    reference: Reference,
    config: CheckConfig,
) -> tuple[Analysis, Window]:
    """Checks on the rows ``champion`` / ``shadow`` answered in ``frame`` (read_window), as
    the champion's task says (:mod:`registry.tasks`)."""
    champ = _rows(frame, "champion", champion)
    shad = _rows(frame, "shadow", shadow) if shadow else champ.iloc[0:0]
    if task_name(manifest) == EMBEDDING:
        return _analyse_embedding(champ, shad, model, champion, shadow, manifest, reference, config)
    if task_name(manifest) == CAUSAL_LM:
        return _analyse_decoder(champ, shad, model, champion, shadow, manifest, reference, config)
    pairs = champ.merge(
        shad[["request_id", "prediction"]], on="request_id", suffixes=("", "_shadow")
    )
    labelled = pairs[pairs["label"].notna()]
    c_pred, s_pred = pairs["prediction"].to_numpy(), pairs["prediction_shadow"].to_numpy()
    l_champ, l_shadow = labelled["prediction"].to_numpy(), labelled["prediction_shadow"].to_numpy()
    labels = labelled["label"].to_numpy().astype(int)
    metrics = manifest.get("metrics", {})
    expected_gap = float(metrics.get("baseline_accuracy", 0.0)) - float(
        metrics.get("accuracy", 0.0)
    )
    agreement_expected = metrics.get("agreement_with_baseline")
    drift, window, drift_result = _drift(champ, manifest, reference, config)
    checks = (
        accuracy_gap_check(l_champ, l_shadow, labels, expected_gap=expected_gap, config=config),
        agreement_check(
            c_pred,
            s_pred,
            expected=None if agreement_expected is None else float(agreement_expected),
            config=config,
        ),
        drift_result,
    )
    champ_labelled, shad_labelled = champ[champ["label"].notna()], shad[shad["label"].notna()]
    window = dataclasses.replace(
        window,
        labelled={
            "champion": (
                champ_labelled["prediction"].to_numpy(),
                champ_labelled["label"].to_numpy(),
            ),
            "shadow": (shad_labelled["prediction"].to_numpy(), shad_labelled["label"].to_numpy()),
        },
    )
    analysis = Analysis(
        model,
        champion,
        shadow,
        checks,
        samples={"rows": len(champ), "pairs": len(pairs), "labelled": len(labelled)},
        accuracy={v: accuracy(*window.labelled[v]) for v in ("champion", "shadow")},
        accuracy_gap=checks[0].statistic,
        agreement=float(np.mean(c_pred == s_pred)) if len(pairs) else None,
        drift=drift,
    )
    return analysis, window


def _analyse_embedding(
    champ: pd.DataFrame, shad: pd.DataFrame, model: str, champion: str, shadow: str | None,
    manifest: Mapping[str, Any], reference: Reference, config: CheckConfig,
) -> tuple[Analysis, Window]:  # fmt: skip
    """Embeddings: the per-request cosine of champion and shadow (compared as the task
    compares them) against the offline mean cosine; drift on the champion's embeddings."""
    pairs = champ.merge(
        shad[["request_id", "probabilities"]], on="request_id", suffixes=("", "_shadow")
    )
    cosines = np.zeros(0)
    if len(pairs):
        task = task_for(manifest)
        paired = task.compare(
            task.decode(stack_rows(pairs["probabilities"].tolist())),
            task.decode(stack_rows(pairs["probabilities_shadow"].tolist())),
        )
        cosines = paired.similarity
    expected = manifest.get("metrics", {}).get("mean_cosine_to_dense")
    drift, window, drift_result = _drift(champ, manifest, reference, config, column="probabilities")
    checks = (
        cosine_check(cosines, expected=None if expected is None else float(expected), config=config),
        drift_result,
    )  # fmt: skip
    analysis = Analysis(
        model, champion, shadow, checks,
        samples={"rows": len(champ), "pairs": len(pairs), "labelled": 0},
        mean_cosine=float(cosines.mean()) if cosines.size else None,
        drift=drift,
    )  # fmt: skip
    return analysis, window


def _analyse_decoder(
    champ: pd.DataFrame, shad: pd.DataFrame, model: str, champion: str, shadow: str | None,
    manifest: Mapping[str, Any], reference: Reference, config: CheckConfig,
) -> tuple[Analysis, Window]:  # fmt: skip
    """Decoders: per request, the dense shadow's rating of the champion's tokens (its row is
    ``[agreement, gap, tokens]``, :class:`registry.tasks.CausalLM`) against the offline
    values, averaged per request as here; drift on the prompts' lengths."""
    pairs = champ.merge(
        shad[["request_id", "probabilities"]], on="request_id", suffixes=("", "_shadow")
    )
    scores = stack_rows(pairs["probabilities_shadow"].tolist(), width=3)
    if len(scores):
        scores = scores[np.isfinite(scores).all(axis=1)]
    metrics = manifest.get("metrics", {})

    def offline(key: str) -> float | None:
        value = metrics.get(f"{key}_per_request", metrics.get(key))
        return None if value is None else float(value)

    agreement, gap = token_checks(
        scores[:, 0], scores[:, 1], expected_agreement=offline("shadow_token_agreement"),
        expected_gap=offline("shadow_logprob_gap"), config=config,
    )  # fmt: skip
    drift, window, drift_result = _drift(champ, manifest, reference, config)
    analysis = Analysis(
        model, champion, shadow, (gap, agreement, drift_result),
        samples={"rows": len(champ), "pairs": len(scores), "labelled": 0},
        agreement=float(scores[:, 0].mean()) if len(scores) else None,
        logprob_gap=float(scores[:, 1].mean()) if len(scores) else None,
        drift=drift,
    )  # fmt: skip
    return analysis, window


def _drift(
    champ: pd.DataFrame,
    manifest: Mapping[str, Any],
    reference: Reference,
    config: CheckConfig,
    *,
    column: str = "features",
) -> tuple[DriftResult | None, Window, CheckResult]:
    """Drift of ``column`` (the inputs; an embedding model's outputs) against the reference;
    the predicted class's drift too, where the task has classes."""
    predictions = champ["prediction"].to_numpy()
    empty = Window(reference.names, np.zeros((0, len(reference.names))), predictions, {})
    if len(champ) < config.min_drift_rows:
        return None, empty, drift_check(0.0, False, len(champ), min_p=None, config=config)
    try:
        matrix = stack_rows(champ[column].tolist())
        shape = input_shape(dict(manifest)) if column == "features" else None
        names, features = extract(matrix, shape)
    except ConfigError as exc:
        return None, empty, inconclusive("drift", len(champ), str(exc))
    if tuple(names) != reference.names:
        reason = f"window columns {len(names)} differ from the reference's {len(reference.names)}"
        return None, empty, inconclusive("drift", len(champ), reason)
    result = column_drift(
        reference.features,
        features,
        names,
        reference_predictions=reference.predictions if column == "features" else None,
        current_predictions=predictions if column == "features" else None,
        alpha=config.drift_alpha,
    )
    check = drift_check(
        result.share, result.detected, len(champ), min_p=result.min_p_value, config=config
    )
    return result, Window(tuple(names), features, predictions, {}), check


def finite_or_nan(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan
