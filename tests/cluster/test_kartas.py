"""Karta definitions from the cluster, watched through the real client against the API emulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.emulator import (
    ALL,
    FAST,
    KARTAS,
    RAY,
    RAYCLUSTER_KIND,
    EmulatedCluster,
    metric,
    raycluster_karta,
    wait_until,
)
from webhook.cluster.kartas import KartaWatch, cluster_definition_set
from webhook.config import Config, build_evaluator, load_definitions, parse_config
from webhook.evaluation import Evaluator
from webhook.karta.registry import DefinitionSet

LOAD_ERRORS = "karta_admission_definition_load_errors_total"
RELISTS = "karta_admission_cluster_relists_total"
WATCH_ERRORS = "karta_admission_cluster_watch_errors_total"


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as emulated:
        yield emulated


def start_watch(cluster: EmulatedCluster, config: Config | None = None) -> tuple[KartaWatch, Evaluator]:
    config = config or Config()
    evaluator = build_evaluator(config, load_definitions(config))
    watch = KartaWatch(evaluator.store, cluster.client(), FAST)
    watch.start()
    wait_until(lambda: watch.readiness()[0], message="the first list of Kartas")
    wait_until(lambda: cluster.watchers(KARTAS) == 1, message="the Karta watch")
    return watch, evaluator


def source(evaluator: Evaluator) -> str:
    compiled = evaluator.definitions.for_kind(RAYCLUSTER_KIND)
    assert compiled is not None
    return compiled.definition.source


def refused(karta: dict[str, Any]) -> dict[str, Any]:
    """A Karta Karta's own validator refuses: the root component may not have an owner."""
    karta["spec"]["structureDefinition"]["rootComponent"]["ownerRef"] = "head"
    return karta


def test_a_cluster_karta_overrides_the_builtin_one_and_deleting_it_falls_back(
    cluster: EmulatedCluster,
) -> None:
    watch, evaluator = start_watch(cluster)
    try:
        assert source(evaluator).startswith("built-in:")
        before = evaluator.definitions
        held = before.for_kind(RAYCLUSTER_KIND)
        stored = cluster.create(raycluster_karta("my-raycluster"))
        wait_until(lambda: source(evaluator) == "cluster:my-raycluster")
        # Swapped by assignment: a request holding the old set still has the old definition.
        assert evaluator.definitions is not before
        assert before.for_kind(RAYCLUSTER_KIND) is held
        assert held is not None
        assert held.definition.source.startswith("built-in:")
        # The other kinds keep their built-in definitions.
        assert {c.definition.source.split(":")[0] for c in evaluator.definitions} == {"built-in", "cluster"}

        cluster.delete(stored)
        wait_until(lambda: source(evaluator).startswith("built-in:"))
    finally:
        watch.stop()


def test_precedence_is_cluster_then_configured_files_then_builtin(cluster: EmulatedCluster, tmp_path: Path) -> None:
    from_file = raycluster_karta("file-raycluster")
    (tmp_path / "raycluster.yaml").write_text(yaml.safe_dump(from_file))
    config = parse_config({"definitions": {"directories": [str(tmp_path)]}}, "test")
    watch, evaluator = start_watch(cluster, config)
    try:
        assert source(evaluator) == str(tmp_path / "raycluster.yaml")
        stored = cluster.create(raycluster_karta("cluster-raycluster"))
        wait_until(lambda: source(evaluator) == "cluster:cluster-raycluster")
        cluster.delete(stored)
        wait_until(lambda: source(evaluator) == str(tmp_path / "raycluster.yaml"))
    finally:
        watch.stop()


def test_an_invalid_karta_is_refused_and_the_last_good_one_keeps_serving(
    cluster: EmulatedCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="karta_admission")
    watch, evaluator = start_watch(cluster)
    try:
        errors_before = metric(LOAD_ERRORS, source="cluster:broken")
        cluster.create(refused(raycluster_karta("broken")))
        wait_until(lambda: metric(LOAD_ERRORS, source="cluster:broken") == errors_before + 1)
        assert source(evaluator).startswith("built-in:")
        record = wait_until(lambda: next((r for r in caplog.records if "'broken' refused" in r.getMessage()), None))
        assert any("root component cannot have owner ref" in p for p in record.fields["problems"])

        good = cluster.create(raycluster_karta("good", head_pods=2))
        wait_until(lambda: source(evaluator) == "cluster:good")
        in_force = evaluator.definitions.for_kind(RAYCLUSTER_KIND)
        errors_before = metric(LOAD_ERRORS, source="cluster:good")
        cluster.patch(good, {"spec": refused(raycluster_karta("good"))["spec"]})
        wait_until(lambda: metric(LOAD_ERRORS, source="cluster:good") == errors_before + 1)
        # The edit was refused: the last good version of "good" is still the one in force.
        assert evaluator.definitions.for_kind(RAYCLUSTER_KIND) is in_force
        assert watch.definitions.refused.keys() == {"broken", "good"}

        fixed = raycluster_karta("good", head_pods=3)["spec"]
        fixed["structureDefinition"]["rootComponent"]["ownerRef"] = None  # a merge patch removes it so
        cluster.patch(good, {"spec": fixed})
        wait_until(lambda: evaluator.definitions.for_kind(RAYCLUSTER_KIND) is not in_force)
        assert source(evaluator) == "cluster:good"
        assert watch.definitions.refused.keys() == {"broken"}
    finally:
        watch.stop()


