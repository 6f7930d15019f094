"""The reviews the benchmark sends: a typical RayService, one with many worker groups, a Ray worker pod.

Each body exists twice: as fixed bytes (the repeated-body runs, and hey, which can only send one body)
and as a template whose slots the wrk script (bench/vary.lua) fills differently on every request:
the review uid, the object's name and every worker group's replicas and bounds. No cache keyed by
the input can then serve a repeat, as none could in a cluster, and the no-op baseline receives the
very same bodies, so the load generator's own cost is the same on both sides.
"""

from __future__ import annotations

import json
from typing import Any

from tests.reviews import ray_pod, review
from webhook.kube.defaults import CRDDefaults

SERVE_CONFIG = """applications:
  - name: text_ml_app
    import_path: text_ml.app
    route_prefix: /summarize_translate
    runtime_env:
      working_dir: "https://github.com/ray-project/serve_config_examples/archive/refs/heads/master.zip"
      pip: [torch, transformers]
    deployments:
      - name: Translator
        num_replicas: 1
        ray_actor_options: {num_cpus: 0.2, num_gpus: 1}
        user_config: {language: french}
      - name: Summarizer
        num_replicas: 1
        ray_actor_options: {num_cpus: 0.2}
"""

# Slots the wrk script fills per request (bench/vary.lua computes each from the request counter n):
# uid and name are strings; min, replicas and max are numbers with min <= replicas <= max, so every
# body stays valid and takes the same path through the rules as the fixed one.
SLOTS = ("uid", "name", "min", "replicas", "max")


def slot(name: str) -> str:
    return "{{" + name + "}}"


def container(name: str, cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {
        "name": name,
        "image": "rayproject/ray-ml:2.52.0-gpu",
        "imagePullPolicy": "IfNotPresent",
        "resources": {"limits": limits, "requests": dict(limits)},
        "env": [{"name": "RAY_GRAFANA_HOST", "value": "http://prometheus-grafana.monitoring.svc:80"},
                {"name": "HF_HOME", "value": "/models/cache"}],
        "volumeMounts": [{"name": "models", "mountPath": "/models"}, {"name": "ray-logs", "mountPath": "/tmp/ray"}],
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
    }  # fmt: skip


def worker_group(index: int, gpus: int, scale: tuple[Any, Any, Any] = (1, 2, 8)) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [container("ray-worker", "8", "32Gi", gpus)],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
                    {"name": "ray-logs", "emptyDir": {}}],
    }  # fmt: skip
    if gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        spec["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    minimum, replicas, maximum = scale
    return {
        "groupName": f"{'gpu' if gpus else 'cpu'}-group-{index}",
        "replicas": replicas,
        "minReplicas": minimum,
        "maxReplicas": maximum,
        "rayStartParams": {},
        "template": {"metadata": {"labels": {"team": "search"}}, "spec": spec},
    }


def rayservice(groups: int, name: str = "text-ml", scale: tuple[Any, Any, Any] = (1, 2, 8)) -> dict[str, Any]:
    raw = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": "ml-serving", "labels": {"team": "search"}},
        "spec": {
            "serveConfigV2": SERVE_CONFIG,
            "rayClusterConfig": {
                "rayVersion": "2.52.0",
                "enableInTreeAutoscaling": False,
                "headGroupSpec": {
                    "rayStartParams": {"num-gpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    **container("ray-head", "4", "16Gi"),
                                    "ports": [
                                        {"containerPort": 6379, "name": "gcs"},
                                        {"containerPort": 8265, "name": "dashboard"},
                                        {"containerPort": 10001, "name": "client"},
                                        {"containerPort": 8000, "name": "serve"},
                                    ],
                                }
                            ],
                            "volumes": [
                                {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
                                {"name": "ray-logs", "emptyDir": {}},
                            ],
                        }
                    },
                },
                "workerGroupSpecs": [worker_group(i, 1 if i % 2 else 0, scale) for i in range(groups)],
            },
        },
    }
    return CRDDefaults.packaged().apply(raw)


def _template(document: dict[str, Any]) -> bytes:
    """JSON text with slots: numeric slots lose the quotes their placeholder strings had."""
    text = json.dumps(document)
    for name in ("min", "replicas", "max"):
        text = text.replace(json.dumps(slot(name)), slot(name))
    return text.encode()


def bodies() -> dict[str, bytes]:
    """The fixed bodies, sent over and over."""
    return {
        "validate-typical": json.dumps(review(rayservice(2))).encode(),
        "validate-100-groups": json.dumps(review(rayservice(100))).encode(),
        "mutate-worker-pod": json.dumps(review(ray_pod())).encode(),
    }


def templates() -> dict[str, bytes]:
    """The same reviews with slots for the values that vary per request."""
    scale = (slot("min"), slot("replicas"), slot("max"))

    def service(groups: int) -> bytes:
        return _template(review(rayservice(groups, f"text-ml-{slot('name')}", scale), uid=slot("uid")))

    pod = ray_pod(cluster=f"text-ml-{slot('name')}")
    return {
        "validate-typical": service(2),
        "validate-100-groups": service(100),
        "mutate-worker-pod": _template(review(pod, uid=slot("uid"))),
    }


def fill(template: bytes, n: int) -> bytes:
    """What bench/vary.lua sends as request n (used by the tests to check the bodies it makes)."""
    minimum = n % 4
    replicas = minimum + (n // 4) % 4
    values = {
        "uid": f"6c3f2a1e-{n % 65536:04x}-4000-8000-{n:012d}",
        "name": str(n),
        "min": str(minimum),
        "replicas": str(replicas),
        "max": str(replicas + 1 + n),
    }
    text = template.decode()
    for name, value in values.items():
        text = text.replace(slot(name), value)
    return text.encode()
