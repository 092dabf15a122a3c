"""``python -m pruneguard.demo --llm`` (``make demo-llm``): the loop on a decoder LLM.

1. prune SmolLM2-135M-Instruct with the built-in ``smollm2-heads`` recipe (one of its three
   KV groups per layer: the KV cache shrinks by a third), ``--quick`` on less data;
2. register dense and pruned; the pruned model becomes champion, the dense one its shadow;
3. measure offline, with both transformers folders, how the dense model rates the pruned
   model's answers on several kinds of prompt (arithmetic, spelling, code, ...), and choose
   the kind whose log-prob gap the agent's one-sided test will find above the offline value
   plus its margin, in a window of the traffic the demo sends;
4. serve (``/generate``) and start the agent; send the held-out chat prompts (the ones the
   offline value was measured on) until the agent has passed the champion, then prompts of
   the chosen kind until the service answers with the dense version;
5. print the timeline and the registry history (the rollback's actor is the agent) and
   write ``HOME/summary.html``.

No labels are involved: the agent decides from the shadow's teacher-forced rating of every
generated answer (``logprob_gap``, then ``token_agreement``).
"""

from __future__ import annotations

import functools
import html
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.demo.config import SEED, WARM_PASSES, DemoConfig, DemoError, Timeline, section

if TYPE_CHECKING:
    import httpx

    from pruneguard.demo.story import Story
    from pruneguard.demo.watch import Watcher
    from pruneguard.pruning.recipe import Recipe

__all__ = ["KINDS", "KindResult", "choose_kind", "measure_kinds", "prompts", "run_llm_demo"]

_WORDS = ("garden", "window", "pencil", "river", "planet", "ticket", "silver", "orange",
          "basket", "forest", "candle", "rocket", "butter", "island", "marble", "thunder")  # fmt: skip
_TASKS = ("reverses a string", "counts the vowels in a word", "returns the largest of three "
          "numbers", "checks whether a number is prime", "sums a list of numbers",
          "removes duplicates from a list", "converts Celsius to Fahrenheit",
          "returns the factorial of n")  # fmt: skip
_PHRASES = ("good morning", "thank you very much", "where is the station", "I like apples",
            "the weather is nice", "see you tomorrow", "how much does it cost")  # fmt: skip
_THINGS = ("fruits", "colours", "animals that live in the sea", "musical instruments",
           "countries in Europe", "kinds of tree", "planets", "vegetables")  # fmt: skip


@functools.cache
def _passages() -> tuple[str, ...]:
    """Held-out sentences (the paraphrase set: recovery never saw them) to build long prompts."""
    from pruneguard.pruning.text import load_paraphrases

    return tuple(s for pair in load_paraphrases() for s in pair)


# kind -> a prompt drawn from it
KINDS: dict[str, Callable[[random.Random], str]] = {
    "arithmetic": lambda r: f"What is {r.randint(12, 99)} times {r.randint(12, 99)}?",
    "spelling": lambda r: f"Spell the word '{r.choice(_WORDS)}' backwards, letter by letter.",
    "code": lambda r: f"Write a Python function that {r.choice(_TASKS)}.",
    "translation": lambda r: (
        f"Translate '{r.choice(_PHRASES)}' into {r.choice(['French', 'German', 'Spanish'])}."
    ),
    "lists": lambda r: f"List {r.choice(['three', 'four', 'five'])} {r.choice(_THINGS)}.",
    # long prompts (six sentences, ~130 tokens with the template): the cut attention reads them
    "summary": lambda r: (
        "Summarize this text in one sentence: " + " ".join(r.sample(_passages(), 6))
    ),
    "capitals": lambda r: f'Rewrite this sentence in capital letters: "{r.choice(_passages())}"',
}


def prompts(kind: str, count: int, seed: int) -> list[str]:
    rng = random.Random(f"{kind}-{seed}")
    return [KINDS[kind](rng) for _ in range(count)]


