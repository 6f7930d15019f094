"""KubeRay's own validation tests as a table of manifests (tests/data/kuberay-validation/README.md).

Loads the cases, builds each manifest, checks it against KubeRay's CRD schema and CEL rules the way
the API server would before any validating webhook sees it, and judges the webhook's verdict against
KubeRay's expectation.

    python -m tests.kuberay_table                      # agreement summary against the repository's CRDs
    python -m tests.kuberay_table --kuberay DIR        # also compare case names with a newer KubeRay checkout
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cel
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "data" / "kuberay-validation"
KUBERAY_COMMIT = "feeaf72facab4881ba2b179248bb67315634e229"
_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[([^\]]+)\]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


CRD_OVERRIDE: list[Path] = []  # set by --kuberay


def crd_directory() -> Path:
    """KubeRay's CRDs: --kuberay's, else $KARTA_CORPUS/crd, else the copy in the repository."""
    if CRD_OVERRIDE:
        return CRD_OVERRIDE[0]
    corpus = os.environ.get("KARTA_CORPUS")
    return Path(corpus) / "crd" if corpus else ROOT / "tests" / "data" / "corpus" / "kuberay" / "crd"


@dataclass
class Case:
    file: str
    test: str
    name: str
    obj: dict[str, Any]
    kuberay: str  # rejected | accepted
    feature_gates: dict[str, bool]
    field: str | None = None
    stricter: str | None = None
    out: str | None = None

    @property
    def id(self) -> str:
        return f"{self.test}/{self.name}"


def parse_path(path: str) -> list[str | int]:
    """`spec.workerGroupSpecs[0].env[ray.io/x]` -> ["spec", "workerGroupSpecs", 0, "env", "ray.io/x"]."""
    parts: list[str | int] = []
    position = 0
    while position < len(path):
        match = _TOKEN.match(path, position)
        if match is None:
            raise ValueError(f"bad path {path!r} at {position}")
        name, bracket = match.groups()
        parts.append(name if name is not None else (int(bracket) if bracket.isdigit() else bracket))
        position = match.end()
    return parts


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = parse_path(path)
    node: Any = obj
    for part, following in itertools.pairwise(parts):
        if isinstance(part, int):
            node = node[part]
            continue
        if node.get(part) is None:
            node[part] = [] if isinstance(following, int) else {}
        node = node[part]
    last = parts[-1]
    if value is None:
        node.pop(last, None)
    elif isinstance(last, int):
        node[last] = value
    else:
        node[last] = copy.deepcopy(value)


def load_cases(table: Path = TABLE) -> list[Case]:
    cases = []
    for path in sorted(table.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        source = data["source"]
        for entry in data["cases"]:
            obj = copy.deepcopy(data["base"])
            for key, value in (entry.get("set") or {}).items():
                set_path(obj, key, value)
            obj.setdefault("metadata", {}).setdefault("namespace", "default")
            cases.append(
                Case(
                    file=path.name,
                    test=source["test"],
                    name=str(entry["name"]),
                    obj=obj,
                    kuberay=entry["kuberay"],
                    feature_gates={**(data.get("featureGates") or {}), **(entry.get("featureGates") or {})},
                    field=entry.get("field"),
                    stricter=entry.get("stricter"),
                    out=entry.get("out"),
                )
            )
    return cases


# --- what the API server does before a validating webhook sees the object ---


@cache
def _crds(directory: Path) -> tuple[dict[str, Any], ...]:
    """The CRDs in directory (libyaml's loader where there is one: they are megabytes)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(yaml.load(p.read_text(encoding="utf-8"), Loader=loader) for p in sorted(directory.glob("*.yaml")))


@cache
def _crd_versions(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version of the CRDs in directory."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in _crds(directory):
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def _json_schema(node: Any) -> Any:
    """An OpenAPI v3 structural schema as JSON Schema (int-or-string and nullable spelled out)."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _cel_problems(schema: Mapping[str, Any], value: Any, where: str) -> Iterator[str]:
    """x-kubernetes-validations on CREATE (transition rules, which read oldSelf, do not run)."""
    for check in schema.get("x-kubernetes-validations") or ():
        if "oldSelf" in check["rule"]:
            continue
        if cel.evaluate(check["rule"], {"self": value}) is not True:
            yield f"{where}: {check.get('message', check['rule'])}"
    properties = schema.get("properties") or {}
    if isinstance(value, dict):
        for key, item in value.items():
            sub = properties.get(key) or (
                schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else None
            )
            if sub is not None:
                yield from _cel_problems(sub, item, f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _cel_problems(schema["items"], item, f"{where}[{index}]")


@cache
def _validator(directory: Path, api_version: str, kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_json_schema(_crd_versions(directory)[(api_version, kind)]))


def apiserver_problems(obj: Mapping[str, Any], directory: Path | None = None) -> list[str]:
    """Why the API server would refuse to store obj (CRD schema, CEL rules, object name); [] if it would not."""
    schema = _crd_versions(directory or crd_directory()).get((obj.get("apiVersion"), obj.get("kind")))  # type: ignore[arg-type]
    if schema is None:
        return [f"no served CRD for {obj.get('apiVersion')} {obj.get('kind')}"]
    problems = []
    name = str((obj.get("metadata") or {}).get("name") or "")
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    for error in _validator(directory or crd_directory(), str(obj.get("apiVersion")), str(obj.get("kind"))).iter_errors(
        obj
    ):
        problems.append(f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}")
    problems.extend(_cel_problems(schema, obj, "(root)"))
    return problems


@cache
def _defaults(directory: Path) -> Any:
    from webhook.kube.defaults import CRDDefaults

    return CRDDefaults.from_crds(_crds(directory))


def defaulted(obj: Mapping[str, Any], directory: Path | None = None) -> dict[str, Any]:
    """obj with the CRD defaults filled in, as the API server stores it."""
    return _defaults(directory or crd_directory()).apply(obj)  # type: ignore[no-any-return]


# --- judging the webhook's verdict ---


@dataclass
class Outcome:
    case: Case
    counted: bool
    agrees: bool
    detail: str
    violations: list[Any] = field(default_factory=list)


def judge(case: Case, checker_for: Any) -> Outcome:
    """checker_for(feature_gates) -> an Evaluator; the verdict compared with KubeRay's expectation."""
    from webhook.policy.model import Severity
    from webhook.policy.registry import BUILTIN_RULES

    obj = defaulted(case.obj)
    problems = apiserver_problems(obj)
    if case.out is not None:
        return Outcome(case, False, True, f"not counted: {case.out}")
    if problems:
        return Outcome(case, False, False, f"the API server refuses it, but it is not marked out: {problems}")
    verdict = checker_for(case.feature_gates).verdict(obj)
    if verdict is None:
        return Outcome(case, True, False, "no definition covers it")
    violations = list(verdict.violations)
    denying = [v for v in violations if v.severity is Severity.DENY]
    shown = "; ".join(f"{v.severity} {v.rule} {v.path}: {v.message}" for v in violations) or "no violations"
    if case.kuberay == "rejected":
        at_field = [v for v in violations if v.path == case.field]
        by_design = [v for v in at_field if (r := BUILTIN_RULES.get(v.rule)) and r.default_severity is Severity.WARN]
        ok = bool([v for v in at_field if v.severity is Severity.DENY]) or bool(by_design and not denying)
        return Outcome(case, True, ok, f"want a violation at {case.field}; got {shown}", violations)
    if case.stricter is not None:
        ok = any(v.rule == case.stricter for v in denying)
        return Outcome(case, True, ok, f"stricter rule {case.stricter} must deny; got {shown}", violations)
    return Outcome(case, True, not denying, f"want allowed; got {shown}", violations)


def default_checker_for(gates: Mapping[str, bool]) -> Any:
    from webhook.config import ConfigError, build_evaluator, parse_config
    from webhook.karta.registry import DefinitionSet

    try:
        config = parse_config({"kuberay": {"featureGates": dict(gates)}} if gates else {}, "kuberay-table")
    except ConfigError:  # an older webhook without kuberay.featureGates: judged with its defaults
        config = parse_config({}, "kuberay-table")
    return build_evaluator(config, DefinitionSet.builtin())


# --- a newer KubeRay ---

_GO_CASE_NAME = re.compile(
    r'^\s*(?:name:\s*"((?:[^"\\]|\\.)*)"|"((?:[^"\\]|\\.)*)":\s*\{|(?:t|test\.T\(\))\.Run\("([^"]+)"|Context\("([^"]+)")'
)
# Table keys written as fmt.Sprintf("... %s ...", CONSTANT): the constants they name.
_GO_SPRINTF_KEY = re.compile(r'^\s*fmt\.Sprintf\("([^"]*)",\s*(\w+)\):\s*\{')
_GO_CONSTANTS = {
    "RAY_ENABLE_AUTOSCALER_V2": "RAY_enable_autoscaler_v2",
    "KUBERAY_GEN_AUTOSCALER_START_CMD": "KUBERAY_GEN_AUTOSCALER_START_CMD",
}
UPSTREAM_FILES = (
    "ray-operator/controllers/ray/utils/validation_test.go",
    "ray-operator/pkg/webhooks/v1/raycluster_webhook_test.go",
    "ray-operator/pkg/webhooks/v1/rayjob_webhook_test.go",
    "ray-operator/pkg/webhooks/v1/rayservice_webhook_test.go",
    "ray-operator/test/e2erayservice/rayservice_validation_test.go",
)


def upstream_case_names(checkout: Path) -> dict[str, set[str]]:
    """Test function -> the case names in it, read from a KubeRay checkout's test files."""
    found: dict[str, set[str]] = {}
    for relative in UPSTREAM_FILES:
        path = checkout / relative
        if not path.exists():
            continue
        test = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            header = re.match(r"func (Test\w+)\(|var _ = Describe\(\"([^\"]+)\"", line)
            if header:
                test = header.group(1) or header.group(2)
                found.setdefault(test, set())
                continue
            match = _GO_CASE_NAME.match(line)
            if match and test:
                found[test].add(next(g for g in match.groups() if g is not None))
            formatted = _GO_SPRINTF_KEY.match(line)
            if formatted and test:
                found[test].add(
                    formatted.group(1).replace("%s", _GO_CONSTANTS.get(formatted.group(2), formatted.group(2)))
                )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kuberay", type=Path, help="a KubeRay checkout: compare case names, use its CRDs")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every case that disagrees")
    args = parser.parse_args(argv)
    if args.kuberay is not None:
        CRD_OVERRIDE.append(args.kuberay / "ray-operator" / "config" / "crd" / "bases")
        try:
            head = subprocess.run(["git", "-C", str(args.kuberay), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, check=False).stdout.strip()  # fmt: skip
        except OSError:
            head = "?"
        print(f"KubeRay checkout {args.kuberay} at {head or '?'} (table written at {KUBERAY_COMMIT[:8]})")
        ours: dict[str, set[str]] = {}
        for case in load_cases():
            ours.setdefault(case.test, set()).add(case.name)
        theirs = upstream_case_names(args.kuberay)
        for test in sorted(set(theirs) | set(ours)):
            if test in ours and test in theirs and not theirs[test]:
                continue  # a test function without named cases: our case names are our own
            if test not in theirs:
                print(f"  gone upstream: {test}")
                continue
            new, gone = (
                sorted(theirs.get(test, set()) - ours.get(test, set())),
                sorted(ours.get(test, set()) - theirs.get(test, set())),
            )
            for name in new:
                print(f"  upstream only: {test}/{name}")
            for name in gone:
                print(f"  table only:    {test}/{name}")
    outcomes = [judge(case, default_checker_for) for case in load_cases()]
    counted = [o for o in outcomes if o.counted]
    agreed = [o for o in counted if o.agrees]
    broken = [o for o in outcomes if not o.counted and not o.agrees]
    print(f"{len(agreed)} of {len(counted)} cases that reach the API server agree with KubeRay "
          f"({len(outcomes) - len(counted)} not counted)")  # fmt: skip
    for o in [*broken, *(o for o in counted if not o.agrees)] if args.verbose else broken:
        print(f"  {o.case.id}: {o.detail}")
    return 0 if len(agreed) == len(counted) and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
