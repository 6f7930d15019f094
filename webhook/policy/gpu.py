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
    instance: Instance
    list_name: str  # "containers" or "initContainers"
    index: int
    container: Mapping[str, Any]
    location: PathParts | None

    @property
    def label(self) -> str:
        name = self.container.get("name") or f"#{self.index}"
        kind = "init container" if self.list_name == "initContainers" else "container"
        return f"{self.instance.label} {kind} {name!r}"

    def at(self, *parts: str | int) -> PathParts | None:
        return (*self.location, *parts) if self.location is not None else self.instance.location


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
                    if isinstance(container, Mapping):
                        location = (*pod.spec_location, list_name, index) if pod.spec_location is not None else None
                        views.append(ContainerView(instance, list_name, index, container, location))
        return views

    return ctx.memo("containers", build)  # type: ignore[no-any-return]


def _containers(ctx: RuleContext, instance: Instance, *, init: bool = True) -> Iterator[ContainerView]:
    for view in _all_containers(ctx):
        if view.instance is instance and (init or view.list_name == "containers"):
            yield view


def _resources(container: Mapping[str, Any], section: str) -> Mapping[str, Any]:
    resources = container.get("resources")
    if not isinstance(resources, Mapping):
        return {}
    values = resources.get(section)
    return values if isinstance(values, Mapping) else {}


def _gpu_names(view: ContainerView, settings: PolicySettings) -> set[str]:
    names = set(_resources(view.container, "limits")) | set(_resources(view.container, "requests"))
    return {n for n in names if settings.gpu.is_gpu(n)}


def _has_gpu_resources(ctx: RuleContext) -> bool:
    """Most workloads ask for no GPU at all: then the GPU rules have nothing to look at."""
    return ctx.memo(  # type: ignore[no-any-return]
        "any-gpu", lambda: any(_gpu_names(v, ctx.settings) for v in _all_containers(ctx))
    )


def _amount(value: Any) -> Decimal | None:
    try:
        return parse_quantity(value)
    except ValueError:
        return None


def _gpu_limit_total(view: ContainerView, settings: PolicySettings) -> Decimal:
    total = Decimal(0)
    for name, value in _resources(view.container, "limits").items():
        amount = _amount(value)
        if settings.gpu.is_gpu(name) and amount is not None and amount > 0:
            total += amount
    return total


def _template_has_gpu_limits(ctx: RuleContext, instance: Instance) -> bool:
    return any(_gpu_limit_total(view, ctx.settings) > 0 for view in _containers(ctx, instance))


def _vendor(resource_name: str) -> str:
    """nvidia.com/gpu and nvidia.com/mig-1g.10gb are both NVIDIA: the vendor is the name's domain."""
    return resource_name.split("/", 1)[0] if "/" in resource_name else resource_name


@rule(
    "gpu-whole-number",
    Severity.DENY,
    "GPU quantities are whole, non-negative numbers (the device plugin hands out whole devices)",
)
def gpu_whole_number(ctx: RuleContext) -> Iterator[Finding]:
    if not _has_gpu_resources(ctx):
        return
    for view in _all_containers(ctx):
        for section in ("requests", "limits"):
            for name, value in _resources(view.container, section).items():
                if not ctx.settings.gpu.is_gpu(name):
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
    if not _has_gpu_resources(ctx):
        return
    for view in _all_containers(ctx):
        limits = _resources(view.container, "limits")
        for name, requested in _resources(view.container, "requests").items():
            if not ctx.settings.gpu.is_gpu(name):
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
    if primary is None or not _has_gpu_resources(ctx):
        return
    for view in _all_containers(ctx):
        if view.list_name != "containers" or view.index == primary:
            continue
        gpus = sorted(_gpu_names(view, ctx.settings))
        if gpus:
            yield Finding(
                view.at("resources"),
                f"{view.label} asks for {', '.join(gpus)}, but only containers[{primary}] is read for "
                "the resources the workload advertises (Ray's num-gpus); move the GPUs there",
                gpus,
            )


@rule("gpu-on-head", Severity.WARN, "the head (coordinator) pod holds no GPUs unless that is intended")
def gpu_on_head(ctx: RuleContext) -> Iterator[Finding]:
    if not _has_gpu_resources(ctx):
        return
    hints = ctx.workload.definition.hints
    for view in _all_containers(ctx):
        if hints.for_component(view.instance.component).role == "head":
            gpus = sorted(_gpu_names(view, ctx.settings))
            if gpus:
                yield Finding(
                    view.at("resources"),
                    f"{view.label} asks for {', '.join(gpus)}: GPUs on the head are usually idle "
                    "(Ray schedules GPU work on workers); set the rule to off if this is intended",
                    gpus,
                )


@rule("gpu-single-vendor", Severity.DENY, "a container asks for GPUs of one vendor only")
def gpu_single_vendor(ctx: RuleContext) -> Iterator[Finding]:
    if not _has_gpu_resources(ctx):
        return
    for view in _all_containers(ctx):
        gpus = sorted(_gpu_names(view, ctx.settings))
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
        if not isinstance(env, list) or _gpu_limit_total(view, ctx.settings) > 0:
            continue
        for index, entry in enumerate(env):
            if not isinstance(entry, Mapping) or entry.get("name") != "NVIDIA_VISIBLE_DEVICES":
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
    if isinstance(node_selector, Mapping):
        for key in node_selector:
            if key in keys:
                return f"nodeSelector {key}"
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") if isinstance(
        node_affinity, Mapping) else None  # fmt: skip
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    for term in terms if isinstance(terms, list) else []:
        expressions = term.get("matchExpressions") if isinstance(term, Mapping) else None
        for expression in expressions if isinstance(expressions, list) else []:
            if (
                isinstance(expression, Mapping)
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
        if not isinstance(toleration, Mapping):
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
    if not _has_gpu_resources(ctx):
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
                f"{instance.label}: the pod template asks for GPUs but tolerates none of the GPU taints "
                f"({', '.join(settings.gpu.taint_keys)}); on tainted GPU node pools it stays Pending unless the "
                "API server's ExtendedResourceToleration plugin adds the toleration",
                None,
            )
