"""The parts of an answer the API server shows people: a 422 Status with field causes, warnings and
audit annotations, each within the API server's limits and ours, and the failure posture's answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from webhook.admission.review import Review, envelope
from webhook.evaluation import Mode
from webhook.policy.model import Violation

# The API server truncates a warning past 256 characters and drops warnings past 4096 in total.
WARNING_MAX = 256
WARNINGS_TOTAL_MAX = 4096
AUDIT_VALUE_MAX = 2048
# A denial lists at most this many causes, each clipped, and a message of at most MESSAGE_MAX
# characters; what is left out is counted. One object can hold tens of thousands of violations
# (a 2.6 MiB RayService drew 70,929 causes and a 43.6 MiB answer before these bounds).
MAX_CAUSES = 50
CAUSE_MAX = 512
FIELD_MAX = 256
VALUE_MAX = 128
MESSAGE_MAX = 4096
NAME_MAX = 253


def error_response(review: Review, allowed: bool, message: str) -> dict[str, Any]:
    """An internal failure answered per the failure posture (the uid is still echoed)."""
    response: dict[str, Any] = {"allowed": allowed}
    if not allowed:
        response["status"] = {"code": 500, "reason": "InternalError", "message": message}
    else:
        response["warnings"] = [clip(f"karta-admission could not check this object: {message}", WARNING_MAX)]
    return envelope(review, response)


def _object_name(review: Review, obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or review.request.get("name")
    if name:
        return clip(str(name), NAME_MAX)
    return clip(f"{meta.get('generateName', '')}*", NAME_MAX) if meta.get("generateName") else ""


def _cause(v: Violation) -> str:
    value = "" if v.value is None else f"Invalid value: {clip(json.dumps(v.value, default=str), VALUE_MAX)}: "
    return clip(f"{clip(v.path, FIELD_MAX) or '(object)'}: {value}{v.message} [{v.rule}]", CAUSE_MAX)


def status(kind: str, review: Review, obj: Mapping[str, Any], denying: list[Violation]) -> dict[str, Any]:
    """A 422 Invalid status in the shape of Kubernetes' own field errors, bounded in size."""
    group = review.kind.group
    qualified = f"{kind}.{group}" if group else kind
    name = _object_name(review, obj)
    head = f'{qualified} "{name}" is invalid: '
    causes = [
        {"reason": "FieldValueInvalid", "message": clip(f"{v.message} [{v.rule}]", CAUSE_MAX),
         "field": clip(v.path, FIELD_MAX)}
        for v in denying[:MAX_CAUSES]
    ]  # fmt: skip
    if len(denying) > MAX_CAUSES:
        causes.append(
            {"reason": "FieldValueTooMany", "message": f"{len(denying) - MAX_CAUSES} more violations not listed",
             "field": ""}
        )  # fmt: skip
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 422,
        "reason": "Invalid",
        "message": head + _listed([_cause(v) for v in denying[:MAX_CAUSES]], len(denying), MESSAGE_MAX - len(head)),
        "details": {"name": name, "group": group, "kind": kind, "causes": causes},
    }


CLIPPED = " ... (cut)"


def _listed(causes: list[str], total: int, room: int) -> str:
    """One cause as it is, several as Kubernetes lists them: "[a, b, and 3 more]" within room characters."""
    if total == 1:
        return clip(causes[0], room)
    shown: list[str] = []
    used = 2
    for index, cause in enumerate(causes):
        rest = f", and {total - index} more" if index else f"and {total} more"
        if used + len(cause) + 2 + len(rest) > room:
            return "[" + ", ".join(shown) + (", " if shown else "") + rest.removeprefix(", ") + "]"
        shown.append(cause)
        used += len(cause) + 2
    if total > len(causes):
        return "[" + ", ".join(shown) + f", and {total - len(causes)} more]"
    return "[" + ", ".join(shown) + "]"


def clip(text: str, limit: int) -> str:
    """text within limit characters; a longer one is cut at a word boundary and says so."""
    if len(text) <= limit:
        return text
    room = text[: limit - len(CLIPPED) + 1]
    boundary = room.rfind(" ")
    kept = room[:boundary] if boundary > limit // 2 else room[:-1]
    return kept.rstrip(" ,;:") + CLIPPED


def warnings(violations: list[Violation]) -> list[str]:
    """One warning per violation, within the API server's limits on length and total size."""

    def tail(count: int) -> str:
        return f"... and {count} more violations (see the audit annotations)"

    out: list[str] = []
    total = 0
    for index, v in enumerate(violations):
        text = clip(f"[{v.rule}] {v.path + ': ' if v.path else ''}{v.message}", WARNING_MAX)
        after = len(violations) - index - 1
        # Room is kept for the closing "... and N more" line whenever more follow.
        if total + len(text) + (len(tail(after)) if after else 0) > WARNINGS_TOTAL_MAX:
            out.append(tail(len(violations) - index))
            break
        out.append(text)
        total += len(text)
    return out


def audit_annotations(violations: list[Violation], mode: Mode) -> dict[str, str]:
    """Keys are rule ids (valid qualified names; the API server prefixes the webhook name)."""
    if not violations:
        return {}
    by_rule: dict[str, list[dict[str, str]]] = {}
    for v in violations:
        by_rule.setdefault(v.rule, []).append({"path": v.path, "severity": str(v.severity), "message": v.message})
    annotations = {"mode": str(mode)}
    for rule_id, entries in by_rule.items():
        annotations[rule_id] = _bounded_json_list(entries, AUDIT_VALUE_MAX)
    return annotations


def _bounded_json_list(entries: list[dict[str, str]], limit: int) -> str:
    """As many whole entries as fit in limit characters (still valid JSON), then a count of the rest."""
    kept: list[dict[str, Any]] = []
    for index, original in enumerate(entries):
        entry = {**original, "message": clip(original["message"], limit // 4)}
        if len(json.dumps([*kept, entry], separators=(",", ":"))) > limit - 20:
            kept.append({"more": len(entries) - index})
            break
        kept.append(entry)
    return json.dumps(kept, separators=(",", ":"))
