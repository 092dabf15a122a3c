"""The registry history as the demo shows it, and ``HOME/summary.html``."""

from __future__ import annotations

import base64
import html
import io
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pruneguard.demo.config import DemoConfig, DemoError, Timeline
from pruneguard.demo.processes import pruneguard_argv
from pruneguard.demo.shifts import ShiftChoice, ShiftResult, shift_table

__all__ = [
    "Outcome",
    "history_table",
    "models_cli",
    "pruning_plot",
    "rollback_events",
    "shift_plot",
    "write_summary",
]


# --- 8. history ------------------------------------------------------------------------------


def models_cli(config: DemoConfig, *args: str) -> str:
    argv = [*pruneguard_argv(), "models", *args, "--home", str(config.home)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise DemoError(f"`pruneguard models {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def history_table(events: Sequence[dict[str, Any]]) -> str:
    """One line per event (the evidence is shown for the rollback only)."""
    lines = [f"  {'id':>3}  {'ts':<31}{'actor':<20}{'action':<11}{'alias':<10}change"]
    for e in events:
        change = f"{e.get('from_version') or '-'} -> {e.get('to_version') or '-'}"
        lines.append(
            f"  {e['id']:>3}  {e['ts']:<31}{e['actor']:<20}{e['action']:<11}"
            f"{e.get('alias') or '-':<10}{change}"
        )
    return "\n".join(lines)


def rollback_events(history_json: str) -> list[dict[str, Any]]:
    return [e for e in json.loads(history_json) if e.get("action") == "rollback"]


# --- 9. the HTML summary ---------------------------------------------------------------------


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pruning_plot(pruned: dict[str, Any]) -> str:
    """Dense vs pruned bars: accuracy, parameters, MACs, ONNX size, p50 latency per batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = pruned["metrics"]
    panels = [
        ("accuracy (held out)", m["baseline_accuracy"], m["accuracy"]),
        ("parameters", m["baseline_params"], m["params"]),
        ("MACs per sample", m["baseline_macs"], m["macs"]),
        ("ONNX bytes", m["baseline_onnx_bytes"], m["onnx_bytes"]),
    ]
    for batch in m["latency_ms"]:
        panels.append(
            (f"p50 latency ms, batch {batch}", m["baseline_latency_ms"][batch]["p50"],
             m["latency_ms"][batch]["p50"])
        )  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3))
    for ax, (title, dense, small) in zip(axes, panels, strict=True):
        ax.bar(["dense", "pruned"], [dense, small], color=["#4c72b0", "#dd8452"])
        ax.set_title(title, fontsize=9)
        if title.startswith("accuracy"):
            ax.set_ylim(min(dense, small) - 0.05, 1.0)
    return _png(fig)


def shift_plot(results: Sequence[ShiftResult], chosen: ShiftResult) -> str:
    """Accuracy (dense, pruned) and their agreement vs shift strength, a panel per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r.shift.kind for r in results))
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 3), squeeze=False)
    axes = axes[0]
    for ax, kind in zip(axes, kinds, strict=True):
        rows = [r for r in results if r.shift.kind == kind]
        xs = [r.shift.strength for r in rows]
        ax.plot(xs, [r.dense for r in rows], "o-", label="dense")
        ax.plot(xs, [r.pruned for r in rows], "s-", label="pruned")
        ax.plot(xs, [r.agreement for r in rows], "^--", color="grey", label="agreement")
        if chosen.shift.kind == kind:
            ax.axvline(chosen.shift.strength, color="red", linestyle=":", label="replayed")
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("milder → stronger", fontsize=8)
        ax.set_ylim(0, 1.02)
        if xs[0] > xs[-1]:  # contrast: a smaller factor is a stronger shift
            ax.invert_xaxis()
    axes[0].set_ylabel("accuracy / agreement")
    axes[0].legend(fontsize=8)
    return _png(fig)


@dataclass
class Outcome:
    """What the run found, for the summary and the exit code."""

    closed: bool = False
    missing: list[str] = field(default_factory=list)
    rollback: dict[str, Any] | None = None
    report: Path | None = None
    urls: dict[str, str] = field(default_factory=dict)


