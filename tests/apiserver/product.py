"""The product as a black box: `karta-admission` commands run as subprocesses against the test API server.

`serve` runs with KUBECONFIG pointing at the local kube-apiserver (or `--no-cluster`), on a free
loopback port; tests look at what lands in the API server and what kubectl prints, and read the
server's log only to explain a failure or to confirm it was (not) called.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .cluster import CommandResult, LocalAPIServer, children_of, free_port, rss_mib, spawn, stop_process

CLI = [sys.executable, "-m", "webhook.cli"]


def run_cli(cluster: LocalAPIServer, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120,
            stdin: str | None = None) -> CommandResult:  # fmt: skip
    """`karta-admission ARGS` with the test API server's kubeconfig; its exit code and output."""
    process = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False, input=stdin,
        env=cluster.env(**(env or {})),
    )  # fmt: skip
    return CommandResult(process.returncode, process.stdout, process.stderr)


def make_certs(cluster: LocalAPIServer, directory: Path) -> Path:
    """`karta-admission certs` for localhost / 127.0.0.1, the names the API server calls the webhook by."""
    result = run_cli(cluster, "certs", "--out", str(directory), "--dns", "localhost", "--ip", "127.0.0.1")
    assert result.returncode == 0, result.output
    return directory


class WebhookServer:
    """One `karta-admission serve` process (gunicorn master, its workers and helpers)."""

    def __init__(
        self,
        cluster: LocalAPIServer,
        workdir: Path,
        name: str,
        *,
        config: Mapping[str, Any] | None = None,
        args: Sequence[str] = (),
        tls_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.workdir = workdir
        self.port = port or free_port()
        self.log = workdir / f"webhook-{name}.log"
        self.args = list(args)
        self.tls_dir = tls_dir
        # As the chart's Deployment: metrics summed over workers through a shared directory; logs
        # unbuffered, so a review is in the log before the API server has its answer.
        self.env = {
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"metrics-{name}"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = workdir / f"webhook-{name}.yaml"
            self.config_path.write_text(yaml.safe_dump(dict(config)))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The address the API server calls: by name, as the serving certificates carry `localhost`."""
        return f"https://localhost:{self.port}"

    def command(self) -> list[str]:
        command = [*CLI, "serve", "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads", "4"]
        if self.tls_dir is not None:
            command += ["--certfile", str(self.tls_dir / "tls.crt"), "--keyfile", str(self.tls_dir / "tls.key")]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        return command + self.args

    def start(self, ready: bool = True, timeout: float = 60) -> WebhookServer:
        self.process = spawn(self.command(), self.log, env=self.cluster.env(**self.env))
        path = "/readyz" if ready else "/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"webhook {self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.get(path) == 200:
                return self
            time.sleep(0.1)
        raise AssertionError(f"webhook {self.name} not answering {path} after {timeout} s:\n{self.log_tail()}")

    def get(self, path: str) -> int | None:
        """Status of a GET on the webhook's own port (certificate not verified: a liveness probe)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{self.port}{path}", timeout=2, context=context) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def stop(self, timeout: float = 30) -> None:
        stop_process(self.process, timeout)

    def pids(self) -> list[int]:
        """The master and every process below it (workers, the periodic audit child)."""
        if self.process is None or self.process.poll() is not None:
            return []
        found, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            queue.extend(children_of(pid))
        return found

    def rss_mib(self) -> float:
        return rss_mib(self.pids())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def reviews(self) -> list[str]:
        """Log lines of the reviews this server answered."""
        return [line for line in self.log_text().splitlines() if '"msg":"review' in line]

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(*servers: WebhookServer, ready: bool = True) -> Iterator[None]:
    try:
        for server in servers:
            server.start(ready=ready)
        yield
    finally:
        for server in servers:
            server.stop()
