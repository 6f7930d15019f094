"""The webhook down or hung, behind a real API server: the chart's failure policies and timeouts.

Each test deploys the chart's configurations itself (the same names as the other modules' deployment,
so this is its own module: pytest has torn the module-scoped deployments down before it runs).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import chart, objects
from .cluster import MATCH_CONDITIONS_SINCE, LocalAPIServer, wait_until
from .conftest import WebhookConfigurations, deploy_chart
from .objects import GROUP_LABEL, MODE_LABEL

# One server set per session, in one xdist worker (-n 2 --dist loadgroup).
pytestmark = [pytest.mark.apiserver, pytest.mark.xdist_group("apiserver")]


@contextlib.contextmanager
def _black_hole() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung webhook)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        for connection in held:
            connection.close()
        listener.close()


def _live_policies(apiserver: LocalAPIServer, kind: str = "validatingwebhookconfigurations") -> dict[str, str]:
    result = apiserver.kubectl("get", kind, "-o", "json")
    assert result.returncode == 0, result.output
    return {w["name"]: w["failurePolicy"] for c in json.loads(result.stdout)["items"] for w in c["webhooks"]}


@pytest.mark.parametrize("global_mode", ["enforce", "audit"])
def test_webhook_down_fails_closed_only_where_the_chart_says_fail(
    apiserver: LocalAPIServer, tls_dir: Path, tmp_path: Path, namespace: Callable[..., str], global_mode: str
) -> None:
    """The chart installs its Fail entries with Ignore; the server's agent arms them once it is ready,
    so after that the webhook down fails closed exactly where the chart says Fail."""
    with deploy_chart(apiserver, tls_dir, tmp_path, values={"mode": global_mode}, cluster=True) as deployed:
        armed = {
            "validate.karta-admission.io": "Fail" if global_mode == "enforce" else "Ignore",
            "validate-enforce.karta-admission.io": "Fail",
            "validate-audit.karta-admission.io": "Ignore",
        }
        installed = {name: e["failurePolicy"] for name, e in chart.entries(deployed.configurations).items()}
        assert installed == dict.fromkeys(armed, "Ignore") | {"mutate-pods.karta-admission.io": "Ignore"}
        wait_until(lambda: {k: v for k, v in _live_policies(apiserver).items() if k in armed} == armed,
                   timeout=60, message="the agent to arm the enforce webhooks")  # fmt: skip
        assert _live_policies(apiserver, "mutatingwebhookconfigurations")["mutate-pods.karta-admission.io"] == "Ignore"
        deployed.server.stop()
        unlabelled, enforce, audit = (
            namespace(),
            namespace(labels={MODE_LABEL: "enforce"}),
            namespace(labels={MODE_LABEL: "audit"}),
        )
        for ns, fails in ((unlabelled, global_mode == "enforce"), (enforce, True), (audit, False)):
            good = objects.raycluster("good", ns)
            code, output = apiserver.apply(good).outcome
            if fails:
                assert code == 1, output
                assert "failed calling webhook" in output and "connection refused" in output
            else:
                assert code == 0, output
        pod = objects.ray_pod("p", unlabelled, "c", "33333333-0000-4000-8000-000000000000")
        result = apiserver.kubectl("create", "-f", "-", "-o", "json", stdin=objects.to_yaml(pod))
        assert result.returncode == 0, result.output
        assert GROUP_LABEL not in json.loads(result.stdout)["metadata"]["labels"]


def test_a_hung_webhook_times_out_after_the_charts_timeouts(
    apiserver: LocalAPIServer, tmp_path: Path, tls_dir: Path, namespace: Callable[..., str]
) -> None:
    rendered = chart.render(tmp_path / "helm", {"webhook": {"armAfterReady": False}})  # Fail from the start
    timeouts = {e["name"]: e["timeoutSeconds"] for e in chart.entries(chart.webhook_configurations(rendered)).values()}
    assert timeouts["validate.karta-admission.io"] == 5
    assert timeouts["mutate-pods.karta-admission.io"] == 3
    installed = WebhookConfigurations(apiserver)
    with _black_hole() as port:
        configurations, _ = chart.for_local_server(
            chart.webhook_configurations(rendered),
            f"https://localhost:{port}",
            (tls_dir / "ca.crt").read_bytes(),
            drop_match_conditions=apiserver.minor < MATCH_CONDITIONS_SINCE,
        )
        try:
            installed.apply(configurations, witness=None)
            ns = namespace()
            # Fail (enforce): refused once the 5 s are up. The first tries may predate the configuration.
            deadline = time.monotonic() + 30
            while True:
                started = time.monotonic()
                code, output = apiserver.apply(objects.raycluster(f"slow-{int(started)}", ns)).outcome
                elapsed = time.monotonic() - started
                if code == 1 or time.monotonic() > deadline:
                    break
            assert code == 1, output
            assert "failed calling webhook" in output
            assert "deadline exceeded" in output or "timeout" in output.lower()
            assert 4.5 <= elapsed < 15, elapsed
            # Ignore (mutation): the pod is created once the 3 s are up, without gang metadata.
            pod = objects.ray_pod("slow-pod", ns, "c", "44444444-0000-4000-8000-000000000000")
            started = time.monotonic()
            result = apiserver.kubectl("create", "-f", "-", "-o", "json", stdin=objects.to_yaml(pod))
            elapsed = time.monotonic() - started
            assert result.returncode == 0, result.output
            assert GROUP_LABEL not in json.loads(result.stdout)["metadata"]["labels"]
            assert 2.5 <= elapsed < 12, elapsed
        finally:
            installed.remove()


def test_a_failed_install_blocks_no_one(
    apiserver: LocalAPIServer, tmp_path: Path, tls_dir: Path, namespace: Callable[..., str]
) -> None:
    """The chart installed, its pods never start (a wrong image): nothing arms the webhooks, so every
    Ray object is still admitted, in enforced namespaces too."""
    rendered = chart.render(tmp_path / "helm")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens there once it is closed
    installed = WebhookConfigurations(apiserver)
    configurations, _ = chart.for_local_server(
        chart.webhook_configurations(rendered), f"https://localhost:{port}", (tls_dir / "ca.crt").read_bytes(),
        drop_match_conditions=apiserver.minor < MATCH_CONDITIONS_SINCE,
    )  # fmt: skip
    try:
        installed.apply(configurations, witness=None)
        for ns in (namespace(), namespace(labels={MODE_LABEL: "enforce"})):
            code, output = apiserver.apply(objects.raycluster("unblocked", ns)).outcome
            assert code == 0, output
        assert set(_live_policies(apiserver).values()) == {"Ignore"}
    finally:
        installed.remove()
