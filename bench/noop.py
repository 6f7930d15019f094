"""The no-op baseline: the same gunicorn worker, settings, TLS and Flask, answering a constant review.

Run: python -m bench.noop --bind HOST:PORT --certfile F --keyfile F [--workers N] [--threads N]
"""

from __future__ import annotations

import argparse

import orjson
from flask import Flask, Response

from webhook.server.gunicorn_settings import WebhookGunicornApp, gunicorn_settings

ALLOWED = orjson.dumps(
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "constant", "allowed": True}}
)


def noop_app() -> Flask:
    app = Flask("noop")

    @app.post("/validate")
    @app.post("/mutate")
    def constant() -> Response:
        return Response(ALLOWED, mimetype="application/json")

    @app.get("/readyz")
    def ready() -> Response:
        return Response(b'{"status":"ready"}', mimetype="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    settings = gunicorn_settings(
        bind=args.bind, certfile=args.certfile, keyfile=args.keyfile, workers=args.workers, threads=args.threads
    )
    WebhookGunicornApp(noop_app, settings).run()


if __name__ == "__main__":
    main()
