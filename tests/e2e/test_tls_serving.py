"""The TLS serving layer: the real gunicorn with our worker, settings and reloading TLS context.

The server tests start gunicorn in a subprocess (tests/e2e/tls_helpers.py) with a tiny WSGI app and
drive it over real TLS: Go's HTTP client (hey), protocol-version probes, certificate rotation under
load, slow clients. docs/tls-serving.md explains what each one guards against.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.tls_helpers import (
    HEY,
    CertPair,
    SecretVolume,
    Server,
    client_context,
    https_request,
    make_cert_pair,
    run_hey,
    running_server,
    served_serial,
    tls_connect,
    write_pair,
)
from webhook.server import tls
from webhook.server.gunicorn_settings import WORKER_CLASS, WebhookGunicornApp, gunicorn_settings
from webhook.server.worker import TLSSafeThreadWorker

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("tls_serving")]

needs_hey = pytest.mark.skipif(shutil.which("hey") is None, reason=f"Go load client hey not found ({HEY})")

HEAD_TIMEOUT = TLSSafeThreadWorker.read_timeout
# About the size of an AdmissionReview of a RayService.
REVIEW_BODY = json.dumps({"kind": "AdmissionReview", "request": {"object": {"items": ["x" * 60] * 90}}}).encode()


@pytest.fixture(scope="module")
def module_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, CertPair]:
    pair = make_cert_pair()
    certfile, keyfile = write_pair(tmp_path_factory.mktemp("certs"), pair)
    return certfile, keyfile, pair


@pytest.fixture(scope="module")
def shared_server(module_pair: tuple[Path, Path, CertPair]) -> Iterator[Server]:
    certfile, keyfile, _ = module_pair
    with running_server(certfile, keyfile) as server:
        yield server


@pytest.fixture
def body_file(tmp_path: Path) -> Path:
    path = tmp_path / "review.json"
    path.write_bytes(REVIEW_BODY)
    return path


# --- (a) Go's HTTP/1.1 client with keep-alive -------------------------------------------------------


def _hey_trials(certfile: Path, keyfile: Path, body_file: Path, trials: int) -> list[str]:
    failures = []
    for trial in range(trials):
        # A fresh server each time: the stall depended on how the first connections raced.
        with running_server(certfile, keyfile, workers=2, threads=4) as server:
            result = run_hey(server.url, body_file, duration="2s", timeout_s=3, concurrency=16)
        if result.error_count or result.ok < 100:
            failures.append(f"trial {trial}: {result.ok} ok, errors {result.errors}, statuses {result.statuses}")
    return failures


@needs_hey
def test_go_client_with_keepalive_never_stalls(module_pair: tuple[Path, Path, CertPair], body_file: Path) -> None:
    certfile, keyfile, _ = module_pair
    assert _hey_trials(certfile, keyfile, body_file, trials=3) == []


@needs_hey
@pytest.mark.slow
def test_go_client_with_keepalive_never_stalls_over_many_starts(
    module_pair: tuple[Path, Path, CertPair], body_file: Path
) -> None:
    certfile, keyfile, _ = module_pair
    assert _hey_trials(certfile, keyfile, body_file, trials=12) == []


# --- (b) protocol versions and ciphers ---------------------------------------------------------------


def _handshake(port: int, context: ssl.SSLContext) -> str:
    with tls_connect(port, context=context) as sock:
        cipher = sock.cipher()
        assert cipher is not None
        return f"{sock.version()} {cipher[0]} alpn={sock.selected_alpn_protocol()} comp={sock.compression()}"


def _permissive_server(certfile: Path, keyfile: Path) -> tuple[int, threading.Thread]:
    """One TLS 1.0+ handshake served in a thread: proves the old-protocol clients below work at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(certfile, keyfile)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_below_1_2_is_refused(
    shared_server: Server, module_pair: tuple[Path, Path, CertPair], version: ssl.TLSVersion
) -> None:
    certfile, keyfile, _ = module_pair
    control_port, control = _permissive_server(certfile, keyfile)
    assert _handshake(control_port, client_context(version)).startswith(("TLSv1 ", "TLSv1.1 "))
    control.join(5)

    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):  # the server's protocol_version alert
        _handshake(shared_server.port, client_context(version))
    assert https_request(shared_server.port)[0] == 200


