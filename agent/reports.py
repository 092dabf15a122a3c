"""Saved reports: ``$PRUNEGUARD_HOME/reports/<model>/<timestamp>/report.{html,json}``.

A report directory is written under a hidden temporary name and renamed into place, so a
reader (the agent's HTTP server, a person) never sees half a report. Timestamps sort as
text; the newest ``keep`` reports per model are kept.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    from pruneguard.agent.analysis import Analysis, Reference, Window
    from pruneguard.agent.policy import Decision

__all__ = [
    "HTML_NAME",
    "JSON_NAME",
    "latest_report",
    "model_dir",
    "report_dir",
    "save_report",
    "write_report",
]

HTML_NAME = "report.html"
JSON_NAME = "report.json"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_STAMP = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")
STALE_TMP_S = 3600.0  # a temporary report dir this old was left by a process that exited


def model_dir(home: Path, model: str) -> Path:
    if not _MODEL_NAME.match(model) or ".." in model:
        raise ConfigError(
            f"model name {model!r} cannot name a report directory; use letters, digits, "
            "'.', '_' or '-' (at most 63 characters)"
        )
    return Path(home) / "reports" / model


def _stamp(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def report_dir(home: Path, model: str, now: float) -> Path:
    """Where the report of the tick at ``now`` is (or will be, once written) saved."""
    return model_dir(home, model) / _stamp(now)


def save_report(
    home: Path,
    model: str,
    data: dict[str, Any],
    write_html: Callable[[Path], None],
    *,
    now: float,
    keep: int = 50,
) -> Path:
    """Write ``report.json`` (``data``) and the HTML files (``write_html(dir)`` must write at
    least ``report.html`` into ``dir``) atomically; return the report directory."""
    final = report_dir(home, model, now)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    try:
        write_html(tmp)
        if not (tmp / HTML_NAME).is_file():
            raise ConfigError(f"the report writer wrote no {HTML_NAME}; it must write one")
        (tmp / JSON_NAME).write_text(json.dumps(data, indent=2, default=_jsonable))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(parent, keep)
    return final


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _reports(parent: Path) -> list[Path]:
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir() and _STAMP.match(p.name))


def _prune(parent: Path, keep: int) -> None:
    for old in _reports(parent)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    cutoff = time.time() - STALE_TMP_S
    for tmp in parent.glob(".tmp-*"):
        if tmp.is_dir() and tmp.stat().st_mtime < cutoff:
            shutil.rmtree(tmp, ignore_errors=True)


def latest_report(home: Path, model: str) -> Path | None:
    """The newest complete report directory of ``model``, or None."""
    found = _reports(model_dir(home, model))
    return found[-1] if found else None


def write_report(
    home: Path,
    result: Analysis,
    window: Window,
    reference: Reference | None,
    decision: Decision,
    *,
    now: float,
    rollback: dict[str, Any] | None = None,
    keep: int = 50,
) -> Path:
    """Run Evidently (drift; quality per variant) on a tick's window and save the report.

    ``report.html`` is the ``DataDriftPreset`` report (a short summary page when the window
    was too small for drift); ``quality-<variant>.html`` the ``ClassificationPreset`` ones.
    """
    snapshots = _snapshots(result, window, reference)
    data = {
        "model": result.model,
        "ts": now,
        "decision": decision.to_dict(),
        "rollback": rollback,
        "analysis": result.to_dict(),
        "evidently": {name: snap.dict() for name, snap in snapshots.items()},
    }

    def write(tmp: Path) -> None:
        for name, snap in snapshots.items():
            snap.save_html(str(tmp / name))
        if HTML_NAME not in snapshots:
            (tmp / HTML_NAME).write_text(_summary_html(data))

    return save_report(home, result.model, data, write, now=now, keep=keep)


def _snapshots(result: Analysis, window: Window, reference: Reference | None) -> dict[str, Any]:
    import pandas as pd

    from pruneguard.agent.drift import PREDICTION_COLUMN, evidently_drift_report
    from pruneguard.agent.quality import evidently_quality_report

    snapshots: dict[str, Any] = {}
    if reference is not None and len(window.features) and reference.names == window.names:
        current = pd.DataFrame(window.features, columns=list(window.names))
        ref = pd.DataFrame(reference.features, columns=list(reference.names))
        if reference.predictions is not None:
            current[PREDICTION_COLUMN] = window.predictions
            ref[PREDICTION_COLUMN] = reference.predictions
        alpha = result.drift.alpha if result.drift else 0.05
        snapshots[HTML_NAME] = evidently_drift_report(ref, current, window.names, alpha=alpha)
    for variant, (predictions, labels) in window.labelled.items():
        if len(labels):
            frame = pd.DataFrame({"label": labels, "prediction": predictions})
            snapshots[f"quality-{variant}.html"] = evidently_quality_report(frame)
    return snapshots


def _summary_html(data: dict[str, Any]) -> str:
    body = html.escape(json.dumps(data["analysis"], indent=2, default=_jsonable))
    title = html.escape(f"pruneguard report: {data['model']}")
    return f"<!doctype html><title>{title}</title><h1>{title}</h1><pre>{body}</pre>\n"
