"""Exit 0 when this CPU can run torch's kernel set NAME (``default``, ``avx2``, ``avx512``).

torch takes ``ATEN_CPU_CAPABILITY`` on trust: forced to a set the CPU lacks, it stops on an
illegal instruction (seen with ``avx512`` on an AMD EPYC without AVX-512). ``make
test-kernels`` asks here first and skips, loudly, a set this machine cannot run.

Usage: python tests/support/cpu_capability.py NAME
"""

from __future__ import annotations

import sys
from pathlib import Path

# the instruction sets ATen's kernels of each capability use (aten/src/ATen/cpu/vec)
NEEDS = {
    "default": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"),
}


def missing(name: str, cpuinfo: str) -> list[str]:
    """The CPU flags kernel set ``name`` needs that ``cpuinfo`` (/proc/cpuinfo) lacks."""
    if name not in NEEDS:
        raise SystemExit(f"unknown kernel set {name!r}; allowed: {', '.join(NEEDS)}")
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split()}
    return [f for f in NEEDS[name] if f not in flags]


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    info = Path("/proc/cpuinfo")
    if not info.exists():  # not Linux: nothing to read, let torch decide
        return 0
    lacking = missing(name, info.read_text())
    if lacking:
        print(f"this CPU lacks {', '.join(lacking)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
