"""Shared parts of the serving benchmarks: a throwaway registry with two real ONNX versions,
server processes on loopback, and a closed-loop HTTP load generator.

Two models (``--model``, see :func:`add_model_args`): ``digits``, a small CNN built in
seconds (tests/support/artifact_factory.py), sent ``{"inputs": rows}``; and ``text``,
all-MiniLM-L6-v2 dense + pruned by the built-in recipe minilm-fast (built once into
``--artifacts DIR``, then reused), sent ``{"texts": [...]}`` of English sentences that
tokenize to about 128 tokens, tokenized in the service; and ``llm``, SmolLM2-135M dense +
pruned by the built-in recipe smollm2-heads (also cached in ``--artifacts``), sent
``/generate {"prompt", "max_new_tokens"}`` with the held-out chat prompts in turn.

Progress goes to stderr; each benchmark prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests" / "support"))  # artifact_factory: a real ONNX graph + manifest

MODEL = "digits"
ROW = np.random.default_rng(0).uniform(0, 16, size=(1, 1, 8, 8)).round(2).tolist()
TEXT_RECIPE = "minilm-fast"
LLM_RECIPE = "smollm2-heads"
TEXT_TOKENS = 128  # the speed targets are measured at seq 128
SENTENCES = ROOT / "pruning" / "data" / "sentences_train.txt"
Body = dict[str, Any] | list[dict[str, Any]]  # one request body, or several sent in turn


def log(name: str, msg: str) -> None:
    print(f"[{name}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """The options that pick what is served: ``--model``, ``--artifacts``, ``--batch``."""
    ap.add_argument(
        "--model",
        choices=("digits", "text", "llm"),
        default="digits",
        help="digits: a small CNN, rows in; text: MiniLM (minilm-fast), texts in; "
        "llm: SmolLM2-135M (smollm2-heads), /generate",
    )
    ap.add_argument(
        "--artifacts",
        type=Path,
        default=None,
        help="text, llm: cache of the dense/pruned artifacts (built there if absent; "
        "default: a temp dir, rebuilt each run)",
    )
    ap.add_argument("--batch", type=int, default=1, help="rows or texts per request")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="llm: tokens per answer")


@dataclass
class Workspace:
    home: Path
    champion: str  # the pruned version
    shadow: str  # its dense parent
    champion_dir: Path
    registry: Any
    model: str = MODEL
    texts: list[str] = field(default_factory=list)  # text model: request texts (~128 tokens)
    db_url: str | None = None  # None: the default registry under home
    prompts: list[str] = field(default_factory=list)  # decoder: chat prompts, sent in turn
    max_new_tokens: int = 32

    @property
    def route(self) -> str:
        return "/generate" if self.prompts else "/predict"

    def body(self, batch: int = 1) -> Body:
        """A /predict request body of ``batch`` rows or texts; for a decoder, one /generate
        body per prompt (the clients send them in turn)."""
        if self.prompts:
            return [{"prompt": p, "max_new_tokens": self.max_new_tokens} for p in self.prompts]
        if self.texts:
            return {"texts": [self.texts[i % len(self.texts)] for i in range(batch)]}
        return {"inputs": [ROW[0]] * batch}

    def with_champion(self, tag: str, *, shadow: str, label: str) -> Workspace:
        """This workspace with its own registry database (same model store) in which ``tag``
        is champion and ``shadow`` the shadow: two servers with different champions."""
        from pruneguard.registry import open_registry

        db_url = f"sqlite:///{self.home / f'registry-{label}.sqlite'}"
        registry = open_registry(db_url, home=self.home)
        try:
            for version in (shadow, tag):
                registry.register(self.registry.path(version), actor="bench")
            registry.set_alias(self.model, "champion", tag, actor="bench")
            registry.set_alias(self.model, "shadow", shadow, actor="bench")
        finally:
            registry.close()
        return dataclasses.replace(self, champion=tag, shadow=shadow, db_url=db_url)


@contextlib.contextmanager
def workspace(
    model: str = "digits",
    artifacts: Path | None = None,
    *,
    recipe: str = TEXT_RECIPE,
    champion_kind: str = "pruned",
) -> Iterator[Workspace]:
    """A temp PRUNEGUARD_HOME with a pruned champion and a dense shadow of ``model``:
    digits (seeds 1 and 2) or text (``recipe``, cached in ``artifacts``; ``champion_kind``
    quantized serves the run's int8 version)."""
    with tempfile.TemporaryDirectory(prefix="pruneguard-bench-") as tmp:
        home = Path(tmp) / "home"
        os.environ["PRUNEGUARD_HOME"] = str(home)
        os.environ["BENTOML_HOME"] = str(home / "bentoml")
        os.environ["BENTOML_DO_NOT_TRACK"] = "True"
        from pruneguard.registry import open_registry

        if model in ("text", "llm"):
            recipe = LLM_RECIPE if model == "llm" else recipe
            dense, pruned = text_artifacts(artifacts or Path(tmp) / "artifacts", recipe,
                                           champion_kind)  # fmt: skip
        else:
            from artifact_factory import make_artifact

            pruned = make_artifact(Path(tmp) / "pruned", name=MODEL, kind="pruned", seed=1)
            dense = make_artifact(Path(tmp) / "dense", name=MODEL, kind="dense", seed=2)
        name = json.loads((pruned / "manifest.json").read_text())["name"]
        registry = open_registry(home=home)
        champion = registry.register(pruned, actor="bench").tag
        shadow = registry.register(dense, actor="bench").tag
        registry.set_alias(name, "champion", champion, actor="bench")
        registry.set_alias(name, "shadow", shadow, actor="bench")
        texts = request_texts(pruned) if model == "text" else []
        try:
            yield Workspace(home, champion, shadow, pruned, registry, name, texts,
                            prompts=chat_prompts() if model == "llm" else [])  # fmt: skip
        finally:
            registry.close()


def text_artifacts(
    cache: Path, recipe: str = TEXT_RECIPE, champion_kind: str = "pruned"
) -> tuple[Path, Path]:
    """(dense, pruned or quantized) artifacts of ``recipe`` in ``cache``, run there first if
    absent."""
    dense, champion = cache / "dense", cache / champion_kind
    if not (champion / "manifest.json").is_file():
        from pruneguard.pruning.pipeline import run
        from pruneguard.pruning.recipe import load_recipe

        if (cache / "pruned").exists():
            raise SystemExit(
                f"{cache} holds a run without {champion_kind}/: pass another --artifacts"
            )
        log("serve_common", f"pruning {recipe} into {cache} (a few minutes, once)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        with contextlib.redirect_stdout(sys.stderr):  # the ONNX exporter prints on stdout
            run(load_recipe(recipe), cache)
    return dense, champion


def request_texts(artifact: Path, count: int = 16) -> list[str]:
    """``count`` different texts, each consecutive sentences of SENTENCES joined until the
    artifact's tokenizer gives at least TEXT_TOKENS tokens (then truncated as served)."""
    from tokenizers import Tokenizer

    spec = json.loads((artifact / "manifest.json").read_text())["io"]["text"]
    tokenizer = Tokenizer.from_file(str(artifact / spec["tokenizer"]))
    lines = [x for x in SENTENCES.read_text().splitlines() if x.strip() and x[0] != "#"]
    texts: list[str] = []
    words: list[str] = []
    for line in lines:
        words.append(line)
        if len(tokenizer.encode(" ".join(words)).ids) >= TEXT_TOKENS:
            texts.append(" ".join(words))
            words = []
            if len(texts) == count:
                return texts
    raise RuntimeError(f"{SENTENCES} gives only {len(texts)} texts of {TEXT_TOKENS} tokens")


def chat_prompts() -> list[str]:
    """The held-out chat prompts (the ones the manifest's offline values were measured on)."""
    from pruneguard.pruning.tasks.causal_lm import held_out_prompts

    return held_out_prompts()


def text_tokens(ws: Workspace) -> list[int]:
    """Tokens per request text as served (after truncation)."""
    from tokenizers import Tokenizer

    spec = json.loads((ws.champion_dir / "manifest.json").read_text())["io"]["text"]
    tokenizer = Tokenizer.from_file(str(ws.champion_dir / spec["tokenizer"]))
    tokenizer.enable_truncation(int(spec["max_length"]))
    return [len(tokenizer.encode(t).ids) for t in ws.texts]


class Process:
    """A server process on a free loopback port (stopped with SIGTERM)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.proc = subprocess.Popen(
            list(argv), env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.log_path = log_path

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise RuntimeError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def pruneguard_server(
    ws: Workspace, *, shadow_sample: float, poll_interval: float = 2.0, name: str = "pg"
) -> Process:
    exe = str(Path(sys.executable).parent / "pruneguard")
    argv = [
        exe,
        "serve",
        ws.model,
        "--port",
        "{port}",
        "--shadow-sample",
        str(shadow_sample),
        "--poll-interval",
        str(poll_interval),
    ]
    if ws.db_url:
        argv += ["--db-url", ws.db_url]
    return Process(argv, {}, ws.home / f"{name}.log")


def plain_server(ws: Workspace) -> Process:
    """bench/plain_service.py on the champion's ONNX file (and, for a text model, its
    tokenizer set up as the manifest's ``io.text`` says)."""
    artifact = ws.registry.path(ws.champion)
    env = {"PLAIN_ONNX": str(artifact / "model.onnx")}
    if ws.texts:
        spec = json.loads((artifact / "manifest.json").read_text())["io"]["text"]
        env |= {
            "PLAIN_TOKENIZER": str(artifact / spec["tokenizer"]),
            "PLAIN_MAX_LENGTH": str(spec["max_length"]),
            "PLAIN_PAD_ID": str(spec["pad_token_id"]),
            "PLAIN_PAD_TOKEN": str(spec["pad_token"]),
        }
    argv = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "plain_service:PlainService",
        "--port",
        "{port}",
        "--host",
        "127.0.0.1",
        "--working-dir",
        str(ROOT / "bench"),
    ]
    return Process(argv, env, ws.home / "plain.log")


@dataclass
class Sample:
    start: float
    end: float
    status: int
    version: str
    first: bool = False  # the client's first request of its closed_loop call


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0


def closed_loop(
    url: str,
    *,
    requests: int,
    concurrency: int,
    body: Body | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    until: Callable[[], bool] | None = None,
    route: str = "/predict",
) -> Load:
    """``concurrency`` clients, each sending its next request when the last one answered;
    ``requests`` in all, or (with ``until``) at least that many and until ``until()``. A
    list of bodies is sent in turn (the n-th request of the call gets body n mod len)."""
    bodies = body if isinstance(body, list) else [body or {"inputs": [ROW[0]]}]
    load = Load()
    sent = [0]
    lock = threading.Lock()
    remaining = [requests]

    def client() -> None:
        first = True
        with httpx.Client(base_url=url, timeout=120) as c:
            while True:
                with lock:
                    if remaining[0] <= 0 and (until is None or until()):
                        return
                    remaining[0] -= 1
                    request = bodies[sent[0] % len(bodies)]
                    sent[0] += 1
                start = time.perf_counter()
                try:
                    r = c.post(route, json=request)
                    version = r.json().get("model_version", "") if r.status_code == 200 else ""
                    sample = Sample(start, time.perf_counter(), r.status_code, str(version), first)
                except httpx.HTTPError:
                    sample = Sample(start, time.perf_counter(), 0, "", first)
                first = False
                with lock:
                    load.samples.append(sample)
                    load.errors += sample.status != 200
                if on_sample is not None:
                    on_sample(sample)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return load


@dataclass
class Block:
    """One block of closed-loop load on one server."""

    name: str
    load: Load
    seconds: float
    server_cpu_ms: float  # CPU of the server and its child processes during the block


def alternating_blocks(
    servers: dict[str, Process],
    *,
    blocks: int,
    requests: int,
    concurrency: int,
    body: Body | None = None,
    warmup: int = 100,
    drop_first: bool = False,
    route: str = "/predict",
) -> Iterator[tuple[int, list[Block]]]:
    """Wait for the servers, warm each up (``warmup`` requests, not measured), then yield per
    block one :class:`Block` per server, the order alternating (AB, BA, ...) so that every
    server sees the same machine load. ``drop_first`` leaves each client's first request of
    a block out of its samples (it pays for the switch between servers). The caller starts
    and stops the servers."""
    for server in servers.values():
        server.wait_ready()
    for server in servers.values():
        closed_loop(server.url, requests=warmup, concurrency=concurrency, body=body, route=route)
    for block in range(blocks):
        order = list(servers) if block % 2 == 0 else list(reversed(servers))
        done = []
        for name in order:
            pid = servers[name].proc.pid
            cpu, start = tree_cpu_s(pid), time.perf_counter()
            load = closed_loop(
                servers[name].url, requests=requests, concurrency=concurrency, body=body,
                route=route,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            if drop_first:
                load.samples = [s for s in load.samples if not s.first]
            done.append(Block(name, load, seconds, (tree_cpu_s(pid) - cpu) * 1000))
        yield block, done


def metric_totals(url: str, sample_name: str) -> dict[str, float]:
    """``sample_name``'s values on ``url``/metrics, summed per label set (as ``k=v,...``)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == sample_name:
                key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def percentiles_ms(samples: Sequence[Sample]) -> dict[str, float]:
    latency = np.array([(s.end - s.start) * 1000 for s in samples])
    return {
        "p50": round(float(np.percentile(latency, 50)), 3),
        "p99": round(float(np.percentile(latency, 99)), 3),
        "mean": round(float(latency.mean()), 3),
    }


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    except psutil.Error:
        pass
    return total


def uptime() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"
