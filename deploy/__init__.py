"""Serving: the champion answers, the dense shadow compares, both are logged.

Modules (one noun each; only :mod:`deploy.service` imports BentoML):

- :mod:`deploy.config`     ServeConfig, resolved once from ``pruneguard serve`` / env
- :mod:`deploy.validation` request checks against the manifest io spec (-> 400)
- :mod:`deploy.model`      one loaded version (ONNX Runtime session + io spec)
- :mod:`deploy.swap`       follows the registry's aliases; atomic hot swap
- :mod:`deploy.shadow`     bounded, never-blocking shadow queue and comparison
- :mod:`deploy.logwriter`  batched, non-blocking prediction-log writes + retention
- :mod:`deploy.metrics`    the ``pruneguard_*`` Prometheus metrics (METRIC_NAMES)
- :mod:`deploy.runtime`    a replica: the pieces above wired together
- :mod:`deploy.admin`      optional token-protected promote/rollback endpoints
- :mod:`deploy.boundary`   JSON-only content-type rule (415), one-line logs for 4xx
- :mod:`deploy.service`    the BentoML service (``bentoml serve deploy.service:PruneguardService``)
- :mod:`deploy.launch`     ``bentoml`` with a private Prometheus multiprocess dir
- :mod:`deploy.cli`        ``pruneguard serve NAME``

See docs/serving.md.
"""

__all__: list[str] = []
