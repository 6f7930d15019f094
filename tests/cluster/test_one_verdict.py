"""The webhook, `check` and `audit` give one verdict: every corpus object and broken variants of them,
stored as an API server stores them (CRD defaults applied), answered the same way by all three.

UPDATE: `check` and `audit` judge an object as it is (as a CREATE would); the webhook's UPDATE
leniency comes from the same `Evaluator.verdict(obj, old=...)` that the others call.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.emulator import EmulatedCluster
from tests.corpus import ray_objects
from tests.reviews import review
from webhook.admission import Admission, parse_review
from webhook.cli import main
from webhook.config import Config, build_evaluator
from webhook.evaluation import Mode
from webhook.kube.defaults import CRDDefaults

Variant = Callable[[dict[str, Any]], None]


def _workers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj["spec"]
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
    return cluster.setdefault("workerGroupSpecs", [])  # type: ignore[no-any-return]


def _above_max(obj: dict[str, Any]) -> None:
    _workers(obj)[0].update(replicas=10, minReplicas=0, maxReplicas=5)


def _fractional_gpu(obj: dict[str, Any]) -> None:
    container = _workers(obj)[0]["template"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"nvidia.com/gpu": "0.5"}}


def _duplicate_group(obj: dict[str, Any]) -> None:
    groups = _workers(obj)
    groups.append(copy.deepcopy(groups[0]))


def _gpu_on_head(obj: dict[str, Any]) -> None:
    spec = obj["spec"]
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
    cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": 1}}


VARIANTS: dict[str, Variant] = {
    "above-max": _above_max,
    "fractional-gpu": _fractional_gpu,
    "duplicate-group": _duplicate_group,
    "gpu-on-head": _gpu_on_head,
}


def _objects() -> list[dict[str, Any]]:
    """Corpus objects and their broken variants, each as the API server stores it, uniquely named."""
    defaults = CRDDefaults.packaged()
    objects: list[dict[str, Any]] = []
    for index, (_, sample) in enumerate(ray_objects()):
        candidates = [("", sample)]
        if index % 5 == 0 and _workers(copy.deepcopy(sample)):
            for name, variant in VARIANTS.items():
                changed = copy.deepcopy(sample)
                variant(changed)
                candidates.append((f"-{name}", changed))
        for suffix, candidate in candidates:
            obj = defaults.apply(candidate)
            obj["metadata"] = {"name": f"o{len(objects)}{suffix}", "namespace": f"ns{index % 3}"}
            objects.append(obj)
    return objects


@pytest.fixture(scope="module")
def stored() -> Iterator[tuple[EmulatedCluster, list[dict[str, Any]]]]:
    with EmulatedCluster() as cluster:
        yield cluster, [cluster.create(obj) for obj in _objects()]


def _key(kind: str, namespace: str, name: str) -> tuple[str, str, str]:
    return (kind, namespace, name)


def _result_of(entry: dict[str, Any]) -> tuple[bool, list[tuple[str, str, str, str]]]:
    return entry["allowed"], [(v["rule"], v["severity"], v["path"], v["message"]) for v in entry["violations"]]


def test_webhook_check_and_audit_agree_on_every_object(
    stored: tuple[EmulatedCluster, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, objects = stored
    assert main(["audit", "-o", "json", "--kubeconfig", str(cluster.kubeconfig(tmp_path))]) == 1
    audited = {_key(r["kind"], r["namespace"], r["name"]): _result_of(r) for r in json.loads(capsys.readouterr().out)}

    manifests = tmp_path / "objects.yaml"
    manifests.write_text(yaml.safe_dump_all(objects))
    assert main(["check", "-o", "json", str(manifests)]) == 1
    checked = {_key(r["kind"], r["namespace"], r["name"]): _result_of(r) for r in json.loads(capsys.readouterr().out)}

    admission = Admission.for_config(Config())
    answered = {}
    for obj in objects:
        response = admission.validate(parse_review(review(obj)), Mode.ENFORCE).response["response"]
        meta = obj["metadata"]
        answered[_key(obj["kind"], meta["namespace"], meta["name"])] = response["allowed"]

    assert len(audited) == len(checked) == len(answered) == len(objects)
    assert audited == checked
    assert {k: allowed for k, (allowed, _) in checked.items()} == answered
    outcomes = {allowed for allowed, _ in checked.values()}
    assert outcomes == {True, False}  # the variants really are denied, the corpus allowed


def test_update_leniency_is_the_evaluators_own() -> None:
    """An object admitted before the webhook (above its maximum) stays editable, but not made worse."""
    (_, sample), *_ = ray_objects()
    old = CRDDefaults.packaged().apply(sample)
    _above_max(old)
    relabelled = copy.deepcopy(old)
    relabelled["metadata"].setdefault("labels", {})["team"] = "ml"
    worse = copy.deepcopy(old)
    _workers(worse)[0]["replicas"] = 20
    admission = Admission.for_config(Config())
    evaluator = build_evaluator(Config())
    for new, allowed in ((relabelled, True), (worse, False)):
        body = review(new, operation="UPDATE", old=old)
        response = admission.validate(parse_review(body)).response["response"]
        verdict = evaluator.verdict(new, old=old)
        assert verdict is not None
        assert response["allowed"] is verdict.allowed is allowed
        warnings = [w for w in response.get("warnings", []) if "already present" in w]
        assert bool(warnings) is allowed
    # As a CREATE (what check and audit judge), the old object itself is denied.
    created = evaluator.verdict(old)
    assert created is not None and not created.allowed
