"""KubeRay's checks of optional cluster features: GCS fault tolerance, auth, NetworkPolicy, TLS, history
server, and the operator feature gates some of them need (validation.go at feeaf72f).

Which feature gates the operator runs with is not visible at admission: `kuberay.featureGates` in the
configuration says (KubeRay's defaults otherwise), and a feature used behind a gate that is off is a
warning by default (`ray-feature-gate`), since the webhook may simply not know the operator's flags.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from webhook.kube import names
from webhook.kube.fieldpath import PathParts
from webhook.policy.kuberay import RAY_GROUP
from webhook.policy.model import Finding, RuleContext, Severity, rule
from webhook.policy.ray_spec import Group, RayClusterView, as_list, as_map, find_env, parse_version, ray_cluster

FT_ANNOTATION = "ray.io/ft-enabled"
EXTERNAL_STORAGE_NS_ANNOTATION = "ray.io/external-storage-namespace"
GCS_STORAGE_VOLUME, GCS_STORAGE_PATH = "gcs-storage", "/data/gcs"
TLS_VOLUME, TLS_PATH = "ray-tls", "/etc/ray/tls"
TLS_ENV = ("RAY_USE_TLS", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
COLLECTOR_CONTAINER = "ray-history-collector"
# Env KubeRay injects into the history collector itself.
COLLECTOR_MANAGED_ENV = (
    "POD_IP",
    "FQ_RAY_IP",
    "RAY_CLUSTER_NAME",
    "RAY_CLUSTER_NAMESPACE",
    "RAY_ROLE",
    "OWNER_KIND",
    "OWNER_NAME",
    "EVENTS_PORT",
)
TOKEN_AUTH_MIN_RAY, K8S_TOKEN_AUTH_MIN_RAY = (2, 52, 0), (2, 55, 0)


def _ft_enabled(cluster: RayClusterView) -> bool:
    """KubeRay's IsGCSFaultToleranceEnabled: the annotation is "true" (any case), or options are set."""
    value = cluster.annotations.get(FT_ANNOTATION)
    return (isinstance(value, str) and value.lower() == "true") or cluster.spec.get(
        "gcsFaultToleranceOptions"
    ) is not None


def _ft_options(cluster: RayClusterView) -> Mapping[str, Any] | None:
    options = cluster.spec.get("gcsFaultToleranceOptions")
    return options if isinstance(options, dict) else None


