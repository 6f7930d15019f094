"""Fixtures for the tests that go through a real kube-apiserver (marker `apiserver`).

One etcd + kube-apiserver per test session. Every test module here marks itself
`xdist_group("apiserver")`, so that with `-n 2 --dist loadgroup` one worker runs them all; and a
lock file makes xdist workers take turns, so one server set exists at most per checkout even where
the grouping does not work (`make test` runs these tests in a process of their own anyway).
Tests isolate themselves by namespace; cluster-scoped objects they create (webhook
configurations, Kartas) are removed when they end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import chart, objects
from .cluster import (
    MATCH_CONDITIONS_SINCE,
    REQUIRE_ENV,
    ROOT,
    APIError,
    LocalAPIServer,
    Unavailable,
    find_binaries,
    local_apiserver,
    wait_until,
)
from .product import WebhookServer, make_certs

PROBE_NAMESPACE = "karta-probe"
_SUMMARY: list[str] = []
_probe_names = itertools.count()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _SUMMARY:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    try:
        find_binaries()
    except Unavailable as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but {exc}")
        pytest.skip(str(exc))
    # xdist_group keeps these tests on one worker, but pytest-xdist 3.8 cannot group under pytest 9
    # (it renames items through an attribute pytest 9 no longer reads), so two workers may both
    # want a server: they take turns, never two server sets of one checkout at once.
    lock_path = ROOT / ".tools" / "apiserver-session.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, after the server stopped
        with local_apiserver(tmp_path_factory.mktemp("apiserver")) as server:
            server.create_namespace(PROBE_NAMESPACE)
            t = server.timings
            _SUMMARY.append(
                f"real API server: kube-apiserver {server.version} on {server.url}, etcd "
                f"({server.binaries.etcd}); started in {t.etcd_s:.1f} s (etcd) + {t.apiserver_s:.1f} s "
                f"(kube-apiserver), CRDs established in {t.crds_s:.1f} s; RSS idle "
                f"{_mib(t.rss_idle_mib)}, with the CRDs {_mib(t.rss_loaded_mib)}"
            )
            yield server
            _SUMMARY.append(f"real API server: RSS at the end of the suite {_mib(server.rss())}")


def _mib(values: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f} MiB" for name, value in values.items())


@pytest.fixture(scope="session")
def tls_dir(apiserver: LocalAPIServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a serving certificate for localhost/127.0.0.1, made by `karta-admission certs`."""
    return make_certs(apiserver, tmp_path_factory.mktemp("webhook-tls"))


@pytest.fixture
def namespace(apiserver: LocalAPIServer) -> Callable[..., str]:
    """Make a fresh namespace (optionally labelled); namespaces are not deleted (no controller
    manager finalizes them), their names are unique."""

    def make(prefix: str = "t", labels: Mapping[str, str] | None = None) -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        apiserver.create_namespace(name, labels)
        return name

    return make


@pytest.fixture
def webhook(apiserver: LocalAPIServer, tls_dir: Path, tmp_path: Path) -> Iterator[Callable[..., WebhookServer]]:
    """Start `karta-admission serve` processes; all are stopped when the test ends."""
    started: list[WebhookServer] = []

    def start(name: str = "main", *, config: Mapping[str, Any] | None = None, args: Sequence[str] = (),
              cluster: bool = False, tls: bool = True, env: Mapping[str, str] | None = None,
              ready: bool = True, port: int | None = None) -> WebhookServer:  # fmt: skip
        all_args = ["--log-level", "debug", *args]
        if not cluster:
            all_args.append("--no-cluster")
        server = WebhookServer(
            apiserver, tmp_path, name, config=config, args=all_args, tls_dir=tls_dir if tls else None,
            env=env, port=port,
        )  # fmt: skip
        started.append(server)
        return server.start(ready=ready)

    yield start
    for server in started:
        server.stop()


class WebhookConfigurations:
    """Webhook configurations applied to the API server for one test, removed when it ends."""

    def __init__(self, apiserver: LocalAPIServer) -> None:
        self.apiserver = apiserver
        self.applied: list[dict[str, Any]] = []
        self.witness: WebhookServer | None = None

    def apply(self, configurations: Sequence[dict[str, Any]], witness: WebhookServer | None) -> None:
        """Apply, then wait until the API server calls the webhook (seen in the witness's log)."""
        self.apiserver.apply_objects(configurations)
        self.applied.extend(configurations)
        self.witness = witness
        if witness is not None:
            wait_until(lambda: self._probe_reviewed(witness), timeout=20, interval=0.2,
                       message="the API server to call the new webhook configuration")  # fmt: skip

    def _probe_reviewed(self, witness: WebhookServer) -> bool:
        name = f"probe-{next(_probe_names)}"
        body = objects.raycluster(name, PROBE_NAMESPACE, replicas=1)
        with contextlib.suppress(APIError):
            self.apiserver.request(
                "POST", f"/apis/ray.io/v1/namespaces/{PROBE_NAMESPACE}/rayclusters", body, query=[("dryRun", "All")]
            )
        return f'"name":"{name}"' in witness.log_text()

    def remove(self) -> None:
        for configuration in self.applied:
            with contextlib.suppress(APIError):
                self.apiserver.request("DELETE", self.apiserver.object_path(configuration))
        if self.applied:
            wait_until(self._inactive, timeout=20, interval=0.2, message="the webhook configurations to go")
        self.applied.clear()

    def _inactive(self) -> bool:
        """A probe that is neither refused (webhook failing closed) nor seen by the live witness."""
        name = f"probe-{next(_probe_names)}"
        body = objects.raycluster(name, PROBE_NAMESPACE, replicas=1, max_replicas=0)
        try:
            self.apiserver.request(
                "POST", f"/apis/ray.io/v1/namespaces/{PROBE_NAMESPACE}/rayclusters", body, query=[("dryRun", "All")]
            )
        except APIError:
            return False
        witness = self.witness
        alive = witness is not None and witness.process is not None and witness.process.poll() is None
        return not (alive and witness is not None and f'"name":"{name}"' in witness.log_text())


