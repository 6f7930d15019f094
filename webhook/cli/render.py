"""How `check` and `audit` show verdicts: one text layout, one JSON shape, one summary, progress."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from webhook.evaluation import Verdict
from webhook.policy.model import Severity

PROGRESS_EVERY = 500
# Without a terminal, progress lines only for runs this large (a log, not a live counter).
PROGRESS_QUIET_UNTIL = 5_000


def status(verdict: Verdict) -> str:
    if not verdict.allowed:
        return "DENIED"
    return "allowed with warnings" if verdict.violations else "allowed"


def object_name(verdict: Verdict) -> str:
    return f"{verdict.namespace}/{verdict.name}" if verdict.namespace else verdict.name


def print_verdict(verdict: Verdict, out: TextIO, prefix: str = "") -> None:
    """The object's status line, then each violation: severity, rule, field path, message."""
    print(f"{prefix}{verdict.kind} {object_name(verdict)}: {status(verdict)}", file=out)
    for violation in verdict.violations:
        label = "deny" if violation.severity is Severity.DENY else "warn"
        print(f"  {label}  {violation.rule}  {violation.path or '(object)'}", file=out)
        print(f"        {violation.message}", file=out)


def verdict_fields(verdict: Verdict) -> dict[str, Any]:
    """The JSON fields every command reports for a checked object (DESIGN.md's check output)."""
    return {
        "kind": verdict.kind,
        "name": verdict.name,
        "namespace": verdict.namespace,
        "allowed": verdict.allowed,
        "definition": verdict.definition,
        "violations": [violation.as_dict() for violation in verdict.violations],
    }


def summary(verdicts: Sequence[Verdict]) -> str:
    total = len(verdicts)
    denied = sum(1 for v in verdicts if not v.allowed)
    warned = sum(1 for v in verdicts if v.allowed and v.violations)
    return (
        f"{total} object{'s' if total != 1 else ''} checked: {denied} denied, "
        f"{warned} allowed with warnings, {total - denied - warned} allowed"
    )


class Progress:
    """Progress on stderr: every `every` objects on a terminal, and on large runs otherwise."""

    def __init__(self, stream: TextIO, every: int = PROGRESS_EVERY, quiet_until: int = PROGRESS_QUIET_UNTIL) -> None:
        self.stream = stream
        self.every = every
        self.tty = stream.isatty()
        self.quiet_until = quiet_until
        self.printed = False

    def __call__(self, count: int) -> None:
        if count % self.every or not (self.tty or count >= self.quiet_until):
            return
        if self.tty:
            self.stream.write(f"\rchecked {count} objects...")
        else:
            self.stream.write(f"checked {count} objects...\n")
        self.stream.flush()
        self.printed = True

    def done(self) -> None:
        if self.printed and self.tty:
            self.stream.write("\n")
            self.stream.flush()
