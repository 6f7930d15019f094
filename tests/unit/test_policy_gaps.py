"""Issue 13, policy gaps: what an object could do to reach GPUs or escape the rules, and the verdicts.

Every case here was allowed before the change (checked against the previous commit).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.builders import GPU, TOLERATE, W0, check, container, found, gpu_worker, service, validate
from tests.reviews import review
from webhook.evaluation import Mode

NVD = "NVIDIA_VISIBLE_DEVICES"


def cpu_worker(env: list[dict[str, Any]] | None = None, env_from: list[dict[str, Any]] | None = None,
               **spec: Any) -> dict[str, Any]:  # fmt: skip
    c = container()
    if env is not None:
        c["env"] = env
    if env_from is not None:
        c["envFrom"] = env_from
    return {"groupName": "cpu", "template": {"spec": {"containers": [c], **spec}}}


class TestVisibleDevicesFromSourcesTheWebhookCannotRead:
    @pytest.mark.parametrize(
        "source",
        [
            {"fieldRef": {"fieldPath": "metadata.annotations['gpus']"}},
            {"resourceFieldRef": {"resource": "limits.cpu"}},
            {"configMapKeyRef": {"name": "gpus", "key": "visible"}},
            {"secretKeyRef": {"name": "gpus", "key": "visible"}},
        ],
    )
    def test_value_from_is_denied(self, source: dict[str, Any]) -> None:
        obj = service([cpu_worker([{"name": NVD, "valueFrom": source}])])
        assert found(obj, "nvidia-visible-devices") == [("deny", f"{W0}.template.spec.containers[0].env[0].valueFrom")]
        (v,) = [v for v in check(obj) if v.rule == "nvidia-visible-devices"]
        assert "cannot read" in v.message

    def test_value_from_in_a_container_with_gpu_limits_is_its_own_business(self) -> None:
        c = container(**GPU)
        c["env"] = [{"name": NVD, "valueFrom": {"configMapKeyRef": {"name": "gpus", "key": "visible"}}}]
        assert found(service([gpu_worker(c, **TOLERATE)]), "nvidia-visible-devices") == []

    @pytest.mark.parametrize("prefix", ["NVIDIA_", "NVIDIA_VISIBLE_", "N"])
    def test_env_from_with_a_prefix_that_begins_the_name_is_denied(self, prefix: str) -> None:
        obj = service([cpu_worker(env_from=[{"prefix": prefix, "configMapRef": {"name": "settings"}}])])
        assert found(obj, "nvidia-visible-devices") == [("deny", f"{W0}.template.spec.containers[0].envFrom[0].prefix")]

    def test_env_from_with_an_unrelated_prefix_is_fine(self) -> None:
        obj = service([cpu_worker(env_from=[{"prefix": "APP_", "configMapRef": {"name": "settings"}}], **TOLERATE)])
        assert found(obj, "nvidia-visible-devices") == []

    def test_env_from_without_prefix_warns_only_where_the_pod_can_reach_gpu_nodes(self) -> None:
        sources = [{"secretRef": {"name": "credentials"}}]
        assert found(service([cpu_worker(env_from=sources)]), "nvidia-visible-devices") == []
        on_gpu_nodes = service([cpu_worker(env_from=sources, **TOLERATE)])
        assert found(on_gpu_nodes, "nvidia-visible-devices") == [
            ("warn", f"{W0}.template.spec.containers[0].envFrom[0]")
        ]
        selected = service([cpu_worker(env_from=sources, nodeSelector={"nvidia.com/gpu.present": "true"})])
        assert ("warn", f"{W0}.template.spec.containers[0].envFrom[0]") in found(selected, "nvidia-visible-devices")

    def test_an_explicit_env_entry_wins_over_env_from(self) -> None:
        """Kubernetes: a variable in env takes precedence over the same key from envFrom."""
        obj = service(
            [cpu_worker([{"name": NVD, "value": "void"}], [{"prefix": "NVIDIA_", "configMapRef": {"name": "x"}}])]
        )
        assert found(obj, "nvidia-visible-devices") == []


def with_init(init: dict[str, Any], primary: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"containers": [primary or container()], "initContainers": [init], **TOLERATE}
    return service([{"groupName": "g", "template": {"spec": spec}}])


class TestInitContainersAndSidecars:
    def test_fractional_gpu_in_an_init_container(self) -> None:
        init = container("init", limits={"nvidia.com/gpu": "0.5"}, requests={"nvidia.com/gpu": "0.5"})
        obj = with_init(init)
        assert ("deny", f"{W0}.template.spec.initContainers[0].resources.limits[nvidia.com/gpu]") in found(
            obj, "gpu-whole-number"
        )

    def test_a_native_sidecar_holding_gpus_is_denied(self) -> None:
        sidecar = {**container("side", **GPU), "restartPolicy": "Always"}
        obj = with_init(sidecar)
        assert found(obj, "gpu-on-primary-container") == [("deny", f"{W0}.template.spec.initContainers[0].resources")]
        # The GPUs count for placement too: the template asks for GPUs, so it must tolerate the taint.
        untolerated = copy.deepcopy(obj)
        del untolerated["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["tolerations"]
        assert found(untolerated, "gpu-toleration") == [("warn", f"{W0}.template.spec.tolerations")]

    def test_an_init_container_with_more_gpus_than_ray_reads_warns(self) -> None:
        init = container("warmup", **GPU)
        obj = with_init(init)
        assert found(obj, "gpu-on-primary-container") == [("warn", f"{W0}.template.spec.initContainers[0].resources")]
        # The same GPUs on containers[0] as well: the init container hands them over, nothing is wasted.
        both = with_init(init, container(**GPU))
        assert found(both, "gpu-on-primary-container") == []


def rayjob(submitter_spec: dict[str, Any] | None) -> dict[str, Any]:
    obj = service([{}])
    spec = obj["spec"]["rayClusterConfig"]
    job: dict[str, Any] = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "job", "namespace": "ml"},
        "spec": {"entrypoint": "python main.py", "submissionMode": "K8sJobMode", "rayClusterSpec": spec},
    }
    if submitter_spec is not None:
        job["spec"]["submitterPodTemplate"] = {"spec": submitter_spec}
    return job


class TestRayJobSubmitter:
    """The submitter pod is a component of the RayJob definition (docs/samples/rayjob.yaml), no code of its own."""

    def test_submitter_gpu_quantities_are_checked(self) -> None:
        submitter = {"restartPolicy": "Never", "containers": [container(limits={"nvidia.com/gpu": "0.5"})]}
        obj = rayjob(submitter)
        assert found(obj, "gpu-whole-number") == [
            ("deny", "spec.submitterPodTemplate.spec.containers[0].resources.limits[nvidia.com/gpu]")
        ]

    def test_submitter_placement_and_visible_devices(self) -> None:
        c = container()
        c["env"] = [{"name": NVD, "value": "all"}]
        submitter = {"containers": [c], "nodeSelector": {"nvidia.com/gpu.present": "true"}}
        obj = rayjob(submitter)
        assert found(obj, "nvidia-visible-devices") == [
            ("deny", "spec.submitterPodTemplate.spec.containers[0].env[0].value")
        ]
        assert found(obj, "gpu-node-selector") == [("warn", "spec.submitterPodTemplate.spec")]

    def test_no_template_nothing_to_check(self) -> None:
        assert check(rayjob(None)) == []
        assert check(rayjob({"containers": [container()]})) == []


class TestQuantitiesInRules:
    def test_28_digit_rounding_does_not_pass_as_whole(self) -> None:
        value = "3.0000000000000000000000000001"
        c = container(limits={"nvidia.com/gpu": value}, requests={"nvidia.com/gpu": value})
        assert found(service([gpu_worker(c, **TOLERATE)]), "gpu-whole-number") == [
            ("deny", f"{W0}.template.spec.containers[0].resources.limits[nvidia.com/gpu]"),
            ("deny", f"{W0}.template.spec.containers[0].resources.requests[nvidia.com/gpu]"),
        ]

    def test_an_absurd_exponent_is_a_denial_not_an_internal_error(self) -> None:
        c = container(limits={"nvidia.com/gpu": "1e1000000000"}, requests={"nvidia.com/gpu": "1e1000000000"})
        body = validate(review(service([gpu_worker(c, **TOLERATE)])))
        assert body["response"]["allowed"] is False
        assert "gpu-whole-number" in body["response"]["status"]["message"]


class TestUnreadableObjectsAreNotWavedThrough:
    """An object must not switch the rules off by making itself unreadable."""

    def many_groups(self, count: int) -> dict[str, Any]:
        broken = {"replicas": 10, "maxReplicas": 5}  # would be denied on its own
        return service([{"groupName": f"g{i}", **(broken if i == count - 1 else {})} for i in range(count)])

    def test_the_result_cap_denies_in_enforce_mode_and_says_why(self) -> None:
        body = validate(review(self.many_groups(1000)), Mode.ENFORCE)
        response = body["response"]
        assert response["allowed"] is False
        message = response["status"]["message"]
        assert "definition-resolution" in message
        assert "cannot read this object" in message and "1000" in message

    def test_audit_mode_still_only_warns(self) -> None:
        response = validate(review(self.many_groups(1000)), Mode.AUDIT)["response"]
        assert response["allowed"] is True
        assert any("cannot read this object" in w for w in response["warnings"])

    def test_just_below_the_cap_every_rule_runs(self) -> None:
        violations = check(self.many_groups(999))
        assert [v.rule for v in violations] == ["replicas-within-bounds"]

    def test_an_empty_group_name_denies(self) -> None:
        obj = service([{"groupName": ""}, {"groupName": "ok", "replicas": 10, "maxReplicas": 5}])
        response = validate(review(obj))["response"]
        assert response["allowed"] is False
        assert "instance id path contained empty string values" in response["status"]["message"]
