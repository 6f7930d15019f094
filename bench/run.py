"""`make bench`: the real server against a no-op baseline on the same stack, with wrk and hey.

Every scenario is measured with a body that differs on every request (wrk with bench/vary.lua: uid,
name and scale values change, so no cache keyed by the input can serve a repeat) and, beside it,
with one body repeated (wrk, and hey, a Go client like kube-apiserver, which can only repeat).

Environment: BENCH_SECONDS (per run, default 4), BENCH_REPEATS (runs per measurement; baseline and
server runs alternate, the median run is reported and the ratio is the median of the pairs'
ratios; default 3), BENCH_WORKERS / BENCH_THREADS (server settings, default 2 / 4),
BENCH_CONNECTIONS (default 16).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gunicorn
import orjson
import requests

from bench.bodies import bodies, fill, rayservice, templates
from tests.e2e.server import memory_kb, worker_pids
from tests.e2e.tls_helpers import free_port
from tests.e2e.tls_helpers import run_hey as hey
from tests.reviews import review
from webhook.admission import Admission, Outcome, Review, parse_review
from webhook.certs import make_bundle, write_bundle
from webhook.cli.serve import YOUNG_GENERATION_THRESHOLD
from webhook.config import parse_config
from webhook.karta import jqengine
from webhook.karta.registry import DefinitionSet

ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("BENCH_SECONDS", "4"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
THREADS = int(os.environ.get("BENCH_THREADS", "4"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))  # alternating pairs per measurement
SCENARIOS = {"validate-typical": "/validate", "validate-100-groups": "/validate", "mutate-worker-pod": "/mutate"}
LARGE = "validate-100-groups"
# The runs of a scenario: a different body on every request first (the figures the targets use),
# then one body repeated. "-c1": one request at a time, the latency of the object itself.
VARYING, VARYING_ONE, REPEATED, REPEATED_GO = "wrk varying", "wrk -c1 varying", "wrk repeated", "hey repeated"
DEFAULT_CACHE_ENTRIES = jqengine.OUTPUT_CACHE_ENTRIES


@dataclass
class Measurement:
    tool: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int


@dataclass
class Scenario:
    name: str
    server: dict[str, Measurement] = field(default_factory=dict)
    baseline: dict[str, Measurement] = field(default_factory=dict)
    ratio: dict[str, float] = field(default_factory=dict)  # median of paired server/baseline throughputs
    peak_rss_mb: float = 0.0
    # The server's own time per review under load, bodies varying (its latency histogram: body read
    # to answer built), against the same review in process: what a worker's cold caches add.
    server_review_us: float = 0.0
    in_process_review_us: float = 0.0


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, body: Path, *, script: str, connections: int = CONNECTIONS) -> Measurement:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{SECONDS}s", "--latency", "-s", str(ROOT / "bench" / script), url,
         "--", str(body)],
        capture_output=True, text=True, check=True, timeout=SECONDS + 30,
    ).stdout  # fmt: skip
    percentiles = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    count = int(errors.group(1)) if errors else 0
    count += sum(int(x) for x in socket_errors.groups()) if socket_errors else 0
    return Measurement("wrk", rps, percentiles["50"], percentiles["90"], percentiles["99"], count)


def run_hey(url: str, body: Path) -> Measurement:
    result = hey(url, body, duration=f"{SECONDS}s", timeout_s=10, concurrency=CONNECTIONS,
                 process_timeout=SECONDS + 60)  # fmt: skip
    out = result.output
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    percentiles = {p: float(v) * 1000 for p, v in re.findall(r"^\s+(50|90|99)% in ([\d.]+) secs", out, re.M)}
    if "99" not in percentiles:  # hey prints "0% in 0.0000" for p99 below 100 requests: the slowest bounds it
        percentiles["99"] = float(re.search(r"Slowest:\s+([\d.]+)", out).group(1)) * 1000  # type: ignore[union-attr]
    return Measurement("hey", rps, percentiles["50"], percentiles["90"], percentiles["99"], result.error_count)


@contextmanager
def server(command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{command[0]} exited:\n{log.read().decode(errors='replace')}")
                try:
                    if requests.get(f"https://127.0.0.1:{port}/readyz", verify=False, timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server not ready within 30 s")
                time.sleep(0.1)
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


def review_seconds(url: str) -> tuple[float, float]:
    """The server's latency histogram for this review path: (sum of seconds, count), all workers."""
    base, _, path = url.partition("://")[2].partition("/")
    text = requests.get(f"https://{base}/metrics", verify=False, timeout=10).text
    totals = []
    for part in ("sum", "count"):
        pattern = rf'^karta_admission_request_duration_seconds_{part}\{{path="/{re.escape(path)}"\}} (\S+)$'
        totals.append(sum(float(v) for v in re.findall(pattern, text, re.M)))
    return totals[0], totals[1]


