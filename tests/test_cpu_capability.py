"""`make test-kernels` skips a kernel set the CPU lacks instead of dying on SIGILL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cpu_capability import missing

EPYC_NO_AVX512 = "processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n"
# vectorised kernels (a plain sum of ones runs even under a set the CPU lacks; softmax dies)
PROBE = "import torch; print(round(float(torch.randn(64, 64).softmax(-1).sum())))"
WITH_AVX512 = EPYC_NO_AVX512.replace("bmi2", "bmi2 avx512f avx512dq avx512bw avx512vl")


def test_a_set_needs_all_its_flags() -> None:
    assert missing("default", "") == []
    assert missing("avx2", EPYC_NO_AVX512) == []
    assert missing("avx512", EPYC_NO_AVX512) == ["avx512f", "avx512bw", "avx512vl", "avx512dq"]
    assert missing("avx512", WITH_AVX512) == []
    assert missing("avx2", "flags : sse2 avx\n") == ["avx2", "fma"]


def test_an_unknown_set_is_refused_by_name() -> None:
    with pytest.raises(SystemExit, match=r"unknown kernel set 'avx10'.*default, avx2, avx512"):
        missing("avx10", EPYC_NO_AVX512)


def test_this_machine_can_run_what_it_says_it_can() -> None:
    script = Path(__file__).parent / "support" / "cpu_capability.py"
    for name in ("default", "avx2", "avx512"):
        said = subprocess.run([sys.executable, str(script), name], capture_output=True)
        if said.returncode == 0:  # then torch must really run that kernel set here
            ran = subprocess.run(
                [sys.executable, "-c", PROBE],
                env={"ATEN_CPU_CAPABILITY": name, "PATH": "/usr/bin:/bin"},
                capture_output=True, text=True,
            )  # fmt: skip
            assert ran.returncode == 0 and ran.stdout.strip() == "64", (name, ran.stderr)
        else:
            assert b"this CPU lacks" in said.stderr
