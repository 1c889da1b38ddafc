"""Deployment files: fast structural checks (default suite) and the real container checks (slow).

The slow test runs deploy/ci/container-checks.sh: podman build and run, Prometheus, SIGTERM. It serves the models
committed under models/ when there are some, else the tiny test model (then no translation quality is expected).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy" / "ci"))
import check_queries  # deploy/ci/check_queries.py


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_all_yaml(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


# --- images ------------------------------------------------------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


@pytest.mark.parametrize("name, base, device", [("Dockerfile", "python:3.11-slim", "cpu"),
                                                ("Dockerfile.gpu", "nvidia/cuda:", "cuda")])
def test_dockerfile_contract(name, base, device):
    instructions = dockerfile_instructions(REPO / name)
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)
    assert args["BASE_IMAGE"].startswith(base)
    stages = [a for i, a in instructions if i == "FROM"]
    assert len(stages) == 2 and all(s.startswith("${BASE_IMAGE}") for s in stages), "multi-stage on BASE_IMAGE"
    runtime = instructions[max(n for n, (i, _) in enumerate(instructions) if i == "FROM"):]
    users = [a for i, a in runtime if i == "USER"]
    assert users and not users[-1].split(":")[0] in ("0", "root"), "runtime stage must run as non-root"
    health = " ".join(a for i, a in runtime if i == "HEALTHCHECK")
    assert "/health/ready" in health and "CMD [" in health
    entrypoint = [a for i, a in runtime if i in ("ENTRYPOINT", "CMD")]
    assert entrypoint and all(a.startswith("[") for a in entrypoint), "exec form, so PID 1 gets SIGTERM"
    assert json.loads(entrypoint[0])[:3] == ["python3", "-m", "service"]
    assert "serve" in json.loads(entrypoint[1])
    env = " ".join(a for i, a in runtime if i == "ENV")
    assert f"MT_DEVICE={device}" in env and "MT_MODELS_DIR=/app/models" in env
    assert any(i == "COPY" and a.startswith("models/") for i, a in runtime), "shipped models baked in"
    runtime_text = " ".join(a for _, a in runtime)
    for banned in ("torch", "gcc", "build-essential"):
        assert banned not in runtime_text, f"{banned} in the runtime stage"


def test_serving_requirements_exclude_torch():
    names = [line.split("#")[0].strip() for line in (REPO / "requirements" / "serve.in").read_text().splitlines()]
    assert not [n for n in names if n.lower().startswith("torch")]


def test_dockerignore_keeps_the_context_small():
    """An allow-list: everything is excluded, then only what the image copies is let back in."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert not allowed & {".git", ".venv", "data", "runs", "tests", "docs"}
    for dockerfile in sorted(REPO.glob("Dockerfile*")):  # every image shares the one .dockerignore
        for instruction, argument in dockerfile_instructions(dockerfile):
            if instruction == "COPY" and not argument.startswith("--from"):
                for source in argument.split()[:-1]:
                    parts = Path(source.rstrip("/")).parts
                    assert any("/".join(parts[:n]) in allowed for n in range(1, len(parts) + 1)), \
                        f"{dockerfile.name} copies {source}, which .dockerignore drops"


# --- compose -----------------------------------------------------------------------------------------------------

def test_compose_stack():
    compose = load_yaml(REPO / "docker-compose.yml")
    services = compose["services"]
    assert {"api", "prometheus", "grafana", "loadtest"} <= set(services)
    api = services["api"]
    assert api["build"]["dockerfile"] == "Dockerfile"
    assert any(str(p).endswith(":8000") for p in api["ports"])
    assert "/health/ready" in " ".join(api["healthcheck"]["test"])
    assert api["restart"] in ("always", "unless-stopped", "on-failure")
    assert api["deploy"]["resources"]["limits"]["memory"] and api["deploy"]["resources"]["limits"]["cpus"]
    assert api["read_only"] is True and "ALL" in api["cap_drop"]
    assert services["loadtest"]["profiles"] == ["loadtest"]
    locustfile = next(a for a in services["loadtest"]["command"] if a.endswith("locustfile.py"))
    assert (REPO / "loadtest" / Path(locustfile).name).is_file()
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for path in ("./deploy/prometheus", "./deploy/grafana/provisioning", "./deploy/grafana/dashboards"):
        assert path in mounts and (REPO / path).is_dir()


def test_compose_gpu_override():
    api = load_yaml(REPO / "docker-compose.gpu.yml")["services"]["api"]
    assert api["build"]["dockerfile"] == "Dockerfile.gpu"
    assert api["environment"]["MT_DEVICE"] == "cuda"
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


# --- Kubernetes --------------------------------------------------------------------------------------------------

