"""Issue 13: clients that connect and then wait cannot stop the real server (2 workers, 4 threads each).

Every attack runs against `karta-admission serve` on 127.0.0.1 while a normal review is sent; the
review must be answered well inside the API server's 10 s default webhook timeout. Against the
previous worker (checked): 2,100 idle TCP connections stopped new connections for about 100 s,
16 connections stalling after their headers held every thread for 30 s, and 16 half-sent
ClientHellos held every thread for 5 s at a time.
"""

from __future__ import annotations

import json
import resource
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
import requests

from tests.builders import service
from tests.e2e.server import RunningServer, serving
from tests.reviews import review
from webhook.server.worker import TLSSafeThreadWorker

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("connection-limits")]

# Well inside the API server's default webhook timeout (10 s).
ANSWER_WITHIN = 4.0
BROKEN = review(service([{"replicas": 10, "maxReplicas": 5}]))


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with serving({}) as running:
        yield running


def address(server: RunningServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("https://").split(":")
    return host, int(port)


def fresh_review(server: RunningServer) -> float:
    """Seconds until a review on a new connection is answered (it must be: a denial)."""
    session = requests.Session()
    session.verify, session.trust_env = str(server.ca_file), False
    started = time.monotonic()
    try:
        reply = session.post(server.url + "/validate", json=BROKEN, timeout=ANSWER_WITHIN + 4)
    finally:
        session.close()
    assert reply.status_code == 200 and reply.json()["response"]["allowed"] is False
    return time.monotonic() - started


def tls_connect(server: RunningServer) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    return context.wrap_socket(socket.create_connection(address(server)), server_hostname="localhost")


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset


def test_idle_tcp_connections_beyond_the_connection_cap_do_not_stop_new_clients(server: RunningServer) -> None:
    """2,100 connections that never send a ClientHello: more than both workers' 1,000 slots."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2400:
        if hard != resource.RLIM_INFINITY and hard < 2400:
            pytest.skip(f"needs 2,400 file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2400, hard))
    idle: list[socket.socket] = []
    try:
        for _ in range(2100):
            idle.append(socket.create_connection(address(server), timeout=5))
        time.sleep(0.5)  # the workers accept them
        assert fresh_review(server) < ANSWER_WITHIN
        # And they do not stay: no ClientHello within the handshake budget and the server closes them.
        budget = TLSSafeThreadWorker.handshake_timeout
        assert closed_by_server(idle[-1], budget + 3)
    finally:
        for sock in idle:
            sock.close()
    assert server.get("/healthz").status_code == 200


def test_connections_stalling_after_their_headers_hold_no_thread(server: RunningServer) -> None:
    """16 connections (twice the threads) send a complete head announcing a body, then nothing.

    The handshakes come first, so that all 16 heads arrive at once, as a client that means it sends them.
    """
    stalled = [tls_connect(server) for _ in range(16)]
    try:
        for sock in stalled:
            sock.sendall(
                b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{"
            )
        time.sleep(0.5)
        assert fresh_review(server) < ANSWER_WITHIN
        assert fresh_review(server) < ANSWER_WITHIN
        # Cut once the request's read budget is over, not after the 30 s handler budget.
        assert all(closed_by_server(sock, TLSSafeThreadWorker.read_timeout + 3) for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()


def test_half_sent_client_hellos_hold_no_thread(server: RunningServer) -> None:
    """16 connections send the first bytes of a TLS record and stop mid-handshake."""
    stalled = []
    try:
        for _ in range(16):
            sock = socket.create_connection(address(server))
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first 11 bytes
            stalled.append(sock)
        time.sleep(0.5)
        assert fresh_review(server) < ANSWER_WITHIN
        assert all(closed_by_server(sock, TLSSafeThreadWorker.handshake_timeout + 3) for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()


def test_a_chunked_body_is_refused_without_waiting_for_it(server: RunningServer) -> None:
    """The API server always sends Content-Length; reading chunks would need a thread blocked on the client."""
    with tls_connect(server) as sock:
        sock.sendall(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{")
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 411")


def test_expect_100_continue_gets_its_interim_answer(server: RunningServer) -> None:
    """curl sends large bodies only after "100 Continue"; the body is then read ahead as usual."""
    body = json.dumps(BROKEN).encode()
    with tls_connect(server) as sock:
        sock.sendall(
            b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = b""
        while b'"allowed":false' not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
