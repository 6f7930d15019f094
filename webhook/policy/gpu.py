"""GPU rules over the pod templates of a resolved workload.

Every one of these mistakes is accepted by the API server and by KubeRay, and only shows later: as a
pod that never schedules or is refused by the kubelet, or as a Ray node that advertises no GPUs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from webhook.karta.resolve import Instance
from webhook.kube.fieldpath import PathParts
from webhook.kube.quantity import parse_quantity, shown
from webhook.policy.model import READS_PODS, Finding, PolicySettings, RuleContext, Severity, rule

# Values of NVIDIA_VISIBLE_DEVICES that expose no device to the container.
_NO_DEVICES = frozenset({"", "none", "void"})
VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
_NO_GPUS = Decimal(0)


@dataclass(slots=True)
class ContainerView:
    """One container of one pod template, with its GPU resources read once for all rules.

    Not frozen: one is built for every container of every review, and a frozen dataclass takes three
    times as long to build. Nothing assigns to one after it is built.
    """

    instance: Instance
    list_name: str  # "containers" or "initContainers"
    index: int
    container: Mapping[str, Any]
    location: PathParts | None
    limits: Mapping[str, Any]
    requests: Mapping[str, Any]
    gpus: tuple[str, ...]  # GPU resource names in limits or requests, sorted
    gpu_limit: Decimal  # total of the positive GPU limits

    @property
    def label(self) -> str:
        name = self.container.get("name") or f"#{self.index}"
        kind = "init container" if self.list_name == "initContainers" else "container"
        return f"{self.instance.label} {kind} {name!r}"

    def at(self, *parts: str | int) -> PathParts | None:
        return (*self.location, *parts) if self.location is not None else self.instance.location

    @property
    def sidecar(self) -> bool:
        """A native sidecar: an init container with restartPolicy Always runs beside the containers."""
        return self.list_name == "initContainers" and self.container.get("restartPolicy") == "Always"


def _section(container: Mapping[str, Any], section: str) -> Mapping[str, Any]:
    resources = container.get("resources")
    values = resources.get(section) if isinstance(resources, dict) else None
    return values if isinstance(values, dict) else {}


def _amount(value: Any) -> Decimal | None:
    try:
        return parse_quantity(value)
    except ValueError:
        return None


def _view(
    instance: Instance, list_name: str, index: int, container: Mapping[str, Any], location: PathParts | None,
    *, settings: PolicySettings,
) -> ContainerView:  # fmt: skip
    limits, requests = _section(container, "limits"), _section(container, "requests")
    is_gpu = settings.gpu.is_gpu
    names = [n for n in limits if is_gpu(n)]
    names += [n for n in requests if n not in limits and is_gpu(n)]
    gpus = tuple(sorted(names))
    total = _NO_GPUS
    for name in gpus:
        amount = _amount(limits.get(name))
        if amount is not None and amount > 0:
            total += amount
    return ContainerView(instance, list_name, index, container, location, limits, requests, gpus, total)


def _all_containers(ctx: RuleContext) -> list[ContainerView]:
    """Every container and init container of every pod template, built once per evaluation."""

    def build() -> list[ContainerView]:
        views = []
        for instance in ctx.workload.instances():
            pod = instance.pod
            if pod is None or pod.spec is None:
                continue
            for list_name in ("containers", "initContainers"):
                items = pod.spec.get(list_name)
                for index, container in enumerate(items if isinstance(items, list) else []):
                    if isinstance(container, dict):
                        location = (*pod.spec_location, list_name, index) if pod.spec_location is not None else None
                        views.append(_view(instance, list_name, index, container, location, settings=ctx.settings))
        return views

    return ctx.memo("containers", build)  # type: ignore[no-any-return]


def _gpu_views(ctx: RuleContext) -> list[ContainerView]:
    """The containers that ask for a GPU at all: most workloads have none, and then no GPU rule runs."""
    return ctx.memo("gpu-containers", lambda: [v for v in _all_containers(ctx) if v.gpus])  # type: ignore[no-any-return]


def _template_has_gpu_limits(ctx: RuleContext, instance: Instance) -> bool:
    limited = ctx.memo("gpu-limited", lambda: {id(v.instance) for v in _gpu_views(ctx) if v.gpu_limit > 0})
    return id(instance) in limited


def _vendor(resource_name: str) -> str:
    """nvidia.com/gpu and nvidia.com/mig-1g.10gb are both NVIDIA: the vendor is the name's domain."""
    return resource_name.split("/", 1)[0] if "/" in resource_name else resource_name


