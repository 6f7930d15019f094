"""`make bench` sends a different, valid body on every request: what bench/vary.lua sends is checked here."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.bodies import SLOTS, bodies, fill, slot, templates
from webhook.admission import Admission, parse_review
from webhook.config import parse_config
from webhook.karta.registry import DefinitionSet

ROOT = Path(__file__).resolve().parents[2]


def test_every_slot_is_in_every_validate_template() -> None:
    for name, template in templates().items():
        missing = [s for s in SLOTS if slot(s).encode() not in template and name.startswith("validate")]
        assert not missing, (name, missing)


@pytest.mark.parametrize("scenario", ["validate-typical", "validate-100-groups"])
def test_filled_bodies_differ_and_get_the_fixed_body_s_verdict(scenario: str) -> None:
    admission = Admission.for_config(parse_config({}, "bench"), DefinitionSet.builtin())
    fixed = admission.validate(parse_review(json.loads(bodies()[scenario])))
    template = templates()[scenario]
    seen = set()
    for n in range(1, 41):
        body = fill(template, n)
        seen.add(body)
        request = json.loads(body)["request"]
        groups = request["object"]["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        assert all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in groups)
        outcome = admission.validate(parse_review(json.loads(body)))
        assert outcome.response["response"]["allowed"] is True
        assert (outcome.verdict, [v.rule for v in outcome.violations]) == (
            fixed.verdict,
            [v.rule for v in fixed.violations],
        ), n
        assert outcome.response["response"]["uid"] == request["uid"]
    assert len(seen) == 40


def test_filled_pod_reviews_are_mutated_like_the_fixed_one() -> None:
    admission = Admission.for_config(parse_config({}, "bench"), DefinitionSet.builtin())
    fixed = admission.mutate(parse_review(json.loads(bodies()["mutate-worker-pod"])))
    for n in (1, 2, 99):
        outcome = admission.mutate(parse_review(json.loads(fill(templates()["mutate-worker-pod"], n))))
        assert outcome.verdict == fixed.verdict


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by `make tools`")
def test_wrk_script_sends_what_fill_computes(tmp_path: Path) -> None:
    received: list[bytes] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    template = tmp_path / "typical.template"
    template.write_bytes(templates()["validate-typical"])
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/validate"
        subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-s", str(ROOT / "bench" / "vary.lua"), url, "--", str(template)],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
    finally:
        server.shutdown()
    assert len(received) >= 10
    # One connection, so requests arrive in the order the script numbered them; wrk calls the
    # script's request() once before connecting, so the first one sent may be number 2.
    first = next(n for n in (1, 2) if received[0] == fill(template.read_bytes(), n))
    for n, body in enumerate(received[:20], start=first):
        assert body == fill(template.read_bytes(), n), n
