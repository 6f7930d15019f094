"""The HTTP edge: Flask routes around the pure admission core."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from webhook.admission import Admission, Outcome, Review, ReviewError, error_response, parse_review
from webhook.config import Config
from webhook.evaluation import Mode
from webhook.observability import logs, metrics

# controller-runtime's bound: two objects of up to 3 MiB (the API server's own request limit) plus envelope.
MAX_BODY_BYTES = 7 * 1024 * 1024
REVIEW_PATHS = frozenset({"/validate", "/validate/enforce", "/validate/audit", "/mutate"})
# A review's log line lists at most this many violations and notes (their total is logged too), and
# clips the names it copies from the request.
LOG_ITEMS_MAX = 20
LOG_TEXT_MAX = 256

log = logs.get("http")


@dataclass
class ServerState:
    config: Config
    admission: Admission
    # Readiness: (ready, reason). Definitions are loaded before the app exists; cluster watches add more.
    readiness: list[Callable[[], tuple[bool, str]]] = field(default_factory=list)
    # Conditions worth knowing that do not make the server unready (e.g. the gang scheduler's CRD is
    # not installed, so no gang keys are written): each returns its sentences.
    details: list[Callable[[], Sequence[str]]] = field(default_factory=list)
    # Called before each review: take what the cluster agent published since (new definitions).
    refresh: Callable[[], None] | None = None

    def ready(self) -> tuple[bool, str]:
        for check in self.readiness:
            ok, reason = check()
            if not ok:
                return False, reason
        return True, "ready"


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


def _body() -> bytes:
    """The request body, read once, straight from the server's input when its length is declared.

    The API server always sends Content-Length; going around Werkzeug's stream wrappers saves a
    tenth of a small review's time. Without a length, Werkzeug reads it within MAX_CONTENT_LENGTH.
    """
    length = request.content_length
    if length is None:
        return request.get_data(cache=False)
    if length > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
    data: bytes = request.environ["wsgi.input"].read(length)
    return data


def _read_review(path: str) -> Review | Response:
    """The request's AdmissionReview, or the 400/413 answer when there is none to answer."""
    try:
        return parse_review(orjson.loads(_body()))
    except RequestEntityTooLarge:
        metrics.BAD_REQUESTS.labels(path, "413").inc()
        return _json({"error": f"request body larger than {MAX_BODY_BYTES} bytes"}, 413)
    except (orjson.JSONDecodeError, ReviewError) as exc:
        metrics.BAD_REQUESTS.labels(path, "400").inc()
        return _json({"error": f"not an AdmissionReview: {exc}"}, 400)


def _answer(
    state: ServerState, path: str, handle: Callable[[Review], Outcome], fail_closed: Callable[[], bool]
) -> Response:
    started = time.perf_counter()
    review = _read_review(path)
    if isinstance(review, Response):
        return review
    if state.refresh is not None:
        try:
            state.refresh()
        except Exception:  # the definitions in hand still serve; the next review tries again
            log.exception("cannot read the definitions the cluster agent published")
    try:
        outcome = handle(review)
    except Exception as exc:
        # A well-formed review always gets an answer with its uid, per the failure posture.
        metrics.INTERNAL_ERRORS.labels(path).inc()
        log.exception("internal error answering a review", extra={"fields": {"uid": review.uid, "path": path}})
        return _json(error_response(review, not fail_closed(), f"internal error ({type(exc).__name__})"))
    _record(path, review, outcome, time.perf_counter() - started, state.admission.evaluator.definitions.kind_names)
    return _json(outcome.response)


def create_app(state: ServerState) -> Flask:
    app = Flask("karta_admission")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    config = state.config
    admission = state.admission

    def validation_fails_closed(mode: Mode) -> Callable[[], bool]:
        return lambda: mode is Mode.ENFORCE and config.failure_policy == "Fail"

    @app.post("/validate")
    def validate() -> Response:
        return _answer(state, "/validate", admission.validate, validation_fails_closed(config.mode))

    @app.post("/validate/enforce")
    def validate_enforce() -> Response:
        return _answer(
            state,
            "/validate/enforce",
            lambda r: admission.validate(r, Mode.ENFORCE),
            validation_fails_closed(Mode.ENFORCE),
        )

    @app.post("/validate/audit")
    def validate_audit() -> Response:
        return _answer(state, "/validate/audit", lambda r: admission.validate(r, Mode.AUDIT), lambda: False)

    @app.post("/mutate")
    def mutate() -> Response:
        return _answer(state, "/mutate", admission.mutate, lambda: False)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        ok, reason = state.ready()
        body: dict[str, Any] = {"status": "ready" if ok else "not ready", "reason": reason}
        details = [text for detail in state.details for text in detail()]
        if details:
            body["details"] = details
        return _json(body, 200 if ok else 503)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body, content_type = metrics.render()
        return Response(body, mimetype=None, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 413:
            metrics.BAD_REQUESTS.labels(metrics.closed(request.path, REVIEW_PATHS), "413").inc()
        return _json({"error": exc.description or exc.name}, code)

    return app


def _record(path: str, review: Review, outcome: Outcome, elapsed: float, defined_kinds: AbstractSet[str]) -> None:
    # Kinds with a definition (they can change) and Pod get their own metric label.
    kind = outcome.kind if outcome.kind == "Pod" else metrics.closed(outcome.kind, defined_kinds)
    operation = metrics.closed(outcome.operation, metrics.OPERATIONS)
    metrics.labelled(metrics.REQUESTS, path, kind, operation, outcome.verdict, outcome.mode).inc()
    metrics.labelled(metrics.LATENCY, path).observe(elapsed)
    if outcome.violations:
        namespace = metrics.namespace_label(outcome.namespace)
        for (rule, severity), count in Counter((v.rule, str(v.severity)) for v in outcome.violations).items():
            metrics.VIOLATIONS.labels(rule, namespace, severity, outcome.mode).inc(count)
    if outcome.gang_reason is not None:
        metrics.GANG_PODS_WITHOUT_KEYS.labels(outcome.gang_reason).inc()
    level = logging.INFO if outcome.verdict in {"denied", "warned", "ungrouped"} else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    logs.event(
        log,
        level,
        f"review {outcome.verdict}",
        uid=_clip(review.uid),
        path=path,
        kind=_clip(outcome.kind),
        namespace=_clip(outcome.namespace),
        name=_clip(str(review.request.get("name") or "")),
        operation=_clip(outcome.operation),
        mode=outcome.mode,
        verdict=outcome.verdict,
        dry_run=bool(review.request.get("dryRun")),
        violations=[_clip(f"{v.rule}@{v.path}") for v in outcome.violations[:LOG_ITEMS_MAX]],
        violations_total=len(outcome.violations),
        notes=[_clip(n) for n in outcome.notes[:LOG_ITEMS_MAX]],
        notes_total=len(outcome.notes),
        duration_ms=round(elapsed * 1000, 3),
    )


def _clip(text: str) -> str:
    return text if len(text) <= LOG_TEXT_MAX else f"{text[: LOG_TEXT_MAX - 30]}... ({len(text)} characters)"