@rule(
    "gpu-whole-number",
    Severity.DENY,
    "GPU quantities are whole, non-negative numbers (the device plugin hands out whole devices)",
    reads=(READS_PODS,),
)
def gpu_whole_number(ctx: RuleContext) -> Iterator[Finding]:
    for view in _gpu_views(ctx):
        for section, values in (("requests", view.requests), ("limits", view.limits)):
            for name, value in values.items():
                if name not in view.gpus:
                    continue
                try:
                    amount = parse_quantity(value)
                except ValueError as exc:
                    yield Finding(
                        view.at("resources", section, name),
                        f"{view.label}: {name} {section} must be a whole number of GPUs: {exc}",
                        value,
                    )
                    continue
                if amount < 0 or amount != amount.to_integral_value():
                    sharing = 0 < amount < 1
                    yield Finding(
                        view.at("resources", section, name),
                        f"{view.label}: {name} {section} must be a whole number of GPUs, got {shown(value)}"
                        + (" (for a share of a GPU use your scheduler's GPU-sharing feature)" if sharing else ""),
                        value,
                    )


@rule(
    "gpu-requests-equal-limits",
    Severity.DENY,
    "a GPU request comes with a limit of the same value (Kubernetes refuses the pod otherwise)",
    reads=(READS_PODS,),
)
def gpu_requests_equal_limits(ctx: RuleContext) -> Iterator[Finding]:
    for view in _gpu_views(ctx):
        limits = view.limits
        for name, requested in view.requests.items():
            if name not in view.gpus:
                continue
            if name not in limits:
                yield Finding(
                    view.at("resources", "limits", name),
                    f"{view.label}: {name} is requested ({requested!r}) but has no limit; "
                    "GPUs need a limit equal to the request",
                    None,
                )
                continue
            request_amount, limit_amount = _amount(requested), _amount(limits[name])
            if request_amount is not None and limit_amount is not None and request_amount != limit_amount:
                yield Finding(
                    view.at("resources", "requests", name),
                    f"{view.label}: {name} request {requested!r} differs from its limit {limits[name]!r}; "
                    "GPUs cannot be overcommitted",
                    requested,
                )


@rule(
    "gpu-on-primary-container",
    Severity.DENY,
    "GPUs sit on the container the runtime reads (Ray: containers[0]); elsewhere Ray never sees them",
    reads=(READS_PODS,),
)
def gpu_on_primary_container(ctx: RuleContext) -> Iterator[Finding]:
    primary = ctx.workload.definition.hints.primary_container
    if primary is None:
        return
    for view in _gpu_views(ctx):
        gpus = list(view.gpus)  # never empty: _gpu_views keeps only containers that ask for GPUs
        read_by = f"only containers[{primary}] is read for the resources the workload advertises (Ray's num-gpus)"
        if view.list_name == "containers" and view.index != primary:
            yield Finding(view.at("resources"), f"{view.label} asks for {', '.join(gpus)}, but {read_by}; "
                          "move the GPUs there", gpus)  # fmt: skip
        elif view.sidecar:
            yield Finding(
                view.at("resources"),
                f"{view.label} is a native sidecar (restartPolicy: Always) and asks for {', '.join(gpus)}: it holds "
                f"them beside the other containers for the pod's whole life, but {read_by}; move the GPUs there",
                gpus,
            )
        elif view.gpu_limit > (read := _primary_gpu_limit(ctx, view.instance, primary)):
            # The scheduler counts the largest init container's request for the pod's whole life.
            yield Finding(
                view.at("resources"),
                f"{view.label} asks for {view.gpu_limit} GPUs and containers[{primary}] for {read}: the pod holds "
                f"{view.gpu_limit} for its whole life (an init container's request counts for the pod), but "
                f"the workload uses the GPUs of containers[{primary}] only",
                gpus,
                at_most=Severity.WARN,
            )


def _primary_gpu_limit(ctx: RuleContext, instance: Instance, primary: int) -> Decimal:
    def build() -> dict[int, Decimal]:
        found = {}
        for view in _all_containers(ctx):
            if view.list_name == "containers" and view.index == primary:
                found[id(view.instance)] = view.gpu_limit
        return found

    by_instance: dict[int, Decimal] = ctx.memo(("primary-gpu-limit", primary), build)
    return by_instance.get(id(instance), _NO_GPUS)


