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
from webhook.kube.quantity import parse_quantity
from webhook.policy.model import Finding, PolicySettings, RuleContext, Severity, rule

# Values of NVIDIA_VISIBLE_DEVICES that expose no device to the container.
_NO_DEVICES = frozenset({"", "none", "void"})


@dataclass(frozen=True)
class ContainerView:
    """One container of one pod template, with its GPU resources read once for all rules."""

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
    gpus = tuple(sorted(n for n in {*limits, *requests} if settings.gpu.is_gpu(n)))
    total = Decimal(0)
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
)
def gpu_whole_number(ctx: RuleContext) -> Iterator[Finding]:
    for view in _gpu_views(ctx):
        for section, values in (("requests", view.requests), ("limits", view.limits)):
            for name, value in values.items():
                if name not in view.gpus:
                    continue
                amount = _amount(value)
                if amount is None or amount < 0 or amount != amount.to_integral_value():
                    sharing = amount is not None and 0 < amount < 1
                    yield Finding(
                        view.at("resources", section, name),
                        f"{view.label}: {name} {section} must be a whole number of GPUs, got {value!r}"
                        + (" (for a share of a GPU use your scheduler's GPU-sharing feature)" if sharing else ""),
                        value,
                    )


@rule(
    "gpu-requests-equal-limits",
    Severity.DENY,
    "a GPU request comes with a limit of the same value (Kubernetes refuses the pod otherwise)",
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
)
def gpu_on_primary_container(ctx: RuleContext) -> Iterator[Finding]:
    primary = ctx.workload.definition.hints.primary_container
    if primary is None:
        return
    for view in _gpu_views(ctx):
        if view.list_name != "containers" or view.index == primary:
            continue
        gpus = list(view.gpus)  # never empty: _gpu_views keeps only containers that ask for GPUs
        yield Finding(
            view.at("resources"),
            f"{view.label} asks for {', '.join(gpus)}, but only containers[{primary}] is read for "
            "the resources the workload advertises (Ray's num-gpus); move the GPUs there",
            gpus,
        )


@rule("gpu-on-head", Severity.WARN, "the head (coordinator) pod holds no GPUs unless that is intended")
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


@rule("gpu-single-vendor", Severity.DENY, "a container asks for GPUs of one vendor only")
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
)
def nvidia_visible_devices(ctx: RuleContext) -> Iterator[Finding]:
    for view in _all_containers(ctx):
        env = view.container.get("env")
        if not isinstance(env, list) or view.gpu_limit > 0:
            continue
        for index, entry in enumerate(env):
            if not isinstance(entry, dict) or entry.get("name") != "NVIDIA_VISIBLE_DEVICES":
                continue
            value = entry.get("value")
            if isinstance(value, str) and value.strip().lower() not in _NO_DEVICES:
                yield Finding(
                    view.at("env", index, "value"),
                    f"{view.label} sets NVIDIA_VISIBLE_DEVICES={value!r} without a GPU limit: it would "
                    "use GPUs the scheduler gave to other pods; request GPUs in resources.limits instead",
                    value,
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
