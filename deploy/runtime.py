"""One serving replica's machinery, independent of HTTP: the swapper (which models), the
handoff (prediction log + shadow: :mod:`deploy.handoff`, by default in the sidecar process
of :mod:`deploy.sidecar`) and the metrics, wired together.

:class:`deploy.service.PruneguardService` is a thin BentoML adapter over :class:`Replica`;
tests drive a :class:`Replica` directly. Each worker process builds its own (its threads do
not survive a fork).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pruneguard.deploy.config import ServeConfig
from pruneguard.deploy.generation import prompt_features, validate_generate
from pruneguard.deploy.handoff import Handoff, InWorker
from pruneguard.deploy.logwriter import LogSink
from pruneguard.deploy.metrics import ServingMetrics, default_metrics
from pruneguard.deploy.model import LoadedModel, Prediction
from pruneguard.deploy.shadow import ShadowJob
from pruneguard.deploy.sidecar import Sidecar
from pruneguard.deploy.swap import ModelSwapper, RegistryView
from pruneguard.deploy.text import text_features, validate_texts
from pruneguard.deploy.validation import ValidationError, validate_feedback
from pruneguard.registry.errors import Unavailable
from pruneguard.registry.settings import mask_url
from pruneguard.registry.tasks import CLASSIFICATION, pack_sequence

__all__ = ["NotReady", "Replica"]

log = logging.getLogger(__name__)

DECODER_TOKENIZER = "tokenizer.json"  # a causal-lm artifact's tokenizer file (genai's folder)


class NotReady(Unavailable):
    """No champion is loaded yet (none set, or every candidate was refused)."""


class FeedbackSink(LogSink, Protocol):
    def write_feedback(self, request_id: str, label: int) -> None: ...


class Replica:
    """Answers from the champion, mirrors to the shadow, logs both, follows the registry."""

    def __init__(
        self,
        config: ServeConfig,
        *,
        registry: RegistryView,
        sink: FeedbackSink,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.sink = sink
        self.metrics = metrics or default_metrics()
        self.metrics.init_labels(config.model)
        self._champion_latency = self.metrics.inference_duration.labels(config.model, "champion")
        self.swapper = ModelSwapper(
            registry,
            model=config.model,
            loader=self._load,
            metrics=self.metrics,
            poll_interval_s=config.poll_interval_s,
        )
        self.handoff: Handoff = (
            Sidecar(config, metrics=self.metrics)
            if config.shadow_mode == "process"
            else InWorker(config, sink=sink, metrics=self.metrics)
        )

    @classmethod
    def open(cls, config: ServeConfig, *, metrics: ServingMetrics | None = None) -> Replica:
        """Connect to the registry (and its database, for the prediction log) named by ``config``."""
        from pruneguard.registry import open_registry
        from pruneguard.registry.predictions import PredictionLog

        registry = open_registry(config.db_url or None, home=config.home)
        return cls(config, registry=registry, sink=PredictionLog(registry.engine), metrics=metrics)

    def _load(self, path: Path, tag: str) -> LoadedModel:
        return LoadedModel.load(path, tag=tag, threads=self.config.ort_threads)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Load the current aliases (a failure leaves the replica not ready), start threads."""
        try:
            self.swapper.refresh()
        except Exception:
            log.exception(
                "initial registry read failed; retrying every %.1fs", self.config.poll_interval_s
            )
        self.handoff.start()
        self.swapper.start()

    def stop(self) -> None:
        self.swapper.stop()
        self.handoff.stop()

    @property
    def ready(self) -> bool:
        return self.swapper.current.champion is not None

    # --- requests -------------------------------------------------------------------------
    def predict(self, inputs: Any = None, texts: Any = None) -> dict[str, Any]:
        """Answer from the champion; :class:`ValidationError` (400) or :class:`NotReady` (503).

        Exactly one of ``inputs`` (tensor rows) and ``texts`` (a text model's) is given."""
        deployment = self.swapper.current
        champion = self._champion(deployment.champion)
        try:
            batch, features = self._batch(champion, inputs, texts)
            answer = champion.predict(batch)
        except ValidationError as exc:
            self.metrics.invalid_requests.labels(self.config.model, exc.problem).inc()
            raise
        ts = time.time()
        ids = tuple(uuid.uuid4().hex for _ in range(len(batch)))
        self._champion_latency.observe(answer.latency_s)
        self.metrics.predictions.labels(self.config.model, "champion", champion.version).inc(
            len(ids)
        )
        shadow = deployment.shadow
        mirror = shadow if shadow is not None and self.handoff.should_sample() else None
        if mirror is not None and not _same_tokenizer(champion, mirror):
            self.metrics.shadow_dropped.labels(self.config.model, "tokenizer_mismatch").inc()
            mirror = None
        job = ShadowJob(ids, ts, batch, answer, champion.version, mirror, features)
        self.handoff.submit(job)
        return _response(ids, champion, answer)

    def generate(
        self, prompt: Any = None, messages: Any = None, max_new_tokens: Any = None
    ) -> dict[str, Any]:
        """A causal-lm champion's greedy answer; the dense shadow rates its tokens later, off
        the response path. :class:`ValidationError` (400) or :class:`NotReady` (503)."""
        deployment = self.swapper.current
        champion = self._champion(deployment.champion)
        try:
            if champion.decoder is None:
                raise ValidationError(
                    f"{champion.name} is a {champion.task.name} model: POST /predict, not "
                    "/generate", problem="task",
                )  # fmt: skip
            chat, budget = validate_generate(
                prompt, messages, max_new_tokens, limit=self.config.max_new_tokens,
                max_chars=self.config.max_text_chars,
            )  # fmt: skip
            answer = champion.decoder.generate(champion.decoder.prompt_ids(chat), budget)
        except ValidationError as exc:
            self.metrics.invalid_requests.labels(self.config.model, exc.problem).inc()
            raise
        ts, request_id = time.time(), uuid.uuid4().hex
        self._champion_latency.observe(answer.latency_s)
        self.metrics.predictions.labels(self.config.model, "champion", champion.version).inc()
        self.metrics.generated_tokens.labels(self.config.model, "champion").inc(len(answer.tokens))
        shadow = deployment.shadow
        mirror = shadow if shadow is not None and self.handoff.should_sample() else None
        if mirror is not None and not _same_tokenizer(champion, mirror):
            self.metrics.shadow_dropped.labels(self.config.model, "tokenizer_mismatch").inc()
            mirror = None
        own = Prediction(np.array([-1]), np.array([[1.0, 0.0, len(answer.tokens)]], np.float32),
                         answer.latency_s)  # fmt: skip
        features = prompt_features(chat, answer, keep_chars=self.config.log_text_chars)
        batch = pack_sequence(answer.prompt, answer.tokens)
        self.handoff.submit(
            ShadowJob((request_id,), ts, batch, own, champion.version, mirror, (features,))
        )
        return {
            "request_id": request_id, "model": champion.name, "model_version": champion.version,
            "task": champion.task.name, "text": answer.text, "tokens": answer.tokens,
            "finish_reason": answer.finish_reason,
            "usage": {"prompt_tokens": len(answer.prompt), "completion_tokens": len(answer.tokens)},
        }  # fmt: skip

    def _champion(self, champion: LoadedModel | None) -> LoadedModel:
        if champion is None:
            raise NotReady(
                f"no champion of {self.config.model!r} is loaded yet; promote a version with "
                "`pruneguard models promote TAG` (see /readyz)"
            )
        return champion

    def _batch(
        self, champion: LoadedModel, inputs: Any, texts: Any
    ) -> tuple[Any, tuple[dict[str, Any], ...] | None]:
        """The model's batch, and what the prediction log keeps per row (None: the batch)."""
        if (inputs is None) == (texts is None):
            wanted = '{"texts": [...]}' if champion.text is not None else '{"inputs": [...]}'
            raise ValidationError(
                f"send exactly one of inputs and texts; {champion.name} takes {wanted}",
                problem="type",
            )
        if texts is None:
            return champion.validate(inputs, max_batch=self.config.max_batch), None
        checked = validate_texts(
            texts, max_texts=self.config.max_batch, max_chars=self.config.max_text_chars
        )
        batch, encodings = champion.encode(checked)
        features = text_features(checked, encodings, keep_chars=self.config.log_text_chars)
        return batch, tuple(features)

    def feedback(self, request_id: Any, label: Any) -> dict[str, Any]:
        """Record a label durably (committed before this returns)."""
        champion = self.swapper.current.champion
        n_classes = champion.n_classes if champion is not None else None
        try:
            if champion is not None and champion.task.name != CLASSIFICATION:
                raise ValidationError(
                    f"{champion.name} is a {champion.task.name} model: its answers have no class "
                    "label to give feedback on",
                    problem="task",
                )
            request_id, label = validate_feedback(request_id, label, n_classes=n_classes)
        except ValidationError as exc:
            self.metrics.invalid_requests.labels(self.config.model, exc.problem).inc()
            raise
        self.sink.write_feedback(request_id, label)
        self.metrics.feedback.labels(self.config.model).inc()
        return {"request_id": request_id, "label": label, "recorded": True}

    def status(self) -> dict[str, Any]:
        current = self.swapper.current
        return {
            "model": self.config.model,
            "revision": current.revision,
            "champion": current.champion.tag if current.champion else None,
            "shadow": current.shadow.tag if current.shadow else None,
            "pending": self.handoff.pending(),
            "config": _public_config(self.config),
        }