@rule(
    "gpu-on-head",
    Severity.WARN,
    "the head (coordinator) pod holds no GPUs unless that is intended",
    reads=(READS_PODS,),
)
def gpu_on_head(ctx: RuleContext) -> Iterator[Finding]:
    hints = ctx.workload.definition.hints
    for view in _gpu_views(ctx):
        if hints.for_component(view.instance.component).role == "head":
            gpus = list(view.gpus)
            yield Finding(
                view.at("resources"),
                f"{view.label} asks for {', '.join(gpus)}: GPUs on the head are usually idle "
                "(Ray schedules GPU work on workers); set the rule to off if this is intended",
                gpus,
            )


@rule("gpu-single-vendor", Severity.DENY, "a container asks for GPUs of one vendor only", reads=(READS_PODS,))
def gpu_single_vendor(ctx: RuleContext) -> Iterator[Finding]:
    for view in _gpu_views(ctx):
        gpus = list(view.gpus)
        if len({_vendor(n) for n in gpus}) > 1:
            yield Finding(
                view.at("resources"),
                f"{view.label} asks for GPUs of several vendors ({', '.join(gpus)}); no node has both, "
                "so the pod never schedules",
                gpus,
            )


@rule(
    "nvidia-visible-devices",
    Severity.DENY,
    "NVIDIA_VISIBLE_DEVICES does not expose GPUs to a container without a GPU limit (it bypasses the "
    "device plugin and shares GPUs behind the scheduler's back)",
    reads=(READS_PODS,),
)
def nvidia_visible_devices(ctx: RuleContext) -> Iterator[Finding]:
    """A literal value that names devices, a value the webhook cannot read, or an envFrom that can set it.

    valueFrom (fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef): the value is not in the object,
    and the only reason to set this variable in a container without GPUs is to reach GPUs, so it is
    treated like a literal device list. envFrom with a prefix that begins the name ("NVIDIA_") targets it
    the same way. envFrom without a prefix is common and usually unrelated: it only warns, and only when
    the pod can land on GPU nodes (it selects or tolerates them). An explicit env entry wins over envFrom.
    """
    for view in _all_containers(ctx):
        if view.gpu_limit > 0:
            continue
        env = view.container.get("env")
        explicit = False
        for index, entry in enumerate(env if isinstance(env, list) else []):
            if not isinstance(entry, dict) or entry.get("name") != VISIBLE_DEVICES:
                continue
            explicit = True
            value, source = entry.get("value"), entry.get("valueFrom")
            if isinstance(source, dict) and source:
                yield Finding(
                    view.at("env", index, "valueFrom"),
                    f"{view.label} sets {VISIBLE_DEVICES} from {_describe_source(source)} without a GPU limit: "
                    "the webhook cannot read that value, and any value but none or void would use GPUs the "
                    "scheduler gave to other pods; request GPUs in resources.limits instead",
                    _describe_source(source),
                )
            elif isinstance(value, str) and value.strip().lower() not in _NO_DEVICES:
                yield Finding(
                    view.at("env", index, "value"),
                    f"{view.label} sets {VISIBLE_DEVICES}={shown(value)} without a GPU limit: it would "
                    "use GPUs the scheduler gave to other pods; request GPUs in resources.limits instead",
                    value,
                )
        if not explicit:
            yield from _env_from_findings(ctx, view)


def _env_from_findings(ctx: RuleContext, view: ContainerView) -> Iterator[Finding]:
    env_from = view.container.get("envFrom")
    for index, source in enumerate(env_from if isinstance(env_from, list) else []):
        if not isinstance(source, dict):
            continue
        prefix = source.get("prefix") or ""
        if not isinstance(prefix, str) or not VISIBLE_DEVICES.startswith(prefix):
            continue  # every variable it sets starts with something else
        described = _describe_source(source)
        if prefix:
            yield Finding(
                view.at("envFrom", index, "prefix"),
                f"{view.label} takes variables from {described} with prefix {prefix!r}, which makes a key "
                f"{VISIBLE_DEVICES[len(prefix) :]!r} set {VISIBLE_DEVICES} in a container without a GPU limit; "
                "request GPUs in resources.limits instead",
                prefix,
            )
        elif _reaches_gpu_nodes(ctx, view.instance):
            yield Finding(
                view.at("envFrom", index),
                f"{view.label} takes variables from {described}, which the webhook cannot read; the pod can run "
                f"on GPU nodes and has no GPU limit here, so a key {VISIBLE_DEVICES} in it would use GPUs the "
                f"scheduler gave to other pods; set {VISIBLE_DEVICES}=void in env to be sure",
                described,
                at_most=Severity.WARN,
            )


