"""The Kubernetes objects shown in the docs work with what the chart installs (issue 13).

docs/cluster.md's audit CronJob used to live in another namespace than the chart's ConfigMap it
mounts, which a pod cannot do (checked: this test failed on the previous commit).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from .helm import NAMESPACE, RELEASE, ROOT, Helm

README_INSTALL = f"helm install {RELEASE} charts/karta-admission -n {NAMESPACE} --create-namespace"


def yaml_blocks(path: Path) -> list[Any]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.DOTALL)]


def test_the_audit_cronjob_mounts_the_charts_configmap_from_its_own_namespace(helm: Helm) -> None:
    assert README_INSTALL in (ROOT / "README.md").read_text()  # the release and namespace the docs assume
    (cronjob,) = [b for b in yaml_blocks(ROOT / "docs" / "cluster.md") if isinstance(b, dict) and
                  b.get("kind") == "CronJob"]  # fmt: skip
    kubernetes_validate.validate(cronjob, kubernetes_validate.latest_version(), strict=True)
    rendered = helm.render()
    namespace = cronjob["metadata"]["namespace"]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_file = container["args"][container["args"].index("--config") + 1]
    for volume in pod["volumes"]:
        if "configMap" not in volume:
            continue
        name = volume["configMap"]["name"]
        matches = [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"] == name]
        assert matches, f"the chart renders no ConfigMap {name}"
        (configmap,) = matches
        assert configmap["metadata"]["namespace"] == namespace, "a pod mounts ConfigMaps of its own namespace only"
        directory = mounts[volume["name"]]
        assert config_file.startswith(directory + "/")
        assert config_file.removeprefix(directory + "/") in configmap["data"]
