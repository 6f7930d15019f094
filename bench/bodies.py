"""The reviews the benchmark sends: a typical RayService, one with many worker groups, a Ray worker pod."""

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


def worker_group(index: int, gpus: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [container("ray-worker", "8", "32Gi", gpus)],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
                    {"name": "ray-logs", "emptyDir": {}}],
    }  # fmt: skip
    if gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        spec["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    return {
        "groupName": f"{'gpu' if gpus else 'cpu'}-group-{index}",
        "replicas": 2,
        "minReplicas": 1,
        "maxReplicas": 8,
        "rayStartParams": {},
        "template": {"metadata": {"labels": {"team": "search"}}, "spec": spec},
    }


def rayservice(groups: int) -> dict[str, Any]:
    raw = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "text-ml", "namespace": "ml-serving", "labels": {"team": "search"}},
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
                "workerGroupSpecs": [worker_group(i, 1 if i % 2 else 0) for i in range(groups)],
            },
        },
    }
    return CRDDefaults.packaged().apply(raw)


def bodies() -> dict[str, bytes]:
    return {
        "validate-typical": json.dumps(review(rayservice(2))).encode(),
        "validate-100-groups": json.dumps(review(rayservice(100))).encode(),
        "mutate-worker-pod": json.dumps(review(ray_pod())).encode(),
    }
