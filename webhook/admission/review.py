"""An AdmissionReview request read, and the Outcome of answering it (what the HTTP edge logs and counts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from webhook.karta.model import GVK
from webhook.policy.model import Violation

REVIEW_API_VERSIONS = frozenset({"admission.k8s.io/v1", "admission.k8s.io/v1beta1"})


class ReviewError(ValueError):
    """The body is not an AdmissionReview request we can answer (HTTP 400)."""


@dataclass(frozen=True)
class Review:
    api_version: str
    uid: str
    request: Mapping[str, Any]

    @property
    def operation(self) -> str:
        return str(self.request.get("operation") or "")

    @cached_property  # read several times per review
    def kind(self) -> GVK:
        kind = self.request.get("kind") or {}
        return GVK(str(kind.get("group") or ""), str(kind.get("version") or ""), str(kind.get("kind") or ""))

    @property
    def namespace(self) -> str:
        return str(self.request.get("namespace") or "")

    @property
    def sub_resource(self) -> str:
        return str(self.request.get("subResource") or "")


def parse_review(body: Any) -> Review:
    if not isinstance(body, dict):
        raise ReviewError("the body is not a JSON object")
    api_version = body.get("apiVersion")
    if (
        not isinstance(api_version, str)
        or api_version not in REVIEW_API_VERSIONS
        or body.get("kind") != "AdmissionReview"
    ):
        raise ReviewError(
            f"expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got apiVersion "
            f"{api_version!r} and kind {body.get('kind')!r}"
        )
    request = body.get("request")
    if not isinstance(request, dict):
        raise ReviewError("the AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing")
    for key in ("object", "oldObject"):
        obj = request.get(key)
        if obj is None:
            continue
        if not isinstance(obj, dict):
            raise ReviewError(f"request.{key} is not an object")
        problem = _metadata_problem(obj.get("metadata"))
        if problem:
            raise ReviewError(f"request.{key}.metadata{problem}")
    if not isinstance(request.get("kind", {}), dict):
        raise ReviewError("request.kind is not an object")
    return Review(str(api_version), uid, request)


def _metadata_problem(metadata: Any) -> str | None:
    """What the API server would never send: metadata fields of the wrong shape."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return " is not an object"
    for field_name in ("labels", "annotations"):
        values = metadata.get(field_name)
        if values is not None and (
            not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
        ):
            return f".{field_name} is not a map of strings"
    refs = metadata.get("ownerReferences")
    if refs is not None and (not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs)):
        return ".ownerReferences is not a list of objects"
    for field_name in ("name", "namespace", "generateName"):
        if metadata.get(field_name) is not None and not isinstance(metadata.get(field_name), str):
            return f".{field_name} is not a string"
    return None


@dataclass
class Outcome:
    """The answer plus what the HTTP edge logs and counts."""

    response: dict[str, Any]
    verdict: str  # allowed | denied | warned | patched | skipped | error
    kind: str
    operation: str
    namespace: str
    mode: str
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Pod mutation: why a grouped pod got no gang keys (or some left out); a metric label.
    gang_reason: str | None = None


def envelope(review: Review, response: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview answer around a response, the request's uid echoed."""
    response["uid"] = review.uid
    return {"apiVersion": review.api_version, "kind": "AdmissionReview", "response": response}


def passed(review: Review, mode: str) -> Outcome:
    """An allowed answer with nothing done: where every review starts."""
    return Outcome(
        response=envelope(review, {"allowed": True}),
        verdict="skipped",
        kind=review.kind.kind,
        operation=review.operation,
        namespace=review.namespace,
        mode=mode,
    )


def with_kind(obj: Mapping[str, Any], kind: GVK) -> Mapping[str, Any]:
    """The API server always sets apiVersion and kind in request.object; fill them in if a caller did not."""
    if obj.get("apiVersion") and obj.get("kind"):
        return obj
    return {**obj, "apiVersion": kind.api_version, "kind": kind.kind}