def test_k8s_base():
    base = REPO / "deploy" / "k8s" / "base"
    kustomization = load_yaml(base / "kustomization.yaml")
    docs = [doc for name in kustomization["resources"] for doc in load_all_yaml(base / name)]
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert kustomization["configMapGenerator"][0]["name"] == "mt-api-config"
    env = dict(line.split("=", 1) for line in (base / "config.env").read_text().splitlines() if "=" in line)
    assert env["MT_DEVICE"] == "cpu" and env["MT_MODELS_DIR"] == "/app/models"

    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert container["envFrom"][0]["configMapRef"]["name"] == "mt-api-config"
    # The grace period must cover the service's own drain (MT_SHUTDOWN_TIMEOUT_S) and the preStop pause.
    assert pod["terminationGracePeriodSeconds"] > float(env["MT_SHUTDOWN_TIMEOUT_S"]) + 5


def test_k8s_gpu_overlay():
    overlay = REPO / "deploy" / "k8s" / "overlays" / "gpu"
    kustomization = load_yaml(overlay / "kustomization.yaml")
    assert "../../base" in kustomization["resources"]
    literals = kustomization["configMapGenerator"][0]["literals"]
    assert "MT_DEVICE=cuda" in literals
    patch = load_yaml(overlay / "deployment-gpu.yaml")
    resources = patch["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"


# --- monitoring --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service_exposition() -> str:
    """What the service's metrics registry renders (no server needed)."""
    metrics = pytest.importorskip("service.metrics")
    return metrics.Metrics().render().decode()


def test_dashboard_and_alerts_name_exported_metrics(service_exposition):
    exported, _ = check_queries.exported_metrics(service_exposition)
    panels = check_queries.dashboard_queries(REPO / "deploy" / "grafana" / "dashboards" / "mt-service.json")
    alerts = check_queries.rule_queries(REPO / "deploy" / "prometheus" / "alerts.yml")
    assert check_queries.check_names(panels + alerts, exported) == []
    named = set().union(*(check_queries.expression_metrics(expr) for _, expr in panels))
    for needed in ("mt_http_requests_total", "mt_http_request_duration_seconds_bucket",
                   "mt_batch_size_sentences_bucket", "mt_queue_depth_sentences", "mt_generated_tokens_total"):
        assert needed in named, f"the dashboard shows no {needed}"


def test_name_check_catches_an_unknown_metric(service_exposition):
    exported, _ = check_queries.exported_metrics(service_exposition)
    problems = check_queries.check_names([("typo", "rate(mt_http_request_total[5m])")], exported)
    assert problems and "mt_http_request_total" in problems[0]


@pytest.mark.parametrize("expr, names", [
    ('histogram_quantile(0.95, sum by (le) (rate(x_bucket{endpoint=~".*translate"}[$__rate_interval])))',
     {"x_bucket"}),
    ('sum(rate(a_total{status=~"5.."}[5m])) / sum(rate(a_total[5m])) > 0.05', {"a_total"}),
    ("max_over_time(q[5m]) > 1e3 and on(instance) up == 1", {"q", "up"}),
    ('sum without (pod) (y) * 2 + count(z) by (model) offset 5m', {"y", "z"}),
])
def test_expression_metrics(expr, names):
    assert check_queries.expression_metrics(expr) == names


def test_alert_rules_cover_the_issue():
    rules = load_yaml(REPO / "deploy" / "prometheus" / "alerts.yml")["groups"][0]["rules"]
    text = {rule["alert"]: rule["expr"] for rule in rules}
    assert any("up{" in e and "== 0" in e for e in text.values()), "target down"
    assert any("histogram_quantile(0.95" in e for e in text.values()), "p95 latency"
    assert any('status=~"5.."' in e for e in text.values()), "error rate"
    assert any("mt_queue_depth_sentences" in e for e in text.values()), "queue saturation"
    prometheus = load_yaml(REPO / "deploy" / "prometheus" / "prometheus.yml")
    assert "alerts.yml" in prometheus["rule_files"]
    assert any(job["job_name"] == "mt-api" for job in prometheus["scrape_configs"])


def test_grafana_provisioning():
    grafana = REPO / "deploy" / "grafana"
    (datasource,) = load_yaml(grafana / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    dashboard = json.loads((grafana / "dashboards" / "mt-service.json").read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    (provider,) = load_yaml(grafana / "provisioning" / "dashboards" / "mt.yml")["providers"]
    compose = load_yaml(REPO / "docker-compose.yml")["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in compose
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for word in ("request rate", "latency", "batch size", "queue", "error", "tokens"):
        assert word in titles


# --- the real thing ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_container_checks(request, tmp_path):
    """deploy/ci/container-checks.sh end to end (root, podman; about 2 minutes warm, up to 10 on a new machine)."""
    if os.geteuid() != 0:
        pytest.skip("the container checks need root (rootful podman, apt-get)")
    env = dict(os.environ)
    if not list((REPO / "models").glob("*/model.json")):
        models = tmp_path / "models"
        shutil.copytree(request.getfixturevalue("tiny_model_dir"), models / "de-en")
        env.update(MT_DEPLOY_MODELS=str(models), MT_DEPLOY_EXPECT="")  # a tiny model translates badly
    result = subprocess.run(["bash", str(REPO / "deploy" / "ci" / "container-checks.sh")], env=env, check=False,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:]
