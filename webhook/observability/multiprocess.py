"""The directory where gunicorn workers keep their metric samples; set up before prometheus_client loads.

No import of prometheus_client here: the client reads PROMETHEUS_MULTIPROC_DIR once, at its own import,
so this must run first (the CLI calls prepare_directory() before it imports the serve command).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_directory(*, keep_samples: bool = False) -> Path:
    """An empty sample directory in PROMETHEUS_MULTIPROC_DIR: the given one, or a temporary one of our own.

    keep_samples: a process that joins a running server (its cluster agent) keeps the samples there.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in [] if keep_samples else path.glob("*.db"):  # samples of a previous run would be summed in
            stale.unlink()
        return path
    path = Path(tempfile.mkdtemp(prefix="karta-admission-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    owner = os.getpid()

    def remove() -> None:
        # Forked workers inherit atexit handlers; only the process that made the directory removes it.
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path
