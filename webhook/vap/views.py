"""A definition's resolved view of an object, as ValidatingAdmissionPolicy variables.

What webhook.karta.resolve computes in Python is computed here in CEL, from the same Karta paths and
with the same rules: instances are the outputs of instanceIdPath (one for a component without it),
every other path is index-aligned with them, a path that fails leaves its part empty (no instances when
the ids fail, no pods when the template fails, no scale when any scale path fails, as the resolver does)
and is reported by `definition-resolution`. Each component gets index-aligned lists:

  <c>_ids, <c>_n, <c>_idx, <c>_specs (pod spec or null), <c>_replicas, <c>_min, <c>_max (int or null),
  <c>_ppr (pods per replica or null), <c>_suspended (bool)

and the workload gets `autoscaling`. A path the compiler cannot translate (webhook.vap.jq) leaves the
component out: every rule that reads it is then listed as not covered for this definition.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from webhook.karta.jqengine import MAX_RESULTS
from webhook.karta.model import Component, KartaDefinition
from webhook.vap import cel, jq

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# Index lists are cut from this literal (Kubernetes 1.30 CEL has no range()). Karta refuses a path with
# MAX_RESULTS outputs or more, so no instance list is longer.
RANGE_LENGTH = MAX_RESULTS - 1
RANGE = "range"


def _v(name: str) -> str:
    return f"variables.{name}"


@dataclass
class Variables:
    """The policy's variables, in order (each may read the ones before it)."""

    entries: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, expression: str) -> str:
        assert not any(n == name for n, _ in self.entries), name
        self.entries.append((name, expression))
        return _v(name)

    def as_list(self) -> list[dict[str, str]]:
        return [{"name": n, "expression": e} for n, e in self.entries]


@dataclass(frozen=True)
class ComponentView:
    name: str  # the Karta component name
    key: str  # its variable prefix
    multi: bool
    list_steps: tuple[str, ...] | None  # the list its instances are the elements of (multi only)
    role: str | None
    has_pods: bool
    has_scale: bool

    def var(self, aspect: str) -> str:
        return _v(f"{self.key}_{aspect}")

    @property
    def list_path(self) -> str:
        return ".".join(self.list_steps or ())

    def label(self, i: str) -> str:
        """How messages name instance i: `worker group "small-group"`, or the component alone."""
        if not self.multi:
            return cel.string(self.name)
        return f'{cel.string(self.name + " group ")} + "\\"" + {self.var("ids")}[{i}] + "\\""'

    def location(self, i: str) -> str:
        """Where instance i sits, as Kubernetes prints field paths ("" for a single-instance component)."""
        if not self.multi:
            return '""'
        return f'{cel.string(self.list_path + "[")} + string({i}) + "]"'

    def field_location(self, i: str, scale_field: str) -> str:
        """Where a scale value of instance i came from: the instance's field of that name, if it has one."""
        if not self.multi:
            return '""'
        element = self.element("object", i)
        return (
            f"({cel.has(element, scale_field)} ? {self.location(i)} + {cel.string('.' + scale_field)} "
            f": {self.location(i)})"
        )

    def element(self, root: str, i: str) -> str:
        return f"{cel.path(root, self.list_steps or ())}[{i}]"


class NotCovered(Exception):
    """What a rule or component needs that the compiler cannot express; the message says why."""


@dataclass
class DefinitionView:
    definition: KartaDefinition
    variables: Variables
    components: dict[str, ComponentView]
    not_covered: dict[str, str]  # component name -> why it could not be translated
    resolution_errors: str  # CEL list of strings: why the definition cannot read the object

    def component(self, name: str) -> ComponentView:
        if name in self.not_covered:
            raise NotCovered(f"component {name!r}: {self.not_covered[name]}")
        return self.components[name]

    def scaled(self) -> list[ComponentView]:
        return [c for c in self._all() if c.has_scale]

    def with_pods(self) -> list[ComponentView]:
        return [c for c in self._all() if c.has_pods]

    def _all(self) -> list[ComponentView]:
        if self.not_covered:
            raise NotCovered("; ".join(f"component {name!r}: {why}" for name, why in sorted(self.not_covered.items())))
        return list(self.components.values())


def build(definition: KartaDefinition) -> DefinitionView:
    variables = Variables()
    variables.add(RANGE, "[" + ", ".join(str(i) for i in range(RANGE_LENGTH)) + "]")
    components: dict[str, ComponentView] = {}
    not_covered: dict[str, str] = {}
    errors: list[tuple[str, str]] = []  # (CEL condition that there is an error, CEL message)
    keys: set[str] = set()
    for component in definition.components:
        key = _key(component.name, keys)
        try:
            view, component_errors = _component(definition, component, key, variables)
        except jq.Untranslatable as exc:
            not_covered[component.name] = str(exc)
            continue
        components[component.name] = view
        errors.extend(component_errors)
    autoscaling = definition.hints.autoscaling_path
    if autoscaling:
        try:
            path = jq.shape(autoscaling)
            if path.per_element:
                raise jq.Untranslatable("autoscalingPath must give one output")
            meaning = jq.translate_path(path, "object", given_is_map=True)
            ok = variables.add("autoscaling_ok", meaning.ok)
            variables.add("autoscaling", f"{ok} && {meaning.truth}")
            errors.append((f"!{ok}", cel.string("policy hint autoscalingPath: the path fails on this object")))
        except jq.Untranslatable as exc:
            not_covered["(autoscalingPath)"] = str(exc)
    else:
        variables.add("autoscaling", "false")
    # One list per possible error, joined with + (CEL has no flatten).
    listed = " + ".join(f"({condition} ? [{message}] : [])" for condition, message in errors)
    resolution = variables.add("resolution_errors", listed or "[]")
    return DefinitionView(definition, variables, components, not_covered, resolution)


