"""The README's `check` commands run as written, on the example manifests it points at (issue 13).

Before: they named files that did not exist (my-rayservice.yaml, manifests/*.yaml).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ".venv/bin/karta-admission"


def readme_check_commands() -> list[tuple[str, int | None]]:
    """(command, the exit status its comment promises) for every `check` line of the README."""
    commands: list[tuple[str, int | None]] = []
    for block in re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL):
        for line in block.splitlines():
            if line.startswith(f"{PROGRAM} check"):
                command, _, comment = line.partition("#")
                status = re.match(r"\s*exit (\d)", comment)
                commands.append((command.strip(), int(status.group(1)) if status else None))
    return commands


def test_the_readme_shows_check_commands() -> None:
    assert len(readme_check_commands()) >= 3


@pytest.mark.parametrize(("command", "status"), readme_check_commands())
def test_readme_check_command(command: str, status: int | None) -> None:
    assert status is not None, f"README: say which exit status to expect: {command}"
    # The same command through this interpreter (the console script is this package's cli.main); the
    # shell expands the globs as it would for a reader.
    program = shlex.quote(sys.executable) + " -m webhook.cli"
    result = subprocess.run(["bash", "-c", command.replace(PROGRAM, program, 1)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for path in re.findall(r"docs/examples/[\w.*-]+", command):
        assert list(ROOT.glob(path)), f"{path} does not exist"
