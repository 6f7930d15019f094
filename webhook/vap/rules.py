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
from webhook.policy.ray_spec import AUTOSCALER_V2_ENV
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


def _shown(ctx: Context, c: ComponentView) -> str:
    """`<c>_shown`: per instance, its scale values as messages show them (webhook.policy.scale._count):
    replicas, and pods when a replica is several pods. Computed only when a message needs it."""
    name = f"{c.key}_shown"
    if not any(n == name for n, _ in ctx.view.variables.entries):
        ppr = f"{c.var('ppr')}[i]"
        whole = f"{ppr} != null && {ppr} > 1 && v % {ppr} == 0"
        per = f'string(v / {ppr}) + " (" + string(v) + " pods at " + string({ppr}) + " per replica)"'
        text = f"(v == null ? '' : ({whole} ? {per} : string(v)))"
        lo = f"{c.var('min')}[i]"
        start = f"(({lo} != null && {lo} > 0) ? {lo} : 0)"
        fields = ", ".join(
            f'"{key}": {cel.bind(value, "v", text)}'
            for key, value in (("replicas", f"{c.var('replicas')}[i]"), ("min", lo), ("max", f"{c.var('max')}[i]"),
                               ("start", start))
        )  # fmt: skip
        ctx.view.variables.add(name, f"{c.var('idx')}.map(i, {{{fields}}})")
    return c.var("shown")


