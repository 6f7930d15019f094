"""The serving TLS context: TLS >= 1.2, forward-secret AEAD ciphers, and certificate rotation.

gunicorn asks its ``ssl_context`` hook for a context on every new connection. The context built
here is cached and rebuilt only when the certificate or key file changes (at most one ``stat`` pair
per ``check_interval``), so a rotated Secret is served without a restart. A replacement that cannot
be loaded (unreadable, half-written, key not matching the certificate, expired) is refused with a
warning and the last good context stays in use.

Kubernetes updates a Secret volume by pointing the ``..data`` symlink at a new directory in one
rename. ``os.stat`` follows the links, so the swap shows up as a new inode; a cert and key read on
either side of the swap do not match and are retried on the next check.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from webhook.observability import logs

log = logs.get("tls")

# TLS 1.2 suites: ephemeral ECDH key exchange and AEAD only, for ECDSA and RSA certificates.
# TLS 1.3 suites are all AEAD and are not affected by this string.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# (st_mtime_ns, st_size, st_ino) of the certificate file, then of the key file.
FilesSignature = tuple[tuple[int, int, int], tuple[int, int, int]]

# File times come from a coarse kernel clock (a tick of a few ms): a file rewritten in the same tick
# with the same size keeps its signature. A signature this recent is therefore not trusted yet and
# the files are read again on the next check (git calls this the racy-timestamp problem).
RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class LoadedContext:
    context: ssl.SSLContext
    # None while the files are too recently modified to be trusted unchanged (see RACY_WINDOW_NS).
    signature: FilesSignature | None
    serial: int
    not_after: datetime.datetime


class CertificateFilesError(Exception):
    """The certificate and key files cannot be served (yet)."""

    def __init__(self, reason: str, signature: FilesSignature | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # Set when these exact files are unusable, so they are not retried until they change.
        self.signature = signature


def build_server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server context for HTTP/1.1 over TLS 1.2 or 1.3 with the given certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    # Compression: CRIME. Client renegotiation: a cheap way to make the server do handshakes.
    # Single ECDH use: a fresh ephemeral key per handshake. Key-exchange groups stay OpenSSL's
    # defaults (X25519 first, then the NIST curves), which is what Go clients offer.
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    )
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(certfile, keyfile, password=_refuse_encrypted_key)
    return context


def _refuse_encrypted_key() -> bytes:
    # Without a password callback OpenSSL would prompt on the terminal and block the worker.
    raise ValueError("the private key is encrypted; the server needs an unencrypted key")


def files_signature(certfile: str, keyfile: str) -> FilesSignature:
    cert, key = os.stat(certfile), os.stat(keyfile)
    return (cert.st_mtime_ns, cert.st_size, cert.st_ino), (key.st_mtime_ns, key.st_size, key.st_ino)


def load_context(certfile: str, keyfile: str) -> LoadedContext:
    """Build a context from the files; CertificateFilesError says why they cannot be used."""
    try:
        before = files_signature(certfile, keyfile)
    except OSError as exc:
        raise CertificateFilesError(f"cannot stat the files: {exc.strerror or exc}") from exc
    try:
        context = build_server_context(certfile, keyfile)
        with open(certfile, "rb") as cert_file:
            leaf = x509.load_pem_x509_certificate(cert_file.read())
        after = files_signature(certfile, keyfile)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        # OpenSSL and cryptography messages name the failing step, never key material.
        raise CertificateFilesError(
            f"{type(exc).__name__}: {exc}", _unchanged_since(before, certfile, keyfile)
        ) from exc
    if before != after:
        # A non-atomic update in progress: retried on the next check.
        raise CertificateFilesError("the files changed while being read")
    return LoadedContext(context, _trusted(after), leaf.serial_number, leaf.not_valid_after_utc)


def _trusted(signature: FilesSignature) -> FilesSignature | None:
    now = time.time_ns()
    racy = any(0 <= now - mtime_ns < RACY_WINDOW_NS for mtime_ns, _, _ in signature)
    return None if racy else signature


def _unchanged_since(before: FilesSignature, certfile: str, keyfile: str) -> FilesSignature | None:
    """``before`` if the files still have it (so their content is what failed), else None."""
    try:
        return _trusted(before) if files_signature(certfile, keyfile) == before else None
    except OSError:
        return None


class ReloadingSSLContext:
    """A cached server context that follows changes to its certificate and key files."""

    def __init__(
        self,
        certfile: str,
        keyfile: str,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.certfile = certfile
        self.keyfile = keyfile
        self.check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        # The first load must succeed: there is no previous context to fall back on.
        self._current = load_context(certfile, keyfile)
        self._refused: FilesSignature | None = None
        self._last_warning: str | None = None
        self._checked_at = clock()
        self._report("loaded the serving certificate", self._current)

    @property
    def serial(self) -> int:
        """Serial number of the certificate being served."""
        return self._current.serial

    def get(self) -> ssl.SSLContext:
        """The context for a new connection; checks the files at most once per check_interval."""
        if self._clock() - self._checked_at >= self.check_interval and self._lock.acquire(blocking=False):
            # Other threads meanwhile keep using the current context instead of waiting.
            try:
                self._check()
            finally:
                self._lock.release()
        return self._current.context

    def _check(self) -> None:
        self._checked_at = self._clock()
        try:
            signature = files_signature(self.certfile, self.keyfile)
            if signature in (self._current.signature, self._refused):
                return
            loaded = load_context(self.certfile, self.keyfile)
            if loaded.not_after <= datetime.datetime.now(datetime.UTC):
                raise CertificateFilesError(
                    f"the new certificate expired at {loaded.not_after.isoformat()}", loaded.signature
                )
        except OSError as exc:
            self._warn(f"cannot stat the files: {exc.strerror or exc}")
            return
        except CertificateFilesError as exc:
            if exc.signature is not None:
                self._refused = exc.signature
            self._warn(exc.reason)
            return
        previous, self._current = self._current, loaded
        self._refused = None
        self._last_warning = None
        if loaded.serial != previous.serial:
            self._report("reloaded the serving certificate", loaded)

    def _warn(self, reason: str) -> None:
        if reason == self._last_warning:
            return  # said once per distinct problem, not on every check
        self._last_warning = reason
        logs.event(
            log,
            logging.WARNING,
            "not using the changed certificate files; still serving the previous certificate",
            certfile=self.certfile,
            keyfile=self.keyfile,
            reason=reason,
            serving_serial=f"{self._current.serial:x}",
        )

    def _report(self, message: str, loaded: LoadedContext) -> None:
        expired = loaded.not_after <= datetime.datetime.now(datetime.UTC)
        logs.event(
            log,
            logging.WARNING if expired else logging.INFO,
            message + (" (it has expired)" if expired else ""),
            certfile=self.certfile,
            serial=f"{loaded.serial:x}",
            not_after=loaded.not_after.isoformat(),
        )


_providers: dict[tuple[str, str], ReloadingSSLContext] = {}
_providers_lock = threading.Lock()


def provider_for(certfile: str, keyfile: str) -> ReloadingSSLContext:
    """The process's one ReloadingSSLContext for this file pair (inherited by forked workers)."""
    key = (certfile, keyfile)
    provider = _providers.get(key)
    if provider is None:
        with _providers_lock:
            provider = _providers.get(key)
            if provider is None:
                provider = _providers[key] = ReloadingSSLContext(certfile, keyfile)
    return provider


def gunicorn_ssl_context(conf: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """gunicorn's ``ssl_context`` hook: the reloading context for ``conf.certfile``/``conf.keyfile``.

    gunicorn's own factory is not used: it would read both files again for every connection.
    """
    return provider_for(conf.certfile, conf.keyfile).get()


def gunicorn_on_starting(server: Any) -> None:
    """gunicorn's ``on_starting`` hook: load the certificate in the master, before any worker forks.

    Every worker then starts with a good context even if the files are mid-rotation when it boots,
    and unusable files stop the server at start-up instead of failing each handshake.
    """
    try:
        provider_for(server.cfg.certfile, server.cfg.keyfile)
    except CertificateFilesError as exc:
        raise SystemExit(f"cannot serve TLS with {server.cfg.certfile} and {server.cfg.keyfile}: {exc.reason}") from exc
