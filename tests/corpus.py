"""KubeRay's own sample manifests (tests/data/corpus/kuberay), the real inputs the product must handle.

Copied unchanged from KubeRay (Apache-2.0; LICENSE and SOURCE.md beside them) so a fresh clone runs
every test. `KARTA_CORPUS` points the tests at another copy, e.g. a newer KubeRay checkout's samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("KARTA_CORPUS", ROOT / "tests" / "data" / "corpus" / "kuberay"))
SCHEDULER_CRDS = ROOT / "tests" / "data" / "corpus" / "schedulers"
RAY_KINDS = frozenset({"RayService", "RayCluster", "RayJob"})
# Ray objects in the corpus (82 sample files hold 82 Ray objects; SOURCE.md there lists them).
EXPECTED_RAY_OBJECTS = 82


def sample_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*.yaml") if "crd" not in p.relative_to(CORPUS).parts)


def ray_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file relative to the corpus, object) for every RayService, RayCluster and RayJob."""
    for path in sample_files():
        with path.open() as handle:
            for document in yaml.safe_load_all(handle):
                if (
                    isinstance(document, dict)
                    and document.get("apiVersion") == "ray.io/v1"
                    and document.get("kind") in RAY_KINDS
                ):
                    yield str(path.relative_to(CORPUS)), document


def ray_object_params() -> list[Any]:
    """pytest params, one per corpus object, with a readable id."""
    return [
        pytest.param(f, o, id=f"{f}:{o['metadata'].get('name') or o['metadata'].get('generateName')}")
        for f, o in ray_objects()
    ]
