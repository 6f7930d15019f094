"""A gunicorn gthread worker on which idle or slow clients cannot hold the worker threads.

Stock gunicorn 27 gthread gives each new connection to a pool thread, which completes the TLS
handshake and then blocks reading the first request with no time limit. Go's HTTP client (hey,
kube-apiserver) regularly dials a connection it then leaves idle in its pool; a few of those pin
every thread of a worker and the requests on that worker's other connections wait until the
client gives up. docs/tls-serving.md has the evidence and the measurements.

What this subclass changes, and nothing else:

- a new connection whose client has sent nothing yet (no ClientHello, or no request after the
  handshake) goes back to the worker's poller instead of holding a thread;
- every phase that does hold a thread has a deadline: handshake plus request head
  (``head_timeout``), then body, handler and response (``request_timeout``). The main loop shuts
  down the TCP connection of an overdue phase, which makes the thread's blocked call return;
- a kept-alive connection whose next request is already decrypted inside OpenSSL
  (``SSLSocket.pending()``) goes straight back to the pool, since its socket will not turn readable
  for bytes that were already read from it;
- a worker that already holds connections waits a moment before accepting another, so that the
  workers share kept-alive clients instead of one worker taking all of them (see ``accept``);
- a stopping worker closes parked connections after the same short linger as kept-alive ones;
- the lingering close of a finished connection (up to 2 s of draining) runs on the pool thread,
  not on the main loop, where a client that never closes its side would stall every connection of
  the worker; and each connection is counted out once (stock gunicorn counts a connection that
  ends in a TLS EOF twice, so ``nr_conns`` drifts below zero: the ``worker_connections`` cap then
  never applies and a stopping worker drops kept-alive connections without its short linger).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import time
from concurrent.futures import Future
from typing import Any

from gunicorn import util
from gunicorn.workers import gthread

from webhook.observability import logs

log = logs.get("worker")

# Returned by ThreadWorker.handle to have finish_request park the connection on the poller.
_PARK = gthread._DEFER
# Returned by our handle when it has already closed the connection itself.
_CLOSED = object()


class TLSSafeThreadWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """gthread with every thread-holding phase of a connection bounded in time."""

    #: Seconds for the TLS handshake plus the request line and headers.
    head_timeout: float = 5.0
    #: Seconds for the request body, the WSGI handler and writing the response. The API server
    #: waits at most 30 s (the largest webhook timeoutSeconds) for an answer.
    request_timeout: float = 30.0
    #: Seconds a thread waits for a new connection's first bytes before parking it.
    first_bytes_grace: float = 0.05
    #: Seconds of accept delay per connection this worker holds, and its cap.
    accept_delay_per_connection: float = 0.0002
    accept_delay_max: float = 0.002

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # connection -> (monotonic deadline, phase). Pool threads write it; the main loop sweeps it.
        self._deadlines: dict[Any, tuple[float, str]] = {}

    def accept(self, listener: Any) -> None:
        """Accept a connection, after a delay that grows with the connections this worker holds.

        The workers share one listening socket: each is woken for a new connection and the first
        to call accept() gets it. Kept-alive clients (kube-apiserver, hey, wrk) open their
        connections in a burst and keep them, so one worker often took nearly all of them and the
        other sat idle for the connections' lifetime: 17 to 1 splits were measured, at half the
        throughput. Waiting a little in proportion to what it already holds lets the emptier
        worker win the race; when no other worker takes it, the connection is accepted here after
        at most ``accept_delay_max``.
        """
        if self.nr_conns > 0:
            time.sleep(min(self.nr_conns * self.accept_delay_per_connection, self.accept_delay_max))
        super().accept(listener)

    def handle(self, conn: Any) -> Any:
        self._deadlines[conn] = (time.monotonic() + self.head_timeout, "TLS handshake and request head")
        try:
            result = self._open(conn) if not conn.initialized else None
            if result is None:
                result = super().handle(conn)
        finally:
            self._deadlines.pop(conn, None)
        if result is False:
            # The lingering close (up to 2 s) on this thread: the stock worker does it on the main
            # loop, where a client that never closes its side stalls every connection of the worker.
            util.close_graceful(conn.sock)
            return _CLOSED
        return result

    def handle_request(self, req: Any, conn: Any) -> Any:
        # The head is in: from here the longer budget covers body, handler and response.
        self._deadlines[conn] = (time.monotonic() + self.request_timeout, "request body and response")
        return super().handle_request(req, conn)

    def finish_request(self, conn: Any, fs: Future[Any]) -> None:
        outcome = _outcome(fs)
        if outcome is _CLOSED:
            # Not TConn.close() again: on a closed socket it raises, and the stock error path
            # then counts the connection out a second time (nr_conns would drift negative).
            self.nr_conns -= 1
            return
        if outcome is True and _decrypted_bytes_waiting(conn.sock):
            self.enqueue_req(conn)
            return
        super().finish_request(conn, fs)

    def murder_keepalived(self, force: bool = False) -> None:
        # Called on every turn of the main loop, which is where overdue phases are cut.
        if not self.alive:
            # Stopping: parked connections get the short linger that kept-alive ones get, instead
            # of holding the worker for graceful_timeout. min() keeps the deque sorted by timeout.
            deadline = time.monotonic() + gthread.STOP_KEEPALIVE_LINGER
            for conn in self.pending_conns:
                conn.timeout = min(conn.timeout, deadline)
        super().murder_keepalived(force)
        self._cut_overdue(time.monotonic())

    def _open(self, conn: Any) -> Any:
        """Handshake a new connection; park it while its client has not sent a request.

        Returns None when a request is waiting and the stock handler should read it.
        """
        if not conn.wait_for_data(self.first_bytes_grace):
            return _PARK
        try:
            conn.init()
        except OSError as exc:  # ssl.SSLError is one: refused protocol version, scanner, reset
            log.debug("TLS handshake with %s failed: %s", _peer(conn.client), exc)
            return False
        except Exception:
            log.exception("cannot open a connection from %s", _peer(conn.client))
            return False
        if conn.is_http2 or _request_bytes_waiting(conn.sock, self.first_bytes_grace):
            return None
        return _PARK

    def _cut_overdue(self, now: float) -> None:
        for conn, (deadline, phase) in list(self._deadlines.items()):
            if now < deadline:
                continue
            self._deadlines.pop(conn, None)
            logs.event(
                log,
                logging.WARNING,
                "closing a connection that overran its time budget",
                peer=_peer(conn.client),
                phase=phase,
            )
            # socket.socket.shutdown, not SSLSocket.shutdown: the latter drops the TLS state under the
            # thread still using it. A TCP shutdown only makes that thread's blocked call return.
            # OSError: its thread closed the socket meanwhile.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)


def _outcome(fs: Future[Any]) -> Any:
    """What handle() returned, or None when it was cancelled or raised."""
    if fs.cancelled() or fs.exception() is not None:
        return None
    return fs.result()


def _decrypted_bytes_waiting(sock: Any) -> bool:
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def _request_bytes_waiting(sock: Any, timeout: float) -> bool:
    if _decrypted_bytes_waiting(sock):
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _peer(client: Any) -> str:
    if isinstance(client, tuple) and len(client) >= 2:
        return f"{client[0]}:{client[1]}"
    return str(client)
