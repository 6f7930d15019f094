"""The real `karta-admission serve` in a subprocess, over real TLS, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.e2e.tls_helpers import free_port
from webhook.certs import make_bundle, write_bundle


@dataclass
class RunningServer:
    url: str
    ca_file: Path
    process: subprocess.Popen[bytes]
    log_file: Path
    session: requests.Session

    def post(self, path: str, body: Any = None, *, data: bytes | None = None, timeout: float = 10) -> requests.Response:
        if data is not None:
            return self.session.post(
                self.url + path, data=data, headers={"Content-Type": "application/json"}, timeout=timeout
            )
        return self.session.post(self.url + path, json=body, timeout=timeout)

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url + path, timeout=10)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        return worker_pids(self.process.pid)


def children_of(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def _is_agent(pid: int) -> bool:
    try:
        return b"\0agent\0" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def worker_pids(master: int) -> list[int]:
    """The gunicorn master's workers (its children but the cluster agent)."""
    return [pid for pid in children_of(master) if not _is_agent(pid)]


def agent_pids(master: int) -> list[int]:
    """The cluster agent the master keeps running (one, or none between a restart)."""
    return [pid for pid in children_of(master) if _is_agent(pid)]


def memory_kb(pid: int, field: str) -> int:
    """A memory figure of a live process from /proc (VmRSS: resident now, VmHWM: its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def start_server(
    directory: Path,
    config: dict[str, Any] | None = None,
    *extra: str,
    workers: int = 2,
    metrics_directory: bool = True,
    kubeconfig: Path | None = None,
) -> RunningServer:
    """metrics_directory=False starts it as `make run` does, without PROMETHEUS_MULTIPROC_DIR;
    kubeconfig: a cluster to talk to (the server spawns its agent), else --no-cluster."""
    certs = directory / "certs"
    write_bundle(make_bundle(["localhost"], ["127.0.0.1"], days=2), certs)
    config_file = directory / "config.yaml"
    config_file.write_text(yaml.safe_dump(config or {}))
    port = free_port()
    log_file = directory / "server.log"
    env = {k: v for k, v in os.environ.items() if k.upper() not in {"PROMETHEUS_MULTIPROC_DIR", "KUBECONFIG"}}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    if metrics_directory:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory / "metrics")
    command = [
        sys.executable, "-m", "webhook.cli", "serve", "--bind", f"127.0.0.1:{port}",
        "--certfile", str(certs / "tls.crt"), "--keyfile", str(certs / "tls.key"),
        "--config", str(config_file), *([] if kubeconfig else ["--no-cluster"]), "--workers", str(workers), *extra,
    ]  # fmt: skip
    with log_file.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    session = requests.Session()
    session.verify = str(certs / "ca.crt")
    session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would win over session.verify
    server = RunningServer(f"https://127.0.0.1:{port}", certs / "ca.crt", process, log_file, session)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if server.get("/readyz").status_code == 200 and len(server.worker_pids()) >= workers:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server not ready within 30 s:\n{server.log()}")


def stop_server(server: RunningServer) -> None:
    server.session.close()
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(10)


@contextmanager
def serving(
    config: dict[str, Any] | None = None,
    *extra: str,
    workers: int = 2,
    metrics_directory: bool = True,
    kubeconfig: Path | None = None,
) -> Iterator[RunningServer]:
    with tempfile.TemporaryDirectory(prefix="karta-e2e-") as directory:
        server = start_server(
            Path(directory), config, *extra, workers=workers, metrics_directory=metrics_directory, kubeconfig=kubeconfig
        )
        try:
            yield server
        finally:
            stop_server(server)


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of a metric whose labels include the given ones."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
