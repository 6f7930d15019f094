"""Hardening runs against the real server: hostile inputs, a killed worker, hostile definitions."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.builders import service
from tests.e2e.server import RunningServer, memory_kb, serving
from tests.reviews import review
from webhook.karta.load import builtin_definitions

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("hardening")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serving({}) as running:
        yield running


def test_deeply_nested_json_is_refused_quickly(server: RunningServer) -> None:
    started = time.monotonic()
    reply = server.post("/validate", data=b"[" * 200_000 + b"]" * 200_000)
    assert reply.status_code == 400
    assert time.monotonic() - started < 2
    nested_object = b'{"a":' * 5000 + b"1" + b"}" * 5000
    assert server.post("/validate", data=nested_object).status_code == 400
    assert server.get("/healthz").status_code == 200


def test_large_reviews_keep_memory_bounded(server: RunningServer) -> None:
    """Reviews just under the 7 MiB limit, repeatedly: answered, and worker memory does not keep growing."""
    big = service([{}])
    big["metadata"]["annotations"] = {"blob": "x" * (6 * 1024 * 1024)}
    body = review(big)
    server.post("/validate", body)  # warm-up: allocator high-water mark
    before = {pid: memory_kb(pid, "VmRSS") for pid in server.worker_pids()}
    for _ in range(10):
        assert server.post("/validate", body, timeout=30).json()["response"]["allowed"] is True
    growth = max(memory_kb(pid, "VmRSS") - before.get(pid, 0) for pid in server.worker_pids())
    assert growth < 100 * 1024, f"a worker grew by {growth} KiB over 10 large reviews"


def load(server: RunningServer, stop: threading.Event, results: list[str]) -> None:
    body = review(service([{"replicas": 10, "maxReplicas": 5}]))
    while not stop.is_set():
        session = requests.Session()  # new connections spread the load over both workers
        session.verify, session.trust_env = str(server.ca_file), False
        try:
            reply = session.post(server.url + "/validate", json=body, timeout=10)
            results.append("ok" if reply.status_code == 200 else f"http {reply.status_code}")
        except requests.RequestException as exc:
            results.append(type(exc).__name__)
        finally:
            session.close()


def test_a_killed_worker_does_not_take_the_server_down() -> None:
    with serving({}) as server:
        stop = threading.Event()
        results: list[str] = []
        threads = [threading.Thread(target=load, args=(server, stop, results)) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = len(results)
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(15)
        errors = [r for r in results if r != "ok"]
        after = results[killed_at + len(threads) :]
        # Only the requests in flight on the killed worker can fail; the rest are answered.
        assert len(errors) <= len(threads), errors
        assert after and all(r == "ok" for r in after[-20:])
        deadline = time.monotonic() + 10
        while victim in server.worker_pids() or len(server.worker_pids()) < 2:
            assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
            time.sleep(0.1)
        print(f"worker kill under load: {len(results)} requests, {len(errors)} failed: {errors}")


def builtin_raw(name: str = "raycluster.yaml") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "samples" / name).read_text())
    return document


def worker(d: dict[str, Any]) -> dict[str, Any]:
    children: list[dict[str, Any]] = d["spec"]["structureDefinition"]["childComponents"]
    return next(c for c in children if c["name"] == "worker")


def set_path(field: str, expression: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: worker(d)["scaleDefinition"].update({field: expression})


HOSTILE: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("range", set_path("replicasPath", "[range(1e9)] | length"), "function 'range' may produce excessive output"),
    ("repeat", set_path("replicasPath", "[limit(1e9; repeat(1))] | length"), "function 'repeat'"),
    ("recurse", set_path("replicasPath", "[recurse] | length"), "function 'recurse'"),
    ("while", set_path("replicasPath", "[1 | while(true; .)] | length"), "function 'while'"),
    ("until", set_path("maxReplicasPath", "0 | until(false; .)"), "function 'until'"),
    ("recursion", set_path("minReplicasPath", "def f: f; f"), "calls itself"),
    ("descent", set_path("replicasPath", "[..] | length"), "recursive descent"),
    ("env", set_path("replicasPath", "env.HOME | length"), "function 'env'"),
    ("ENV", set_path("replicasPath", "$ENV.HOME | length"), "variable '$ENV'"),
    ("assignment", set_path("replicasPath", ".spec = 1"), "modifying operator '='"),
    ("del", set_path("replicasPath", "del(.spec)"), "del function"),
    ("syntax", set_path("replicasPath", ".spec["), "failed to compile"),
    ("duplicate names", lambda d: worker(d).update(name="head"), "component name head is not unique"),
    ("owner", lambda d: worker(d).update(ownerRef="ghost"), "non-existing component 'ghost'"),
    ("no status", lambda d: d["spec"]["structureDefinition"]["rootComponent"].pop("statusDefinition"),
     "root component must have status definition"),
    ("typo", lambda d: worker(d)["specDefinition"].update(fragmentedPodDefinition={}), "was unexpected"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "change", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_definitions_stop_the_server_before_anything_runs(
    tmp_path: Path, label: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    definition = copy.deepcopy(builtin_raw())
    change(definition)
    directory = tmp_path / "definitions"
    directory.mkdir()
    (directory / "hostile.yaml").write_text(yaml.safe_dump(definition))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "serve", "--no-cluster", "--definitions", str(directory),
         "--certfile", "/nonexistent", "--keyfile", "/nonexistent"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "hostile.yaml" in done.stderr
    assert time.monotonic() - started < 30  # refused, never evaluated


def test_builtin_definitions_pass_the_same_checks() -> None:
    assert len(builtin_definitions()) == 3
