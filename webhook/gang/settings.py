"""The gang settings (configuration key `gang`), read by the plan and the pod decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# What a custom convention's templates may refer to (docs/configuration.md).
CUSTOM_TEMPLATE_FIELDS = frozenset({"group", "size", "namespace", "component", "instance", "task"})


@dataclass(frozen=True)
class GangSettings:
    scheduler: str = "coscheduling"
    custom_labels: Mapping[str, str] = field(default_factory=dict)
    custom_annotations: Mapping[str, str] = field(default_factory=dict)
    # None: the scheduler's usual name (webhook.gang.plan.SCHEDULERS); "": never set spec.schedulerName.
    scheduler_name: str | None = None
    schedule_timeout_seconds: int | None = None  # coscheduling PodGroup scheduleTimeoutSeconds
