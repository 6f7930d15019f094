"""Gang scheduling, pure: a Ray cluster's gang through its Karta definition (sizes), each scheduler's
group object and pod keys (plan), and what one pod gets at CREATE (pods).

The cluster edge keeps a plan per owner (webhook/cluster/owners.py) and creates the group objects
(webhook/cluster/podgroups.py); the offline `karta-admission gang` previews both (preview).
"""

from webhook.gang.plan import (
    GROUP_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SCHEDULERS,
    SIZE_ANNOTATION,
    GangPlan,
    PodKeys,
    Scheduler,
    Withheld,
    plan_for_gang,
    plan_gang,
    scheduler_name_of,
    scheduler_of,
)
from webhook.gang.pods import PodDecision, admit_pod, decide
from webhook.gang.sizes import Gang, GangError, Task, gang_of, has_gang_instructions, owns_pods, pod_requests
from webhook.gang.state import ClusterGang, GangIndex, GangLookup, GroupObjectStatus, NoCluster

__all__ = [
    "GROUP_ANNOTATION",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "SCHEDULERS",
    "SIZE_ANNOTATION",
    "ClusterGang",
    "Gang",
    "GangError",
    "GangIndex",
    "GangLookup",
    "GangPlan",
    "GroupObjectStatus",
    "NoCluster",
    "PodDecision",
    "PodKeys",
    "Scheduler",
    "Task",
    "Withheld",
    "admit_pod",
    "decide",
    "gang_of",
    "has_gang_instructions",
    "owns_pods",
    "plan_for_gang",
    "plan_gang",
    "pod_requests",
    "scheduler_name_of",
    "scheduler_of",
]
