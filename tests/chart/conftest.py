from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .cases import VALUE_SETS
from .helm import Helm, HelmNotFound, Rendered, find_helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        binary = find_helm()
    except HelmNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    home: Path = tmp_path_factory.mktemp("helm-home")
    instance = Helm(binary, home)
    version = instance.run("version", "--short")
    assert version.returncode == 0, f"{binary} does not run: {version.stderr}"
    return instance


@pytest.fixture(scope="session")
def render_set(helm: Helm) -> Callable[[str], Rendered]:
    """The chart rendered with one of cases.VALUE_SETS, each rendered once per session."""
    cache: dict[str, Rendered] = {}

    def render(name: str) -> Rendered:
        if name not in cache:
            cache[name] = helm.render(VALUE_SETS[name])
        return cache[name]

    return render
