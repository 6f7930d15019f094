"""The policy rules as CEL, one small function per rule, over the variables of webhook.vap.views.

Each function mirrors the rule of the same id in webhook.policy and returns its Checks: a CEL condition
that holds when the rule has a finding, and a CEL list of the findings' messages (worded like the
webhook's). A finding the webhook softens to a warning (`at_most=WARN`) is a separate Check marked
`softened`. A rule whose meaning CEL cannot carry raises NotCovered with the reason; rules without a
function here are listed with the reason in NOT_EXPRESSIBLE.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from webhook.policy.gpu import VISIBLE_DEVICES
from webhook.policy.kuberay import CLUSTER_SPEC_PATHS, NAME_LIMITS, RAY_GROUP
from webhook.policy.model import PolicySettings
from webhook.policy.ray_autoscaler import GENERATED_START_CMD_ENV
from webhook.policy.scale import _LABEL_PATH
from webhook.vap import cel
from webhook.vap.views import ComponentView, DefinitionView, NotCovered

LABEL_VALUE = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DNS1035_LABEL = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


@dataclass(frozen=True)
class Check:
    condition: str  # CEL bool: the rule has at least one finding
    messages: str  # CEL list of strings: every finding's message
    field_path: str | None = None  # where the findings are, when that is one static place
    softened: bool = False  # the webhook reports these findings as warnings at most
    reads_metadata: bool = False  # the rule reads labels or annotations as well as spec


@dataclass(frozen=True)
class Context:
    view: DefinitionView
    settings: PolicySettings
    kind: str  # the definition's root kind

    @property
    def autoscaling(self) -> str:
        return "variables.autoscaling"


Compile = Callable[[Context], list[Check]]


def _findings(space: str, var: str, predicate: str, message: str) -> tuple[str, str]:
    """(condition, messages) of one kind of finding over a list (`var` bound to each element)."""
    return f"{space}.exists({var}, {predicate})", f"{space}.filter({var}, {predicate}).map({var}, {message})"


def _check(parts: list[tuple[str, str]], **kwargs: object) -> Check:
    return Check(cel.any_of(*(c for c, _ in parts)), " + ".join(m for _, m in parts) or "[]", **kwargs)  # type: ignore[arg-type]


def _count(c: ComponentView, i: str, pods: str) -> str:
    """webhook.policy.scale._count: replicas, and pods when a replica is several pods."""
    ppr = f"{c.var('ppr')}[{i}]"
    whole = f"{ppr} != null && {ppr} > 1 && {pods} % {ppr} == 0"
    per = f'string({pods} / {ppr}) + " (" + string({pods}) + " pods at " + string({ppr}) + " per replica)"'
    return f"({whole} ? {per} : string({pods}))"


def _runner(ctx: Context) -> str:
    return "KubeRay" if ctx.view.definition.root_kind.group == RAY_GROUP else "the controller"


# --- Replicas ---------------------------------------------------------------------------------------


def replicas_within_bounds(ctx: Context) -> list[Check]:
    strict: list[tuple[str, str]] = []
    runner = _runner(ctx)
    for c in ctx.view.scaled():
        r, lo, hi = (f"{c.var(n)}[i]" for n in ("replicas", "min", "max"))
        applies = cel.all_of(
            f"!{c.var('suspended')}[i]", f"{r} != null", f"{r} > 0",
            f"!({lo} != null && {lo} < 0)", f"!({hi} != null && {hi} < 0)",
            f"!({lo} != null && {hi} != null && {lo} > {hi})",
        )  # fmt: skip
        above = cel.all_of(applies, f"{hi} != null", f"{r} > {hi}")
        below = cel.all_of(applies, f"!({hi} != null && {r} > {hi})", f"{lo} != null", f"{r} < {lo}")
        where = c.field_location("i", "replicas")
        for predicate, word, bound in ((above, "above maxReplicas", hi), (below, "below minReplicas", lo)):
            message = (
                f'{where} + ": " + {c.label("i")} + ": replicas " + {_count(c, "i", r)} + " is {word} " + '
                f'{_count(c, "i", bound)} + "; {runner} would run " + {_count(c, "i", bound)}'
            )
            strict.append(_findings(c.var("idx"), "i", predicate, message))
    # Under an autoscaler the finding is a warning at most, with the owner named.
    owned = [
        (f"{ctx.autoscaling} && {cond}", f'{msgs}.map(m, m + " (the autoscaler owns replicas)")')
        for cond, msgs in strict
    ]
    plain = [(f"!{ctx.autoscaling} && {cond}", msgs) for cond, msgs in strict]
    return [_check(plain), _check(owned, softened=True)]


def min_not_above_max(ctx: Context) -> list[Check]:
    parts = []
    for c in ctx.view.scaled():
        lo, hi = f"{c.var('min')}[i]", f"{c.var('max')}[i]"
        predicate = cel.all_of(f"{lo} != null", f"{hi} != null", f"{lo} >= 0", f"{hi} >= 0", f"{lo} > {hi}")
        message = (
            f'{c.field_location("i", "minReplicas")} + ": " + {c.label("i")} + ": minReplicas " + '
            f'{_count(c, "i", lo)} + " is greater than maxReplicas " + {_count(c, "i", hi)} + '
            f'"; {_runner(ctx)} refuses the group"'
        )
        parts.append(_findings(c.var("idx"), "i", predicate, message))
    return [_check(parts)]


def non_negative_scale(ctx: Context) -> list[Check]:
    parts = []
    for c in ctx.view.scaled():
        for field, name in (("replicas", "replicas"), ("minReplicas", "min"), ("maxReplicas", "max")):
            value = f"{c.var(name)}[i]"
            if field == "replicas":
                lo = f"{c.var('min')}[i]"
                start = f"(({lo} != null && {lo} > 0) ? {lo} : 0)"
                effect = f'"{_runner(ctx)} would run " + {_count(c, "i", start)}'
            else:
                effect = f'"{_runner(ctx)} refuses the group"'
            message = (
                f'{c.field_location("i", field)} + ": " + {c.label("i")} + ": {field} " + string({value}) + '
                f'" is negative; " + {effect}'
            )
            parts.append(_findings(c.var("idx"), "i", f"{value} != null && {value} < 0", message))
    return [_check(parts)]


def pods_per_replica(ctx: Context) -> list[Check]:
    parts = []
    for c in ctx.view.scaled() + [v for v in ctx.view.with_pods() if not v.has_scale]:
        ppr = f"{c.var('ppr')}[i]"
        message = (
            f'{c.label("i")} + ": pods per replica must be at least 1, got " + string({ppr}) + '
            '"; the group would run no pods"'
        )
        parts.append(_findings(c.var("idx"), "i", f"{ppr} != null && {ppr} < 1", message))
    return [_check(parts)]


def _components(ctx: Context) -> list[ComponentView]:
    view = ctx.view
    return [view.component(c.name) for c in view.definition.components]


def unique_instance_ids(ctx: Context) -> list[Check]:
    parts = []
    for c in _components(ctx):
        if not c.multi:
            continue
        ids = c.var("ids")
        earlier = f"{c.var('idx')}.filter(j, j < i && {ids}[j] == {ids}[i])"
        message = (
            f'{cel.string(c.name + " name ")} + "\'" + {ids}[i] + "\' is used twice (also at index " + '
            f'string({earlier}[0]) + "); pods of both would be indistinguishable"'
        )
        parts.append(_findings(c.var("idx"), "i", f"size({earlier}) > 0", message))
    return [_check(parts)]


def instance_id_label_value(ctx: Context) -> list[Check]:
    parts = []
    for c in _components(ctx):
        component = ctx.view.definition.component(c.name)
        selector = component.pod_selector
        id_path = selector.instance_id_path if selector else None
        match = _LABEL_PATH.fullmatch(id_path) if id_path else None
        if match is None or not c.multi:
            continue
        label = match.group(1) or match.group(2)
        value = f"{c.var('ids')}[i]"
        bad = f"(size({value}) > 63 || !{value}.matches({cel.string(LABEL_VALUE)}))"
        message = (
            f'{cel.string(c.name + " name ")} + "\'" + {value} + "\' becomes the pod label {label}, which it '
            'cannot be: a valid label value has at most 63 characters, alphanumeric, \'-\', \'_\' or \'.\', '
            'and starts and ends with an alphanumeric character"'
        )
        parts.append(_findings(c.var("idx"), "i", bad, message))
    return [_check(parts)]


def reserved_instance_id(ctx: Context) -> list[Check]:
    parts = []
    for c in _components(ctx):
        reserved = sorted(ctx.view.definition.hints.for_component(c.name).reserved_instance_ids)
        if not reserved:
            continue
        value = f"{c.var('ids')}[i]"
        message = (
            f'{cel.string(c.name + " name ")} + "\'" + {value} + "\' is reserved: pods of another component carry '
            'it, so selectors for this one would match them too"'
        )
        parts.append(_findings(c.var("idx"), "i", f"{value} in {cel.strings(reserved)}", message))
    return [_check(parts)]


def pod_template_containers(ctx: Context) -> list[Check]:
    parts = []
    for c in ctx.view.with_pods():
        spec = f"{c.var('specs')}[i]"
        empty = f"{spec} != null && !('containers' in {spec} && type({spec}.containers) == list && " \
                f"size({spec}.containers) > 0)"  # fmt: skip
        message = f'{c.label("i")} + ": the pod template has no containers"'
        parts.append(_findings(c.var("idx"), "i", empty, message))
    return [_check(parts)]


def definition_resolution(ctx: Context) -> list[Check]:
    name = ctx.view.definition.name
    errors = ctx.view.resolution_errors
    ctx.view.scaled()  # every component translated (raises NotCovered otherwise)
    message = (
        f'{errors}.map(e, "the {name} definition cannot read this object, so the policy rules cannot check it: " '
        "+ e)"
    )
    return [Check(f"size({errors}) > 0", message)]


# --- GPU --------------------------------------------------------------------------------------------


def _gpu_regex(settings: PolicySettings) -> str:
    """The GPU resource patterns (Python full matches) as one RE2 expression; NotCovered where they use
    what RE2 lacks or reads differently."""
    for pattern in settings.gpu.resource_patterns:
        text = pattern.pattern
        if re.search(r"\(\?[=!<]|\(\?P=|\\[1-9]|\(\?\(|\\[AZ]|\(\?[aiLmsux-]", text):
            raise NotCovered(f"GPU resource pattern {text!r} uses syntax RE2 (CEL's regex) lacks")
    return "^(?:" + "|".join(f"(?:{p.pattern})" for p in settings.gpu.resource_patterns) + ")$"


class Gpu:
    """CEL for the GPU facts of one container `x` (its limits, requests and GPU names)."""

    def __init__(self, settings: PolicySettings) -> None:
        self.regex = cel.string(_gpu_regex(settings))

    @staticmethod
    def limits(x: str) -> str:
        return cel.map_at(x, ("resources", "limits"))

    @staticmethod
    def requests(x: str) -> str:
        return cel.map_at(x, ("resources", "requests"))

    def names(self, x: str) -> str:
        """The container's GPU resource names (limits, then requests not in limits)."""
        limits, requests = self.limits(x), self.requests(x)
        return (
            f"({limits}.filter(k, k.matches({self.regex})) + "
            f"{requests}.filter(k, k.matches({self.regex}) && !(k in {limits})))"
        )

    def asks(self, x: str) -> str:
        limits, requests = self.limits(x), self.requests(x)
        return f"({limits}.exists(k, k.matches({self.regex})) || {requests}.exists(k, k.matches({self.regex})))"

    def positive_limit(self, x: str) -> str:
        """Some GPU limit is a quantity above zero (the webhook's gpu_limit > 0)."""
        limits = self.limits(x)
        q = f"string({limits}[k])"
        return f"{limits}.exists(k, k.matches({self.regex}) && isQuantity({q}) && quantity({q}).isGreaterThan(quantity('0')))"

    def limit_total(self, x: str) -> str:
        """The sum of the positive GPU limits, as a double (lists.sum)."""
        limits = self.limits(x)
        q = f"string({limits}[k])"
        positive = f"k.matches({self.regex}) && isQuantity({q}) && quantity({q}).isGreaterThan(quantity('0'))"
        return f"({limits}.filter(k, {positive}).map(k, quantity({q}).asApproximateFloat()) + [0.0]).sum()"


