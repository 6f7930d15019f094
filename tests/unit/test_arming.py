"""Arming the enforce webhooks: which entries are patched to Fail, and nothing else."""

from __future__ import annotations

from typing import Any

import jsonpatch

from webhook.cluster.arming import ArmSettings, armed
from webhook.config import parse_config

CONFIGURATION: dict[str, Any] = {
    "metadata": {"name": "karta-admission"},
    "webhooks": [
        {"name": "validate.karta-admission.io", "failurePolicy": "Ignore"},
        {"name": "validate-enforce.karta-admission.io", "failurePolicy": "Ignore"},
        {"name": "validate-audit.karta-admission.io", "failurePolicy": "Ignore"},
    ],
}
NAMES = ("validate.karta-admission.io", "validate-enforce.karta-admission.io")


def test_only_the_named_entries_are_set_to_fail() -> None:
    patched = jsonpatch.apply_patch(CONFIGURATION, armed(CONFIGURATION, NAMES))
    assert [w["failurePolicy"] for w in patched["webhooks"]] == ["Fail", "Fail", "Ignore"]
    assert armed(patched, NAMES) == []  # armed already: nothing to write


def test_the_patch_fails_when_the_entries_moved_since_they_were_read() -> None:
    ops = armed(CONFIGURATION, NAMES)
    reordered = {**CONFIGURATION, "webhooks": list(reversed(CONFIGURATION["webhooks"]))}
    try:
        jsonpatch.apply_patch(reordered, ops)
    except jsonpatch.JsonPatchTestFailed:
        return
    raise AssertionError("a patch over moved entries must not apply")


def test_settings_from_the_configuration() -> None:
    config = parse_config(
        {"cluster": {"armWebhooks": {"validatingWebhookConfiguration": "karta-admission", "webhooks": list(NAMES)}}},
        "test",
    )
    assert config.cluster.arm_webhooks is not None
    assert ArmSettings.from_mapping(config.cluster.arm_webhooks) == ArmSettings("karta-admission", NAMES)