@pytest.fixture
def webhook_configurations(apiserver: LocalAPIServer) -> Iterator[WebhookConfigurations]:
    configurations = WebhookConfigurations(apiserver)
    yield configurations
    configurations.remove()


def chart_identity(apiserver: LocalAPIServer, rendered: list[dict[str, Any]], workdir: Path) -> Path:
    """Install the ServiceAccount and exactly the roles this rendering of the chart grants (roles of
    earlier renderings removed first), and return a kubeconfig with that account's token: the server
    then runs with the chart's least-privilege RBAC, checked by the real RBAC authorizer."""
    apiserver.create_namespace(chart.NAMESPACE)
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    for path in (
        f"{rbac}/clusterrolebindings",
        f"{rbac}/clusterroles",
        f"{rbac}/namespaces/{chart.NAMESPACE}/rolebindings",
        f"{rbac}/namespaces/{chart.NAMESPACE}/roles",
    ):
        with contextlib.suppress(APIError):
            apiserver.request("DELETE", f"{path}/{chart.RELEASE}")
    objects_ = chart.rbac_objects(rendered)
    apiserver.apply_objects(objects_)
    [account] = [o for o in objects_ if o["kind"] == "ServiceAccount"]
    meta = account["metadata"]
    return apiserver.service_account_kubeconfig(meta["namespace"], meta["name"], workdir / "kubeconfig-chart-sa")


@dataclasses.dataclass
class ChartDeployment:
    """The chart's webhook configurations in the API server, served by one `karta-admission serve`."""

    server: WebhookServer
    rendered: list[dict[str, Any]]
    configurations: list[dict[str, Any]]
    changes: Counter[str]
    installed: WebhookConfigurations


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


@contextlib.contextmanager
def deploy_chart(
    apiserver: LocalAPIServer,
    tls_dir: Path,
    workdir: Path,
    *,
    values: Mapping[str, Any] | None = None,
    cluster: bool = False,
    name: str = "chart",
    env: Mapping[str, str] | None = None,
) -> Iterator[ChartDeployment]:
    """Render the chart (certificates in `provided` mode with the test CA, so the chart itself
    writes caBundle), start the server with the configuration the chart renders, and apply the
    chart's webhook configurations pointed at it (tests/apiserver/chart.py lists the changes).
    With cluster access, the server acts as the chart's ServiceAccount with the chart's RBAC."""
    provided = {"secretName": "karta-admission-tls", "caBundle": (tls_dir / "ca.crt").read_text()}
    values = _merge({"certificates": {"mode": "provided", "provided": provided}}, values or {})
    workdir.mkdir(parents=True, exist_ok=True)
    rendered = chart.render(workdir / "helm", values)
    args = ["--log-level", "debug"] + ([] if cluster else ["--no-cluster"])
    if cluster:
        # As the chart's Deployment sets it (downward API): the Lease lives in the release namespace.
        env = {"KUBECONFIG": str(chart_identity(apiserver, rendered, workdir)), "POD_NAMESPACE": chart.NAMESPACE,
               **(env or {})}  # fmt: skip
    server = WebhookServer(apiserver, workdir, name, config=chart.server_config(rendered), args=args,
                           tls_dir=tls_dir, env=env)  # fmt: skip
    installed = WebhookConfigurations(apiserver)
    try:
        server.start()
        configurations, changes = chart.for_local_server(
            chart.webhook_configurations(rendered), server.base_url, None,
            drop_match_conditions=apiserver.minor < MATCH_CONDITIONS_SINCE,
        )  # fmt: skip
        installed.apply(configurations, witness=server)
        yield ChartDeployment(server, rendered, configurations, changes, installed)
    finally:
        installed.remove()
        server.stop()


def wait_validated(apiserver: LocalAPIServer, namespace: str, validated: bool = True) -> None:
    """Wait until a broken RayCluster in the namespace is (or is not) denied: the API server reads
    namespace labels from an informer, so a label change takes a moment to decide routing."""

    def probe() -> bool:
        body = objects.raycluster(f"probe-{next(_probe_names)}", namespace, replicas=1, max_replicas=0)
        try:
            apiserver.request("POST", f"/apis/ray.io/v1/namespaces/{namespace}/rayclusters", body,
                              query=[("dryRun", "All")])  # fmt: skip
        except APIError:
            return validated
        return not validated

    wait_until(probe, timeout=15, interval=0.2, message=f"namespace {namespace} {'' if validated else 'not '}validated")