def _public_config(config: ServeConfig) -> dict[str, str]:
    """The config without secrets: no admin token, the database password masked."""
    public = {k: str(v) for k, v in asdict(config).items() if k != "admin_token"}
    public["db_url"] = mask_url(config.resolved_db_url)
    return public


def _same_tokenizer(champion: LoadedModel, shadow: LoadedModel) -> bool:
    """Whether the shadow reads the champion's tokens: both take tensors, or both carry the
    same tokenizer file (a pruned version copies its parent's)."""
    if (champion.decoder is None) != (shadow.decoder is None):
        return False
    if champion.decoder is not None:  # a decoder's tokenizer sits beside its graph
        return bool(champion.manifest["files"].get(DECODER_TOKENIZER)
                    == shadow.manifest["files"].get(DECODER_TOKENIZER))  # fmt: skip
    if champion.text is None or shadow.text is None:
        return champion.text is shadow.text
    name = str(champion.manifest["io"]["text"]["tokenizer"])
    return bool(
        champion.manifest["files"].get(name) == shadow.manifest["files"].get(name)
        and champion.text.input_names == shadow.text.input_names
    )


def _response(ids: tuple[str, ...], champion: LoadedModel, answer: Prediction) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": champion.name,
        "model_version": champion.version,
        "task": champion.task.name,
        "request_ids": list(ids),
        **champion.task.body(answer.decoded),
    }
    if len(ids) == 1:
        body["request_id"] = ids[0]
    return body