def _containers(spec: str, list_name: str) -> str:
    return f"{cel.list_at(spec, (list_name,))}.filter(x, type(x) == map)"


def _container_label(c: ComponentView, x: str, init: bool) -> str:
    kind = "init container" if init else "container"
    name = f"(('name' in {x} && type({x}.name) == string && {x}.name != '') ? {x}.name : '?')"
    return f'{c.label("i")} + " {kind} \'" + {name} + "\'"'


def _per_container(
    ctx: Context, predicate: Callable[[ComponentView, str, bool], str],
    message: Callable[[ComponentView, str, bool], str], *, lists: tuple[str, ...] = ("containers", "initContainers"),
    components: list[ComponentView] | None = None,
) -> list[tuple[str, str]]:  # fmt: skip
    parts = []
    for c in components if components is not None else ctx.view.with_pods():
        spec = f"{c.var('specs')}[i]"
        for list_name in lists:
            init = list_name == "initContainers"
            inner_cond = f"{_containers(spec, list_name)}.exists(x, {predicate(c, 'x', init)})"
            inner_msgs = f"{_containers(spec, list_name)}.filter(x, {predicate(c, 'x', init)}).map(x, {message(c, 'x', init)})"
            parts.append(
                (
                    f"{c.var('idx')}.exists(i, {spec} != null && {inner_cond})",
                    f"{c.var('idx')}.filter(i, {spec} != null && {inner_cond}).map(i, {inner_msgs})",
                )
            )
    return parts


