"""A gunicorn gthread worker on which idle, slow or stalled clients cannot hold threads or connection slots.

Stock gunicorn 27 gthread gives each new connection to a pool thread, which completes the TLS
handshake and then blocks reading the request with no time limit. Go's HTTP client (hey,
kube-apiserver) regularly dials a connection it then leaves idle in its pool; a few of those pin
every thread of a worker and the requests on that worker's other connections wait until the
client gives up. docs/tls-serving.md has the evidence and the measurements.

This subclass lets a pool thread do only what cannot wait on a client: the handshake steps and reads
that have bytes available, the handler, and writing the response. Everything that waits for a
client waits on the worker's poller, holding no thread, and under a deadline:

- the TLS handshake is non-blocking and must be complete ``handshake_timeout`` after the first
  attempt; a client that sends no ClientHello, or half of one, is parked and then closed;
- the whole request, head and body, is read into memory without blocking and must be complete
  ``read_timeout`` after its first byte (the API server writes a request at once); only a
  complete request reaches the parser and the application. Incomplete requests of one worker hold
  at most ``max_buffered_bytes``; a declared body above ``max_body_bytes`` is not read (the
  application answers 413) and a chunked body is refused with 411;
- a connection with nothing to say (Go's pooled connections, kept-alive ones) is parked until
  ``keepalive``; the handler and response get ``request_timeout``, enforced by shutting down the
  TCP connection of an overdue thread;
- a closing connection lingers (drains what the client still sends, so the kernel does not reset
  the answer) on the poller, not on a thread, for at most ``linger_timeout``;
- ``connection_reserve`` connection slots stay free: once a worker holds
  ``worker_connections - connection_reserve`` connections, each new one closes the waiting
  connection nearest to its deadline (a handshake or a request that is not coming, a lingering
  close), or else the oldest kept-alive one, so a flood of idle sockets cannot stop new clients;
- a kept-alive connection whose next request is already decrypted inside OpenSSL
  (``SSLSocket.pending()``) goes straight back to the pool;
- a worker that already holds connections waits a moment before accepting another, so that the
  workers share kept-alive clients instead of one worker taking all of them (see ``accept``);
- each connection is counted out once (stock gunicorn counts a connection that ends in a TLS EOF
  twice, so ``nr_conns`` drifts below zero and the ``worker_connections`` cap never applies).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn import sock as gunicorn_sock
from gunicorn.workers import gthread

from webhook.observability import logs

log = logs.get("worker")

_RECV_SIZE = 256 * 1024
_LINGER_DRAIN_MAX = 64 * 1024
_CHUNKED_REFUSED = (
    b"HTTP/1.1 411 Length Required\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b'Content-Length: 60\r\n\r\n{"error": "a request body needs Content-Length, not chunked"}'
)
_BAD_LENGTH = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b'Content-Length: 42\r\n\r\n{"error": "Content-Length is not a number"}'
)
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
    b'Connection: close\r\nContent-Length: 40\r\n\r\n{"error": "the request head is too large"}'
)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# _request_complete's answers besides a refusal: wait for more bytes, or the request is in memory.
_MORE = object()
_READY = object()


@dataclass(frozen=True)
class _Wait:
    """handle()'s answer: park the connection on the poller until readable or until the deadline."""

    deadline: float


# handle()'s other answers (besides True, the stock keep-alive): close with a lingering drain, or at once.
_LINGER = object()
_ABORT = object()


@dataclass
class _Connection:
    """What the worker knows about one connection beyond gunicorn's TConn."""

    deadline: float | None = None  # of the handshake, or of the request being read
    buffer: bytearray | None = None  # the request read so far
    accounted: int = 0  # bytes of buffer counted against max_buffered_bytes
    head_end: int | None = None  # offset after the blank line ending the head
    needed: int | None = None  # total bytes of head and body, once the head is known
    scanned: int = 0  # how far the buffer was searched for the head's end
    body_unread: bool = False  # declared body above the limit: handed over unread
    lingered: int = 0  # bytes drained while closing
    waiting: tuple[float, int] | None = None  # (deadline, sequence) while parked or lingering
    closed: bool = False


def _state(conn: Any) -> _Connection:
    state: _Connection | None = getattr(conn, "karta", None)
    if state is None:
        state = conn.karta = _Connection()
    return state


@dataclass
class _Evictions:
    count: int = 0
    reported_at: float = field(default_factory=time.monotonic)


class TLSSafeThreadWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """gthread where every wait on a client happens on the poller, under a deadline."""

    #: Seconds from the first handshake attempt to a completed TLS handshake.
    handshake_timeout: float = 5.0
    #: Seconds from a request's first byte to its last (head and body).
    read_timeout: float = 5.0
    #: Seconds for the WSGI handler and writing the response. The API server waits at most 30 s
    #: (the largest webhook timeoutSeconds) for an answer.
    request_timeout: float = 30.0
    #: Seconds a closing connection is drained before it is closed.
    linger_timeout: float = 2.0
    #: Largest body read ahead; a larger declared body goes to the application unread (it answers
    #: 413). The application's own limit: webhook.server.app.MAX_BODY_BYTES.
    max_body_bytes: int = 7 * 1024 * 1024
    #: Bytes of incomplete requests one worker holds; a request that would pass it is dropped.
    max_buffered_bytes: int = 64 * 1024 * 1024
    #: Connection slots kept free for new clients (see the module docstring).
    connection_reserve: int = 50
    #: Seconds of accept delay per connection this worker holds, and its cap; no delay from
    #: accept_delay_until connections on (a flood must drain the backlog at full speed).
    accept_delay_per_connection: float = 0.0002
    accept_delay_max: float = 0.002
    accept_delay_until: int = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Pool threads write it, the main loop sweeps it: connection -> (deadline, phase).
        self._deadlines: dict[Any, tuple[float, str]] = {}
        # Parked and lingering connections (main loop only): a heap of (deadline, sequence, connection).
        self._waiting: list[tuple[float, int, Any]] = []
        self._waiting_count = 0
        self._sequence = itertools.count()
        self._buffered = 0
        self._buffer_lock = threading.Lock()
        self._stop_capped = False
        self._evictions = _Evictions()

    # --- accepting -------------------------------------------------------------------------------

    def accept(self, listener: Any) -> None:
        """Accept a connection, after a delay that grows with the connections this worker holds.

        The workers share one listening socket: each is woken for a new connection and the first
        to call accept() gets it. Kept-alive clients (kube-apiserver, hey, wrk) open their
        connections in a burst and keep them, so one worker often took nearly all of them and the
        other sat idle for the connections' lifetime: 17 to 1 splits were measured, at half the
        throughput. Waiting a little in proportion to what it already holds lets the emptier
        worker win the race; when no other worker takes it, the connection is accepted here after
        at most ``accept_delay_max``. Past ``accept_delay_until`` connections there is no delay: the
        API server keeps at most 25 idle connections per replica, and a flood of thousands must not be
        accepted at 500 a second (2,100 idle sockets delayed a new client by 3.7 s).

        Then, if the worker is within ``connection_reserve`` of its cap, the waiting connection
        nearest to its deadline makes room: new clients are never refused because old ones idle.
        """
        if 0 < self.nr_conns < self.accept_delay_until:
            time.sleep(min(self.nr_conns * self.accept_delay_per_connection, self.accept_delay_max))
        super().accept(listener)
        room = self.worker_connections - min(self.connection_reserve, self.worker_connections // 4)
        while self.nr_conns > room and self._evict_one():
            pass

    def _evict_one(self) -> bool:
        now = time.monotonic()
        while self._waiting:
            deadline, sequence, conn = heapq.heappop(self._waiting)
            if _state(conn).waiting == (deadline, sequence):
                self._unwait(conn)
                self._drop(conn)
                self._count_eviction(now)
                return True
        if self.keepalived_conns:
            conn = self.keepalived_conns.popleft()
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.poller.unregister(conn.sock)
            self._drop(conn)
            self._count_eviction(now)
            return True
        return False

    def _count_eviction(self, now: float) -> None:
        self._evictions.count += 1
        if now - self._evictions.reported_at >= 10:
            logs.event(log, logging.WARNING, "closed waiting connections to keep room for new ones",
                       closed=self._evictions.count, connections=self.nr_conns)  # fmt: skip
            self._evictions = _Evictions(0, now)

    # --- on a pool thread --------------------------------------------------------------------------

    def handle(self, conn: Any) -> Any:
        state = _state(conn)
        now = time.monotonic()
        try:
            if not conn.initialized:
                if state.deadline is None:
                    state.deadline = now + self.handshake_timeout
                step = self._handshake(conn)
                if step is not None:
                    return step
                state.deadline = None
            if conn.is_http2:  # not offered (ALPN http/1.1); the stock handler, under the handler budget
                return self._serve(conn, state)
            step = self._read_request(conn, state)
            if step is not None:
                return step
            return self._serve(conn, state)
        except Exception:
            log.exception("cannot serve a connection from %s", _peer(conn.client))
            return _ABORT

    def _handshake(self, conn: Any) -> Any:
        """One non-blocking step of the TLS handshake; None once it is done."""
        if not self.cfg.is_ssl:
            conn.init()
            return None
        try:
            if not isinstance(conn.sock, ssl.SSLSocket):
                conn.sock = gunicorn_sock.ssl_wrap_socket(conn.sock, self.cfg)
            conn.sock.setblocking(False)
            conn.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return _Wait(_state(conn).deadline or time.monotonic())
        except OSError as exc:  # ssl.SSLError is one: refused protocol version, scanner, reset
            log.debug("TLS handshake with %s failed: %s", _peer(conn.client), exc)
            return _ABORT
        # What TConn.init does after its (blocking) handshake.
        conn.initialized = True
        if gunicorn_sock.is_http2_negotiated(conn.sock):
            conn.is_http2 = True
            conn.sock.setblocking(True)
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client, http2_connection=True)
            conn.parser.initiate_connection()
        else:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        return None

    def _read_request(self, conn: Any, state: _Connection) -> Any:
        """Read what the client has sent, without blocking; None once a whole request is in memory."""
        conn.sock.setblocking(False)
        if state.buffer is None:
            # Bytes read ahead with the previous request (pipelining) start this one.
            state.buffer = bytearray(conn.parser.unreader.take_buffered())
            state.head_end = state.needed = None
            state.scanned = 0
            state.body_unread = False
            state.deadline = time.monotonic() + self.read_timeout if state.buffer else None
        while True:
            step = self._request_complete(conn, state)
            if step is _READY:
                self._hand_over(conn, state)
                return None
            if step is not _MORE:
                return step
            try:
                data = conn.sock.recv(_RECV_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
                # Nothing sent yet: an idle connection, parked like a kept-alive one.
                return _Wait(state.deadline or time.monotonic() + self.cfg.keepalive)
            except OSError:
                return _ABORT
            if not data:
                return _ABORT  # the client closed; an incomplete request gets no answer
            if not state.buffer:
                state.deadline = time.monotonic() + self.read_timeout
            if not self._account(state, len(data)):
                logs.event(log, logging.WARNING, "dropping a request: too many incomplete requests in memory",
                           peer=_peer(conn.client), limit_bytes=self.max_buffered_bytes)  # fmt: skip
                return _ABORT
            state.buffer += data

    def _request_complete(self, conn: Any, state: _Connection) -> Any:
        """_MORE while bytes are missing, _READY when the request is in memory, else a refusal."""
        buffer = state.buffer
        assert buffer is not None
        if state.head_end is None:
            while buffer.startswith(b"\r\n"):  # empty lines before a request line are ignored
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n", max(0, state.scanned - 3))
            state.scanned = len(buffer)
            if end < 0:
                return _MORE if len(buffer) <= self._max_head_bytes() else self._refuse(conn, _HEAD_TOO_LARGE)
            state.head_end = end + 4
            fields: dict[bytes, list[bytes]] = {}
            for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
                name, colon, value = line.partition(b":")
                if colon:
                    fields.setdefault(name.strip().lower(), []).append(value.strip())
            if b"transfer-encoding" in fields:
                # The API server always sends Content-Length; a chunked body could only be read by
                # a thread blocked on the client.
                return self._refuse(conn, _CHUNKED_REFUSED)
            lengths = fields.get(b"content-length", [b"0"])
            if len(lengths) != 1 or not lengths[0].isdigit():
                return self._refuse(conn, _BAD_LENGTH)
            length = int(lengths[0])
            if length > self.max_body_bytes:
                state.body_unread = True  # the application answers 413 without reading it
                return _READY
            state.needed = state.head_end + length
            if len(buffer) < state.needed and b"100-continue" in (v.lower() for v in fields.get(b"expect", [])):
                # What gunicorn would send once it parsed the head (it sends it again then; a client
                # reads any number of 1xx answers).
                with contextlib.suppress(OSError):
                    conn.sock.send(_CONTINUE)
        assert state.needed is not None
        return _MORE if len(buffer) < state.needed else _READY

    def _max_head_bytes(self) -> int:
        cfg = self.cfg
        if not (cfg.limit_request_line and cfg.limit_request_fields and cfg.limit_request_field_size):
            return 1024 * 1024
        return int(cfg.limit_request_line + cfg.limit_request_fields * (cfg.limit_request_field_size + 2) + 4)

    def _hand_over(self, conn: Any, state: _Connection) -> None:
        """The request is in memory (its body too, unless above the limit): the parser reads it there."""
        assert state.buffer is not None
        conn.parser.unreader.unread(bytes(state.buffer))
        self._release(state)
        state.buffer = None
        state.deadline = None

    def _refuse(self, conn: Any, response: bytes) -> Any:
        conn.sock.setblocking(True)
        conn.sock.settimeout(1.0)
        with contextlib.suppress(OSError):
            conn.sock.sendall(response)
        self._release(_state(conn))
        return _LINGER

    def _account(self, state: _Connection, size: int) -> bool:
        with self._buffer_lock:
            if self._buffered + size > self.max_buffered_bytes:
                return False
            self._buffered += size
        state.accounted += size
        return True

    def _release(self, state: _Connection) -> None:
        if state.accounted:
            with self._buffer_lock:
                self._buffered -= state.accounted
            state.accounted = 0

    def _serve(self, conn: Any, state: _Connection) -> Any:
        """The stock request handling, on a request already in memory, under the handler budget."""
        self._deadlines[conn] = (time.monotonic() + self.request_timeout, "handler and response")
        try:
            result = super().handle(conn)
        finally:
            self._deadlines.pop(conn, None)
        return result if result is True else _LINGER

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        # A body left unread (above max_body_bytes) is not drained on this thread: the connection
        # closes, lingering on the poller.
        if _state(conn).body_unread:
            return False
        return bool(super()._keepalive_after(conn, keepalive))

    # --- on the main loop -------------------------------------------------------------------------

    def finish_request(self, conn: Any, fs: Future[Any]) -> None:
        outcome = _outcome(fs)
        if isinstance(outcome, _Wait):
            self._wait(conn, outcome.deadline, lingering=False)
        elif outcome is True:
            if _decrypted_bytes_waiting(conn.sock):
                self.enqueue_req(conn)
                return
            super().finish_request(conn, fs)  # kept alive, or re-queued for a pipelined request
        elif outcome is _LINGER:
            self._linger(conn)
        else:
            self._drop(conn)

    def _wait(self, conn: Any, deadline: float, *, lingering: bool) -> None:
        if not self.alive:
            deadline = min(deadline, time.monotonic() + gthread.STOP_KEEPALIVE_LINGER)
        try:
            conn.sock.setblocking(False)
            callback = self._on_lingering_readable if lingering else self._on_waiting_readable
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(callback, conn))
        except (OSError, ValueError):
            self._drop(conn)
            return
        self._push(conn, deadline)
        self._waiting_count += 1

    def _push(self, conn: Any, deadline: float) -> None:
        entry = (deadline, next(self._sequence))
        _state(conn).waiting = entry
        heapq.heappush(self._waiting, (*entry, conn))
        if len(self._waiting) > 4 * self._waiting_count + 64:
            # Entries of connections that stopped waiting are left in the heap; drop them now and then.
            self._waiting = [e for e in self._waiting if _state(e[2]).waiting == e[:2]]
            heapq.heapify(self._waiting)

    def _unwait(self, conn: Any) -> None:
        state = _state(conn)
        if state.waiting is None:
            return
        state.waiting = None
        self._waiting_count -= 1
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(conn.sock)

    def _on_waiting_readable(self, conn: Any, _client: Any) -> None:
        self._unwait(conn)
        self.enqueue_req(conn)

    def _linger(self, conn: Any) -> None:
        """Half-close and drain what the client still sends, on the poller (RFC 9112 section 9.6)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)  # SSLSocket: drops the TLS layer, as util.close_graceful does
        except OSError:
            self._drop(conn)
            return
        self._wait(conn, time.monotonic() + self.linger_timeout, lingering=True)

    def _on_lingering_readable(self, conn: Any, _client: Any) -> None:
        state = _state(conn)
        try:
            data = conn.sock.recv(_LINGER_DRAIN_MAX)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except OSError:
            data = b""
        state.lingered += len(data)
        if not data or state.lingered >= _LINGER_DRAIN_MAX:
            self._unwait(conn)
            self._drop(conn)

    def _drop(self, conn: Any) -> None:
        """Close a connection and count it out, once."""
        state = _state(conn)
        if state.closed:
            return
        state.closed = True
        self._release(state)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.nr_conns -= 1

    def murder_pending(self) -> None:
        # Called on every turn of the main loop: close what waited past its deadline.
        super().murder_pending()
        now = time.monotonic()
        while self._waiting and self._waiting[0][0] <= now:
            deadline, sequence, conn = heapq.heappop(self._waiting)
            if _state(conn).waiting == (deadline, sequence):
                self._unwait(conn)
                self._drop(conn)

    def murder_keepalived(self, force: bool = False) -> None:
        # Called on every turn of the main loop, which is where overdue handlers are cut.
        if not self.alive and not self._stop_capped:
            # Stopping: waiting connections get the short linger that kept-alive ones get, instead
            # of holding the worker for graceful_timeout.
            self._stop_capped = True
            cap = time.monotonic() + gthread.STOP_KEEPALIVE_LINGER
            for deadline, sequence, conn in list(self._waiting):
                if _state(conn).waiting == (deadline, sequence) and deadline > cap:
                    self._push(conn, cap)
        if force:
            for _, _, conn in list(self._waiting):
                if _state(conn).waiting is not None:
                    self._unwait(conn)
                    self._drop(conn)
            self._waiting.clear()
        super().murder_keepalived(force)
        self._cut_overdue(time.monotonic())

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


def _peer(client: Any) -> str:
    if isinstance(client, tuple) and len(client) >= 2:
        return f"{client[0]}:{client[1]}"
    return str(client)