@dataclass(frozen=True)
class KindResult:
    """How the dense model rates the pruned model's answers to prompts of one kind."""

    kind: str
    requests: int
    agreement: float  # mean over requests of the share of tokens the dense model ranks first
    gap: float  # mean over requests of the mean log-prob gap
    gap_sd: float

    def z(self, expected_gap: float, margin: float, window: int) -> float:
        """How far a window of ``window`` such requests sits above the failing bound, in
        standard errors (the agent's one-sided test fails it beyond about 1.6-2.3)."""
        return (self.gap - expected_gap - margin) / max(self.gap_sd / np.sqrt(window), 1e-9)


def measure_kinds(
    artifacts: Path, *, count: int, max_new_tokens: int, seed: int = SEED
) -> list[KindResult]:
    """Each kind's prompts answered by the pruned ``hf/`` folder and rated by the dense one,
    as the service and its shadow will (greedy; teacher forcing)."""
    from pruneguard.pruning.models.smollm2 import load_causal_lm
    from pruneguard.pruning.tasks import causal_lm as lm

    pruned, tokenizer = load_causal_lm(artifacts / "pruned" / "hf")
    dense, _ = load_causal_lm(artifacts / "dense" / "hf")
    results = []
    for kind in KINDS:
        answers = lm.answer(
            pruned, tokenizer, prompts(kind, count, seed), max_new_tokens=max_new_tokens
        )
        rated = [lm.teacher_forced(dense, [a]) for a in answers if a.tokens]
        gaps = np.array([r.mean_gap for r in rated])
        results.append(KindResult(kind, len(rated), float(np.mean([r.agreement for r in rated])),
                                  float(gaps.mean()), float(gaps.std(ddof=1))))  # fmt: skip
    return results


def choose_kind(
    results: list[KindResult], expected_gap: float, margin: float, window: int
) -> tuple[KindResult, bool]:
    """The kind the agent's gap test separates most clearly, and whether it does (z > 3)."""
    best = max(results, key=lambda r: r.z(expected_gap, margin, window))
    return best, best.z(expected_gap, margin, window) > 3.0


# --- the story -------------------------------------------------------------------------------


def _recipe(quick: bool) -> Recipe:
    """The built-in recipe; ``--quick``: fewer prompts and one recovery epoch (the demo needs a
    pruned champion that passes on the held-out prompts, not the best one)."""
    from pruneguard.pruning.recipe import load_recipe

    recipe = load_recipe("smollm2-heads")
    if not quick:
        return recipe
    options = {"train_prompts": 24, "train_new_tokens": 32, "plain": 24, "eval_prompts": 16,
               "eval_sentences": 64, "max_new_tokens": 24}  # fmt: skip
    from pruneguard.pruning.recipe import Accept

    return replace(
        recipe,
        data=replace(recipe.data, options=options),
        finetune=replace(recipe.finetune, epochs=1),
        # one recovery epoch on 24 prompts measured a 2.6-point next-token accuracy drop; the
        # TTFT gain of a third of the KV heads is small (1.03-1.10x measured here), so a quick
        # run tolerates timing noise below 1.0 (timed as the full recipe: 4 blocks of 4)
        accept=replace(recipe.accept or Accept(), max_accuracy_drop=0.05, min_speedup=0.95),
    )