def test_two_kartas_for_one_kind_the_oldest_wins_with_a_warning(
    cluster: EmulatedCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="karta_admission")
    watch, evaluator = start_watch(cluster)
    try:
        older = cluster.create(raycluster_karta("zz-older"))
        cluster.create(raycluster_karta("aa-newer"))  # sorts first by name, but is younger
        wait_until(lambda: any("define root kind" in r.getMessage() for r in caplog.records))
        assert source(evaluator) == "cluster:zz-older"
        warning = next(r.getMessage() for r in caplog.records if "define root kind" in r.getMessage())
        assert "'zz-older'" in warning
        assert "'aa-newer'" in warning
        cluster.delete(older)
        wait_until(lambda: source(evaluator) == "cluster:aa-newer")
    finally:
        watch.stop()


def test_without_the_karta_crd_it_is_ready_and_looks_again_rarely(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="karta_admission")
    with EmulatedCluster(RAY) as cluster:
        config = Config()
        evaluator = build_evaluator(config, load_definitions(config))
        initial = evaluator.definitions
        watch = KartaWatch(evaluator.store, cluster.client(), FAST)
        retries_before = metric(RELISTS, resource="Karta.run.ai", reason="missing")
        watch.start()
        try:
            wait_until(lambda: watch.readiness()[0])
            wait_until(lambda: metric(RELISTS, resource="Karta.run.ai", reason="missing") >= retries_before + 2)
            assert evaluator.definitions is initial
            missing = [r for r in caplog.records if "is not served by the API server" in r.getMessage()]
            assert len(missing) == 1  # logged once, not on every retry

            cluster.install(KARTAS)  # the CRD appears later: picked up on the next look
            cluster.create(raycluster_karta("late"))
            wait_until(lambda: source(evaluator) == "cluster:late")
        finally:
            watch.stop()


def test_readiness_waits_for_a_completed_first_list(cluster: EmulatedCluster) -> None:
    config = Config()
    evaluator = build_evaluator(config, load_definitions(config))
    cluster.fail_next("list", KARTAS, 500, times=1000)
    watch = KartaWatch(evaluator.store, cluster.client(), FAST)
    assert watch.readiness() == (False, "Karta.run.ai: waiting for the first list")
    watch.start()
    try:
        wait_until(lambda: "injected 500" in watch.readiness()[1])
        ready, reason = watch.readiness()
        assert not ready
        assert reason == (
            "Karta.run.ai: waiting for the first list; last error: list failed: 500 Internal Server Error: injected 500"
        )
        cluster.clear_faults()
        wait_until(lambda: watch.readiness() == (True, "Karta.run.ai synced"))
    finally:
        watch.stop()


def test_relists_after_410_gone_and_after_a_dropped_connection(cluster: EmulatedCluster) -> None:
    watch, evaluator = start_watch(cluster)
    try:
        first = cluster.create(raycluster_karta("first"))
        wait_until(lambda: source(evaluator) == "cluster:first")

        # The watch times out; while it is being renewed the Karta is deleted and that history is
        # compacted away, so the renewed watch gets 410 Gone: only a relist can see the deletion.
        gone_before = metric(RELISTS, resource="Karta.run.ai", reason="gone")
        watches = cluster.requests("watch", KARTAS)
        cluster.hold_watches(KARTAS)
        cluster.expire_watches(KARTAS)
        wait_until(lambda: cluster.requests("watch", KARTAS) > watches)
        cluster.delete(first)
        cluster.compact()
        cluster.release_watches(KARTAS)
        wait_until(lambda: source(evaluator).startswith("built-in:"))
        assert metric(RELISTS, resource="Karta.run.ai", reason="gone") == gone_before + 1

        # A cut connection is an error: counted, backed off, relisted.
        errors_before = metric(WATCH_ERRORS, resource="Karta.run.ai", reason="connection")
        relists_before = metric(RELISTS, resource="Karta.run.ai", reason="error")
        wait_until(lambda: cluster.watchers(KARTAS) == 1)
        cluster.drop_watches(KARTAS)
        cluster.create(raycluster_karta("second"))
        wait_until(lambda: source(evaluator) == "cluster:second")
        wait_until(lambda: metric(RELISTS, resource="Karta.run.ai", reason="error") == relists_before + 1)
        assert metric(WATCH_ERRORS, resource="Karta.run.ai", reason="connection") == errors_before + 1
    finally:
        watch.stop()


def test_the_audit_reads_the_cluster_kartas_once(cluster: EmulatedCluster) -> None:
    base = DefinitionSet.builtin()
    api = cluster.client()
    assert cluster_definition_set(api, base) == (base, [])
    cluster.create(refused(raycluster_karta("broken")))
    definitions, notes = cluster_definition_set(api, base)
    assert definitions is base
    assert notes == ["Karta 'broken' refused: root component cannot have owner ref"]
    cluster.create(raycluster_karta("used"))
    definitions, _ = cluster_definition_set(api, base)
    compiled = definitions.for_kind(RAYCLUSTER_KIND)
    assert compiled is not None
    assert compiled.definition.source == "cluster:used"


def test_kinds_of_the_emulator_match_the_definitions() -> None:
    """The emulated resources cover every root kind of the built-in definitions."""
    served = {(k.group, k.version, k.kind) for k in ALL}
    for compiled in DefinitionSet.builtin():
        kind = compiled.definition.root_kind
        assert (kind.group, kind.version, kind.kind) in served
