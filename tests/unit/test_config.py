"""The configuration file: defaults, YAML pitfalls, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.config import Config, ConfigError, load_config, parse_config
from webhook.evaluation import Mode
from webhook.policy.model import Severity


def test_no_file_means_built_in_defaults() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.mode is Mode.ENFORCE and config.gang.scheduler == "coscheduling"


def test_unquoted_off_is_off(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("mode: off\nrules:\n  gpu-on-head: off\n  gpu-toleration: warn\n")
    config = load_config(path)
    assert config.mode is Mode.OFF
    assert config.policy.severities == {"gpu-on-head": Severity.OFF, "gpu-toleration": Severity.WARN}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"mode": "maybe"}, "mode: 'maybe' is not one of"),
        ({"rules": {"no-such-rule": "deny"}}, "rules.no-such-rule: no such rule; known rules:"),
        ({"rules": {"gpu-on-head": "loud"}}, "rules[gpu-on-head]: 'loud' is not one of"),
        ({"gang": {"scheduler": "slurm"}}, "gang.scheduler: 'slurm' is not one of"),
        ({"gang": {"scheduler": "custom"}}, "scheduler 'custom' needs at least one label or annotation"),
        (
            {"gpu": {"resourcePatterns": ["(unclosed"]}},
            "gpu.resourcePatterns[0]: '(unclosed' is not a regular expression",
        ),
        ({"surprise": 1}, "Additional properties are not allowed ('surprise' was unexpected)"),
        ({"cluster": {"auditIntervalSeconds": -1}}, "cluster.auditIntervalSeconds: -1 is less than the minimum of 0"),
        ({"gang": {"scheduleTimeoutSeconds": 0}}, "gang.scheduleTimeoutSeconds: 0 is less than the minimum of 1"),
        ({"gang": {"schedulerName": 7}}, "gang.schedulerName: 7 is not of type 'string', 'null'"),
        (
            {"gang": {"scheduler": "custom", "custom": {"labels": {"x/g": "{cluster}"}}}},
            "gang.custom.labels['x/g']: '{cluster}': unknown field {cluster}; known: {component}, {group}",
        ),
        (
            {"gang": {"scheduler": "custom", "custom": {"annotations": {"x/g": "{group"}}}},
            "gang.custom.annotations['x/g']: '{group': not a valid template",
        ),
    ],
)
def test_refusals_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"^cfg\.yaml: ") as caught:
        parse_config(raw, "cfg.yaml")
    assert message in str(caught.value)


def test_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: [")
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load_config(tmp_path / "missing.yaml")


def test_command_line_wins(tmp_path: Path) -> None:
    config = parse_config({"mode": "audit", "definitions": {"directories": ["/a"]}}, "c")
    updated = config.with_overrides(mode="enforce", definition_directories=[Path("/b")])
    assert updated.mode is Mode.ENFORCE
    assert updated.definition_directories == (Path("/a"), Path("/b"))
    assert config.with_overrides() == config


def test_gpu_settings() -> None:
    config = parse_config({"gpu": {"resourcePatterns": [r"gpu\.intel\.com/.*"], "taintKeys": []}}, "c")
    assert config.policy.gpu.is_gpu("gpu.intel.com/i915")
    assert not config.policy.gpu.is_gpu("nvidia.com/gpu")
    assert config.policy.gpu.taint_keys == ()


def test_gang_scheduler_name_and_timeout() -> None:
    assert parse_config({}, "c").gang.scheduler_name is None  # the scheduler's usual name
    gang = parse_config({"gang": {"schedulerName": "", "scheduleTimeoutSeconds": 300}}, "c").gang
    assert gang.scheduler_name == "" and gang.schedule_timeout_seconds == 300
    assert parse_config({"gang": {"schedulerName": None}}, "c").gang.scheduler_name is None
