"""Pod mutation: a Ray pod's gang keys (webhook.gang), answered as an RFC 6902 patch that only adds."""

from __future__ import annotations

import base64
import json

from webhook.admission.review import Outcome, Review, envelope, passed
from webhook.evaluation import Evaluator, Mode
from webhook.gang.pods import admit_pod
from webhook.gang.settings import GangSettings
from webhook.gang.state import GangIndex
from webhook.karta.model import GVK
from webhook.kube.meta import controller_of


def mutate(evaluator: Evaluator, gang: GangSettings, owners: GangIndex, review: Review) -> Outcome:
    pod = review.request.get("object")
    outcome = passed(review, str(evaluator.mode))
    if (
        review.operation != "CREATE"
        or review.sub_resource
        or review.kind.kind != "Pod"
        or review.kind.group
        or not isinstance(pod, dict)
        or gang.scheduler == "none"
        or evaluator.mode is Mode.OFF
    ):
        return outcome
    owner = controller_of(pod)
    if owner is None:
        return outcome
    compiled = evaluator.definitions.for_kind(GVK.of(owner))
    if compiled is None:
        return outcome
    claim = compiled.classifier.classify(pod)
    if claim is None or (claim.grouping is None and compiled.definition.pod_group is None):
        return outcome  # not a pod of any gang: no lookup at all
    namespace = review.namespace or str((pod.get("metadata") or {}).get("namespace") or "")
    lookup = owners.gang(namespace, owner)
    decision = admit_pod(pod, claim, compiled.definition, lookup, settings=gang, namespace=namespace)
    if not decision.grouped:
        return outcome
    outcome.notes.extend(decision.notes)
    if decision.withheld is not None:
        outcome.gang_reason = decision.withheld.reason
        outcome.notes.append(f"{decision.withheld.reason}: {decision.withheld.message}")
    patch = decision.patch(pod)
    if patch:
        encoded = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
        outcome.response = envelope(review, {"allowed": True, "patchType": "JSONPatch", "patch": encoded})
        outcome.verdict = "patched"
    elif decision.withheld is not None:
        outcome.verdict = "withheld"
    else:
        outcome.verdict = "allowed"
    return outcome
