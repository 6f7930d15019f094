"""`make run` on a fresh machine says what it is doing before the long install (issue 13).

Before: `pip install --quiet` printed nothing for about two minutes (checked: this test failed on the
previous commit). `make -n` prints the recipe without running it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dry_run(*targets: str) -> list[str]:
    result = subprocess.run(["make", "-n", "-B", *targets], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_install_announces_itself_before_pip_runs() -> None:
    lines = dry_run(".venv/.installed")
    first_pip = next(i for i, line in enumerate(lines) if "pip install" in line)
    announcements = [line for line in lines[:first_pip] if line.startswith("echo") and "install" in line.lower()]
    assert announcements, lines
    install = next(line for line in lines if "pip install" in line and "-e" in line)
    assert "--quiet" not in install  # pip's own lines show that it is alive


def test_run_announces_the_certificates_too() -> None:
    lines = dry_run("certs/tls.crt")
    assert any(line.startswith("echo") and "certificate" in line for line in lines), lines