def _describe_source(source: Mapping[str, Any]) -> str:
    for key, label in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret"), ("configMapRef", "ConfigMap"),
                       ("secretRef", "Secret")):  # fmt: skip
        ref = source.get(key)
        if isinstance(ref, dict):
            item = f" key {shown(ref['key'])}" if isinstance(ref.get("key"), str) else ""
            return f"{label} {shown(ref.get('name') or '')}{item}"
    for key in ("fieldRef", "resourceFieldRef", "fileKeyRef"):
        ref = source.get(key)
        if isinstance(ref, dict):
            target = ref.get("fieldPath") or ref.get("resource") or ref.get("path") or ""
            return f"{key} {shown(target)}"
    return "a source it does not know"


def _reaches_gpu_nodes(ctx: RuleContext, instance: Instance) -> bool:
    pod = instance.pod
    if pod is None or pod.spec is None:
        return False
    gpu = ctx.settings.gpu
    return bool(_selects_gpu_nodes(pod.spec, gpu.node_label_keys)) or _tolerates(
        pod.spec.get("tolerations"), gpu.taint_keys
    )


def _selects_gpu_nodes(spec: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    node_selector = spec.get("nodeSelector")
    if isinstance(node_selector, dict):
        for key in node_selector:
            if key in keys:
                return f"nodeSelector {key}"
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") if isinstance(
        node_affinity, dict) else None  # fmt: skip
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    for term in terms if isinstance(terms, list) else []:
        expressions = term.get("matchExpressions") if isinstance(term, dict) else None
        for expression in expressions if isinstance(expressions, list) else []:
            if (
                isinstance(expression, dict)
                and expression.get("key") in keys
                and expression.get("operator") in {"In", "Exists", "Gt"}
            ):
                return f"required node affinity on {expression.get('key')}"
    return None


@rule(
    "gpu-node-selector",
    Severity.WARN,
    "a pod template that selects GPU nodes asks for GPUs (otherwise it occupies a GPU node without one)",
    reads=(READS_PODS,),
)
def gpu_node_selector(ctx: RuleContext) -> Iterator[Finding]:
    workload, settings = ctx.workload, ctx.settings
    for instance in workload.instances():
        pod = instance.pod
        if pod is None or pod.spec is None or _template_has_gpu_limits(ctx, instance):
            continue
        selected_by = _selects_gpu_nodes(pod.spec, settings.gpu.node_label_keys)
        if selected_by:
            yield Finding(
                pod.spec_location or instance.location,
                f"{instance.label}: the pod template selects GPU nodes ({selected_by}) but no container has a "
                "GPU limit",
                selected_by,
            )


def _tolerates(tolerations: Any, taint_keys: tuple[str, ...]) -> bool:
    for toleration in tolerations if isinstance(tolerations, list) else []:
        if not isinstance(toleration, dict):
            continue
        key, operator = toleration.get("key") or "", toleration.get("operator") or "Equal"
        if key == "" and operator == "Exists":
            return True
        if key in taint_keys:
            return True
    return False


@rule(
    "gpu-toleration",
    Severity.WARN,
    "a pod template with GPU limits tolerates the GPU node taint (otherwise it stays Pending on tainted pools)",
    reads=(READS_PODS,),
)
def gpu_toleration(ctx: RuleContext) -> Iterator[Finding]:
    if not _gpu_views(ctx):
        return
    workload, settings = ctx.workload, ctx.settings
    for instance in workload.instances():
        pod = instance.pod
        if pod is None or pod.spec is None or not _template_has_gpu_limits(ctx, instance):
            continue
        if not _tolerates(pod.spec.get("tolerations"), settings.gpu.taint_keys):
            location = (*pod.spec_location, "tolerations") if pod.spec_location else instance.location
            yield Finding(
                location,
                f"{instance.label}: asks for GPUs but tolerates no GPU taint ({', '.join(settings.gpu.taint_keys)}); "
                "it stays Pending on tainted GPU nodes",
                None,
            )
