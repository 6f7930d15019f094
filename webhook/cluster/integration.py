"""What a server worker starts after fork: the Karta watch and the owner cache, in background threads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client as k8s

from webhook.config import Config
from webhook.evaluation import Evaluator
from webhook.gang.state import GangIndex, NoCluster

from .kartas import KartaWatch
from .kube import WatchSettings, close_client, load_api_client
from .owners import DEFAULT_MAX_ENTRIES, OwnerCache

Readiness = Callable[[], tuple[bool, str]]
Detail = Callable[[], str | None]


@dataclass
class ClusterIntegration:
    owner_index: GangIndex
    readiness: list[Readiness] = field(default_factory=list)
    details: list[Detail] = field(default_factory=list)  # for /readyz, not readiness (e.g. gang CRD missing)
    kartas: KartaWatch | None = None
    owners: OwnerCache | None = None
    api_client: k8s.ApiClient | None = None

    def stop(self) -> None:
        if self.kartas is not None:
            self.kartas.stop()
        if self.owners is not None:
            self.owners.stop()
        if self.api_client is not None:
            close_client(self.api_client)
            self.api_client = None


def start_cluster_integration(
    evaluator: Evaluator,
    config: Config,
    *,
    api_client: k8s.ApiClient | None = None,
    settings: WatchSettings | None = None,
    max_owner_entries: int = DEFAULT_MAX_ENTRIES,
) -> ClusterIntegration:
    """Start watching, per config.cluster; returns at once (first lists run in background threads and
    the readiness checks say False until they are done).

    Without api_client, builds one (in-cluster, then kubeconfig); raises kube.NoClusterConfigured when
    there is no cluster, so the caller can run without cluster features.
    """
    settings_ = config.cluster
    if not (settings_.watch_kartas or settings_.owner_cache):
        return ClusterIntegration(NoCluster())
    client = api_client if api_client is not None else load_api_client()
    integration = ClusterIntegration(NoCluster(), api_client=None if api_client is not None else client)
    if settings_.owner_cache:
        # No GroupObjectController runs in the server yet: until one is started (and this says True),
        # pods get no keys that name a PodGroup (docs/gang.md).
        integration.owners = OwnerCache(
            evaluator.store,
            client,
            config.gang,
            settings=settings,
            max_entries=max_owner_entries,
            group_objects_managed=False,
        )
        integration.owner_index = integration.owners
        integration.readiness.append(integration.owners.readiness)
        integration.details.append(integration.owners.detail)
    if settings_.watch_kartas:
        integration.kartas = KartaWatch(evaluator.store, client, settings)
        if integration.owners is not None:
            integration.kartas.add_listener(integration.owners.on_definitions)
        integration.readiness.append(integration.kartas.readiness)
        integration.kartas.start()
    if integration.owners is not None:
        integration.owners.start()
    return integration