def _key(name: str, taken: set[str]) -> str:
    base = "c_" + re.sub(r"[^A-Za-z0-9]", "_", name)
    key, n = base, 1
    while key in taken:
        n += 1
        key = f"{base}{n}"
    taken.add(key)
    return key


# A CEL test that {v} converts to int32 the way Karta converts a path's output (null passes).
INT32_CEL = (
    "({v} == null || (type({v}) == int && {v} >= " + str(INT32_MIN) + " && {v} <= " + str(INT32_MAX) + ") || "
    "(type({v}) == double && {v} == double(int({v})) && {v} >= " + str(INT32_MIN) + ".0 && {v} <= "
    + str(INT32_MAX) + ".0))"
)  # fmt: skip


def _component(
    definition: KartaDefinition, c: Component, key: str, variables: Variables
) -> tuple[ComponentView, list[tuple[str, str]]]:
    hints = definition.hints.for_component(c.name)
    paths: dict[str, str] = {}
    if c.instance_id_path:
        paths["ids"] = c.instance_id_path
    spec = c.spec
    if spec is not None and (spec.pod_spec_path or spec.fragments):
        raise jq.Untranslatable("only podTemplateSpecPath pod definitions are translated")
    if spec is not None and spec.pod_template_spec_path:
        paths["template"] = spec.pod_template_spec_path
    scale_paths = c.scale.paths() if c.scale is not None else {}
    paths.update(scale_paths)
    if hints.pods_per_replica_path:
        paths["ppr"] = hints.pods_per_replica_path
    if hints.suspended_path:
        paths["suspended"] = hints.suspended_path
    shapes = {aspect: jq.shape(p) for aspect, p in paths.items()}
    multi = bool(c.instance_id_path)
    list_steps, optional = _iterated_list(shapes, multi)
    view = ComponentView(
        c.name, key, multi, list_steps, hints.role, bool(spec and spec.pod_template_spec_path), bool(scale_paths)
    )
    if not paths:
        return view, []  # a component the rules do not read (e.g. the RayCluster between object and pods)
    instances = _Instances(view, variables, shapes, f"component '{c.name}': ")
    if multi:
        assert list_steps is not None
        instances.from_list(list_steps, optional)
    else:
        instances.single()
    instances.pod_specs()
    instances.scales(tuple(scale_paths))
    instances.hints()
    return view, instances.errors


def _iterated_list(shapes: dict[str, jq.PathShape], multi: bool) -> tuple[tuple[str, ...] | None, bool]:
    """The list a multi-instance component's instances are the elements of, and whether `[]?` iterates it."""
    list_steps: tuple[str, ...] | None = None
    optional = True
    if multi:
        first = shapes["ids"]
        if not first.per_element:
            raise jq.Untranslatable("instanceIdPath must be the per-element form .list[]? | ...")
        list_steps, optional = first.list_steps, first.optional
    for aspect, path in shapes.items():
        if multi and (path.list_steps != list_steps or path.optional != optional):
            raise jq.Untranslatable(f"{aspect} path does not iterate the list the instance ids come from")
        if not multi and path.per_element:
            raise jq.Untranslatable(f"{aspect} path iterates a list, but the component has no instanceIdPath")
    return list_steps, optional


