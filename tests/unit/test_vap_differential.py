"""Differential test: the exported ValidatingAdmissionPolicies decide like `check` (Evaluator.verdict).

On every KubeRay sample, every case of the ported KubeRay validation table the API server would store,
objects built like the rule tests', and generated objects: the same verdict and the same (rule,
severity) findings for every rule the policies cover, and no expression that fails to evaluate.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import strategies
from tests.builders import GPU, TOLERATE, container, gpu_worker, service
from tests.corpus import ray_object_params
from tests.kuberay_table import load_cases
from tests.vapdiff import admitted_form, compiled, policy_outcome, webhook_outcome

SEVERITY_CONFIG = json.dumps(
    {"rules": {"gpu-on-head": "deny", "replicas-within-bounds": "warn", "gpu-toleration": "off"}}
)


def agree(obj: dict[str, Any], old: dict[str, Any] | None = None, config: str = "{}") -> None:
    setup = compiled(config)
    got = policy_outcome(setup.exported, obj, old)
    want = webhook_outcome(setup, obj, old)
    assert got.errors == (), got.errors
    assert sorted(got.findings) == sorted(want.findings), (obj.get("metadata"), got, want)
    assert got.denied == want.denied


@pytest.mark.parametrize(("file", "obj"), ray_object_params())
def test_kuberay_samples(file: str, obj: dict[str, Any]) -> None:
    admitted = admitted_form(obj)
    assert admitted is not None, f"{file}: a KubeRay sample the API server would refuse"
    agree(admitted)


def _table_params() -> list[Any]:
    """The table's cases the API server admits (the others it refuses before any admission policy runs)."""
    return [pytest.param(case.obj, id=case.id) for case in load_cases() if admitted_form(case.obj) is not None]


def test_the_table_cases_left_out_are_those_the_api_server_refuses() -> None:
    assert len(load_cases()) - len(_table_params()) == 23


@pytest.mark.parametrize("obj", _table_params())
def test_kuberay_validation_table(obj: dict[str, Any]) -> None:
    admitted = admitted_form(obj)
    assert admitted is not None
    agree(admitted)


def _gpu(**resources: Any) -> dict[str, Any]:
    return container(**resources)