def _count(ctx: Context, c: ComponentView, i: str, which: str) -> str:
    return f"{_shown(ctx, c)}[{i}].{which}"


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
        for predicate, word, bound in ((above, "above maxReplicas", "max"), (below, "below minReplicas", "min")):
            shown = _count(ctx, c, "i", bound)
            message = (
                f'{where} + ": " + {c.label("i")} + ": replicas " + {_count(ctx, c, "i", "replicas")} + " is {word} '
                f'" + {shown} + "; {runner} would run " + {shown}'
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
            f'{_count(ctx, c, "i", "min")} + " is greater than maxReplicas " + {_count(ctx, c, "i", "max")} + '
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
                effect = f'"{_runner(ctx)} would run " + {_count(ctx, c, "i", "start")}'
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
    return [view.component(c.name) for c in view.definition.components if c.instance_id_path]


def unique_instance_ids(ctx: Context) -> list[Check]:
    parts = []
    for c in _components(ctx):
        if not c.multi:
            continue
        ids = c.var("ids")
        # indexOf (Kubernetes lists library) costs one traversal: n^2 in all, not the 7n^2 of a filter.
        first = f"{ids}.indexOf({ids}[i])"
        message = (
            f'{cel.string(c.name + " name ")} + "\'" + {ids}[i] + "\' is used twice (also at index " + '
            f'string({first}) + "); pods of both would be indistinguishable"'
        )
        parts.append(_findings(c.var("idx"), "i", f"{first} != i", message))
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
            "cannot be: a valid label value has at most 63 characters, alphanumeric, '-', '_' or '.', "
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
        f'{errors}.map(e, "the {name} definition cannot read this object, so the policy rules cannot check it: " + e)'
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


def _positive(values: str, key: str) -> str:
    q = f"string({values}[{key}])"
    return f"(isQuantity({q}) && quantity({q}).isGreaterThan(quantity('0')))"


def _container_record(x: str, init: bool) -> str:
    """The facts the GPU rules read about one container, computed once (webhook.policy.gpu.ContainerView)."""
    limits, requests = cel.map_at(x, ("resources", "limits")), cel.map_at(x, ("resources", "requests"))
    name = f"(('name' in {x} && type({x}.name) == string && {x}.name != '') ? {x}.name : '?')"
    sidecar = f"('restartPolicy' in {x} && {x}.restartPolicy == 'Always')" if init else "false"
    facts = (
        '{"name": dyn('
        + name
        + '), "init": dyn('
        + ("true" if init else "false")
        + '), "sidecar": dyn('
        + sidecar
        + '), "limits": dyn(p[0]), "requests": dyn(p[1]), '
        '"gpus": dyn(p[0].filter(k, k.matches(variables.gpu_pattern)) + '
        "p[1].filter(k, k.matches(variables.gpu_pattern) && !(k in p[0]))), "
        '"limited": dyn(p[0].exists(k, k.matches(variables.gpu_pattern) && ' + _positive("p[0]", "k") + ")), "
        '"total": dyn((p[0].filter(k, k.matches(variables.gpu_pattern) && ' + _positive("p[0]", "k") + ")"
        ".map(k, quantity(string(p[0][k])).asApproximateFloat()) + [0.0]).sum()), "
        '"env": dyn(' + cel.list_at(x, ("env",)) + '), "envFrom": dyn(' + cel.list_at(x, ("envFrom",)) + ")}"
    )
    return cel.bind(f"[{limits}, {requests}]", "p", facts)


def _gpu_facts(ctx: Context) -> None:
    """Per component: `<c>_ctrs` (per instance, a record per container then init container) and
    `<c>_pods` (per instance: GPU limits anywhere, selects GPU nodes, tolerates a GPU taint)."""
    variables = ctx.view.variables
    if any(name == "gpu_pattern" for name, _ in variables.entries):
        return
    variables.add("gpu_pattern", cel.string(_gpu_regex(ctx.settings)))
    for c in ctx.view.with_pods():
        spec = "s"
        records = (
            f"{_containers(spec, 'containers')}.map(x, {_container_record('x', False)}) + "
            f"{_containers(spec, 'initContainers')}.map(x, {_container_record('x', True)})"
        )
        variables.add(f"{c.key}_ctrs", f"{c.var('specs')}.map(s, s == null ? [] : {records})")
        pod = (
            '{"limited": dyn('
            + f"{c.var('ctrs')}[i].exists(r, r.limited)"
            + '), "selects": dyn('
            + _selects_gpu_nodes(ctx.settings, f"{c.var('specs')}[i]")
            + '), "tolerates": dyn('
            + _tolerates(ctx.settings, f"{c.var('specs')}[i]")
            + ")}"
        )
        variables.add(f"{c.key}_pods", f"{c.var('idx')}.map(i, {c.var('specs')}[i] == null ? "
                                       '{"limited": dyn(false), "selects": dyn(false), "tolerates": dyn(false)} : '
                                       f"{pod})")  # fmt: skip


def _containers(spec: str, list_name: str) -> str:
    return f"{cel.list_at(spec, (list_name,))}.filter(x, type(x) == map)"


def _label(c: ComponentView) -> str:
    """`<instance label> container 'name'` for record r of instance i."""
    return f'{c.label("i")} + (r.init ? " init container \'" : " container \'") + r.name + "\'"'


def _per_container(
    ctx: Context, predicate: str, message: str, components: list[ComponentView] | None = None
) -> list[tuple[str, str]]:
    """Findings over the container records `r` of every instance `i` (messages joined per instance)."""
    _gpu_facts(ctx)
    parts = []
    for c in components if components is not None else ctx.view.with_pods():
        ctrs = f"{c.var('ctrs')}[i]"
        parts.append(
            (
                f"{c.var('idx')}.exists(i, {ctrs}.exists(r, {predicate}))",
                f"{c.var('idx')}.filter(i, {ctrs}.exists(r, {predicate}))"
                f'.map(i, {ctrs}.filter(r, {predicate}).map(r, {message.replace("{label}", _label(c))}).join("; "))',
            )
        )
    return parts


def _bad_gpu_quantity(values: str) -> str:
    q = f"string({values}[k])"
    return f"(!isQuantity({q}) || !quantity({q}).isInteger() || quantity({q}).isLessThan(quantity('0')))"


def gpu_whole_number(ctx: Context) -> list[Check]:
    bad = {section: f"r.gpus.filter(k, k in r.{section} && {_bad_gpu_quantity('r.' + section)})"
           for section in ("requests", "limits")}  # fmt: skip
    predicate = f"(size({bad['requests']}) > 0 || size({bad['limits']}) > 0)"
    message = (
        f'{{label}} + ": " + ({bad["requests"]}.map(k, k + " requests " + string(r.requests[k])) + '
        f'{bad["limits"]}.map(k, k + " limits " + string(r.limits[k]))).join(", ") + '
        '" must be a whole number of GPUs"'
    )
    return [_check(_per_container(ctx, predicate, message))]


def gpu_requests_equal_limits(ctx: Context) -> list[Check]:
    rq, lq = "string(r.requests[k])", "string(r.limits[k])"
    differs = (
        f"!(k in r.limits) || (isQuantity({rq}) && isQuantity({lq}) && quantity({rq}).compareTo(quantity({lq})) != 0)"
    )
    wrong = f"r.gpus.filter(k, k in r.requests && ({differs}))"
    message = (
        f'{{label}} + ": " + {wrong}.map(k, k in r.limits ? k + " request " + {rq} + " differs from its limit " + '
        f'{lq} + "; GPUs cannot be overcommitted" : k + " is requested (" + {rq} + ") but has no limit; GPUs '
        'need a limit equal to the request").join(", ")'
    )
    return [_check(_per_container(ctx, f"size({wrong}) > 0", message))]


def _vendor(k: str) -> str:
    return f"({k}.indexOf('/') >= 0 ? {k}.substring(0, {k}.indexOf('/')) : {k})"


def gpu_single_vendor(ctx: Context) -> list[Check]:
    predicate = f"r.gpus.exists(a, r.gpus.exists(b, {_vendor('a')} != {_vendor('b')}))"
    message = (
        '{label} + " asks for GPUs of several vendors (" + r.gpus.join(", ") + "); no node has both, so the pod '
        'never schedules"'
    )
    return [_check(_per_container(ctx, predicate, message))]


def gpu_on_head(ctx: Context) -> list[Check]:
    heads = [c for c in ctx.view.with_pods() if c.role == "head"]
    message = (
        '{label} + " asks for " + r.gpus.join(", ") + ": GPUs on the head are usually idle (Ray schedules GPU work '
        'on workers); set the rule to off if this is intended"'
    )
    return [_check(_per_container(ctx, "size(r.gpus) > 0", message, components=heads))]


def gpu_on_primary_container(ctx: Context) -> list[Check]:
    primary = ctx.view.definition.hints.primary_container
    if primary is None:
        return []
    _gpu_facts(ctx)
    read_by = f"only containers[{primary}] is read for the resources the workload advertises (Ray's num-gpus)"
    strict = []
    for c in ctx.view.with_pods():
        ctrs = f"{c.var('ctrs')}[i]"
        mains = f"{ctrs}.filter(r, !r.init)"
        asking = f"{mains}.filter(r, size(r.gpus) > 0)"
        # A container other than containers[primary] asks for GPUs: more asking containers than the
        # primary one accounts for (counted, so that a copy of the primary container cannot hide).
        primary_asks = f"(size({mains}) > {primary} && size({mains}[{primary}].gpus) > 0)"
        condition = f"size({asking}) > ({primary_asks} ? 1 : 0)"
        message = (
            f'{c.label("i")} + ": containers " + {asking}.map(r, "\'" + r.name + "\'").join(", ") + " ask for '
            f'GPUs, but {read_by}; move the GPUs there"'
        )
        strict.append(_findings(c.var("idx"), "i", condition, message))
    strict += _per_container(
        ctx, "r.sidecar && size(r.gpus) > 0",
        '{label} + " is a native sidecar (restartPolicy: Always) and asks for " + r.gpus.join(", ") + ": it holds '
        f'them beside the other containers for the pod\'s whole life, but {read_by}; move the GPUs there"',
    )  # fmt: skip
    softened = []
    for c in ctx.view.with_pods():
        ctrs = f"{c.var('ctrs')}[i]"
        mains = f"{ctrs}.filter(r, !r.init)"
        read = f"(size({mains}) > {primary} ? {mains}[{primary}].total : 0.0)"
        softened += _per_container(
            ctx, f"r.init && !r.sidecar && size(r.gpus) > 0 && r.total > {read}",
            f'{{label}} + " asks for " + string(r.total) + " GPUs and containers[{primary}] for " + string({read}) + '
            '": the pod holds them for its whole life (an init container\'s request counts for the pod), but the '
            f'workload uses the GPUs of containers[{primary}] only"',
            components=[c],
        )  # fmt: skip
    return [_check(strict), _check(softened, softened=True)]


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
    return (
        f"{cel.list_at(spec, ('tolerations',))}.exists(t, type(t) == map && "
        f"(({key} == '' && {operator} == 'Exists') || {key} in {taints}))"
    )


def gpu_node_selector(ctx: Context) -> list[Check]:
    _gpu_facts(ctx)
    parts = []
    for c in ctx.view.with_pods():
        pod = f"{c.var('pods')}[i]"
        message = f'{c.label("i")} + ": the pod template selects GPU nodes but no container has a GPU limit"'
        parts.append(_findings(c.var("idx"), "i", f"!{pod}.limited && {pod}.selects", message))
    return [_check(parts)]


def gpu_toleration(ctx: Context) -> list[Check]:
    _gpu_facts(ctx)
    parts = []
    keys = ", ".join(ctx.settings.gpu.taint_keys)
    for c in ctx.view.with_pods():
        pod = f"{c.var('pods')}[i]"
        message = (
            f'{c.label("i")} + ": asks for GPUs but tolerates no GPU taint ({keys}); it stays Pending on tainted '
            'GPU nodes"'
        )
        parts.append(_findings(c.var("idx"), "i", f"{pod}.limited && !{pod}.tolerates", message))
    return [_check(parts)]


def nvidia_visible_devices(ctx: Context) -> list[Check]:
    name = cel.string(VISIBLE_DEVICES)
    entry = f"type(e) == map && 'name' in e && e.name == {name}"
    from_source = "('valueFrom' in e && type(e.valueFrom) == map && size(e.valueFrom) > 0)"
    literal = (
        f"(!{from_source} && 'value' in e && type(e.value) == string && "
        "!(e.value.trim().lowerAscii() in ['', 'none', 'void']))"
    )
    explicit = f"r.env.exists(e, {entry})"
    prefix = "(('prefix' in s && type(s.prefix) == string) ? s.prefix : '')"
    targets = f"type(s) == map && {name}.startsWith({prefix})"
    strict = (
        f"!r.limited && (r.env.exists(e, {entry} && ({from_source} || {literal})) || "
        f"(!{explicit} && r.envFrom.exists(s, {targets} && {prefix} != '')))"
    )
    message = (
        f'{{label}} + " sets or can set {VISIBLE_DEVICES} (a value, valueFrom or an envFrom prefix) without a GPU '
        'limit: it would use GPUs the scheduler gave to other pods; request GPUs in resources.limits instead"'
    )
    parts = _per_container(ctx, strict, message)
    soft = []
    for c in ctx.view.with_pods():
        pod = f"{c.var('pods')}[i]"
        soft += _per_container(
            ctx,
            f"!r.limited && !{explicit} && r.envFrom.exists(s, {targets} && {prefix} == '') && "
            f"({pod}.selects || {pod}.tolerates)",
            '{label} + " takes variables from a ConfigMap or Secret the webhook cannot read; the pod can run on GPU '
            f"nodes and has no GPU limit here, so a key {VISIBLE_DEVICES} in it would use GPUs the scheduler gave to "
            f'other pods; set {VISIBLE_DEVICES}=void in env to be sure"',
            components=[c],
        )
    return [_check(parts), _check(soft, softened=True)]


# --- KubeRay ----------------------------------------------------------------------------------------


def _cluster_spec(ctx: Context) -> tuple[str, tuple[str, ...]]:
    """The Ray cluster spec of the object (a variable, read once) and where it sits."""
    path = CLUSTER_SPEC_PATHS.get(ctx.kind)
    if path is None or ctx.view.definition.root_kind.group != RAY_GROUP:
        raise NotCovered("not a Ray kind")
    names = tuple(str(p) for p in path)
    variables = ctx.view.variables
    if not any(name == "ray_cluster_spec" for name, _ in variables.entries):
        variables.add("ray_cluster_spec", cel.map_at("object", names))
    return "variables.ray_cluster_spec", names


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
        f"KubeRay accepts at most {limit}\" : \"must be a DNS-1035 label (lower-case letters, digits and '-', "
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
        "lower-case letters, digits, '-' and '.'; KubeRay could not create the group's pods\""
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


def _get(holder: str, key: str) -> str:
    """holder[key], or null when it is missing (the webhook's .get())."""
    return f"({cel.has(holder, key)} ? {cel.select(holder, key)} : null)"


def _int_or_null(value: str) -> str:
    """An integer (not a bool), or null: the webhook's _int()."""
    return cel.bind(value, "n", "type(n) == int ? n : null")


def _groups(spec: str) -> list[tuple[str, str, str]]:
    """(list of groups, label of group g, path of group g at index-free form) for head and workers."""
    head = f"[{cel.map_at(spec, ('headGroupSpec',))}]"
    return [(head, '"head group"', "headGroupSpec"), (_workers(spec), _group_label("g"), "workerGroupSpecs")]


def _job_spec(ctx: Context) -> str:
    if ctx.kind != "RayJob" or ctx.view.definition.root_kind.group != RAY_GROUP:
        raise _NotThisKind
    variables = ctx.view.variables
    if not any(name == "ray_job_spec" for name, _ in variables.entries):
        variables.add("ray_job_spec", cel.map_at("object", ("spec",)))
    return "variables.ray_job_spec"


class _NotThisKind(Exception):
    """The rule never fires for this kind (the webhook returns at once): compiled with no checks."""


def _selector_mode(spec: str) -> str:
    return f"(size({cel.map_at(spec, ('clusterSelector',))}) > 0)"


def _head_env(ctx: Context, spec: str, name: str) -> str:
    """The head's Ray container (containers[0]) env entry `name`, first of them, as a one-element list or []."""
    containers = cel.list_at(spec, ("headGroupSpec", "template", "spec", "containers"))
    env = (
        f"((size({containers}) > 0 && type({containers}[0]) == map) ? {cel.list_at(containers + '[0]', ('env',))} : [])"
    )
    return f"{env}.filter(e, type(e) == map && 'name' in e && e.name == {cel.string(name)})"


def _autoscaler_v2_env(ctx: Context, spec: str) -> str:
    """`ray_v2_env`: [value] of the head's RAY_enable_autoscaler_v2 (\"\" when not a string), or []."""
    variables = ctx.view.variables
    if not any(n == "ray_v2_env" for n, _ in variables.entries):
        entries = _head_env(ctx, spec, AUTOSCALER_V2_ENV)
        variables.add(
            "ray_v2_env",
            f"size({entries}) == 0 ? [] : [{cel.bind(entries + '[0]', 'e', _value_string('e'))}]",
        )
    return "variables.ray_v2_env"


def _value_string(e: str) -> str:
    return f"(('value' in {e} && type({e}.value) == string) ? {e}.value : '')"


def _autoscaling_on(spec: str) -> str:
    return f"({_get(spec, 'enableInTreeAutoscaling')} == true)"


def _options(spec: str) -> str:
    return cel.map_at(spec, ("autoscalerOptions",))


def _v2_by_version(spec: str) -> str:
    return f"({_get(_options(spec), 'version')} == 'v2')"


def ray_resources_conflict(ctx: Context) -> list[Check]:
    spec, path = _cluster_spec(ctx)
    params = cel.map_at("g", ("rayStartParams",))
    resources = cel.map_at("g", ("resources",))
    clashing = f"{params}.filter(k, k in {cel.strings(('num-cpus', 'num-gpus', 'memory', 'resources'))})"
    conflict = f"type(g) == map && size({clashing}) > 0 && size({resources}) > 0"
    parts = []
    for groups, label, _ in _groups(spec):
        message = (
            f'{label} + ": resources is set together with rayStartParams " + {clashing}.join(", ") + '
            '"; KubeRay accepts only one of them"'
        )
        parts.append(_findings(groups, "g", conflict, message))
    return [_check(parts, field_path=".".join(path))]


def ray_worker_idle_timeout(ctx: Context) -> list[Check]:
    spec, path = _cluster_spec(ctx)
    v2_env = _autoscaler_v2_env(ctx, spec)
    v2 = f"({_v2_by_version(spec)} || {v2_env}.exists(v, v in ['1', 'true']))"
    timeout = _int_or_null(_get("g", "idleTimeoutSeconds"))
    negative = f"{timeout} != null && {timeout} < 0"
    needs_v2 = f"{timeout} != null && {timeout} >= 0 && !{v2}"
    return [
        _check(
            [
                _findings(_workers(spec), "g", negative, f'{_group_label("g")} + ": idleTimeoutSeconds " + '
                          f'string({timeout}) + " is negative"'),
                _findings(_workers(spec), "g", needs_v2, f'{_group_label("g")} + ": idleTimeoutSeconds needs '
                          'autoscaler v2 (autoscalerOptions.version: v2); KubeRay refuses it"'),
            ],
            field_path=".".join((*path, "workerGroupSpecs")),
        )
    ]  # fmt: skip


def ray_autoscaler_v2_env(ctx: Context) -> list[Check]:
    spec, path = _cluster_spec(ctx)
    v2_env = _autoscaler_v2_env(ctx, spec)
    on = _autoscaling_on(spec)
    without = f"!{on} && {v2_env}.exists(v, v in ['1', 'true'])"
    twice = f"{on} && size({v2_env}) > 0 && {_get(_options(spec), 'version')} != null"
    messages = (
        f'({without} ? ["head group: {AUTOSCALER_V2_ENV}=\'" + {v2_env}[0] + "\' needs enableInTreeAutoscaling: '
        f'true; KubeRay refuses it"] : []) + ({twice} ? ["head group: {AUTOSCALER_V2_ENV} and '
        'autoscalerOptions.version are both set; KubeRay wants only autoscalerOptions.version"] : [])'
    )
    return [Check(cel.any_of(without, twice), messages, field_path=".".join((*path, "headGroupSpec")))]


def ray_autoscaler_restart_policy(ctx: Context) -> list[Check]:
    spec, path = _cluster_spec(ctx)
    on = _autoscaling_on(spec)
    policy = _get(cel.map_at("g", ("template", "spec")), "restartPolicy")
    restarts = f"type(g) == map && !({policy} in [null, '', 'Never'])"
    strict, soft = [], []
    for groups, label, _ in _groups(spec):
        message = (
            f'{label} + ": restartPolicy " + string({policy}) + " is not allowed with autoscaler v2 (Never or unset)"'
        )
        strict.append(_findings(groups, "g", f"{on} && {_v2_by_version(spec)} && {restarts}", message))
    workers = _workers(spec)
    message = (
        f'{_group_label("g")} + ": restartPolicy " + string({policy}) + " restarts Ray workers the autoscaler has '
        'removed; use Never"'
    )
    soft.append(_findings(workers, "g", f"{on} && !{_v2_by_version(spec)} && {restarts}", message))
    where = ".".join(path)
    return [_check(strict, field_path=where), _check(soft, field_path=where, softened=True)]


def ray_group_labels(ctx: Context) -> list[Check]:
    spec, path = _cluster_spec(ctx)
    params = cel.map_at("g", ("rayStartParams",))
    labels = cel.map_at("g", ("labels",))
    # webhook.kube.names.label_key_problems: an optional DNS-1123 subdomain prefix before the last "/",
    # and a qualified name of at most 63 characters.
    cut = "k.lastIndexOf('/')"
    prefix, name = f"({cut} >= 0 ? k.substring(0, {cut}) : '')", f"({cut} >= 0 ? k.substring({cut} + 1) : k)"
    subdomain = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    qualified = "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
    bad_key = (
        f"(({cut} >= 0 && {prefix} == '') || ({prefix} != '' && (size({prefix}) > 253 || "
        f"!{prefix}.matches({cel.string(subdomain)}))) || {name} == '' || size({name}) > 63 || "
        f"!{name}.matches({cel.string(qualified)}))"
    )
    bad_value = (
        f"(type({labels}[k]) != string || size(string({labels}[k])) > 63 || "
        f"!string({labels}[k]).matches({cel.string(LABEL_VALUE)}))"
    )
    parts = []
    for groups, label, _ in _groups(spec):
        parts.append(_findings(groups, "g", f"type(g) == map && 'labels' in {params}",
                               f'{label} + ": rayStartParams.labels is not supported; KubeRay wants Ray node labels '
                               'in the group\'s labels field"'))  # fmt: skip
        bad = f"{labels}.filter(k, {bad_key} || {bad_value})"
        parts.append(_findings(groups, "g", f"type(g) == map && size({bad}) > 0",
                               f'{label} + ": labels " + {bad}.join(", ") + " are not valid Kubernetes label keys '
                               'or values"'))  # fmt: skip
    return [_check(parts, field_path=".".join(path))]


def _job_rule(build: Callable[[Context, str], list[Check]]) -> Compile:
    def compile_rule(ctx: Context) -> list[Check]:
        try:
            spec = _job_spec(ctx)
        except _NotThisKind:
            return []
        return build(ctx, spec)

    return compile_rule


def _ray_job_cluster_source(ctx: Context, spec: str) -> list[Check]:
    selector = cel.map_at(spec, ("clusterSelector",))
    named = _get(selector, "ray.io/cluster")
    unnamed = f"{_selector_mode(spec)} && !({named} != null && {named} != '')"
    missing = f"!{_selector_mode(spec)} && {_get(spec, 'rayClusterSpec')} == null"
    messages = (
        f'({unnamed} ? ["spec.clusterSelector: clusterSelector must name the cluster in ray.io/cluster"] : []) + '
        f'({missing} ? ["spec.rayClusterSpec: a RayJob needs rayClusterSpec or a clusterSelector; '
        'KubeRay refuses it"] : [])'
    )
    return [Check(cel.any_of(unnamed, missing), messages)]


def _ray_job_suspend(ctx: Context, spec: str) -> list[Check]:
    suspended = f"{_get(spec, 'suspend')} == true"
    shutdown = f"{_get(spec, 'shutdownAfterJobFinishes')} == true"
    no_shutdown = f"{suspended} && !({shutdown})"
    selector = f"{suspended} && {shutdown} && {_selector_mode(spec)}"
    messages = (
        f'({no_shutdown} ? ["a RayJob can be suspended only with shutdownAfterJobFinishes: true; KubeRay refuses it"] '
        f': []) + ({selector} ? ["a RayJob using a clusterSelector cannot be suspended; KubeRay refuses it"] : [])'
    )
    return [Check(cel.any_of(no_shutdown, selector), messages, field_path="spec.suspend")]


def _ray_job_ttl(ctx: Context, spec: str) -> list[Check]:
    ttl = _int_or_null(_get(spec, "ttlSecondsAfterFinished"))
    negative = f"{ttl} != null && {ttl} < 0"
    alone = f"{ttl} != null && {ttl} > 0 && {_get(spec, 'shutdownAfterJobFinishes')} != true"
    messages = (
        f'({negative} ? ["ttlSecondsAfterFinished " + string({ttl}) + " is negative; KubeRay refuses it"] : []) + '
        f'({alone} ? ["ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true; KubeRay refuses it"] : [])'
    )
    return [Check(cel.any_of(negative, alone), messages, field_path="spec.ttlSecondsAfterFinished")]


def _ray_job_submission_mode(ctx: Context, spec: str) -> list[Check]:
    mode = _get(spec, "submissionMode")
    backoff = _int_or_null(_get(spec, "backoffLimit"))
    selector = _selector_mode(spec)
    sidecar = f"{mode} == 'SidecarMode'"
    head_policy = _get(cel.map_at(spec, ("rayClusterSpec", "headGroupSpec", "template", "spec")), "restartPolicy")
    findings = [
        (f"{selector} && {sidecar}", '"spec.submissionMode: SidecarMode cannot be used with a clusterSelector"'),
        (f"{backoff} != null && {backoff} > 0 && ({selector} || {mode} == 'InteractiveMode')",
         f'"spec.backoffLimit: backoffLimit " + string({backoff}) + " cannot be used with " + ({selector} ? '
         '"a clusterSelector" : "InteractiveMode") + "; KubeRay refuses it"'),
        *((f"{sidecar} && {_get(spec, field)} != null", f'"spec.{field}: SidecarMode does not support {field}; '
           'KubeRay refuses it"') for field in ("submitterPodTemplate", "submitterConfig")),
        (f"{sidecar} && !({head_policy} in [null, '', 'Never'])",
         f'"head group: restartPolicy " + string({head_policy}) + " is not allowed in SidecarMode (Never or unset)"'),
    ]  # fmt: skip
    messages = " + ".join(f"(({cond}) ? [{msg}] : [])" for cond, msg in findings)
    return [Check(cel.any_of(*(f"({cond})" for cond, _ in findings)), messages)]


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
    "ray-resources-conflict": ray_resources_conflict,
    "ray-worker-idle-timeout": ray_worker_idle_timeout,
    "ray-autoscaler-v2-env": ray_autoscaler_v2_env,
    "ray-autoscaler-restart-policy": ray_autoscaler_restart_policy,
    "ray-group-labels": ray_group_labels,
    "ray-job-cluster-source": _job_rule(_ray_job_cluster_source),
    "ray-job-suspend": _job_rule(_ray_job_suspend),
    "ray-job-ttl": _job_rule(_ray_job_ttl),
    "ray-job-submission-mode": _job_rule(_ray_job_submission_mode),
}

# Why the other rules are not compiled. They stay in force in the webhook.
NOT_EXPRESSIBLE: dict[str, str] = {
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
    "ray-job-runtime-env": "parses runtimeEnvYAML as YAML, which CEL cannot",
    "ray-job-deletion-strategy": "orders deletion rules by policy and TTL across entries; not yet translated",
}
