"""A process gunicorn's master keeps alive next to its workers: the cluster agent.

The master starts it before the first worker (so no thread ever runs in the master, which forks),
restarts it when it exits (with a growing delay, reset once it has run for a while) and stops it
when the server stops. gunicorn reaps every child itself (waitpid(-1) for its workers), so the
companion is watched by its process id, on the master's own loop.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gunicorn.arbiter import Arbiter

log = logging.getLogger("karta_admission.companion")

RESTART_DELAY_INITIAL = 1.0
RESTART_DELAY_MAX = 30.0
# A companion that ran this long before it exited is restarted at once.
STEADY_SECONDS = 60.0


def _alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (gunicorn may not have reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Companion:
    def __init__(
        self, command: Sequence[str], name: str = "agent", on_exit: Callable[[int], None] = lambda pid: None
    ) -> None:
        self.command = list(command)
        self.name = name
        self.on_exit = on_exit  # e.g. drop the live-gauge samples of the process that is gone
        self.process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._delay = RESTART_DELAY_INITIAL
        self._next_start = 0.0
        self._stopped = False

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, close_fds=True)  # noqa: S603
        self._started_at = time.monotonic()
        log.info("started the %s (pid %d)", self.name, self.process.pid)

    def exited(self) -> bool:
        if self.process is None:
            return True
        if self.process.poll() is not None:  # still our child to reap (before gunicorn's loop runs)
            return True
        return not _alive(self.process.pid)

    def supervise(self) -> None:
        """Called on the master's loop: restart the companion if it is gone."""
        if self._stopped or not self.exited():
            return
        now = time.monotonic()
        if self.process is not None:
            ran = now - self._started_at
            log.warning("the %s (pid %d) exited after %.1f s; restarting it", self.name, self.process.pid, ran)
            self.on_exit(self.process.pid)
            self._delay = RESTART_DELAY_INITIAL if ran > STEADY_SECONDS else min(self._delay * 2, RESTART_DELAY_MAX)
            self._next_start = now + self._delay
            self.process = None
        if now >= self._next_start:
            self.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopped = True
        process, self.process = self.process, None
        if process is None or not _alive(process.pid):
            return
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(process.pid):
            try:
                if process.poll() is not None:
                    break
            except ChildProcessError:
                break
            time.sleep(0.05)
        else:
            if _alive(process.pid):
                os.kill(process.pid, signal.SIGKILL)


class SupervisingArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, which also keeps its companions running."""

    companions: Sequence[Companion] = ()

    def manage_workers(self) -> None:
        super().manage_workers()
        for companion in self.companions:
            companion.supervise()

    def halt(self, reason: Any = None, exit_status: int = 0) -> None:
        for companion in self.companions:
            companion.stop()
        super().halt(reason, exit_status)
