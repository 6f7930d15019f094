"""`karta-admission gang`: the offline preview, on KubeRay's own samples, with the server's code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.builders import kuberay_desired_pods
from tests.corpus import CORPUS, ray_objects, sample_files
from tests.crds import all_problems
from tests.gang import Gangs, config, mutate, pod_from, raycluster, worker
from webhook.cli import main

ENTRY_KEYS = {"file", "kind", "name", "namespace", "scheduler", "objects", "pods", "notes"}
POD_KEYS = {"group", "count", "schedulerName", "labels", "annotations"}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["gang", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def preview(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    code, out, err = run(capsys, "-o", "json", *args)
    assert code == 0, err
    document: list[dict[str, Any]] = json.loads(out)
    return document


def cluster_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj["spec"]
    key = {"RayService": "rayClusterConfig", "RayJob": "rayClusterSpec"}.get(obj["kind"])
    found: dict[str, Any] | None = spec.get(key) if key else spec
    return found


@pytest.mark.parametrize("scheduler", ["coscheduling", "volcano", "kai", "kueue", "yunikorn"])
def test_every_kuberay_sample(capsys: pytest.CaptureFixture[str], scheduler: str) -> None:
    files = [str(p) for p in sample_files()]
    entries = preview(capsys, "--scheduler", scheduler, *files)
    # One entry per RayCluster: each sample's own, or the one its RayService or RayJob creates.
    expected = [(str(CORPUS / f), o) for f, o in ray_objects() if cluster_spec(o) is not None]
    assert len(entries) == len(expected) == 81
    for entry, (file, obj) in zip(entries, expected, strict=True):
        assert set(entry) == ENTRY_KEYS and entry["file"] == file
        assert entry["kind"] == "RayCluster" and entry["scheduler"] == scheduler
        name = obj["metadata"].get("name") or obj["metadata"]["generateName"] + "xxxxx"
        assert entry["name"] == (name if obj["kind"] == "RayCluster" else f"{name}-xxxxx")
        assert entry["namespace"] == obj["metadata"].get("namespace", "default")
        groups = (cluster_spec(obj) or {}).get("workerGroupSpecs") or []
        assert [p["group"] for p in entry["pods"]] == ["headgroup", *(g["groupName"] for g in groups)]
        assert [p["count"] for p in entry["pods"]] == [1, *(kuberay_desired_pods(g) for g in groups)]
        for pod in entry["pods"]:
            assert set(pod) == POD_KEYS
        for group_object in entry["objects"]:
            group_object["metadata"]["ownerReferences"][0]["uid"] = "filled-in-by-the-api-server"
            assert all_problems(group_object) == []
        if scheduler in {"coscheduling", "volcano", "kai"}:
            assert len(entry["objects"]) == 1
            assert all(p["labels"] or p["annotations"] for p in entry["pods"])
        else:
            assert entry["objects"] == []


def test_kueue_preview_says_why_an_autoscaling_cluster_gets_no_keys(capsys: pytest.CaptureFixture[str]) -> None:
    (entry,) = preview(capsys, "--scheduler", "kueue", str(CORPUS / "ray-cluster.autoscaler.yaml"))
    assert all(not p["labels"] and not p["annotations"] for p in entry["pods"])
    assert any("no gang keys: autoscaling" in n and "Kueue's RayCluster integration" in n for n in entry["notes"])


def test_the_preview_is_what_admission_does(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Same code as the server: each group's keys are what /mutate adds to that group's pod."""
    obj = raycluster(worker("cpu", 2, min_replicas=1), worker("gpu", 1), name="demo", namespace="ml")
    del obj["metadata"]["uid"]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(obj))
    for scheduler in ("coscheduling", "volcano", "kai", "kueue", "yunikorn"):
        (entry,) = preview(capsys, "--scheduler", scheduler, str(path))
        cfg = config(scheduler)
        stored = {**obj, "metadata": {**obj["metadata"], "uid": "u-1"}}
        gangs = Gangs(cfg, stored)
        for pod in entry["pods"]:
            admitted, _ = mutate(pod_from(stored, pod["group"]), cfg, gangs)
            before = pod_from(stored, pod["group"])
            added_labels = {
                k: v for k, v in admitted["metadata"]["labels"].items() if k not in before["metadata"]["labels"]
            }
            assert added_labels == pod["labels"], scheduler
            assert (admitted["metadata"].get("annotations") or {}) == pod["annotations"], scheduler
            assert admitted["spec"].get("schedulerName", "default-scheduler") == pod["schedulerName"]


def test_text_output_and_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(
        capsys, str(CORPUS / "ray-service.sample.yaml"), str(CORPUS / "ray-job.use-existing-raycluster.yaml")
    )
    assert code == 0
    assert "RayCluster default/rayservice-sample-xxxxx: scheduler coscheduling" in out
    assert "object  scheduling.x-k8s.io/v1alpha1 PodGroup rayservice-sample-xxxxx: minMember 2" in out
    assert "creates no RayCluster: it runs on an existing RayCluster (clusterSelector)" in out
    assert out.rstrip().endswith("1 Ray cluster: 1 with gang keys")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed")
    code, _, err = run(capsys, str(broken))
    assert code == 2 and "not valid YAML" in err
    code, _, err = run(capsys, str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in err
    code, _, err = run(capsys, "--scheduler", "custom", str(CORPUS / "ray-cluster.sample.yaml"))
    assert code == 2 and "needs gang.custom" in err


def test_config_file_and_scheduler_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    settings = tmp_path / "config.yaml"
    settings.write_text(yaml.safe_dump({"gang": {"scheduler": "volcano", "schedulerName": "volcano-gpu"}}))
    (entry,) = preview(capsys, "--config", str(settings), str(CORPUS / "ray-cluster.sample.yaml"))
    assert entry["scheduler"] == "volcano"
    assert {p["schedulerName"] for p in entry["pods"]} == {"volcano-gpu"}