def job(
    workers: list[dict[str, Any]] | None = None,
    *,
    cluster: dict[str, Any] | None = None,
    head: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A RayJob around the cluster spec service() builds."""
    cluster_spec = service(workers or [{}], head=head, **(cluster or {}))["spec"]["rayClusterConfig"]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "job", "namespace": "ml"},
        "spec": {"entrypoint": "python main.py", "rayClusterSpec": cluster_spec, **spec},
    }


def cluster(workers: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None, **config: Any):
    """A RayCluster with the cluster spec service() builds."""
    metadata: dict[str, Any] = {"name": "rc", "namespace": "ml", **({"labels": labels} if labels else {})}
    spec = service(workers or [{}], **config)["spec"]["rayClusterConfig"]
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": metadata, "spec": spec}


def with_value(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    *parents, last = path.split(".")
    holder = changed
    for part in parents:
        holder = holder[part]
    holder[last] = value
    return changed


V2_ENV = {"name": "RAY_enable_autoscaler_v2", "value": "true"}

# Objects built like tests/unit/test_rules.py builds them: one or more findings of every covered rule.
RULE_OBJECTS: dict[str, dict[str, Any]] = {
    "clean": service([{}]),
    "above-max": service([{"replicas": 10, "maxReplicas": 5}]),
    "below-min": service([{"replicas": 1, "minReplicas": 2}]),
    "zero-replicas": service([{"replicas": 0, "minReplicas": 1}]),
    "suspended": service([{"replicas": 10, "maxReplicas": 5, "suspend": True}]),
    "negative-max": service([{"replicas": 0, "minReplicas": 0, "maxReplicas": -1}]),
    "negative-replicas": service([{"replicas": -1, "minReplicas": 1}]),
    "autoscaler-owns": service([{"replicas": 10, "maxReplicas": 5}], enableInTreeAutoscaling=True),
    "multi-host": service([{"replicas": 3, "maxReplicas": 2, "numOfHosts": 4}]),
    "min-above-max": service([{"replicas": 3, "minReplicas": 4, "maxReplicas": 2}]),
    "negative-min": service([{"replicas": -1, "minReplicas": -2, "maxReplicas": 5}]),
    "no-hosts": service([{"numOfHosts": 0}]),
    "duplicate-names": service([{"groupName": "a"}, {"groupName": "b"}, {"groupName": "a"}]),
    "bad-label": service([{"groupName": "GPU group!"}]),
    "long-label": service([{"groupName": "a" * 64}]),
    "empty-name": service([{"groupName": ""}]),
    "reserved": service([{"groupName": "headgroup"}]),
    "no-containers": service([{"template": {"spec": {"containers": []}}}]),
    "half-gpu": service([gpu_worker(container(limits={"nvidia.com/gpu": "0.5"}), **TOLERATE)]),
    "negative-gpu": service([gpu_worker(container(limits={"nvidia.com/gpu": "-1"}), **TOLERATE)]),
    "milli-gpu": service([gpu_worker(container(limits={"nvidia.com/gpu": "1500m"}), **TOLERATE)]),
    "int-gpu": service([gpu_worker(container(limits={"nvidia.com/gpu": 2}), **TOLERATE)]),
    "request-only": service([gpu_worker(container(requests={"nvidia.com/gpu": "1"}))]),
    "request-differs": service(
        [gpu_worker(container(requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "2"}), **TOLERATE)]
    ),
    "equal-spelled-apart": service(
        [gpu_worker(container(requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "1000m"}), **TOLERATE)]
    ),
    "gpu-on-sidecar": service([gpu_worker(container("ray"), container("sidecar", **GPU), **TOLERATE)]),
    "gpu-on-head": service([{}], head=[container("head", **GPU)]),
    "two-vendors": service([gpu_worker(container(limits={"nvidia.com/gpu": "1", "amd.com/gpu": "1"}), **TOLERATE)]),
    "mig": service([gpu_worker(container(limits={"nvidia.com/gpu": "1", "nvidia.com/mig-1g.10gb": "1"}), **TOLERATE)]),
    "visible-devices": service(
        [gpu_worker({**container(), "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]})]
    ),
    "visible-devices-void": service(
        [gpu_worker({**container(), "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": " VOID "}]})]
    ),
    "visible-devices-from": service(
        [
            gpu_worker(
                {
                    **container(),
                    "env": [
                        {"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
                    ],
                }
            )
        ]
    ),
    "env-from-prefix": service(
        [gpu_worker({**container(), "envFrom": [{"prefix": "NVIDIA_", "configMapRef": {"name": "c"}}]})]
    ),
    "env-from-gpu-node": service(
        [gpu_worker({**container(), "envFrom": [{"configMapRef": {"name": "c"}}]}, **TOLERATE)]
    ),
    "env-from-cpu-node": service([gpu_worker({**container(), "envFrom": [{"configMapRef": {"name": "c"}}]})]),
    "selects-gpu-nodes": service([gpu_worker(container(), nodeSelector={"nvidia.com/gpu.product": "A100"})]),
    "affinity-gpu-nodes": service(
        [
            gpu_worker(
                container(),
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "Exists"}]}
                            ]
                        }
                    }
                },
            )
        ]
    ),
    "no-toleration": service([gpu_worker(container(**GPU))]),
    "tolerate-all": service([gpu_worker(container(**GPU), tolerations=[{"operator": "Exists"}])]),
    "init-gpu": service(
        [
            gpu_worker(
                container("ray", **GPU), **TOLERATE, initContainers=[container("init", limits={"nvidia.com/gpu": "2"})]
            )
        ]
    ),
    "native-sidecar": service(
        [
            gpu_worker(
                container("ray", **GPU),
                **TOLERATE,
                initContainers=[{**container("side", **GPU), "restartPolicy": "Always"}],
            )
        ]
    ),
    "nested-upgrade": service([{}], upgradeStrategy={"type": "Recreate"}),
    "suspend-autoscaler": service([{"suspend": True}], enableInTreeAutoscaling=True),
    "pod-name": service([{"groupName": "GPU_group"}]),
    "autoscaler-options": service(
        [{}], autoscalerOptions={"idleTimeoutSeconds": -1, "env": [{"name": "KUBERAY_GEN_AUTOSCALER_START_CMD"}]}
    ),
    "long-name": {**service([{}]), "metadata": {"name": "x" * 50, "namespace": "ml"}},
    "resources-conflict": service([{"rayStartParams": {"num-cpus": "2"}, "resources": {"CPU": "2"}}]),
    "resources-alone": service([{"resources": {"CPU": "2"}}]),
    "group-labels": service([{"labels": {"ray.io/zone": "a b", "-bad": "x", "example.com/": "y", "ok/k": "v"}}]),
    "ray-start-labels": service([{"rayStartParams": {"labels": "a=b"}}]),
    "idle-timeout-v1": service([{"idleTimeoutSeconds": 60}], enableInTreeAutoscaling=True),
    "idle-timeout-negative": service(
        [{"idleTimeoutSeconds": -1}], enableInTreeAutoscaling=True, autoscalerOptions={"version": "v2"}
    ),
    "idle-timeout-v2-env": service(
        [{"idleTimeoutSeconds": 60}], head=[{**container("head"), "env": [V2_ENV]}], enableInTreeAutoscaling=True
    ),
    "v2-env-without-autoscaler": service([{}], head=[{**container("head"), "env": [V2_ENV]}]),
    "v2-env-and-version": service(
        [{}],
        head=[{**container("head"), "env": [V2_ENV]}],
        enableInTreeAutoscaling=True,
        autoscalerOptions={"version": "v2"},
    ),
    "restart-policy-v2": service(
        [{"template": {"spec": {"containers": [container()], "restartPolicy": "Always"}}}],
        enableInTreeAutoscaling=True,
        autoscalerOptions={"version": "v2"},
    ),
    "restart-policy-v1": service(
        [{"template": {"spec": {"containers": [container()], "restartPolicy": "OnFailure"}}}],
        enableInTreeAutoscaling=True,
    ),
    "cluster-created-by-job": cluster(
        labels={"ray.io/originated-from-crd": "RayJob"}, upgradeStrategy={"type": "Recreate"}
    ),
    "job-clean": job(),
    "job-gpu-on-head": job(head=[container("head", **GPU)]),
    "job-sidecar-restart": with_value(
        job(submissionMode="SidecarMode"), "spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy", "Always"
    ),
    "job-limits": job(activeDeadlineSeconds=0, backoffLimit=-1),
    "job-selector-unnamed": {**job(), "spec": {"entrypoint": "x", "clusterSelector": {"team": "a"}}},
    "job-no-cluster": {**job(), "spec": {"entrypoint": "x"}},
    "job-suspend": job(suspend=True),
    "job-suspend-selector": {
        **job(),
        "spec": {
            "entrypoint": "x",
            "suspend": True,
            "shutdownAfterJobFinishes": True,
            "clusterSelector": {"ray.io/cluster": "c"},
        },
    },
    "job-ttl": job(ttlSecondsAfterFinished=60),
    "job-ttl-negative": job(ttlSecondsAfterFinished=-5, shutdownAfterJobFinishes=True),
    "job-sidecar": job(submissionMode="SidecarMode", submitterConfig={"backoffLimit": 1}),
    "job-interactive-backoff": job(submissionMode="InteractiveMode", backoffLimit=2),
}


@pytest.mark.parametrize("name", sorted(RULE_OBJECTS))
def test_rule_objects(name: str) -> None:
    admitted = admitted_form(RULE_OBJECTS[name])
    assert admitted is not None, name
    agree(admitted)


@pytest.mark.parametrize("name", sorted(RULE_OBJECTS))
def test_rule_objects_with_configured_severities(name: str) -> None:
    admitted = admitted_form(RULE_OBJECTS[name])
    assert admitted is not None
    agree(admitted, config=SEVERITY_CONFIG)


@pytest.mark.parametrize("name", sorted(RULE_OBJECTS))
def test_updates_that_keep_spec_labels_and_annotations(name: str) -> None:
    """Finalizers or status change: the deny findings already there only warn, in both."""
    admitted = admitted_form(RULE_OBJECTS[name])
    assert admitted is not None
    new = copy.deepcopy(admitted)
    new["metadata"]["finalizers"] = ["ray.io/example"]
    agree(new, old=admitted)


def test_the_rule_objects_exercise_every_covered_rule() -> None:
    setup = compiled()
    seen = set()
    for obj in RULE_OBJECTS.values():
        admitted = admitted_form(obj)
        assert admitted is not None
        seen |= {rule for rule, _ in policy_outcome(setup.exported, admitted).findings}
    covered_for_rayservice = set(next(d for d in setup.exported.definitions if "rayservice" in d.definition).covered)
    missing = (
        covered_for_rayservice - seen - {"definition-resolution", "ray-cluster-upgrade-strategy", "ray-job-limits"}
    )
    assert not missing


COUNTS = st.integers(-3, 12) | st.just(2147483647)


@st.composite
def stored_ray_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Generated Ray objects the CRD schema accepts far more often than tests.strategies' (which also
    makes the API server refuse them): integer counts, optional suspension and autoscaling, GPU pods."""
    obj = draw(strategies.ray_objects())
    spec = obj["spec"]
    cluster_spec = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
    for group in cluster_spec["workerGroupSpecs"]:
        for key in ("replicas", "minReplicas", "maxReplicas", "numOfHosts"):
            if key in group or key in {"minReplicas", "maxReplicas"}:
                group[key] = draw(COUNTS)
        if draw(st.booleans()):
            group["suspend"] = draw(st.booleans())
    return obj


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(strategies.ray_objects() | stored_ray_objects(), st.booleans())
def test_generated_objects(obj: dict[str, Any], update: bool) -> None:
    admitted = admitted_form(obj)
    if admitted is None:
        return
    if update:
        new = copy.deepcopy(admitted)
        new["metadata"].setdefault("labels", {})
        new["metadata"]["finalizers"] = ["x/y"]
        agree(new, old=admitted)
    else:
        agree(admitted)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(stored_ray_objects(), stored_ray_objects())
def test_generated_updates_agree_where_the_webhook_demotes_nothing(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    """Any update: the same outcome whenever the webhook's leniency does not apply (docs/vap.md)."""
    old, new = admitted_form(before), admitted_form({**after, "kind": before["kind"], "metadata": before["metadata"]})
    if old is None or new is None:
        return
    setup = compiled()
    verdict = setup.evaluator.verdict(new, old=old)
    assert verdict is not None
    if any(v.message.endswith("(already present before this update)") for v in verdict.violations):
        return
    agree(new, old=old)


def test_the_documented_update_difference() -> None:
    """A spec change that keeps an old violation as it was: the webhook warns, the policies deny."""
    old = admitted_form(RULE_OBJECTS["above-max"])
    assert old is not None
    new = copy.deepcopy(old)
    new["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = "ray:2.53.0"
    setup = compiled()
    assert webhook_outcome(setup, new, old).findings == {("replicas-within-bounds", "warn")}
    assert policy_outcome(setup.exported, new, old).findings == {("replicas-within-bounds", "deny")}