def timed_server_run(url: str, run: Callable[[], Measurement], seen: list[float]) -> Measurement:
    """A server run, noting the server's own mean time per review during it."""
    before = review_seconds(url)
    measurement = run()
    after = review_seconds(url)
    if after[1] > before[1]:
        seen.append((after[0] - before[0]) / (after[1] - before[1]) * 1e6)
    return measurement


def warm_up(url: str, body: Path) -> None:
    """Every worker compiles its jq programs and fills its caches before anything is timed."""
    subprocess.run(["hey", "-n", "200", "-c", "4", "-m", "POST", "-T", "application/json", "-D", str(body), url],
                   capture_output=True, check=True, timeout=60)  # fmt: skip


def load_runs(url: str, body: Path, template: Path, *, single: bool) -> dict[str, Callable[[], Measurement]]:
    runs: dict[str, Callable[[], Measurement]] = {VARYING: lambda: run_wrk(url, template, script="vary.lua")}
    if single:
        runs[VARYING_ONE] = lambda: run_wrk(url, template, script="vary.lua", connections=1)
    runs[REPEATED] = lambda: run_wrk(url, body, script="post.lua")
    runs[REPEATED_GO] = lambda: run_hey(url, body)
    return runs


def compare(scenario: Scenario, baseline_url: str, server_url: str, files: tuple[Path, Path], *, single: bool) -> None:
    """Baseline and server runs alternate, so that drift in the machine's load hits both alike.

    The ratio kept is the median of the per-pair ratios; the measurements kept are the median runs.
    """
    body, template = files
    warm_up(baseline_url, body)
    warm_up(server_url, body)
    baseline_runs = load_runs(baseline_url, body, template, single=single)
    server_runs = load_runs(server_url, body, template, single=single)
    server_us: list[float] = []
    varying = server_runs[VARYING]
    server_runs[VARYING] = lambda: timed_server_run(server_url, varying, server_us)
    for tool in server_runs:
        print(f"  {scenario.name} [{tool}]: {REPEATS} x 2 x {SECONDS} s", file=sys.stderr, flush=True)
        pairs = [(baseline_runs[tool](), server_runs[tool]()) for _ in range(REPEATS)]
        scenario.baseline[tool] = median_by_rps([b for b, _ in pairs])
        scenario.server[tool] = median_by_rps([s for _, s in pairs])
        scenario.ratio[tool] = statistics.median(s.rps / b.rps for b, s in pairs)
    scenario.server_review_us = statistics.median(server_us) if server_us else 0.0
    scenario.in_process_review_us = in_process_review(template, SCENARIOS[scenario.name])


