"""``python -m pruneguard.demo`` (``make demo``): the whole pruneguard loop on one machine.

``--text`` (``make demo-text``) runs the same story on texts: the built-in MiniLM topic
classifier (recipe ``minilm-topics``), served ``{"texts": [...]}``, with text shifts (typos,
dropped words, truncation, small talk in front) in place of pixel shifts.

1. train the digits CNN and prune it (the built-in ``digits-cnn`` recipe) into HOME/artifacts;
2. register dense and pruned: dense served first, then the pruned model is promoted to
   champion with the dense one as shadow and baseline;
3. serve it (``pruneguard serve``, its own process) and start the agent (``pruneguard agent
   run``, its own process);
4. replay held-out digits with their labels (``/predict`` then ``/feedback``): first as they
   are, then shifted — with a shift chosen by measuring both ONNX models offline, the mildest
   one under which the pruned model is clearly behind the dense one;
5. watch, without touching anything, until the agent rolls the champion back and the service
   answers with the dense version; print the timeline and ``pruneguard models history``;
6. leave HOME/summary.html (pruning report with plots, shift measurements, the agent's
   Evidently report, the timeline) and stop both processes.

The demo never rolls back itself. It exits non-zero, saying what was missing, when the agent
did not roll back within the bounded wait. Everything runs on embedded defaults: SQLite and
the BentoML store under HOME (default ``./.pruneguard/demo``, wiped at start).
"""

from pruneguard.demo.config import DemoConfig, DemoError, Timeline, prepare_home
from pruneguard.demo.shifts import (
    SHIFTS,
    TEXT_SHIFTS,
    Detectable,
    Disagreeing,
    Scorer,
    Shift,
    ShiftChoice,
    ShiftResult,
    choose_shift,
    measure_shifts,
)
from pruneguard.demo.story import main
from pruneguard.demo.workload import WORKLOADS, Workload

__all__ = [
    "SHIFTS",
    "TEXT_SHIFTS",
    "WORKLOADS",
    "DemoConfig",
    "DemoError",
    "Detectable",
    "Disagreeing",
    "Scorer",
    "Shift",
    "ShiftChoice",
    "ShiftResult",
    "Timeline",
    "Workload",
    "choose_shift",
    "main",
    "measure_shifts",
    "prepare_home",
]
