"""`karta-admission check`: verdicts, output formats and exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.corpus import CORPUS, sample_files
from webhook.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
BROKEN = DATA / "broken-rayservice.yaml"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_broken_file_is_denied_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(BROKEN))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{BROKEN}: RayService ml/broken-service: DENIED"
    assert "  deny  replicas-within-bounds  spec.rayClusterConfig.workerGroupSpecs[0].replicas" in lines
    assert '        worker group "small-group": replicas 10 is above maxReplicas 5; KubeRay would run 5' in lines
    assert any(
        "gpu-whole-number" in line and "workerGroupSpecs[1].template.spec.containers[0]" in line for line in lines
    )
    assert (
        lines[-1]
        == "1 object checked: 1 denied, 0 allowed with warnings, 0 allowed; 1 document skipped (-v lists them)"
    )


def test_verbose_lists_skipped_documents(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "-v", str(BROKEN))
    assert f"skipped {BROKEN}#1: v1 ConfigMap unrelated" in out


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-o", "json", str(BROKEN))
    assert code == 1
    (result,) = json.loads(out)
    assert {k: result[k] for k in ("file", "kind", "name", "namespace", "allowed")} == {
        "file": str(BROKEN), "kind": "RayService", "name": "broken-service", "namespace": "ml", "allowed": False,
    }  # fmt: skip
    rules = {(v["rule"], v["severity"], v["path"]) for v in result["violations"]}
    assert ("replicas-within-bounds", "deny", "spec.rayClusterConfig.workerGroupSpecs[0].replicas") in rules
    assert all(set(v) == {"rule", "severity", "path", "message"} for v in result["violations"])


def test_audit_mode_denies_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--mode", "audit", str(BROKEN))
    assert code == 0
    assert "allowed with warnings" in out


def test_severity_from_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("rules:\n  replicas-within-bounds: warn\n  gpu-whole-number: off\n")
    code, out, _ = run(capsys, "--config", str(config), str(BROKEN))
    assert code == 0
    assert "gpu-whole-number" not in out and "warn  replicas-within-bounds" in out


def test_crd_defaults_are_applied(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Without minReplicas/maxReplicas the API server fills in 0 and 2147483647: replicas 3 is fine.
    manifest = tmp_path / "c.yaml"
    manifest.write_text(
        "apiVersion: ray.io/v1\nkind: RayCluster\nmetadata: {name: c}\nspec:\n  headGroupSpec:\n"
        "    template: {spec: {containers: [{name: h, image: ray}]}}\n  workerGroupSpecs:\n"
        "  - groupName: w\n    replicas: 3\n    template: {spec: {containers: [{name: w, image: ray}]}}\n"
    )
    code, out, _ = run(capsys, str(manifest))
    assert (code, out.splitlines()[0]) == (0, f"{manifest}: RayCluster c: allowed")


def test_unreadable_yaml_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: [")
    code, _, err = run(capsys, str(bad), str(BROKEN))
    assert code == 2
    assert f"{bad}: document 1: not valid YAML" in err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read" in err


def test_bad_config_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mode: maybe\n")
    code, _, err = run(capsys, "--config", str(config), str(BROKEN))
    assert code == 2 and "mode: 'maybe' is not one of" in err


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["check", "--frobnicate", str(BROKEN)])
    assert caught.value.code == 2
    assert "unrecognized arguments: --frobnicate" in capsys.readouterr().err


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(BROKEN.read_text()))
    code, out, _ = run(capsys, "-")
    assert code == 1 and out.startswith("-: RayService ml/broken-service: DENIED")


def test_list_documents_are_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import yaml

    items = list(yaml.safe_load_all(BROKEN.read_text()))
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    code, out, _ = run(capsys, str(listing))
    assert code == 1 and "RayService ml/broken-service: DENIED" in out


def test_whole_corpus_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *map(str, sample_files()))
    assert code == 0, out
    assert out.splitlines()[-1].startswith("82 objects checked: 0 denied")


def test_console_script() -> None:
    sample = CORPUS / "ray-service.sample.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "check", "-o", "json", str(sample), str(BROKEN)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    results = json.loads(done.stdout)
    assert [(r["name"], r["allowed"]) for r in results] == [("rayservice-sample", True), ("broken-service", False)]


def test_unusable_crd_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    crd = tmp_path / "crd.yaml"
    crd.write_text(
        "apiVersion: apiextensions.k8s.io/v1beta1\nkind: CustomResourceDefinition\nmetadata: {name: x}\nspec: {}\n"
    )
    code, _, err = run(capsys, "--crd", str(crd), str(BROKEN))
    assert code == 2 and "--crd: cannot use it" in err