@rule(
    "ray-gcs-fault-tolerance",
    Severity.DENY,
    "GCS fault tolerance is configured in one place: gcsFaultToleranceOptions, not also the ray.io/ft-enabled "
    "annotation, redis env vars or rayStartParams, and its backend's own fields only",
    api_group=RAY_GROUP,
)
def ray_gcs_fault_tolerance(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None:
        return
    head = cluster.head
    options = _ft_options(cluster)
    opts_path = cluster.at("gcsFaultToleranceOptions")
    annotation = cluster.annotations.get(FT_ANNOTATION)
    if annotation and options is not None:
        yield Finding(
            ("metadata", "annotations", FT_ANNOTATION),
            f"the {FT_ANNOTATION} annotation and gcsFaultToleranceOptions are both set; KubeRay wants only "
            "gcsFaultToleranceOptions",
            annotation,
        )
    redis_address = head.env("RAY_REDIS_ADDRESS")
    if redis_address is not None and not _ft_enabled(cluster):
        yield Finding(
            redis_address[0],
            "head group: RAY_REDIS_ADDRESS turns on GCS fault tolerance, but gcsFaultToleranceOptions is not set; "
            "KubeRay refuses it",
            "RAY_REDIS_ADDRESS",
        )
    params = as_map(head.spec.get("rayStartParams"))
    if options is not None:
        instead = "use gcsFaultToleranceOptions.{} instead"
        if params.get("redis-password"):
            yield Finding(
                (*head.path, "rayStartParams", "redis-password"),
                "head group: rayStartParams redis-password is not allowed with gcsFaultToleranceOptions; "
                + instead.format("redisPassword"),
                None,
            )
        for env_name, field in (("REDIS_PASSWORD", "redisPassword"), ("RAY_REDIS_ADDRESS", "redisAddress")):
            found = head.env(env_name)
            if found is not None:
                yield Finding(
                    found[0],
                    f"head group: env {env_name} is not allowed with gcsFaultToleranceOptions; "
                    + instead.format(field),
                    env_name,
                )
        if cluster.annotations.get(EXTERNAL_STORAGE_NS_ANNOTATION):
            yield Finding(
                ("metadata", "annotations", EXTERNAL_STORAGE_NS_ANNOTATION),
                f"the {EXTERNAL_STORAGE_NS_ANNOTATION} annotation is not allowed with "
                "gcsFaultToleranceOptions; " + instead.format("externalStorageNamespace"),
                cluster.annotations.get(EXTERNAL_STORAGE_NS_ANNOTATION),
            )
        yield from _backend(head, options, opts_path)
    if params.get("redis-username"):
        yield Finding(
            (*head.path, "rayStartParams", "redis-username"),
            "head group: rayStartParams redis-username is not allowed; use gcsFaultToleranceOptions.redisUsername",
            None,
        )
    username = head.env("REDIS_USERNAME")
    if username is not None:
        yield Finding(
            username[0],
            "head group: env REDIS_USERNAME is not allowed; use gcsFaultToleranceOptions.redisUsername",
            "REDIS_USERNAME",
        )


def _backend(head: Group, options: Mapping[str, Any], path: PathParts) -> Iterator[Finding]:
    backend = options.get("backend") or "redis"
    storage = options.get("storage")
    if backend != "rocksdb":
        if storage is not None:
            yield Finding(
                (*path, "storage"),
                "gcsFaultToleranceOptions.storage applies only to the rocksdb backend, not redis; KubeRay refuses it",
                None,
            )
        return
    for field in ("redisAddress", "externalStorageNamespace"):
        if options.get(field):
            yield Finding(
                (*path, field),
                f"gcsFaultToleranceOptions.{field} is not allowed with the rocksdb backend",
                options.get(field),
            )
    for field in ("redisUsername", "redisPassword"):
        if options.get(field) is not None:
            yield Finding(
                (*path, field), f"gcsFaultToleranceOptions.{field} is not allowed with the rocksdb backend", None
            )
    storage = as_map(storage)
    if storage.get("claimName") and (
        storage.get("size") is not None or storage.get("storageClassName") is not None or storage.get("accessModes")
    ):
        yield Finding(
            (*path, "storage", "claimName"),
            "gcsFaultToleranceOptions.storage.claimName excludes size, storageClassName and accessModes",
            storage.get("claimName"),
        )
    for env_name in ("RAY_gcs_storage", "RAY_gcs_storage_path"):
        found = head.env(env_name)
        if found is not None:
            yield Finding(
                found[0], f"head group: env {env_name} is managed by KubeRay with the rocksdb backend", env_name
            )
    container = head.ray_container or {}
    for index, raw_mount in enumerate(as_list(container.get("volumeMounts"))):
        mount = as_map(raw_mount)
        if mount.get("name") == GCS_STORAGE_VOLUME or mount.get("mountPath") == GCS_STORAGE_PATH:
            yield Finding(
                (*head.ray_container_path, "volumeMounts", index),
                f"head group: volume mount {GCS_STORAGE_VOLUME} / {GCS_STORAGE_PATH} is managed by KubeRay "
                "with the rocksdb backend",
                mount.get("name"),
            )
    for index, volume in enumerate(as_list(head.pod_spec.get("volumes"))):
        if as_map(volume).get("name") == GCS_STORAGE_VOLUME:
            yield Finding(
                (*head.pod_spec_path, "volumes", index),
                f"head group: volume {GCS_STORAGE_VOLUME} is managed by KubeRay with the rocksdb backend",
                GCS_STORAGE_VOLUME,
            )


@rule(
    "ray-auth",
    Severity.DENY,
    "authOptions fit the Ray version: token auth needs rayVersion >= 2.52.0, enableK8sTokenAuth needs mode "
    "token, rayVersion >= 2.55.0, no secretName, and a RayCluster (not a RayService or RayJob)",
    api_group=RAY_GROUP,
)
def ray_auth(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None:
        return
    auth = as_map(cluster.spec.get("authOptions"))
    path = cluster.at("authOptions")
    k8s_auth = auth.get("enableK8sTokenAuth") is True
    if k8s_auth and cluster.kind in {"RayService", "RayJob"}:
        yield Finding(
            (*path, "enableK8sTokenAuth"),
            f"Kubernetes token auth is not supported for a {cluster.kind}; KubeRay refuses it",
            True,
        )
        return
    if auth.get("mode") != "token":
        if k8s_auth:
            yield Finding((*path, "enableK8sTokenAuth"), "enableK8sTokenAuth needs authOptions.mode: token", True)
        return
    version = parse_version(cluster.ray_version) if cluster.ray_version else None
    got = f"rayVersion is {cluster.ray_version!r}" if cluster.ray_version else "rayVersion is not set"
    if version is None or version < TOKEN_AUTH_MIN_RAY:
        yield Finding(
            (*path, "mode"), f"token auth needs rayVersion 2.52.0 or later, but {got}; KubeRay refuses it", "token"
        )
        return
    if not k8s_auth:
        return
    if version < K8S_TOKEN_AUTH_MIN_RAY:
        yield Finding(
            (*path, "enableK8sTokenAuth"),
            f"Kubernetes token auth needs rayVersion 2.55.0 or later, but {got}; KubeRay refuses it",
            True,
        )
    elif auth.get("secretName"):
        yield Finding(
            (*path, "secretName"),
            "secretName cannot be set with enableK8sTokenAuth; KubeRay refuses it",
            auth.get("secretName"),
        )


@rule(
    "ray-network-policy",
    Severity.DENY,
    "networkPolicy rules fit its mode and name existing worker groups, whose names are DNS-1123 labels",
    api_group=RAY_GROUP,
)
def ray_network_policy(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    policy = cluster.spec.get("networkPolicy") if cluster is not None else None
    if cluster is None or not isinstance(policy, dict):
        return
    path = cluster.at("networkPolicy")
    mode = policy.get("mode") or "DenyAll"
    # DenyAllEgress leaves ingress open (so ingress rules mean nothing), DenyAllIngress leaves egress open.
    unused = {"DenyAllEgress": "ingressRules", "DenyAllIngress": "egressRules"}.get(mode)
    if unused is not None:
        for part in ("head", "worker"):
            if as_list(as_map(policy.get(part)).get(unused)):
                yield Finding(
                    (*path, part, unused), f"networkPolicy.{part}.{unused} cannot be set in mode {mode}", None
                )
    groups = {}
    for group in cluster.workers():
        groups[group.name] = group
        if not names.is_dns1123_label(group.name or ""):
            yield Finding(
                (*group.path, "groupName"),
                f"{group.label}: with networkPolicy set, group names must be "
                "DNS-1123 labels (lower-case letters, digits, '-')",
                group.name,
            )
    for index, raw_entry in enumerate(as_list(policy.get("workerGroups"))):
        entry = as_map(raw_entry)
        name = entry.get("groupName")
        if unused is not None and as_list(entry.get(unused)):
            yield Finding(
                (*path, "workerGroups", index, unused),
                f'networkPolicy.workerGroups["{name}"].{unused} cannot be set in mode {mode}',
                None,
            )
        if name not in groups:
            yield Finding(
                (*path, "workerGroups", index, "groupName"),
                f'networkPolicy.workerGroups entry "{name}" names no worker group',
                name,
            )


@rule(
    "ray-tls",
    Severity.DENY,
    "with tlsOptions.enabled, no container or autoscalerOptions sets the TLS env vars or the ray-tls volume or "
    "/etc/ray/tls mount KubeRay manages",
    api_group=RAY_GROUP,
)
def ray_tls(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None or as_map(cluster.spec.get("tlsOptions")).get("enabled") is not True:
        return
    for group in cluster.groups():
        container = group.ray_container
        if container is None:
            continue
        yield from _tls_conflicts(
            group.label, as_list(container.get("env")), as_list(container.get("volumeMounts")), group.ray_container_path
        )
    options = cluster.autoscaler_options
    if options:
        yield from _tls_conflicts(
            "autoscalerOptions",
            as_list(options.get("env")),
            as_list(options.get("volumeMounts")),
            cluster.at("autoscalerOptions"),
        )


def _tls_conflicts(label: str, env: list[Any], mounts: list[Any], path: PathParts) -> Iterator[Finding]:
    for env_name in TLS_ENV:
        found = find_env(env, env_name, (*path, "env"))
        if found is not None:
            yield Finding(
                found[0], f"{label}: env {env_name} is managed by KubeRay when tlsOptions is enabled", env_name
            )
    for index, raw_mount in enumerate(mounts):
        mount = as_map(raw_mount)
        if mount.get("name") == TLS_VOLUME or mount.get("mountPath") == TLS_PATH:
            yield Finding(
                (*path, "volumeMounts", index),
                f"{label}: volume mount {TLS_VOLUME} / {TLS_PATH} is managed by KubeRay when tlsOptions is enabled",
                mount.get("name"),
            )


@rule(
    "ray-history-server",
    Severity.DENY,
    "historyServerOptions has collectorOptions with an image and a STORAGE_BACKEND with its settings, and no "
    f"container is named {COLLECTOR_CONTAINER}",
    api_group=RAY_GROUP,
)
def ray_history_server(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    options = cluster.spec.get("historyServerOptions") if cluster is not None else None
    if cluster is None or not isinstance(options, dict):
        return
    path = cluster.at("historyServerOptions")
    collector = options.get("collectorOptions")
    if not isinstance(collector, dict):
        yield Finding((*path, "collectorOptions"), "historyServerOptions.collectorOptions must be set", None)
    else:
        yield from _collector(collector, (*path, "collectorOptions"))
    for group in cluster.groups():
        for index, container in enumerate(as_list(group.pod_spec.get("containers"))):
            if as_map(container).get("name") == COLLECTOR_CONTAINER:
                yield Finding(
                    (*group.pod_spec_path, "containers", index, "name"),
                    f"{group.label}: container name {COLLECTOR_CONTAINER} is KubeRay's own with historyServerOptions",
                    COLLECTOR_CONTAINER,
                )


# What each storage backend of the history collector needs in its env (KubeRay's validation).
COLLECTOR_BACKEND_NEEDS = {
    "GCS": ("GCS_BUCKET",),
    "S3": ("S3_REGION",),
    "ALIYUNOSS": ("OSS_BUCKET", "OSS_ENDPOINT", "OSS_REGION"),
}
CollectorEnv = dict[str, tuple[int, Mapping[str, Any]]]


def _collector(collector: Mapping[str, Any], path: PathParts) -> Iterator[Finding]:
    if not collector.get("image"):
        yield Finding((*path, "image"), "historyServerOptions.collectorOptions.image must be set", None)
    env: CollectorEnv = {}
    for index, raw_entry in enumerate(as_list(collector.get("env"))):
        entry = as_map(raw_entry)
        env.setdefault(str(entry.get("name")), (index, entry))
    for name in COLLECTOR_MANAGED_ENV:
        if name in env:
            yield Finding(
                (*path, "env", env[name][0]), f"collectorOptions.env must not set {name}: KubeRay sets it", name
            )
    backend_entry = env.get("STORAGE_BACKEND")
    backend = str(backend_entry[1].get("value") or "") if backend_entry else ""
    if not backend_entry or not backend:
        yield Finding((*path, "env"), "collectorOptions.env must set STORAGE_BACKEND to a literal value", None)
        return
    where = (*path, "env", backend_entry[0])
    upper = backend.upper()
    needed = _azure_needs(env) if upper == "AZUREBLOB" else COLLECTOR_BACKEND_NEEDS.get(upper, ())
    if needed is None:
        yield Finding(
            where,
            "STORAGE_BACKEND AZUREBLOB needs AZURE_STORAGE_CONNECTION_STRING or "
            "AZURE_STORAGE_ACCOUNT_URL in collectorOptions.env",
            backend,
        )
        return
    missing = next((name for name in needed if not _has_value(env, name)), None)
    if missing is not None:  # KubeRay names the first missing one
        yield Finding(where, f"STORAGE_BACKEND {backend} needs {missing} in collectorOptions.env", backend)


def _has_value(env: CollectorEnv, name: str) -> bool:
    found = env.get(name)
    return found is not None and bool(found[1].get("value") or found[1].get("valueFrom"))


def _azure_needs(env: CollectorEnv) -> tuple[str, ...] | None:
    """What AZUREBLOB needs by its auth mode; None when no mode is set and neither credential is given."""
    mode_entry = env.get("AZURE_STORAGE_AUTH_MODE")
    mode = str(mode_entry[1].get("value") or "").strip().lower() if mode_entry else ""
    if mode == "connection_string":
        return ("AZURE_STORAGE_CONNECTION_STRING",)
    if mode in {"workload_identity", "default"}:
        return ("AZURE_STORAGE_ACCOUNT_URL",)
    if not _has_value(env, "AZURE_STORAGE_CONNECTION_STRING") and not _has_value(env, "AZURE_STORAGE_ACCOUNT_URL"):
        return None
    return ()


@rule(
    "ray-feature-gate",
    Severity.WARN,
    "features behind a KubeRay feature gate are used only where the gate is on (kuberay.featureGates; a warning "
    "by default, since the operator's flags are not visible to the webhook)",
    api_group=RAY_GROUP,
)
def ray_feature_gate(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    gates = ctx.settings.kuberay
    used: list[tuple[PathParts, str, str]] = []
    if cluster is not None:
        for field, gate in (
            ("networkPolicy", "RayClusterNetworkPolicy"),
            ("tlsOptions", "RayClusterMTLS"),
            ("historyServerOptions", "RayClusterHistoryServer"),
        ):
            if cluster.spec.get(field) is not None:
                used.append((cluster.at(field), field, gate))
        options = _ft_options(cluster)
        if options is not None and options.get("backend") == "rocksdb":
            used.append(
                (
                    cluster.at("gcsFaultToleranceOptions", "backend"),
                    "the rocksdb GCS fault tolerance backend",
                    "GCSFaultToleranceEmbeddedStorage",
                )
            )
        for group in cluster.workers():
            if group.spec.get("suspend") is True:
                used.append(((*group.path, "suspend"), f"{group.label}: suspend", "RayJobDeletionPolicy"))
    if ctx.workload.kind == "RayJob" and as_map(ctx.workload.obj.get("spec")).get("deletionStrategy") is not None:
        used.append((("spec", "deletionStrategy"), "deletionStrategy", "RayJobDeletionPolicy"))
    for location, what, gate in used:
        if not gates.gate(gate):
            yield Finding(
                location,
                f"{what} needs KubeRay's {gate} feature gate, off in this webhook's "
                "kuberay.featureGates; KubeRay refuses the object unless the operator enables it",
                gate,
            )