def write_summary(
    config: DemoConfig,
    pruned: dict[str, Any],
    shifts: ShiftChoice,
    timeline: Timeline,
    outcome: Outcome,
) -> Path:
    results, chosen, separated = shifts.results, shifts.chosen, shifts.separated
    esc = html.escape
    verdict = (
        "The loop closed: the agent rolled the pruned champion back."
        if outcome.closed
        else "The loop did NOT close: " + "; ".join(outcome.missing)
    )
    report = _report_links(config.home, outcome.report)
    rule = esc(shifts.rule.describe())
    separation = (
        f"Chosen by measurement: <b>{esc(str(chosen.shift))}</b>, the mildest shift at which {rule}."
        if separated
        else f"No shift separated the models ({rule}); the strongest separation found was "
        f"replayed: <b>{esc(str(chosen.shift))}</b>."
    )
    separation += (
        " The shifted traffic was sent with labels: the paired accuracy test decides."
        if shifts.labelled
        else " The shifted traffic was sent <b>without labels</b> (as when they come late or "
        "never): the label-free agreement test decides."
    )
    parts = [
        "<!doctype html><meta charset='utf-8'><title>pruneguard demo</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "pre{background:#f4f4f4;padding:1em;overflow-x:auto}</style>",
        f"<h1>pruneguard demo — {esc(pruned['name'])}</h1><p><b>{esc(verdict)}</b></p>",
        "<h2>Pruning report</h2>",
        f"<pre>{esc(_pruning_text(pruned))}</pre>",
        f'<img alt="dense vs pruned" src="data:image/png;base64,{pruning_plot(pruned)}">',
        "<h2>Accuracy and agreement under input shift (offline, both ONNX models)</h2>",
        f"<p>{separation}</p>",
        f'<img alt="accuracy vs shift" src="data:image/png;base64,{shift_plot(results, chosen)}">',
        f"<pre>{esc(shift_table(results, chosen, shifts.rule))}</pre>",
        "<h2>Agent: Evidently report</h2>",
        report,
        "<h2>Rollback timeline</h2>",
        f"<pre>{esc(chr(10).join(timeline.lines()))}</pre>",
        "<h2>Rollback event (registry history)</h2>",
        f"<pre>{esc(json.dumps(outcome.rollback, indent=2, default=str))}</pre>",
        "<h2>Endpoints</h2><ul>",
        *(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in outcome.urls.items()),
        "</ul>",
    ]
    path = config.home / "summary.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _report_links(home: Path, report: Path | None) -> str:
    """Relative links to the agent's report pages (they stay next to the summary)."""
    if report is None:
        return "<p>No Evidently report was written by the agent.</p>"
    pages = sorted(report.glob("*.html"), key=lambda p: p.name != "report.html")
    links = "".join(
        f'<li><a href="{html.escape(p.relative_to(home).as_posix())}">{html.escape(p.name)}</a></li>'
        for p in pages
    )
    return (
        "<p>Written by the agent when it rolled back: drift of the logged input features against "
        f"the champion's reference, and classification quality of champion and shadow.</p><ul>{links}</ul>"
    )


def _pruning_text(pruned: dict[str, Any]) -> str:
    m = pruned["metrics"]
    lines = [
        f"method {pruned['pruning']['method']}, criterion {pruned['pruning']['criterion']}, "
        f"schedule {pruned['pruning']['schedule']}",
        f"accuracy  dense {m['baseline_accuracy']:.4f}  pruned {m['accuracy']:.4f}",
        f"params    dense {m['baseline_params']:,}  pruned {m['params']:,}",
        f"MACs      dense {m['baseline_macs']:,}  pruned {m['macs']:,} "
        f"({m['macs_reduction']:.1%} removed)",
        f"ONNX size dense {m['baseline_onnx_bytes']:,} B  pruned {m['onnx_bytes']:,} B",
        *(f"speed-up at batch {b}: {s:.2f}x" for b, s in m["speedup"].items()),
        f"agreement with dense {m['agreement_with_baseline']:.2%}",
        *(f"note: {n}" for n in pruned.get("notes", [])),
    ]
    return "\n".join(lines)