class _Instances:
    """The CEL variables of one component's instances, and the resolution errors they can have."""

    def __init__(self, view: ComponentView, variables: Variables, shapes: dict[str, jq.PathShape], prefix: str) -> None:
        self.view = view
        self.key = view.key
        self.variables = variables
        self.shapes = shapes
        self.prefix = prefix
        self.errors: list[tuple[str, str]] = []
        self.idx = ""
        # Set by from_list or single: adds the index-aligned raw values of one path.
        self.aligned: Callable[[str, str, str, str], None] = self._unset

    @staticmethod
    def _unset(aspect: str, convert: str, default: str, label: str) -> None:
        raise AssertionError("from_list() or single() first")

    def _meaning(self, aspect: str, given: str) -> jq.Meaning:
        return jq.translate_path(self.shapes[aspect], given, given_is_map=not self.view.multi)

    def from_list(self, list_steps: tuple[str, ...], optional: bool) -> None:
        key, variables = self.key, self.variables
        target = cel.path("object", list_steps)
        present = cel.present("object", list_steps)
        items = variables.add(f"{key}_items", f"({present} && type({target}) == list) ? {target} : []")
        # `[]?` over a missing or null list gives nothing; `[]` fails on it. jq would iterate a map's
        # values: not translated, so a map counts as unreadable (the CRD schema allows only a list).
        absent = f"(!{present} || {target} == null)"
        shape_ok = cel.any_of(f"type({target}) == list", absent if optional else "false")
        list_ok = cel.all_of(f"({cel.any_of(f'!{present}', shape_ok)})" if optional else shape_ok,
                             f"size({items}) < {MAX_RESULTS}")  # fmt: skip
        if not optional:
            list_ok = cel.all_of(present, list_ok)
        ids = self._meaning("ids", "g")
        ids_ok = variables.add(
            f"{key}_ids_ok",
            cel.all_of(list_ok, f"{items}.all(g, {ids.ok} && type({ids.value}) == string && {ids.value} != '')"),
        )
        variables.add(f"{key}_ids", f"{ids_ok} ? {items}.map(g, {ids.value}) : []")
        self.errors.append(
            (f"!{ids_ok}", cel.string(self.prefix + "instanceIdPath gives no usable id for every element"))
        )
        n = variables.add(f"{key}_n", f"size({self.view.var('ids')})")
        self.idx = variables.add(f"{key}_idx", f"{_v(RANGE)}.filter(i, i < {n})")

        def aligned(aspect: str, convert: str, default: str, label: str) -> None:
            m = self._meaning(aspect, "g")
            converted = f"[{m.value}].all(v, {convert.format(v='v')})" if convert != "true" else "true"
            ok = variables.add(f"{key}_raw_{aspect}_ok", f"{items}.all(g, {cel.all_of(m.ok, converted)})")
            variables.add(f"{key}_raw_{aspect}", f"{ok} ? {items}.map(g, {m.value}) : {self.idx}.map(i, {default})")
            self.errors.append((f"{ids_ok} && !{ok}", cel.string(self.prefix + label + " fails on this object")))

        self.aligned = aligned

    def single(self) -> None:
        key, variables = self.key, self.variables
        variables.add(f"{key}_ids", '[""]')
        variables.add(f"{key}_n", "1")
        self.idx = variables.add(f"{key}_idx", "[0]")

        def aligned(aspect: str, convert: str, default: str, label: str) -> None:
            m = self._meaning(aspect, "object")
            converted = f"[{m.value}].all(v, {convert.format(v='v')})" if convert != "true" else "true"
            ok = variables.add(f"{key}_raw_{aspect}_ok", cel.all_of(m.ok, f"(!{m.ok} || {converted})"))
            variables.add(f"{key}_raw_{aspect}", f"{ok} ? [{m.value}] : [{default}]")
            self.errors.append((f"!{ok}", cel.string(self.prefix + label + " fails on this object")))

        self.aligned = aligned

    def pod_specs(self) -> None:
        key, var = self.key, self.view.var
        if "template" not in self.shapes:
            self.variables.add(f"{key}_specs", f"{self.idx}.map(i, null)")
            return
        self.aligned("template", "true", "null", "podTemplateSpecPath")
        self.variables.add(
            f"{key}_specs",
            f"{var('raw_template')}.map(t, (type(t) == map && 'spec' in t && type(t.spec) == map) ? t.spec : null)",
        )

    def scales(self, scale_fields: tuple[str, ...]) -> None:
        if not scale_fields:
            return
        key, var = self.key, self.view.var
        # Any failing scale path leaves the instance without a scale (as the resolver does).
        oks = []
        for aspect in scale_fields:
            self.aligned(aspect, INT32_CEL, "null", f"{aspect}Path")
            oks.append(var(f"raw_{aspect}_ok"))
        scale_ok = cel.all_of(*oks)
        for aspect, name in (("replicas", "replicas"), ("minReplicas", "min"), ("maxReplicas", "max")):
            if aspect in scale_fields:
                raw = var("raw_" + aspect)
                self.variables.add(
                    f"{key}_{name}", f"{scale_ok} ? {raw}.map(x, x == null ? null : int(x)) : {self.idx}.map(i, null)"
                )
            else:
                self.variables.add(f"{key}_{name}", f"{self.idx}.map(i, null)")

    def hints(self) -> None:
        key, var, add = self.key, self.view.var, self.variables.add
        if "ppr" in self.shapes:
            self.aligned("ppr", INT32_CEL, "null", "policy hint podsPerReplicaPath")
            add(f"{key}_ppr", f"{var('raw_ppr')}.map(x, x == null ? null : int(x))")
        else:
            add(f"{key}_ppr", f"{self.idx}.map(i, null)")
        if "suspended" in self.shapes:
            self.aligned("suspended", "true", "false", "policy hint suspendedPath")
            add(f"{key}_suspended", f"{var('raw_suspended')}.map(x, x == true)")
        else:
            add(f"{key}_suspended", f"{self.idx}.map(i, false)")
