"""deploy/k8s/training: the pieces of a multi-node torchrun Job agree with each other."""

import yaml

from tests.conftest import REPO

TRAINING = REPO / "deploy" / "k8s" / "training"


def load(name: str) -> dict:
    return yaml.safe_load((TRAINING / name).read_text())


def test_job_service_and_config_agree():
    job, service, kustomization = load("job.yaml"), load("service.yaml"), load("kustomization.yaml")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    config = dict(item.split("=", 1) for item in kustomization["configMapGenerator"][0]["literals"])
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(config["TRAIN_NNODES"])
    assert pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    command = " ".join(pod["containers"][0]["args"])
    endpoint = f"{job['metadata']['name']}-0.{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert f"--rdzv_endpoint {endpoint}" in command and "-m training.train" in command
    assert (REPO / config["TRAIN_CONFIG"]).exists()
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == config["GPUS_PER_NODE"]
    assert kustomization["resources"] == ["pvc.yaml", "service.yaml", "job.yaml"]
    assert load("pvc.yaml")["spec"]["accessModes"] == ["ReadWriteMany"]
