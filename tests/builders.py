"""Builders the tests share: Ray objects as the API server stores them, Karta definitions, and the
webhook's core and HTTP app set up as the server sets them up."""

from __future__ import annotations

from typing import Any

from webhook.admission import Admission, parse_review
from webhook.config import build_evaluator, parse_config
from webhook.evaluation import Mode
from webhook.karta.registry import DefinitionSet
from webhook.policy.model import Violation
from webhook.server.app import ServerState, create_app

INT32_MAX = 2**31 - 1


def container(name: str = "ray", /, **resources: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "rayproject/ray:2.52.0"}
    if resources:
        c["resources"] = resources
    return c


def service(
    workers: list[dict[str, Any]], *, head: list[dict[str, Any]] | None = None, **config: Any
) -> dict[str, Any]:
    """A RayService as the API server stores it (CRD defaults filled in)."""
    groups = []
    for w in workers:
        group = {"groupName": "small", "replicas": 1, "minReplicas": 0, "maxReplicas": 5, "numOfHosts": 1,
                 "rayStartParams": {}, "template": {"spec": {"containers": [container()]}}}  # fmt: skip
        group.update(w)
        groups.append(group)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "svc", "namespace": "ml"},
        "spec": {
            "rayClusterConfig": {
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [container("head")] if head is None else head}},
                },
                "workerGroupSpecs": groups,
                **config,
            }
        },
    }


def gpu_worker(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"groupName": "gpu", "template": {"spec": {"containers": list(containers), **spec}}}


def check(obj: dict[str, Any], config: dict[str, Any] | None = None) -> list[Violation]:
    evaluator = build_evaluator(parse_config(config or {}, "test"), DefinitionSet.builtin())
    verdict = evaluator.verdict(obj)
    assert verdict is not None
    return list(verdict.violations)


def found(obj: dict[str, Any], rule: str, config: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    return [(str(v.severity), v.path) for v in check(obj, config) if v.rule == rule]


GPU = {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}


TOLERATE = {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}


W0 = "spec.rayClusterConfig.workerGroupSpecs[0]"


def minimal() -> dict[str, Any]:
    return {
        "apiVersion": "run.ai/v1alpha1",
        "kind": "Karta",
        "metadata": {"name": "example"},
        "spec": {
            "structureDefinition": {
                "rootComponent": {
                    "name": "job",
                    "kind": {"group": "example.com", "version": "v1", "kind": "Job"},
                    "statusDefinition": {"statusMappings": {"running": [{"byPhase": "Running"}]}},
                },
                "childComponents": [
                    {
                        "name": "worker",
                        "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "ownerRef": "job",
                        "instanceIdPath": ".spec.groups[]?.name",
                        "specDefinition": {"podTemplateSpecPath": ".spec.groups[]?.template"},
                        "scaleDefinition": {"replicasPath": ".spec.groups[]?.replicas"},
                        "podSelector": {
                            "componentTypeSelector": {"keyPath": '.metadata.labels["role"]', "value": "worker"},
                            "componentInstanceSelector": {"idPath": '.metadata.labels["group"]'},
                        },
                    }
                ],
            },
            "optimizationInstructions": {
                "gangScheduling": {
                    "podGroups": [
                        {
                            "name": "all",
                            "members": [{"componentName": "job", "groupByKeyPaths": ['.metadata.labels["job"]']}],
                        }
                    ]
                }
            },
        },
    }


def children(d: dict[str, Any]) -> list[dict[str, Any]]:
    return d["spec"]["structureDefinition"]["childComponents"]  # type: ignore[no-any-return]


def root(d: dict[str, Any]) -> dict[str, Any]:
    return d["spec"]["structureDefinition"]["rootComponent"]  # type: ignore[no-any-return]


def client(
    config: dict[str, Any] | None = None, admission_class: type[Admission] = Admission, readiness: Any = ()
) -> Any:
    settings = parse_config(config or {}, "t")
    admission = admission_class(build_evaluator(settings, DefinitionSet.builtin()), settings.gang)
    app = create_app(ServerState(settings, admission, list(readiness)))
    return app.test_client()


def admission(config: dict[str, Any] | None = None, owners: Any = None) -> Admission:
    return Admission.for_config(parse_config(config or {}, "test"), DefinitionSet.builtin(), owners)


def validate(body: dict[str, Any], mode: Mode | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return admission(config).validate(parse_review(body), mode).response


def kuberay_desired_pods(group: dict[str, Any]) -> int:
    """KubeRay's GetWorkerGroupDesiredReplicas × numOfHosts (reference/kuberay.md §3), from the raw group."""
    if group.get("suspend") is True:
        return 0
    low = group.get("minReplicas", 0)
    high = group.get("maxReplicas", INT32_MAX)
    replicas = group.get("replicas")
    if replicas is None or replicas < low:
        replicas = low
    elif replicas > high:
        replicas = high
    return int(min(replicas * group.get("numOfHosts", 1), INT32_MAX))
