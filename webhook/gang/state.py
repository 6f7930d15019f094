"""What Pod admission needs to know from the cluster edge about a pod's gang, without an API call.

The cluster edge (the owner cache, webhook/cluster/owners.py) keeps one ClusterGang per owner object,
computed by the pure plan (webhook.gang.plan.plan_gang), and answers lookups from memory. Without a
cluster the answer is a miss with reason `no-cluster`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.gang.plan import GangPlan


class GroupObjectStatus(enum.StrEnum):
    """Whether the group object a plan names can be relied on."""

    NOT_NEEDED = "not-needed"  # the scheduler needs no group object
    EXPECTED = "expected"  # ours exists, or the controller will create it (the CRD is served, no other object)
    FOREIGN = "foreign"  # an object of that name exists that this product did not create: defer to it
    CRD_MISSING = "crd-missing"  # the scheduler's group CRD is not served: the scheduler is not installed
    UNMANAGED = "unmanaged"  # nobody creates group objects here (no cluster, or the controller is off)
    UNKNOWN = "unknown"  # not known yet (the group objects' first list is not done)


@dataclass(frozen=True)
class ClusterGang:
    """One owner's plan and the state of its group object."""

    plan: GangPlan
    group_object: GroupObjectStatus


@dataclass(frozen=True)
class GangLookup:
    """The answer for one pod's owner: its gang, or why it is not known (a miss reason)."""

    cluster: ClusterGang | None
    miss: str | None = None


class GangIndex(Protocol):
    """Where Pod mutation finds the gang of a pod's owner (the pod's controller ownerReference)."""

    def gang(self, namespace: str, owner: Mapping[str, Any]) -> GangLookup: ...


class NoCluster:
    """Without a cluster nobody creates group objects and no owner is known."""

    def gang(self, namespace: str, owner: Mapping[str, Any]) -> GangLookup:
        return GangLookup(None, "no-cluster")
