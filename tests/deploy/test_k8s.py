"""Static checks of deploy/k8s/ (no cluster here): the manifests agree with each other and
with the code (env names, probe paths, metrics port)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pruneguard.deploy.config import ENV

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def _docs() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    return _docs()


def _container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_all_parts_are_there(docs: dict[str, dict[str, Any]]) -> None:
    assert {"Deployment", "Service", "Secret", "PersistentVolumeClaim"} <= set(docs)


def test_several_replicas_and_zero_unavailable_rollouts(docs: dict[str, dict[str, Any]]) -> None:
    spec = docs["Deployment"]["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert (
        docs["Service"]["spec"]["selector"].items()
        <= spec["template"]["metadata"]["labels"].items()
    )


def test_probes_hit_bentoml_health_endpoints(docs: dict[str, dict[str, Any]]) -> None:
    container = _container(docs)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_prometheus_scrapes_the_serving_port(docs: dict[str, dict[str, Any]]) -> None:
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    ports = {p["name"]: p["containerPort"] for p in _container(docs)["ports"]}
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] in ("http", ports["http"])
    env = {e["name"]: e.get("value") for e in _container(docs)["env"]}
    assert int(env["BENTOML_PORT"]) == ports["http"]


def test_database_url_comes_from_the_secret(docs: dict[str, dict[str, Any]]) -> None:
    env = {e["name"]: e for e in _container(docs)["env"]}
    ref = env[ENV["db_url"]]["valueFrom"]["secretKeyRef"]
    secret = docs["Secret"]
    assert ref["name"] == secret["metadata"]["name"]
    assert secret["stringData"][ref["key"]].startswith("postgresql+psycopg://")
    assert "value" not in env[ENV["db_url"]]  # never inline


def test_pruneguard_env_names_are_the_ones_the_code_reads(docs: dict[str, dict[str, Any]]) -> None:
    names = {e["name"] for e in _container(docs)["env"] if e["name"].startswith("PRUNEGUARD_")}
    assert names <= set(ENV.values()) | {"PRUNEGUARD_HOME"}
    assert ENV["model"] in names


def test_model_store_is_mounted_read_only_from_the_claim(docs: dict[str, dict[str, Any]]) -> None:
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    mounts = {m["name"]: m for m in _container(docs)["volumeMounts"]}
    assert claims["model-store"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert mounts["model-store"]["readOnly"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