@pytest.mark.parametrize(
    ("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")]
)
def test_tls_1_2_and_1_3_are_served(shared_server: Server, version: ssl.TLSVersion, name: str) -> None:
    go_like = client_context(version)
    go_like.set_alpn_protocols(["h2", "http/1.1"])  # what Go's client offers
    negotiated = _handshake(shared_server.port, go_like)
    assert negotiated.startswith(f"{name} ")
    assert "alpn=http/1.1" in negotiated
    assert "comp=None" in negotiated
    if version is ssl.TLSVersion.TLSv1_2:
        assert negotiated.split()[1].startswith("ECDHE-")
        assert "GCM" in negotiated
    status, body = https_request(shared_server.port, b"{}", context=client_context(version))
    assert (status, json.loads(body)["received"]) == (200, 2)


def test_tls_1_2_without_forward_secret_aead_suites_is_refused(shared_server: Server) -> None:
    cbc_only = client_context(ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA:AES128-SHA")
    with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|NO_SHARED_CIPHER"):
        _handshake(shared_server.port, cbc_only)


# --- (c) certificate rotation under load ---------------------------------------------------------------


@dataclass
class Traffic:
    """New-connection requests in one thread and a kept-alive connection in another."""

    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    # (monotonic time, served serial) per successful new-connection request
    new_connections: list[tuple[float, int]] = field(default_factory=list)
    keepalive_requests: int = 0
    keepalive_reconnects: int = 0
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._threads = [
            threading.Thread(target=self._hammer, daemon=True),
            threading.Thread(target=self._keepalive, daemon=True),
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(15)

    def _hammer(self) -> None:
        from cryptography import x509

        while not self.stop.is_set():
            try:
                with tls_connect(self.port) as sock:
                    der = sock.getpeercert(binary_form=True)
                    assert der is not None
                    sock.sendall(_request(REVIEW_BODY, close=True))
                    status = _read_status(sock)
            except OSError as exc:
                self.failures.append(f"new connection: {exc!r}")
                continue
            if status != 200:
                self.failures.append(f"new connection: status {status}")
                continue
            self.new_connections.append((time.monotonic(), x509.load_der_x509_certificate(der).serial_number))

    def _keepalive(self) -> None:
        try:
            sock = tls_connect(self.port)
        except OSError as exc:
            self.failures.append(f"kept-alive connection: {exc!r}")
            return
        try:
            while not self.stop.is_set():
                sock.sendall(_request(REVIEW_BODY))
                status = _read_status(sock)
                if status != 200:
                    self.failures.append(f"kept-alive connection: status {status}")
                self.keepalive_requests += 1
                time.sleep(0.005)
        except OSError as exc:
            self.failures.append(f"kept-alive connection: {exc!r}")
            self.keepalive_reconnects += 1
        finally:
            sock.close()

    def first_seen(self, serial: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, seen in list(self.new_connections):
                if seen == serial:
                    return when
            time.sleep(0.05)
        raise AssertionError(f"serial {serial:x} not served within {timeout} s; failures: {self.failures[:5]}")


def _request(body: bytes, *, close: bool = False) -> bytes:
    connection = "close" if close else "keep-alive"
    head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: {connection}"
    head += "\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _read_response(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    """Read one response (Content-Length framed): (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    remaining = int(headers.get("content-length", "0")) - len(body)
    while remaining > 0:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("server closed inside the response body")
        body += chunk
        remaining -= len(chunk)
    return int(lines[0].split()[1]), body


def _read_status(sock: ssl.SSLSocket) -> int:
    return _read_response(sock)[0]


def _assert_rotation_served(traffic: Traffic, old: CertPair, new: CertPair, rotated_at: float) -> None:
    switched = traffic.first_seen(new.serial, timeout=6.0)
    # Each worker checks its files at most once a second; after that, only the new certificate.
    time.sleep(2.5)
    traffic.stop.set()
    late = {serial for when, serial in traffic.new_connections if when > switched + 2.0}
    assert late == {new.serial}
    assert switched - rotated_at < 4.0
    assert any(serial == old.serial for _, serial in traffic.new_connections)


def test_rotation_by_rewriting_files_in_place_under_load(tmp_path: Path) -> None:
    old, new = make_cert_pair(), make_cert_pair()
    certfile, keyfile = write_pair(tmp_path, old)
    with running_server(certfile, keyfile) as server, Traffic(server.port) as traffic:
        time.sleep(1.0)
        rotated_at = time.monotonic()
        # Not atomic, like a naive copy: the certificate first, the key a little later.
        certfile.write_bytes(new.cert_pem)
        time.sleep(0.3)
        keyfile.write_bytes(new.key_pem)
        _assert_rotation_served(traffic, old, new, rotated_at)
    assert traffic.failures == []
    assert traffic.keepalive_requests > 50
    assert traffic.keepalive_reconnects == 0
    assert len(traffic.new_connections) > 50


def test_rotation_by_kubernetes_secret_volume_swap_under_load(tmp_path: Path) -> None:
    old, new = make_cert_pair(), make_cert_pair()
    volume = SecretVolume(tmp_path / "secret", old)
    with running_server(volume.certfile, volume.keyfile) as server, Traffic(server.port) as traffic:
        time.sleep(1.0)
        rotated_at = time.monotonic()
        volume.update(new)
        _assert_rotation_served(traffic, old, new, rotated_at)
    assert traffic.failures == []
    assert traffic.keepalive_requests > 50
    assert traffic.keepalive_reconnects == 0


def _log_records(server: Server) -> list[dict[str, Any]]:
    records = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def test_bad_replacement_keeps_the_last_good_certificate(tmp_path: Path) -> None:
    good, replacement, stranger = make_cert_pair(), make_cert_pair(), make_cert_pair()
    certfile, keyfile = write_pair(tmp_path, good)
    with running_server(certfile, keyfile) as server, Traffic(server.port) as traffic:
        certfile.write_bytes(replacement.cert_pem)
        keyfile.write_bytes(stranger.key_pem)  # does not match the certificate
        time.sleep(2.5)
        assert served_serial(server.port) == good.serial
        keyfile.write_bytes(replacement.key_pem)
        traffic.first_seen(replacement.serial, timeout=5.0)
        log = server.log()
        records = _log_records(server)
    assert traffic.failures == []
    refusals = [r for r in records if r["msg"].startswith("not using the changed certificate")]
    assert refusals, log
    assert all("KEY_VALUES_MISMATCH" in r["reason"] for r in refusals)
    assert all(r["serving_serial"] == f"{good.serial:x}" for r in refusals)
    for pair in (good, replacement, stranger):
        key_body = pair.key_pem.decode().splitlines()[1]
        assert key_body not in log
    assert "PRIVATE KEY" not in log


# --- (d) slow and misbehaving clients --------------------------------------------------------------------


class SlowLoris(threading.Thread):
    """Sends a request head one byte a second; records when the server closed the connection."""

    def __init__(self, port: int, *, request_first: bool) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.request_first = request_first
        self.dribbling = threading.Event()
        self.stop = threading.Event()
        self.cut_after: float | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            sock = tls_connect(self.port, timeout=30)
        except OSError as exc:
            self.error = repr(exc)
            return
        with sock:
            if self.request_first:
                # Then dribble the next request on the same, kept-alive connection.
                sock.sendall(_request(b"{}"))
                if _read_status(sock) != 200:
                    self.error = "first request failed"
                    return
            started = time.monotonic()
            sock.settimeout(1.0)
            for byte in b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 60:
                if self.stop.is_set():
                    return
                try:
                    sock.send(bytes([byte]))
                    self.dribbling.set()
                    if sock.recv(1) == b"":
                        break
                except TimeoutError:
                    continue  # the server is still waiting: next byte
                except OSError:
                    break
            self.cut_after = time.monotonic() - started


def _slow_loris_round(port: int, *, threads: int, answer_timeout: float) -> tuple[float | None, list[SlowLoris]]:
    lorises = [SlowLoris(port, request_first=(i % 2 == 0)) for i in range(threads)]
    for loris in lorises:
        loris.start()
    for loris in lorises:
        assert loris.dribbling.wait(10), loris.error
    time.sleep(1.0)
    started = time.monotonic()
    try:
        status, _ = https_request(port, b"{}", timeout=answer_timeout)
    except OSError:
        return None, lorises
    assert status == 200
    return time.monotonic() - started, lorises


def test_slow_loris_clients_are_cut_and_others_served(tmp_path: Path) -> None:
    certfile, keyfile = write_pair(tmp_path, make_cert_pair())
    # As many slow clients as threads: with no time limit they would hold every thread forever.
    with running_server(certfile, keyfile, workers=1, threads=2) as server:
        answered_after, lorises = _slow_loris_round(server.port, threads=2, answer_timeout=HEAD_TIMEOUT + 10)
        for loris in lorises:
            loris.join(HEAD_TIMEOUT + 10)
    assert answered_after is not None
    assert answered_after < HEAD_TIMEOUT + 3
    for loris in lorises:
        assert loris.error is None
        assert loris.cut_after is not None
        assert loris.cut_after < HEAD_TIMEOUT + 3


@pytest.mark.slow
def test_slow_loris_clients_hold_stock_gthread_threads(tmp_path: Path) -> None:
    """Control for the test above: the same clients starve gunicorn's own gthread worker."""
    certfile, keyfile = write_pair(tmp_path, make_cert_pair())
    with running_server(certfile, keyfile, workers=1, threads=2, worker_class="gthread") as server:
        answered_after, lorises = _slow_loris_round(server.port, threads=2, answer_timeout=HEAD_TIMEOUT + 5)
        for loris in lorises:
            loris.stop.set()  # lets the stock worker's threads, and so the server, stop
            loris.join(5)
    assert answered_after is None


def _pipelined_responses(port: int) -> int:
    """Two requests in one write; the second ends up decrypted inside OpenSSL, not in the socket."""
    with tls_connect(port) as sock:
        sock.sendall(_request(b"x" * 30000) + _request(b"{}"))
        sock.settimeout(3.0)
        answered = 0
        try:
            for _ in range(2):
                if _read_status(sock) == 200:
                    answered += 1
        except (TimeoutError, ConnectionError):
            pass
        return answered


def test_request_buffered_inside_tls_is_answered(shared_server: Server) -> None:
    assert _pipelined_responses(shared_server.port) == 2


@pytest.mark.slow
def test_request_buffered_inside_tls_stalls_stock_gthread(module_pair: tuple[Path, Path, CertPair]) -> None:
    """Control for the test above."""
    certfile, keyfile, _ = module_pair
    with running_server(certfile, keyfile, worker_class="gthread", keepalive=10) as server:
        assert _pipelined_responses(server.port) == 1


def test_clients_that_never_close_do_not_stall_kept_alive_connections(tmp_path: Path) -> None:
    certfile, keyfile = write_pair(tmp_path, make_cert_pair())
    with running_server(certfile, keyfile, workers=1, threads=8) as server:
        latencies: list[float] = []
        keepalive = tls_connect(server.port)
        held: list[ssl.SSLSocket] = []
        try:
            next_bad = time.monotonic()
            until = time.monotonic() + 3.0
            while time.monotonic() < until:
                if time.monotonic() >= next_bad and len(held) < 4:
                    # Asks the server to close, then neither reads nor closes: the server's
                    # lingering close waits up to 2 s for this client.
                    bad = tls_connect(server.port)
                    bad.sendall(_request(b"{}", close=True))
                    held.append(bad)
                    next_bad += 0.5
                started = time.monotonic()
                keepalive.sendall(_request(b"{}"))
                assert _read_status(keepalive) == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.01)
        finally:
            keepalive.close()
            for bad in held:
                bad.close()
    assert len(held) == 4
    # The stock worker makes this client wait 2 s per such close.
    assert max(latencies) < 1.5, sorted(latencies)[-5:]


def test_kept_alive_connections_opened_in_a_burst_are_shared_by_the_workers(tmp_path: Path) -> None:
    """kube-apiserver, hey and wrk open their pool in a burst and keep it: one worker must not take it all.

    Without the accept delay, one of two workers held 16 or 17 of 16 to 18 connections in a third of
    the runs, which halves the throughput for as long as the connections live.
    """
    certfile, keyfile = write_pair(tmp_path, make_cert_pair())
    with running_server(certfile, keyfile, workers=2, threads=4) as server:
        for _ in range(5):
            # TCP connections complete in the kernel's backlog before any worker accepts them.
            raws = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(16)]
            sockets = [client_context().wrap_socket(raw) for raw in raws]
            try:
                pids: dict[int, int] = {}
                for sock in sockets:
                    sock.sendall(_request(b"{}"))
                    pid = json.loads(_read_response(sock)[1])["pid"]
                    pids[pid] = pids.get(pid, 0) + 1
            finally:
                for sock in sockets:
                    sock.close()
            assert len(pids) == 2 and min(pids.values()) >= 4, f"connections per worker: {pids}"
            time.sleep(0.3)  # the closed connections leave both workers before the next burst


def test_request_size_limits(shared_server: Server) -> None:
    with tls_connect(shared_server.port) as sock:
        sock.sendall(b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_status(sock) == 414
    headers = "".join(f"X-Header-{i}: v\r\n" for i in range(60))
    with tls_connect(shared_server.port) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        assert _read_status(sock) == 431


def test_idle_connections_after_handshake_hold_no_thread(tmp_path: Path) -> None:
    """What Go's connection pool does: more handshaken, silent connections than threads."""
    certfile, keyfile = write_pair(tmp_path, make_cert_pair())
    with running_server(certfile, keyfile, workers=1, threads=2) as server:
        idle = [tls_connect(server.port) for _ in range(6)]
        try:
            started = time.monotonic()
            assert https_request(server.port, b"{}", timeout=HEAD_TIMEOUT)[0] == 200
            # The stock worker holds both threads on two of these until the client gives up.
            assert time.monotonic() - started < 3.0
            # Still open and usable later.
            idle[0].sendall(_request(b"{}"))
            assert _read_status(idle[0]) == 200
        finally:
            for sock in idle:
                sock.close()


def test_stop_does_not_wait_for_idle_connections(tmp_path: Path) -> None:
    """Idle pooled connections (parked or kept alive) must not hold a rolling update for 25 s."""
    certfile, keyfile = write_pair(tmp_path, make_cert_pair())
    with running_server(certfile, keyfile, workers=1, threads=2) as server:
        idle = [tls_connect(server.port) for _ in range(3)]
        used = tls_connect(server.port)
        used.sendall(_request(b"{}"))
        assert _read_status(used) == 200
        try:
            time.sleep(0.3)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(30)
            stopped_after = time.monotonic() - started
        finally:
            for sock in [*idle, used]:
                sock.close()
    assert server.process.returncode == 0
    assert stopped_after < 6.0


# --- the settings and the reloading context, in process ------------------------------------------------


def test_settings_are_valid_gunicorn_27_settings(tmp_path: Path) -> None:
    certfile, keyfile = write_pair(tmp_path, make_cert_pair())
    settings = gunicorn_settings(bind="127.0.0.1:1", certfile=str(certfile), keyfile=str(keyfile), workers=3, threads=5)
    app = WebhookGunicornApp(lambda: lambda environ, start_response: [], settings)
    cfg = app.cfg
    assert cfg.worker_class_str == WORKER_CLASS
    assert cfg.worker_class is TLSSafeThreadWorker
    assert (cfg.workers, cfg.threads) == (3, 5)
    assert cfg.control_socket_disable is True
    assert cfg.is_ssl
    assert cfg.accesslog is None
    assert cfg.keepalive > 90
    assert cfg.ssl_context is tls.gunicorn_ssl_context


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _context_serial(context: ssl.SSLContext) -> int:
    """Serial the context presents, by a handshake over a socket pair."""
    from cryptography import x509

    server_sock, client_sock = socket.socketpair()
    result: dict[str, int] = {}

    def client() -> None:
        with client_context().wrap_socket(client_sock) as tls_sock:
            der = tls_sock.getpeercert(binary_form=True)
            assert der is not None
            result["serial"] = x509.load_der_x509_certificate(der).serial_number

    thread = threading.Thread(target=client)
    thread.start()
    with context.wrap_socket(server_sock, server_side=True):
        thread.join(5)
    return result["serial"]


def _age(*paths: Path, seconds: float = 3600) -> None:
    """Backdate the files: a just-written file is re-read on the next check until it is a few s old."""
    for path in paths:
        stamp = path.stat().st_mtime_ns - int(seconds * 1e9)
        os.utime(path, ns=(stamp, stamp))


def test_reloading_context_checks_files_at_most_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_cert_pair(), make_cert_pair()
    certfile, keyfile = write_pair(tmp_path, first)
    _age(certfile, keyfile)
    clock = FakeClock()
    provider = tls.ReloadingSSLContext(str(certfile), str(keyfile), check_interval=1.0, clock=clock)
    initial = provider.get()
    stats: list[str] = []
    real_signature = tls.files_signature

    def counted_signature(cert: str, key: str) -> tls.FilesSignature:
        stats.append(cert)
        return real_signature(cert, key)

    monkeypatch.setattr(tls, "files_signature", counted_signature)

    write_pair(tmp_path, second)
    _age(certfile, keyfile, seconds=1800)
    for _ in range(1000):
        assert provider.get() is initial
    assert stats == []

    clock.now += 1.0
    reloaded = provider.get()
    assert reloaded is not initial
    assert provider.serial == second.serial
    assert _context_serial(reloaded) == second.serial
    checks = len(stats)
    assert checks > 0
    for _ in range(1000):
        assert provider.get() is reloaded
    assert len(stats) == checks
    clock.now += 1.0
    assert provider.get() is reloaded  # unchanged files: a stat, no rebuild
    assert len(stats) > checks


def test_reloading_context_sees_a_rewrite_that_keeps_size_and_mtime(tmp_path: Path) -> None:
    """A rewrite within one tick of the file clock leaves (mtime, size, inode) as they were."""
    first = make_cert_pair()
    second = make_cert_pair()
    while len(second.cert_pem) != len(first.cert_pem):
        second = make_cert_pair()
    certfile, keyfile = write_pair(tmp_path, first)
    clock = FakeClock()
    provider = tls.ReloadingSSLContext(str(certfile), str(keyfile), clock=clock)
    stamps = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (certfile, keyfile)]
    signature = tls.files_signature(str(certfile), str(keyfile))

    write_pair(tmp_path, second)
    for path, stamp in zip((certfile, keyfile), stamps, strict=True):
        os.utime(path, ns=stamp)
    assert tls.files_signature(str(certfile), str(keyfile)) == signature
    clock.now += 1.0
    provider.get()
    assert provider.serial == second.serial


def test_reloading_context_refuses_unusable_replacements(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good, later, stranger = make_cert_pair(), make_cert_pair(), make_cert_pair()
    certfile, keyfile = write_pair(tmp_path, good)
    clock = FakeClock()
    provider = tls.ReloadingSSLContext(str(certfile), str(keyfile), clock=clock)
    served = provider.get()
    expired = make_cert_pair(expired=True)
    bad_replacements: list[tuple[str, bytes, bytes]] = [
        ("KEY_VALUES_MISMATCH", later.cert_pem, stranger.key_pem),
        ("SSLError", b"-----BEGIN CERTIFICATE-----\nnot base64\n", later.key_pem),
        ("expired", expired.cert_pem, expired.key_pem),
    ]
    with caplog.at_level(logging.WARNING, logger="karta_admission.tls"):
        for expected_reason, cert_pem, key_pem in bad_replacements:
            certfile.write_bytes(cert_pem)
            keyfile.write_bytes(key_pem)
            clock.now += 1.0
            assert provider.get() is served, expected_reason
            assert provider.serial == good.serial
            assert expected_reason in caplog.records[-1].fields["reason"]  # type: ignore[attr-defined]
        keyfile.unlink()
        clock.now += 1.0
        assert provider.get() is served
        assert "cannot stat" in caplog.records[-1].fields["reason"]  # type: ignore[attr-defined]
        count = len(caplog.records)
        clock.now += 1.0
        assert provider.get() is served
        assert len(caplog.records) == count  # the same problem is reported once
    for pair in (good, later, stranger, expired):
        assert pair.key_pem.decode().splitlines()[1] not in caplog.text

    write_pair(tmp_path, later)
    clock.now += 1.0
    assert provider.get() is not served
    assert provider.serial == later.serial


def test_reloading_context_follows_a_secret_volume_swap(tmp_path: Path) -> None:
    first, second = make_cert_pair(), make_cert_pair()
    volume = SecretVolume(tmp_path / "secret", first)
    clock = FakeClock()
    provider = tls.ReloadingSSLContext(str(volume.certfile), str(volume.keyfile), clock=clock)
    assert provider.serial == first.serial
    volume.update(second)
    clock.now += 1.0
    provider.get()
    assert provider.serial == second.serial


def test_server_refuses_to_start_with_unusable_files(tmp_path: Path) -> None:
    pair, other = make_cert_pair(), make_cert_pair()
    certfile, keyfile = write_pair(tmp_path, pair)
    keyfile.write_bytes(other.key_pem)
    with (
        pytest.raises(RuntimeError, match=r"(?s)exited with 1:.*cannot serve TLS.*KEY_VALUES_MISMATCH"),
        running_server(certfile, keyfile),
    ):
        pass


def test_first_load_failure_is_an_error(tmp_path: Path) -> None:
    pair, other = make_cert_pair(), make_cert_pair()
    certfile, keyfile = write_pair(tmp_path, pair)
    keyfile.write_bytes(other.key_pem)
    with pytest.raises(tls.CertificateFilesError, match="KEY_VALUES_MISMATCH"):
        tls.ReloadingSSLContext(str(certfile), str(keyfile))


def test_server_context_settings(tmp_path: Path) -> None:
    certfile, keyfile = write_pair(tmp_path, make_cert_pair())
    context = tls.build_server_context(str(certfile), str(keyfile))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name) for name in tls12)


def test_gunicorn_hook_reuses_one_provider_per_file_pair(tmp_path: Path) -> None:
    certfile, keyfile = write_pair(tmp_path, make_cert_pair())

    class Conf:
        pass

    conf = Conf()
    conf.certfile, conf.keyfile = str(certfile), str(keyfile)  # type: ignore[attr-defined]

    def factory() -> ssl.SSLContext:
        raise AssertionError("gunicorn's own factory re-reads the files for every connection")

    assert tls.gunicorn_ssl_context(conf, factory) is tls.gunicorn_ssl_context(conf, factory)