def _traffic(
    client: httpx.Client, texts: Iterator[str], max_new_tokens: int, watcher: Watcher,
    done: Callable[[str], bool], max_s: float, versions: dict[str, int],
) -> bool:  # fmt: skip
    """One ``/generate`` at a time until ``done(version)`` or ``max_s``."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        reply = client.post(
            "/generate", json={"prompt": next(texts), "max_new_tokens": max_new_tokens}
        )
        if reply.status_code != 200:
            raise DemoError(f"/generate answered {reply.status_code}: {reply.text[:300]}")
        version = str(reply.json()["model_version"])
        versions[version] = versions.get(version, 0) + 1
        watcher.poll()
        if done(version):
            return True
    return False


def _cycle(items: list[str]) -> Iterator[str]:
    while True:
        yield from items


def _replay(story: Story, watcher: Watcher, url: str, kind: KindResult, recipe: Recipe,
            dense_version: str) -> None:  # fmt: skip
    import httpx

    from pruneguard.pruning.llm import LMOptions
    from pruneguard.pruning.tasks import causal_lm as lm

    opts = LMOptions.from_mapping(recipe.data.options)
    config, timeline = story.config, story.timeline
    held_out = lm.held_out_prompts()[: opts.eval_prompts]
    passes = len(watcher.ticks)

    def warmed(_: str) -> bool:
        seen = [t["message"] for t in watcher.ticks[passes:]]
        return sum(m.startswith("healthy (pass") for m in seen) >= WARM_PASSES

    with httpx.Client(base_url=url, timeout=120) as client:
        timeline.add(f"traffic phase 1: the {len(held_out)} held-out chat prompts, in turn")
        warm: dict[str, int] = {}
        _traffic(client, _cycle(held_out), opts.max_new_tokens, watcher, warmed,
                 config.warm_max_s, warm)  # fmt: skip
        timeline.add(f"phase 1 done: requests per version {warm}")
        timeline.add(
            f"traffic phase 2: {kind.kind} prompts (no labels: the shadow's rating decides)"
        )
        shifted: dict[str, int] = {}
        switched = _traffic(client, iter(prompts(kind.kind, 100_000, SEED + 1)), opts.max_new_tokens,
                            watcher, lambda v: v == dense_version, config.rollback_wait_s, shifted)  # fmt: skip
        timeline.add(f"phase 2 done: requests per version {shifted}")
    if switched:
        watcher.poll(force=True)
        timeline.add(f"service switched to version {dense_version} (seen in /generate answers)")
    story.outcome.closed = switched and watcher.rollback is not None


def run_llm_demo(config: DemoConfig) -> int:
    from pruneguard.agent.checks import CheckConfig
    from pruneguard.demo.config import prepare_home
    from pruneguard.demo.story import (
        Story,
        _check_history,
        _serve_and_watch,
        exit_code,
        register,
    )
    from pruneguard.demo.summary import models_cli
    from pruneguard.pruning.llm import LMOptions
    from pruneguard.pruning.pipeline import run
    from pruneguard.registry import open_registry

    timeline = Timeline()
    story = Story(config, timeline, workload=None)
    prepare_home(config.home)
    timeline.add(f"demo home {config.home} (SQLite registry + BentoML store, wiped)")
    recipe = _recipe(config.quick)
    section(f"1. prune (built-in recipe {recipe.name}{', quick' if config.quick else ''})")
    _, pruned = run(recipe, config.artifacts, progress=True)
    print(_pruning_text(pruned))
    section("2. register")
    with open_registry(home=config.home) as registry:
        tags = register(registry, config, timeline)
    section("3. measure kinds of prompt offline (pruned answers, dense ratings)")
    opts = LMOptions.from_mapping(recipe.data.options)
    results = measure_kinds(config.artifacts, count=16, max_new_tokens=opts.max_new_tokens)
    expected = float(pruned["metrics"]["shadow_logprob_gap_per_request"])
    margin = CheckConfig().logprob_gap_margin
    window = config.min_samples
    kind, separated = choose_kind(results, expected, margin, window)
    print(_kind_table(results, kind, expected, margin, window))
    timeline.add(f"kind chosen: {kind.kind} (gap {kind.gap:.3f} vs offline {expected:.3f} + "
                 f"margin {margin}; z {kind.z(expected, margin, window):.1f})"
                 + ("" if separated else "; NO kind separates clearly, replaying the strongest"))  # fmt: skip
    model, dense_version = tags[1].split(":", 1)[0], tags[0].split(":", 1)[1]
    try:
        with open_registry(home=config.home) as registry:
            section("4. serve, start the agent, replay prompts")
            url, agent, watcher = _serve_and_watch(story, registry, model, tags)
            story.outcome.urls["service /generate"] = f"{url}/generate"
            _replay(story, watcher, url, kind, recipe, dense_version)
            if watcher.rollback is None:
                story.outcome.missing.append(f"no rollback by the agent within "
                                             f"{config.rollback_wait_s:.0f} s (log {agent.log_path})")  # fmt: skip
            watcher.poll()
    finally:
        story.stop_all()
    print("\n" + models_cli(config, "aliases", model).strip())
    _check_history(story)
    section("timeline")
    print("\n".join(timeline.lines()))
    path = _summary(config, pruned, results, kind, timeline, story)
    print(f"\nsummary: {path}")
    return exit_code(story.outcome)


def _pruning_text(pruned: dict[str, Any]) -> str:
    m = pruned["metrics"]
    return "\n".join([
        f"method {pruned['pruning']['method']}, criterion {pruned['pruning']['criterion']}, "
        f"recovery {pruned['pruning']['recovery_minutes']} min",
        f"KV bytes/token  dense {m['baseline_kv_bytes_per_token']:,}  pruned {m['kv_bytes_per_token']:,}",
        f"params          dense {m['baseline_params']:,}  pruned {m['params']:,}",
        f"held-out perplexity pruned {m['perplexity']:.2f}; teacher-forced agreement "
        f"{m['teacher_forced_agreement']:.3f}; shadow-direction agreement {m['shadow_token_agreement']:.3f}",
        f"TTFT speed-up {m['speedup']['1']:.2f}x, decode {m['decode_speedup']['1']:.2f}x (genai, 1 thread)",
    ])  # fmt: skip


def _kind_table(results: list[KindResult], chosen: KindResult, expected: float, margin: float,
                window: int) -> str:  # fmt: skip
    lines = [f"  {'kind':<12}{'requests':>9}{'agreement':>11}{'gap':>8}{'gap sd':>8}{'z':>7}",
             f"  {'held-out':<12}{'':>9}{'':>11}{expected:>8.3f}   (offline; fails above "
             f"{expected + margin:.3f})"]  # fmt: skip
    for r in results:
        mark = "  <- chosen" if r is chosen else ""
        lines.append(f"  {r.kind:<12}{r.requests:>9}{r.agreement:>11.3f}{r.gap:>8.3f}"
                     f"{r.gap_sd:>8.3f}{r.z(expected, margin, window):>7.1f}{mark}")  # fmt: skip
    return "\n".join(lines)


def _summary(config: DemoConfig, pruned: dict[str, Any], results: list[KindResult],
             chosen: KindResult, timeline: Timeline, story: Story) -> Path:  # fmt: skip
    from pruneguard.agent.checks import CheckConfig

    esc = html.escape
    outcome = story.outcome
    expected = float(pruned["metrics"]["shadow_logprob_gap_per_request"])
    verdict = ("The loop closed: the agent rolled the pruned champion back." if outcome.closed
               else "The loop did NOT close: " + "; ".join(outcome.missing))  # fmt: skip
    table = _kind_table(results, chosen, expected, CheckConfig().logprob_gap_margin,
                        config.min_samples)  # fmt: skip
    parts = [
        "<!doctype html><meta charset='utf-8'><title>pruneguard LLM demo</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "pre{background:#f4f4f4;padding:1em;overflow-x:auto}</style>",
        f"<h1>pruneguard LLM demo — {esc(pruned['name'])}</h1><p><b>{esc(verdict)}</b></p>",
        "<h2>Pruning report</h2>", f"<pre>{esc(_pruning_text(pruned))}</pre>",
        "<h2>Kinds of prompt, measured offline</h2>",
        "<p>The pruned model answers; the dense model rates its tokens by teacher forcing, as "
        "the shadow does in serving. The agent fails a window whose mean log-prob gap is "
        "significantly above the offline value plus its margin.</p>",
        f"<pre>{esc(table)}</pre>",
        "<h2>Timeline</h2>", f"<pre>{esc(chr(10).join(timeline.lines()))}</pre>",
        "<h2>Rollback event (registry history)</h2>",
        f"<pre>{esc(json.dumps(outcome.rollback, indent=2, default=str))}</pre>",
        "<h2>Endpoints (while the demo ran)</h2><ul>",
        *(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in outcome.urls.items()), "</ul>",
    ]  # fmt: skip
    path = config.home / "summary.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
