"""Recipes small enough for a test: a width-8 digits CNN that trains and prunes in seconds."""

from __future__ import annotations

DIGITS_TINY = """
name: digits-tiny
model: {builtin: digits-cnn, options: {width: 8}}
data: {builtin: digits}
train: {epochs: 3, lr: 0.01}
method: channel
criterion: taylor
target: {macs_reduction: 0.5}
schedule: {kind: iterative, steps: 2}
finetune: {epochs: 1, lr: 0.005, distill: true, recovery_epochs: 1}
accept: {max_accuracy_drop: 0.5, min_speedup: 0.1}
export: {batch_sizes: [1, 4], latency_blocks: 2, latency_runs: 3, ort_threads: 2}
"""
# (a width-8 CNN timed on 6 runs: its speed-up is noise, so the budget is loose; the gate has
# its own tests in test_gate.py)