def _flatten(parts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Messages built as lists of lists (instances, then containers) joined into one list of strings."""
    return [(cond, f"{msgs}.map(l, l.join(\"; \"))") for cond, msgs in parts]


def gpu_whole_number(ctx: Context) -> list[Check]:
    gpu = Gpu(ctx.settings)
    parts = []
    for section in ("requests", "limits"):
        values = gpu.limits("x") if section == "limits" else gpu.requests("x")
        q = f"string({values}[k])"
        bad = f"k.matches({gpu.regex}) && (!isQuantity({q}) || !quantity({q}).isInteger() || quantity({q}).isLessThan(quantity('0')))"

        def predicate(c: ComponentView, x: str, init: bool, bad: str = bad, values: str = values) -> str:
            return f"{values}.exists(k, {bad})"

        def message(c: ComponentView, x: str, init: bool, bad: str = bad, values: str = values, section: str = section) -> str:
            return (
                f'{values}.filter(k, {bad}).map(k, {_container_label(c, x, init)} + ": " + k + '
                f'" {section} must be a whole number of GPUs, got " + {q}).join("; ")'
            )

        parts.extend(_per_container(ctx, predicate, message))
    return [_check(_flatten(parts))]


def gpu_requests_equal_limits(ctx: Context) -> list[Check]:
    gpu = Gpu(ctx.settings)
    limits, requests = gpu.limits("x"), gpu.requests("x")
    rq, lq = f"string({requests}[k])", f"string({limits}[k])"
    missing = f"k.matches({gpu.regex}) && !(k in {limits})"
    differs = (
        f"k.matches({gpu.regex}) && k in {limits} && isQuantity({rq}) && isQuantity({lq}) && "
        f"quantity({rq}).compareTo(quantity({lq})) != 0"
    )

    def predicate(c: ComponentView, x: str, init: bool) -> str:
        return f"{requests}.exists(k, ({missing}) || ({differs}))"

    def message(c: ComponentView, x: str, init: bool) -> str:
        label = _container_label(c, x, init)
        return (
            f'{requests}.filter(k, {missing}).map(k, {label} + ": " + k + " is requested (" + {rq} + ") but has no '
            f'limit; GPUs need a limit equal to the request") + {requests}.filter(k, {differs}).map(k, {label} + '
            f'": " + k + " request " + {rq} + " differs from its limit " + {lq} + "; GPUs cannot be '
            f'overcommitted")).join("; ")'
        ).replace("\n", " ")

    return [_check(_flatten(_per_container(ctx, predicate, message)))]


def gpu_single_vendor(ctx: Context) -> list[Check]:
    gpu = Gpu(ctx.settings)

    def vendor(k: str) -> str:
        return f"({k}.indexOf('/') >= 0 ? {k}.substring(0, {k}.indexOf('/')) : {k})"

    def predicate(c: ComponentView, x: str, init: bool) -> str:
        names = gpu.names(x)
        return f"{names}.exists(a, {names}.exists(b, {vendor('a')} != {vendor('b')}))"

    def message(c: ComponentView, x: str, init: bool) -> str:
        return (
            f'{_container_label(c, x, init)} + " asks for GPUs of several vendors (" + {gpu.names(x)}.join(", ") + '
            '"); no node has both, so the pod never schedules"'
        )

    return [_check(_flatten([(cond, f"{msgs}") for cond, msgs in _per_container(ctx, predicate, message)]))]


def gpu_on_head(ctx: Context) -> list[Check]:
    gpu = Gpu(ctx.settings)
    heads = [c for c in ctx.view.with_pods() if c.role == "head"]

    def message(c: ComponentView, x: str, init: bool) -> str:
        return (
            f'{_container_label(c, x, init)} + " asks for " + {gpu.names(x)}.join(", ") + ": GPUs on the head are '
            'usually idle (Ray schedules GPU work on workers); set the rule to off if this is intended"'
        )

    parts = _per_container(ctx, lambda c, x, init: gpu.asks(x), message, components=heads)
    return [_check(_flatten(parts))]


def gpu_on_primary_container(ctx: Context) -> list[Check]:
    primary = ctx.view.definition.hints.primary_container
    if primary is None:
        return []
    gpu = Gpu(ctx.settings)
    read_by = f"only containers[{primary}] is read for the resources the workload advertises (Ray's num-gpus)"
    strict = []
    for c in ctx.view.with_pods():
        spec = f"{c.var('specs')}[i]"
        containers = cel.list_at(spec, ("containers",))
        # A container other than the primary one, by index (duplicates of it must not hide).
        others = f"variables.range.filter(k, k < size({containers}) && k != {primary} && type({containers}[k]) == map)"
        x = f"{containers}[k]"
        cond = f"{others}.exists(k, {gpu.asks(x)})"
        msgs = (
            f'{others}.filter(k, {gpu.asks(x)}).map(k, {_container_label(c, x, False)} + " asks for " + '
            f'{gpu.names(x)}.join(", ") + ", but {read_by}; move the GPUs there").join("; ")'
        )
        strict.append((f"{c.var('idx')}.exists(i, {spec} != null && {cond})",
                       f"{c.var('idx')}.filter(i, {spec} != null && {cond}).map(i, {msgs})"))  # fmt: skip

    sidecar = "'restartPolicy' in x && x.restartPolicy == 'Always'"
    strict += _per_container(
        ctx,
        lambda c, x, init: f"({sidecar}) && {gpu.asks(x)}",
        lambda c, x, init: (
            f'{_container_label(c, x, init)} + " is a native sidecar (restartPolicy: Always) and asks for " + '
            f'{gpu.names(x)}.join(", ") + ": it holds them beside the other containers for the pod\'s whole life, '
            f'but {read_by}; move the GPUs there"'
        ),
        lists=("initContainers",),
    )

    def primary_total(c: ComponentView) -> str:
        spec = f"{c.var('specs')}[i]"
        containers = cel.list_at(spec, ("containers",))
        first = f"{containers}[{primary}]"
        return f"((size({containers}) > {primary} && type({first}) == map) ? {gpu.limit_total(first)} : 0.0)"

    softened = _per_container(
        ctx,
        lambda c, x, init: f"!({sidecar}) && {gpu.asks(x)} && {gpu.limit_total(x)} > {primary_total(c)}",
        lambda c, x, init: (
            f'{_container_label(c, x, init)} + " asks for " + string({gpu.limit_total(x)}) + " GPUs and '
            f'containers[{primary}] for " + string({primary_total(c)}) + ": the pod holds them for its whole life '
            f'(an init container\'s request counts for the pod), but the workload uses the GPUs of '
            f'containers[{primary}] only"'
        ),
        lists=("initContainers",),
    )
    return [_check(_flatten(strict)), _check(_flatten(softened), softened=True)]


def _has_gpu_limits(gpu: Gpu, spec: str) -> str:
    return (
        f"({_containers(spec, 'containers')}.exists(x, {gpu.positive_limit('x')}) || "
        f"{_containers(spec, 'initContainers')}.exists(x, {gpu.positive_limit('x')}))"
    )


def _selects_gpu_nodes(settings: PolicySettings, spec: str) -> str:
    keys = cel.strings(settings.gpu.node_label_keys)
    selector = cel.map_at(spec, ("nodeSelector",))
    terms = cel.list_at(spec, ("affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                               "nodeSelectorTerms"))  # fmt: skip
    expressions = f"{cel.list_at('t', ('matchExpressions',))}"
    matching = (
        f"type(e) == map && 'key' in e && e.key in {keys} && 'operator' in e && e.operator in ['In', 'Exists', 'Gt']"
    )
    return (
        f"({selector}.exists(k, k in {keys}) || "
        f"{terms}.exists(t, type(t) == map && {expressions}.exists(e, {matching})))"
    )


def _tolerates(settings: PolicySettings, spec: str) -> str:
    taints = cel.strings(settings.gpu.taint_keys)
    key = "(('key' in t && t.key != null) ? t.key : '')"
    operator = "(('operator' in t && t.operator != null && t.operator != '') ? t.operator : 'Equal')"
    return f"{cel.list_at(spec, ('tolerations',))}.exists(t, type(t) == map && (({key} == '' && {operator} == 'Exists') || {key} in {taints}))"


def gpu_node_selector(ctx: Context) -> list[Check]:
    gpu = Gpu(ctx.settings)
    parts = []
    for c in ctx.view.with_pods():
        spec = f"{c.var('specs')}[i]"
        predicate = f"{spec} != null && !{_has_gpu_limits(gpu, spec)} && {_selects_gpu_nodes(ctx.settings, spec)}"
        message = f'{c.label("i")} + ": the pod template selects GPU nodes but no container has a GPU limit"'
        parts.append(_findings(c.var("idx"), "i", predicate, message))
    return [_check(parts)]


def gpu_toleration(ctx: Context) -> list[Check]:
    gpu = Gpu(ctx.settings)
    parts = []
    keys = ", ".join(ctx.settings.gpu.taint_keys)
    for c in ctx.view.with_pods():
        spec = f"{c.var('specs')}[i]"
        predicate = f"{spec} != null && {_has_gpu_limits(gpu, spec)} && !{_tolerates(ctx.settings, spec)}"
        message = f'{c.label("i")} + ": asks for GPUs but tolerates no GPU taint ({keys}); it stays Pending on tainted GPU nodes"'
        parts.append(_findings(c.var("idx"), "i", predicate, message))
    return [_check(parts)]


def nvidia_visible_devices(ctx: Context) -> list[Check]:
    gpu = Gpu(ctx.settings)
    name = cel.string(VISIBLE_DEVICES)
    env = cel.list_at("x", ("env",))
    entry = f"type(e) == map && 'name' in e && e.name == {name}"
    from_source = f"'valueFrom' in e && type(e.valueFrom) == map && size(e.valueFrom) > 0"
    literal = (
        f"!({from_source}) && 'value' in e && type(e.value) == string && "
        "!(e.value.trim().lowerAscii() in ['', 'none', 'void'])"
    )
    explicit = f"{env}.exists(e, {entry})"
    env_from = cel.list_at("x", ("envFrom",))
    prefix = "(('prefix' in s && type(s.prefix) == string) ? s.prefix : '')"
    targets = f"type(s) == map && {cel.string(VISIBLE_DEVICES)}.startsWith({prefix})"
    no_limit = f"!{gpu.positive_limit('x')}"

    def strict_predicate(c: ComponentView, x: str, init: bool) -> str:
        return cel.all_of(
            no_limit,
            cel.any_of(
                f"{env}.exists(e, {entry} && (({from_source}) || ({literal})))",
                f"(!{explicit} && {env_from}.exists(s, {targets} && {prefix} != ''))",
            ),
        )

    def strict_message(c: ComponentView, x: str, init: bool) -> str:
        label = _container_label(c, x, init)
        return (
            f'{label} + " sets or can set {VISIBLE_DEVICES} (env value, valueFrom or an envFrom prefix) without a '
            'GPU limit: it would use GPUs the scheduler gave to other pods; request GPUs in resources.limits '
            'instead"'
        )

    parts = _per_container(ctx, strict_predicate, strict_message)
    soft_parts = []
    for c in ctx.view.with_pods():
        spec = f"{c.var('specs')}[i]"
        reaches = f"({_selects_gpu_nodes(ctx.settings, spec)} || {_tolerates(ctx.settings, spec)})"
        soft_parts += _per_container(
            ctx,
            lambda c, x, init, reaches=reaches: cel.all_of(
                no_limit, f"!{explicit}", f"{env_from}.exists(s, {targets} && {prefix} == '')", reaches
            ),
            lambda c, x, init: (
                f'{_container_label(c, x, init)} + " takes variables from a ConfigMap or Secret the webhook cannot '
                f'read; the pod can run on GPU nodes and has no GPU limit here, so a key {VISIBLE_DEVICES} in it '
                f'would use GPUs the scheduler gave to other pods; set {VISIBLE_DEVICES}=void in env to be sure"'
            ),
            components=[c],
        )
    return [_check(_flatten(parts)), _check(_flatten(soft_parts), softened=True)]


# --- KubeRay ----------------------------------------------------------------------------------------


def _cluster_spec(ctx: Context) -> tuple[str, tuple[str, ...]]:
    path = CLUSTER_SPEC_PATHS.get(ctx.kind)
    if path is None or ctx.view.definition.root_kind.group != RAY_GROUP:
        raise NotCovered("not a Ray kind")
    return cel.map_at("object", path), tuple(str(p) for p in path)


def _workers(spec: str) -> str:
    return f"{cel.list_at(spec, ('workerGroupSpecs',))}.filter(g, type(g) == map)"


def _group_label(g: str) -> str:
    name = f"(('groupName' in {g} && {g}.groupName != null) ? string({g}.groupName) : '')"
    return f'"worker group \\"" + {name} + "\\""'


def ray_name(ctx: Context) -> list[Check]:
    limit = NAME_LIMITS.get(ctx.kind)
    if limit is None or ctx.view.definition.root_kind.group != RAY_GROUP:
        return []
    name = "object.metadata.name"
    named = f"'name' in object.metadata && type({name}) == string && {name} != ''"
    too_long = f"size({name}) > {limit}"
    not_label = f"!(size({name}) <= 63 && {name}.matches({cel.string(DNS1035_LABEL)}))"
    message = (
        f'"{ctx.kind} name \'" + {name} + "\' " + ({too_long} ? "has " + string(size({name})) + " characters; '
        f'KubeRay accepts at most {limit}" : "must be a DNS-1035 label (lower-case letters, digits and \'-\', '
        'starting with a letter); KubeRay refuses it")'
    )
    condition = f"{named} && ({too_long} || {not_label})"
    return [Check(condition, f"[{message}]", field_path="metadata.name", reads_metadata=True)]


def ray_nested_upgrade_strategy(ctx: Context) -> list[Check]:
    if ctx.kind not in {"RayService", "RayJob"}:
        return []
    spec, path = _cluster_spec(ctx)
    strategy = cel.map_at(spec, ("upgradeStrategy",))
    condition = f"'type' in {strategy} && {strategy}.type != null"
    message = (
        f'"upgradeStrategy cannot be set in the cluster spec of a {ctx.kind}: KubeRay refuses the RayCluster it '
        'creates from it"'
    )
    return [Check(condition, f"[{message}]", field_path=".".join((*path, "upgradeStrategy")))]


def ray_worker_suspend(ctx: Context) -> list[Check]:
    spec, path = _cluster_spec(ctx)
    autoscaling = f"('enableInTreeAutoscaling' in {spec} && {spec}.enableInTreeAutoscaling == true)"
    suspended = "'suspend' in g && g.suspend == true"
    message = f'{_group_label("g")} + ": cannot be suspended while enableInTreeAutoscaling is true; KubeRay refuses it"'
    cond, msgs = _findings(_workers(spec), "g", suspended, message)
    return [Check(f"{autoscaling} && {cond}", msgs, field_path=".".join((*path, "workerGroupSpecs")))]


def ray_group_name_pod_name(ctx: Context) -> list[Check]:
    spec, path = _cluster_spec(ctx)
    name = "(('groupName' in g && g.groupName != null) ? string(g.groupName) : '')"
    bad = f"!{name}.lowerAscii().matches('^[a-z0-9.-]*$')"
    message = (
        f'{_group_label("g")} + ": pod names <cluster>-" + {name}.lowerAscii() + "-worker-xxxxx can hold only '
        'lower-case letters, digits, \'-\' and \'.\'; KubeRay could not create the group\'s pods"'
    )
    cond, msgs = _findings(_workers(spec), "g", bad, message)
    return [Check(cond, msgs, field_path=".".join((*path, "workerGroupSpecs")))]


def ray_cluster_upgrade_strategy(ctx: Context) -> list[Check]:
    if ctx.kind != "RayCluster":
        return []
    spec, path = _cluster_spec(ctx)
    labels = cel.map_at("object", ("metadata", "labels"))
    origin = f"(('ray.io/originated-from-crd' in {labels}) ? {labels}['ray.io/originated-from-crd'] : '')"
    strategy = cel.map_at(spec, ("upgradeStrategy",))
    condition = f"{origin} in ['RayJob', 'RayService'] && 'type' in {strategy} && {strategy}.type != null"
    message = f'"upgradeStrategy cannot be set on a RayCluster created by a " + {origin} + "; KubeRay refuses it"'
    return [Check(condition, f"[{message}]", field_path=".".join((*path, "upgradeStrategy", "type")),
                  reads_metadata=True)]  # fmt: skip


def ray_autoscaler_options(ctx: Context) -> list[Check]:
    spec, path = _cluster_spec(ctx)
    options = cel.map_at(spec, ("autoscalerOptions",))
    timeout = f"{options}.idleTimeoutSeconds"
    negative = f"'idleTimeoutSeconds' in {options} && type({timeout}) == int && {timeout} < 0"
    env = cel.list_at(options, ("env",))
    generated = f"{env}.exists(e, type(e) == map && 'name' in e && e.name == {cel.string(GENERATED_START_CMD_ENV)})"
    messages = (
        f'({negative} ? ["autoscalerOptions.idleTimeoutSeconds " + string({timeout}) + " is negative; KubeRay '
        f'refuses it"] : []) + ({generated} ? ["autoscalerOptions.env must not set {GENERATED_START_CMD_ENV}: '
        'KubeRay generates it"] : [])'
    )
    return [Check(cel.any_of(negative, generated), messages, field_path=".".join((*path, "autoscalerOptions")))]


def ray_job_limits(ctx: Context) -> list[Check]:
    if ctx.kind != "RayJob" or ctx.view.definition.root_kind.group != RAY_GROUP:
        return []
    spec = cel.map_at("object", ("spec",))
    parts = []
    for field, lowest in (("activeDeadlineSeconds", 1), ("preRunningDeadlineSeconds", 1), ("backoffLimit", 0)):
        value = f"{spec}.{field}"
        bad = f"'{field}' in {spec} && type({value}) == int && {value} < {lowest}"
        need = "positive" if lowest else "at least 0"
        parts.append((bad, f'({bad} ? ["{field} " + string({value}) + " must be {need}; KubeRay refuses it"] : [])'))
    return [_check(parts, field_path="spec")]


COMPILERS: dict[str, Compile] = {
    "replicas-within-bounds": replicas_within_bounds,
    "min-not-above-max": min_not_above_max,
    "non-negative-scale": non_negative_scale,
    "pods-per-replica": pods_per_replica,
    "unique-instance-ids": unique_instance_ids,
    "instance-id-label-value": instance_id_label_value,
    "reserved-instance-id": reserved_instance_id,
    "pod-template-containers": pod_template_containers,
    "definition-resolution": definition_resolution,
    "gpu-whole-number": gpu_whole_number,
    "gpu-requests-equal-limits": gpu_requests_equal_limits,
    "gpu-on-primary-container": gpu_on_primary_container,
    "gpu-single-vendor": gpu_single_vendor,
    "nvidia-visible-devices": nvidia_visible_devices,
    "gpu-on-head": gpu_on_head,
    "gpu-node-selector": gpu_node_selector,
    "gpu-toleration": gpu_toleration,
    "ray-name": ray_name,
    "ray-nested-upgrade-strategy": ray_nested_upgrade_strategy,
    "ray-worker-suspend": ray_worker_suspend,
    "ray-group-name-pod-name": ray_group_name_pod_name,
    "ray-cluster-upgrade-strategy": ray_cluster_upgrade_strategy,
    "ray-autoscaler-options": ray_autoscaler_options,
    "ray-job-limits": ray_job_limits,
}

# Why the other rules are not compiled. They stay in force in the webhook.
NOT_EXPRESSIBLE: dict[str, str] = {
    "ray-resources-conflict": "not yet translated (expressible: rayStartParams keys against resources)",
    "ray-group-labels": "label key syntax (prefix subdomain and name parts) is not yet translated",
    "ray-autoscaler-v2-env": "not yet translated (reads the head container's env by name)",
    "ray-autoscaler-restart-policy": "not yet translated (autoscaler v1/v2 distinction per group)",
    "ray-worker-idle-timeout": "not yet translated (autoscaler v2 from options or the head's env)",
    "ray-worker-priority": "compares Ray versions (Go's version.ParseGeneric), which CEL 1.30 cannot parse",
    "ray-gcs-fault-tolerance": "not yet translated (many cross-field conditions over env, annotations, volumes)",
    "ray-auth": "compares Ray versions (Go's version.ParseGeneric), which CEL 1.30 cannot parse",
    "ray-network-policy": "not yet translated (matches networkPolicy.workerGroups against the group names)",
    "ray-tls": "not yet translated (env and mounts of every Ray container and the autoscaler)",
    "ray-history-server": "not yet translated (collector options and container names)",
    "ray-feature-gate": "not yet translated (which feature a gate guards per field)",
    "ray-initializing-timeout": "parses a Go duration from an annotation, which CEL 1.30 cannot do faithfully",
    "ray-service-head-service-name": "not yet translated (generated service name lengths)",
    "ray-service-upgrade-strategy": "not yet translated (incremental upgrade options per gate)",
    "ray-job-cluster-source": "not yet translated",
    "ray-job-suspend": "not yet translated",
    "ray-job-ttl": "not yet translated",
    "ray-job-submission-mode": "not yet translated",
    "ray-job-runtime-env": "parses runtimeEnvYAML as YAML, which CEL cannot",
    "ray-job-deletion-strategy": "orders deletion rules by policy and TTL across entries; not yet translated",
}
