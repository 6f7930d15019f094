"""The Kubernetes API client of the cluster edge: construction (in-cluster, then kubeconfig), error
messages, discovery and paginated lists. The list-then-watch loop is webhook.cluster.reflector."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.config import incluster_config, kube_config
from kubernetes.config.config_exception import ConfigException

from webhook import __version__
from webhook.karta.model import GVK
from webhook.observability import logs

log = logs.get("cluster")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Errors that mean "the API server could not be talked to" rather than "it answered no".
CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, OSError)
# ...and, while reading a watch stream, a line that is not JSON (a stream cut mid-line).
STREAM_ERRORS = (urllib3.exceptions.HTTPError, OSError, ValueError)


class ClusterUnavailable(RuntimeError):
    """No usable connection to a Kubernetes API server."""


class NoClusterConfigured(ClusterUnavailable):
    """Neither in a pod nor with a kubeconfig: run without cluster features."""


class ClusterConfigError(ClusterUnavailable):
    """A cluster configuration exists but cannot be used (unreadable kubeconfig, unknown context)."""


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SERVICE_ACCOUNT_DIR / "token").is_file()


def default_kubeconfig_paths() -> list[Path]:
    """$KUBECONFIG (a path list) or ~/.kube/config, read at call time."""
    value = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def load_api_client(kubeconfig: Path | None = None, context: str | None = None) -> k8s.ApiClient:
    """A client for the cluster: in-cluster service account first when no kubeconfig or context is
    given, then the kubeconfig ($KUBECONFIG or ~/.kube/config).

    Raises NoClusterConfigured when there is neither, ClusterConfigError when the one found is unusable.
    """
    configuration = k8s.Configuration()
    if kubeconfig is None and context is None and in_cluster():
        try:
            incluster_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise ClusterConfigError(f"in-cluster service account configuration is unusable: {exc}") from exc
    else:
        paths = [kubeconfig] if kubeconfig is not None else default_kubeconfig_paths()
        existing = [p for p in paths if p.is_file()]
        if not existing:
            if kubeconfig is not None:
                raise ClusterConfigError(f"kubeconfig {kubeconfig} does not exist")
            raise NoClusterConfigured(
                "no Kubernetes cluster configured: not running in a pod (KUBERNETES_SERVICE_HOST unset) "
                f"and no kubeconfig at {os.pathsep.join(str(p) for p in paths)} "
                "(set KUBECONFIG or pass --kubeconfig)"
            )
        try:
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.pathsep.join(str(p) for p in existing),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
            where = os.pathsep.join(str(p) for p in existing)
            raise ClusterConfigError(f"kubeconfig {where}{f' context {context!r}' if context else ''}: {exc}") from exc
    api_client = k8s.ApiClient(configuration)
    api_client.user_agent = f"karta-admission/{__version__}"
    return api_client


def connection_error(exc: BaseException) -> str:
    """The cause of a connection failure, without urllib3's retry wrapping."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def server_of(api_client: k8s.ApiClient) -> str:
    return str(api_client.configuration.host)


def api_error(exc: ApiException) -> str:
    """The Status message of an API error, or its reason; short, for logs and command output."""
    message = ""
    try:
        body = json.loads(exc.body) if exc.body else {}
        if isinstance(body, dict):
            message = str(body.get("message") or "")
    except ValueError:
        message = ""
    text = f"{exc.status} {exc.reason or ''}".strip()
    return f"{text}: {message[:300]}" if message else text


@dataclass(frozen=True)
class Resource:
    """A served API resource: what discovery says about a kind."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return self.gvk.api_version

    @property
    def gvk(self) -> GVK:
        return GVK(self.group, self.version, self.kind)

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def resource_label(kind: GVK) -> str:
    """A metric/log label for a kind before its plural is known: Kind.group."""
    return f"{kind.kind}.{kind.group}" if kind.group else kind.kind


def discover(api_client: k8s.ApiClient, kind: GVK, timeout: tuple[float, float] = (10, 30)) -> Resource | None:
    """The resource serving a kind, or None when the API server does not serve it (CRD not installed)."""
    response: Any
    try:
        if kind.group:
            response = k8s.CustomObjectsApi(api_client).get_api_resources(
                kind.group, kind.version, _preload_content=False, _request_timeout=timeout
            )
        else:
            response = k8s.CoreV1Api(api_client).get_api_resources(_preload_content=False, _request_timeout=timeout)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    document = json.loads(response.data)
    for entry in document.get("resources") or ():
        name = str(entry.get("name") or "")
        if entry.get("kind") == kind.kind and name and "/" not in name:
            return Resource(kind.group, kind.version, name, kind.kind, bool(entry.get("namespaced")))
    return None


def iter_pages(
    api_client: k8s.ApiClient,
    resource: Resource,
    *,
    namespace: str | None = None,
    label_selector: str | None = None,
    page_size: int = 500,
    timeout: tuple[float, float] = (10, 60),
) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """Pages of a paginated list (limit/continue) with the list's resourceVersion; items get their
    apiVersion and kind filled in when the server left them out."""
    api = k8s.CustomObjectsApi(api_client)
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": page_size, "_request_timeout": timeout}
        if token:
            kwargs["_continue"] = token
        if label_selector:
            kwargs["label_selector"] = label_selector
        page: dict[str, Any]
        if namespace is not None and resource.namespaced:
            page = api.list_namespaced_custom_object(  # type: ignore[assignment]
                resource.group, resource.version, namespace, resource.plural, **kwargs
            )
        else:
            page = api.list_cluster_custom_object(  # type: ignore[assignment]
                resource.group, resource.version, resource.plural, **kwargs
            )
        items = [item for item in page.get("items") or () if isinstance(item, dict)]
        for item in items:
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
        meta = page.get("metadata") or {}
        token = meta.get("continue") or None
        yield items, str(meta.get("resourceVersion") or "")
        if not token:
            return


def list_all(api_client: k8s.ApiClient, resource: Resource, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    version = ""
    for page, page_version in iter_pages(api_client, resource, **kwargs):
        items.extend(page)
        version = page_version
    return items, version


def close_client(api_client: k8s.ApiClient) -> None:
    api_client.close()  # type: ignore[no-untyped-call]
