"""The gunicorn settings the webhook runs with, and a programmatic gunicorn application.

The reasons for each value are in docs/tls-serving.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gunicorn.app.base import BaseApplication

from webhook.server.companion import Companion, SupervisingArbiter
from webhook.server.tls import gunicorn_on_starting, gunicorn_ssl_context

WORKER_CLASS = "webhook.server.worker.TLSSafeThreadWorker"

# Longer than Go's default IdleConnTimeout (90 s), which kube-apiserver's webhook client keeps: the
# client then always closes an idle connection first, so the server never closes one under a
# request that is on its way (Go does not retry a POST on a connection it had reused).
KEEPALIVE_SECONDS = 100

# tmpfs for gunicorn's heartbeat file, touched every second by each worker (not a temp file of ours).
HEARTBEAT_DIR = "/dev/shm"  # noqa: S108

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


def gunicorn_settings(
    *,
    bind: str,
    certfile: str,
    keyfile: str,
    workers: int = 2,
    threads: int = 4,
    access_log: bool = False,
    log_level: str = "info",
) -> dict[str, Any]:
    """The gunicorn settings (name -> value) for serving the webhook over TLS on ``bind``."""
    return {
        "bind": [bind],
        "workers": workers,
        "worker_class": WORKER_CLASS,
        "threads": threads,
        # Kept-alive and parked connections per worker; idle ones cost a socket, not a thread.
        "worker_connections": 1000,
        "keepalive": KEEPALIVE_SECONDS,
        # Heartbeat: a worker whose main loop is stuck this long is replaced. Request phases have
        # their own budgets in the worker class.
        "timeout": 30,
        # Inside Kubernetes' default 30 s termination grace period.
        "graceful_timeout": 25,
        # Admission requests have a short request line ("POST /validate/enforce?timeout=10s") and a
        # handful of headers; the body limit (7 MiB) is enforced by the application.
        "limit_request_line": 2048,
        "limit_request_fields": 50,
        "limit_request_field_size": 8190,
        "certfile": certfile,
        "keyfile": keyfile,
        "ssl_context": gunicorn_ssl_context,
        # Loads the certificate once in the master: workers inherit a good context.
        "on_starting": gunicorn_on_starting,
        # The worker bounds the handshake only when it runs after the socket is wrapped.
        "do_handshake_on_connect": False,
        "control_socket_disable": True,
        "worker_tmp_dir": HEARTBEAT_DIR if os.path.isdir(HEARTBEAT_DIR) else None,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": log_level,
        "proc_name": "karta-admission",
        # The application is built in each worker after the fork (see WebhookGunicornApp).
        "preload_app": False,
    }


class WebhookGunicornApp(BaseApplication):  # type: ignore[misc]
    """Runs a WSGI application under gunicorn with the given settings, without a command line.

    ``app_factory`` is called in each worker after the fork, so nothing it builds (threads, watches,
    connections) is shared between processes.
    """

    def __init__(
        self,
        app_factory: Callable[[], WSGIApp],
        settings: Mapping[str, Any],
        companions: Sequence[Companion] = (),
    ) -> None:
        self._app_factory = app_factory
        self._settings = dict(settings)
        self._companions = tuple(companions)
        super().__init__()

    def run(self) -> None:
        """gunicorn's master loop, keeping the companions (the cluster agent) running beside the workers."""
        arbiter = SupervisingArbiter(self)
        arbiter.companions = self._companions
        try:
            arbiter.run()
        except RuntimeError as exc:
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.exit(1)

    def load_config(self) -> None:
        for name, value in self._settings.items():
            self.cfg.set(name, value)

    def load(self) -> WSGIApp:
        return self._app_factory()