def median_by_rps(runs: list[Measurement]) -> Measurement:
    """The run with the median throughput: one noisy run on a shared machine does not decide."""
    return sorted(runs, key=lambda m: m.rps)[len(runs) // 2]


def in_process_scaling(*, remembered: bool) -> list[tuple[int, float]]:
    """Microseconds per /validate review (parse, resolve, rules, answer) by number of worker groups.

    With remembered=False the libjq output cache keeps nothing: every review pays for libjq, as one
    whose scale fields no earlier review had does.
    """
    jqengine.OUTPUT_CACHE_ENTRIES = DEFAULT_CACHE_ENTRIES if remembered else 0
    admission = Admission.for_config(parse_config({}, "bench"), DefinitionSet.builtin())
    points = []
    for groups in (1, 10, 50, 100, 200):
        body = orjson.dumps(review(rayservice(groups)))
        points.append((groups, microseconds_per_review(admission.validate, [body] * max(20, 2000 // groups))))
    return points


def microseconds_per_review(handle: Callable[[Review], Outcome], sent: list[bytes]) -> float:
    """The fastest of 5 timed passes over sent (JSON in, the answer out), after a warm-up pass over 20.

    The collector is set as a server worker sets it (webhook.cli.serve): long-lived objects frozen, the
    young generation collected every YOUNG_GENERATION_THRESHOLD allocations.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
    for body in sent[:20]:
        handle(parse_review(orjson.loads(body)))
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for body in sent:
            orjson.dumps(handle(parse_review(orjson.loads(body))).response)
        best = min(best, (time.perf_counter() - started) / len(sent) * 1e6)
    return best


def in_process_review(template: Path, path: str) -> float:
    """Microseconds per review in process, bodies varying as the wrk script varies them (caches warm)."""
    admission = Admission.for_config(parse_config({}, "bench"), DefinitionSet.builtin())
    # About 2 MB of bodies: enough to vary, little enough to stay in the caches as warm figures should.
    text = template.read_bytes()
    sent = [fill(text, n) for n in range(max(20, min(500, 2_000_000 // len(text))))]
    return microseconds_per_review(admission.mutate if path == "/mutate" else admission.validate, sent)


def fit(points: list[tuple[int, float]]) -> tuple[float, float, float]:
    """Least squares line (intercept µs, slope µs per group) and R²."""
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    slope, intercept = statistics.linear_regression(xs, ys)
    mean = statistics.fmean(ys)
    residual = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    total = sum((y - mean) ** 2 for y in ys)
    return intercept, slope, 1 - residual / total if total else 1.0


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return {
        "cpu": cpu, "cores": str(os.cpu_count()), "kernel": platform.release(), "python": platform.python_version(),
        "gunicorn": gunicorn.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load generators": f"wrk -t1 and hey, {CONNECTIONS} connections, {SECONDS} s per run, baseline and server "
        f"alternating, median of {REPEATS}, on the same 2 cores",
        "server": f"{WORKERS} workers x {THREADS} threads, TLS, keep-alive",
    }  # fmt: skip


def verdict(ok: bool, text: str) -> str:
    return f"{'MET   ' if ok else 'MISSED'} {text}"


def main() -> int:
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found; install the Debian packages wrk and hey (make tools)", file=sys.stderr)
            return 2
    requests.packages.urllib3.disable_warnings()  # type: ignore[attr-defined]
    results: dict[str, Scenario] = {name: Scenario(name) for name in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="karta-bench-") as scratch:
        directory = Path(scratch)
        write_bundle(make_bundle(["localhost"], ["127.0.0.1"], days=2), directory / "certs")
        cert, key = str(directory / "certs" / "tls.crt"), str(directory / "certs" / "tls.key")
        files: dict[str, tuple[Path, Path]] = {}
        slotted = templates()
        for name, data in bodies().items():
            files[name] = (directory / f"{name}.json", directory / f"{name}.template")
            files[name][0].write_bytes(data)
            files[name][1].write_bytes(slotted[name])
        common = ["--certfile", cert, "--keyfile", key, "--workers", str(WORKERS), "--threads", str(THREADS)]
        baseline_port, server_port = free_port(), free_port()
        command = [sys.executable, "-m", "webhook.cli", "serve", "--no-cluster", "--bind", f"127.0.0.1:{server_port}",
                   "--log-level", "warning", *common]  # fmt: skip
        print(f"no-op baseline (same stack) on :{baseline_port}, karta-admission serve on :{server_port}",
              file=sys.stderr)  # fmt: skip
        with (
            server(
                [sys.executable, "-m", "bench.noop", "--bind", f"127.0.0.1:{baseline_port}", *common], baseline_port
            ),
            server(command, server_port) as process,
        ):
            peak: dict[int, float] = {}
            stop = threading.Event()

            def watch_rss() -> None:
                while not stop.wait(0.2):
                    for pid in worker_pids(process.pid):
                        with contextlib.suppress(OSError):  # a worker that just exited
                            peak[pid] = max(peak.get(pid, 0.0), memory_kb(pid, "VmHWM") / 1024)

            watcher = threading.Thread(target=watch_rss, daemon=True)
            watcher.start()
            for name, path in SCENARIOS.items():
                compare(results[name], f"https://127.0.0.1:{baseline_port}{path}",
                        f"https://127.0.0.1:{server_port}{path}", files[name], single=(name == LARGE))  # fmt: skip
                results[name].peak_rss_mb = max(peak.values(), default=0.0)
            stop.set()
    print("in-process cost by number of worker groups", file=sys.stderr, flush=True)
    scaling = in_process_scaling(remembered=False)
    remembered = in_process_scaling(remembered=True)
    intercept, slope, r2 = fit(scaling)
    report(results, scaling, remembered, (intercept, slope, r2))
    return 0


def target_lines(results: dict[str, Scenario], slope: float, r2: float) -> list[str]:
    """Issue 16's targets, each MET or MISSED with its figure."""
    typical, hundred, pod = (results[n] for n in SCENARIOS)
    lines = []
    for label, scenario, target in (("/validate typical", typical, 0.70), ("/mutate worker pod", pod, 0.80)):
        ratio = scenario.ratio[VARYING]
        throughput = f"{label}: {ratio:.0%} of the no-op's throughput (target >= {target:.0%})"
        lines.append(verdict(ratio >= target, throughput))
        p99, base_p99 = scenario.server[VARYING].p99_ms, scenario.baseline[VARYING].p99_ms
        tail = f"{label}: p99 {p99:.1f} ms at {CONNECTIONS} connections, {p99 / base_p99:.2f}x the no-op's"
        lines.append(verdict(p99 <= 1.5 * base_p99, f"{tail} {base_p99:.1f} ms (target <= 1.5x)"))
    ratio = hundred.ratio[VARYING_ONE]
    p50 = hundred.server[VARYING_ONE].p50_ms
    one = f"100 worker groups one at a time: {ratio:.0%} of the no-op's throughput (p50 {p50:.1f} ms; target >= 50%)"
    lines.append(verdict(ratio >= 0.5, one))
    lines.append(verdict(slope <= 15, f"in process: {slope:.1f} µs per worker group (target <= 15 µs)"))
    lines.append(verdict(r2 >= 0.99, f"cost linear in worker groups: R² {r2:.4f} (target >= 0.99)"))
    return lines


def report(
    results: dict[str, Scenario],
    scaling: list[tuple[int, float]],
    remembered: list[tuple[int, float]],
    line: tuple[float, float, float],
) -> None:
    info = machine()
    print("\nMachine: " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    print(f"\n{'scenario':<22}{'run':<17}{'reviews/s':>11}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'baseline/s':>12}{'ratio':>8}{'base p99':>10}")  # fmt: skip
    for scenario in results.values():
        for tool, m in scenario.server.items():
            base = scenario.baseline[tool]
            print(f"{scenario.name:<22}{tool:<17}{m.rps:>11,.0f}{m.p50_ms:>9.2f}{m.p90_ms:>9.2f}{m.p99_ms:>9.2f}"
                  f"{m.errors:>8}{base.rps:>12,.0f}{scenario.ratio[tool]:>8.0%}{base.p99_ms:>10.2f}")  # fmt: skip
    print(f"\npeak RSS per worker: {max(s.peak_rss_mb for s in results.values()):.0f} MB")
    print("\ntime per review, bodies varying: the server's own (its latency histogram, body read to answer built,")
    print(f"{CONNECTIONS} connections) against the same reviews in process with warm caches:")
    for scenario in results.values():
        server_us, in_process_us = scenario.server_review_us, scenario.in_process_review_us
        print(f"  {scenario.name:<22}{server_us:>8,.0f} µs in the server{in_process_us:>8,.0f} µs in process")
    print("\nin-process cost per /validate review by worker groups: "
          + ", ".join(f"{g}: {us:,.0f} µs" for g, us in scaling))  # fmt: skip
    print("  ... when the scale fields were seen before (libjq output remembered): "
          + ", ".join(f"{g}: {us:,.0f} µs" for g, us in remembered))  # fmt: skip
    intercept, slope, r2 = line
    print(f"linear fit: {intercept:,.0f} µs + {slope:,.1f} µs per group, R² = {r2:.4f}")
    print("\nThe load runs' libjq outputs are remembered only when a body repeats; the in-process line without")
    print("them is the cost of a body nobody sent before, as in a cluster.")
    print("\nTargets (2 cores shared with the load generator; bodies varying):")
    for text in target_lines(results, slope, r2):
        print(text)
    print("\nNo API call per admission: the server above runs with --no-cluster; in a cluster the owner cache")
    print("answers from memory (tests/cluster/test_owners.py counts the emulator's requests during mutation).")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    record = {
        "machine": info,
        "scenarios": {n: asdict(s) for n, s in results.items()},
        "scaling_us": scaling,
        "scaling_remembered_us": remembered,
        "fit": {"intercept_us": intercept, "slope_us": slope, "r2": r2},
    }
    path = out / time.strftime("bench-%Y%m%dT%H%M%S.json")
    path.write_text(json.dumps(record, indent=2))
    print(f"\nresults: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
