"""Helpers for the TLS serving tests: certificates, a real gunicorn in a subprocess, TLS clients, hey.

Run as a module, it serves a tiny WSGI application with the project's gunicorn settings:
``python -m tests.e2e.tls_helpers --bind 127.0.0.1:PORT --certfile F --keyfile F``.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from webhook.certs import cert_info, make_ca, make_serving_cert

REPO_ROOT = Path(__file__).resolve().parents[2]
HEY = shutil.which("hey") or "/usr/bin/hey"


# --- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertPair:
    cert_pem: bytes
    key_pem: bytes
    serial: int


def make_cert_pair(*, expired: bool = False) -> CertPair:
    """A one-day serving certificate for 127.0.0.1 and localhost from a CA of its own (webhook.certs);
    with expired, issued three days ago."""
    issued = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3 if expired else 0)
    ca_cert, ca_key = make_ca(now=issued)
    cert, key = make_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"], days=1, now=issued)
    return CertPair(cert, key, cert_info(cert).serial)


def write_pair(directory: Path, pair: CertPair) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = directory / "tls.crt", directory / "tls.key"
    certfile.write_bytes(pair.cert_pem)
    keyfile.write_bytes(pair.key_pem)
    return certfile, keyfile


class SecretVolume:
    """A directory laid out like a Kubernetes Secret volume, updated the way the kubelet does it.

    ``tls.crt -> ..data/tls.crt``, ``..data -> ..<timestamp>/``; an update writes a new timestamped
    directory, renames a fresh ``..data_tmp`` link over ``..data`` and removes the old directory.
    """

    def __init__(self, root: Path, pair: CertPair) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._generation = 0
        self._current = self._write_generation(pair)
        (root / "..data").symlink_to(self._current.name)
        for name in ("tls.crt", "tls.key"):
            (root / name).symlink_to(f"..data/{name}")

    @property
    def certfile(self) -> Path:
        return self.root / "tls.crt"

    @property
    def keyfile(self) -> Path:
        return self.root / "tls.key"

    def _write_generation(self, pair: CertPair) -> Path:
        self._generation += 1
        directory = self.root / f"..2030_01_01_00_00_{self._generation:02d}.{os.getpid()}"
        write_pair(directory, pair)
        return directory

    def update(self, pair: CertPair) -> None:
        old = self._current
        self._current = self._write_generation(pair)
        tmp_link = self.root / "..data_tmp"
        tmp_link.symlink_to(self._current.name)
        os.replace(tmp_link, self.root / "..data")
        shutil.rmtree(old)


# --- server ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tiny_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Reads the request body and answers with its length and the worker's pid."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    out = json.dumps({"received": len(body), "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_server(
    certfile: Path,
    keyfile: Path,
    *,
    workers: int = 2,
    threads: int = 4,
    worker_class: str | None = None,
    keepalive: int | None = None,
    startup_timeout: float = 20.0,
) -> Iterator[Server]:
    """A real gunicorn (``python -m tests.e2e.tls_helpers``) serving over TLS; stopped on exit."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tests.e2e.tls_helpers",
        "--bind",
        f"127.0.0.1:{port}",
        "--certfile",
        str(certfile),
        "--keyfile",
        str(keyfile),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
    ]
    if worker_class:
        command += ["--worker-class", worker_class]
    if keepalive is not None:
        command += ["--keepalive", str(keepalive)]
    with tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False) as log_file:
        log_path = Path(log_file.name)
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(port, process, log_path)
    try:
        _wait_until_serving(server, startup_timeout)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_path.unlink(missing_ok=True)


def _wait_until_serving(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.process.returncode}:\n{server.log()}")
        try:
            status, _ = https_request(server.port, timeout=2.0)
        except OSError:
            time.sleep(0.1)
            continue
        if status == 200:
            # Every worker must be up, or the first test requests would queue behind a booting one.
            time.sleep(0.3)
            return
    raise RuntimeError(f"gunicorn did not serve within {timeout} s:\n{server.log()}")


# --- clients --------------------------------------------------------------------------------------


def client_context(version: ssl.TLSVersion | None = None, ciphers: str | None = None) -> ssl.SSLContext:
    """A client context that does not verify the (self-signed, rotating) server certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if version is not None:
        context.minimum_version = version
        context.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            # OpenSSL 3 refuses TLS < 1.2 at its default security level even as a client.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def https_request(
    port: int, body: bytes = b"", *, timeout: float = 5.0, context: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    """One request on a new TLS connection: (status, body)."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context or client_context())
    try:
        connection.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def served_serial(port: int, *, timeout: float = 5.0) -> int:
    """Serial number of the certificate the server presents to a new connection."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
        client_context().wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def tls_connect(port: int, *, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return (context or client_context()).wrap_socket(raw)
    except BaseException:
        raw.close()
        raise


# --- hey ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeyResult:
    statuses: dict[int, int]
    errors: dict[str, int]
    output: str

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + sum(n for code, n in self.statuses.items() if code != 200)


def run_hey(
    url: str,
    body_path: Path,
    *,
    duration: str = "2s",
    timeout_s: int = 3,
    concurrency: int = 16,
    process_timeout: float = 120,
) -> HeyResult:
    """hey (Go net/http, keep-alive) POSTing ``body_path`` for ``duration``; parsed counts."""
    command = [
        HEY,
        "-z",
        duration,
        "-t",
        str(timeout_s),
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-D",
        str(body_path),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, timeout=process_timeout, check=True).stdout
    return parse_hey(output)


def parse_hey(output: str) -> HeyResult:
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    section = ""
    for line in output.splitlines():
        if line.startswith("Status code distribution"):
            section = "status"
        elif line.startswith("Error distribution"):
            section = "error"
        elif section == "status" and (match := re.match(r"\s+\[(\d+)\]\s+(\d+) responses", line)):
            statuses[int(match[1])] = int(match[2])
        elif section == "error" and (match := re.match(r"\s+\[(\d+)\]\s+(.*)", line)):
            errors[match[2]] = errors.get(match[2], 0) + int(match[1])
    return HeyResult(statuses, errors, output)


# --- entry point ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    from webhook.observability import logs
    from webhook.server.gunicorn_settings import WebhookGunicornApp, gunicorn_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-class", help="override the worker class (e.g. gthread, for comparisons)")
    parser.add_argument("--keepalive", type=int)
    args = parser.parse_args(argv)
    settings = gunicorn_settings(
        bind=args.bind,
        certfile=args.certfile,
        keyfile=args.keyfile,
        workers=args.workers,
        threads=args.threads,
    )
    if args.worker_class:
        settings["worker_class"] = args.worker_class
    if args.keepalive is not None:
        settings["keepalive"] = args.keepalive

    def app_factory() -> Callable[..., Any]:
        # The project's JSON logs, so tests can read the TLS layer's structured warnings.
        logs.configure("info")
        return tiny_app

    WebhookGunicornApp(app_factory, settings).run()


if __name__ == "__main__":
    main()
