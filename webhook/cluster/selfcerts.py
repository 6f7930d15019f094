"""Self-managed serving certificates: no cert-manager, and no key material in Helm templates.

The server keeps a CA and a serving certificate in one Secret, writes the serving pair to a local
directory it serves from (webhook.server.tls reloads changed files), and puts the CA into the
`caBundle` of its webhook configurations. Several replicas run this at once; every write carries the
resourceVersion it read, and a replica that loses the race uses what the winner wrote.

Renewal never fails a request: the serving certificate is renewed before expiry under the same CA,
so `caBundle` does not change. The CA itself is replaced in steps: the next CA is first published in
`caBundle` next to the current one, and only a later pass (after `caPropagationSeconds`) signs the
serving certificate with it; the retired CA stays in the bundle for another such period.
"""

from __future__ import annotations

import base64
import datetime
import os
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from webhook import certs
from webhook.config import ConfigError
from webhook.observability import logs

log = logs.get("certificates")

NEXT_CA_SINCE = "karta-admission.io/next-ca-published"
PREVIOUS_CA_UNTIL = "karta-admission.io/previous-ca-until"
CONFLICT, NOT_FOUND = 409, 404  # a create that loses a race is a 409 too


class SettingsError(ConfigError):
    """The certificates.selfManaged block cannot be used (serve then exits with status 2)."""


@dataclass(frozen=True)
class SelfManagedSettings:
    secret_name: str
    service_name: str
    namespace: str
    dir: Path
    validating_webhook_configuration: str | None = None
    mutating_webhook_configuration: str | None = None
    validity_days: int = 365
    renew_before_days: int = 120
    ca_validity_days: int = 3650
    # How long a new CA sits in caBundle before it signs anything (the API server must have it).
    ca_propagation_seconds: int = 600

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> SelfManagedSettings:
        def text(key: str, default: str | None = None) -> str | None:
            value = raw.get(key, default)
            if value is not None and (not isinstance(value, str) or not value):
                raise SettingsError(f"certificates.selfManaged.{key}: must be a non-empty string")
            return value

        def number(key: str, default: int) -> int:
            value = raw.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"certificates.selfManaged.{key}: must be a positive integer")
            return value

        known = {
            "secretName", "serviceName", "namespace", "dir", "validatingWebhookConfiguration",
            "mutatingWebhookConfiguration", "validityDays", "renewBeforeDays", "caValidityDays",
            "caPropagationSeconds",
        }  # fmt: skip
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SettingsError(f"certificates.selfManaged: unknown keys {', '.join(unknown)}")
        secret, service = text("secretName"), text("serviceName")
        namespace = text("namespace") or environ.get("POD_NAMESPACE")
        directory = text("dir", "/run/karta-admission/tls")
        if not secret or not service:
            raise SettingsError("certificates.selfManaged: secretName and serviceName are required")
        if not namespace:
            raise SettingsError(
                "certificates.selfManaged.namespace: not set and POD_NAMESPACE is not in the environment"
            )
        settings = cls(
            secret_name=secret,
            service_name=service,
            namespace=namespace,
            dir=Path(directory or "."),
            validating_webhook_configuration=text("validatingWebhookConfiguration"),
            mutating_webhook_configuration=text("mutatingWebhookConfiguration"),
            validity_days=number("validityDays", cls.validity_days),
            renew_before_days=number("renewBeforeDays", cls.renew_before_days),
            ca_validity_days=number("caValidityDays", cls.ca_validity_days),
            ca_propagation_seconds=number("caPropagationSeconds", cls.ca_propagation_seconds),
        )
        if settings.renew_before_days >= settings.validity_days:
            raise SettingsError("certificates.selfManaged: renewBeforeDays must be less than validityDays")
        if settings.ca_validity_days <= 2 * settings.validity_days:
            raise SettingsError("certificates.selfManaged: caValidityDays must exceed twice validityDays")
        return settings

    @property
    def dns_names(self) -> list[str]:
        return certs.service_dns_names(self.service_name, self.namespace)

    @property
    def webhook_configurations(self) -> list[tuple[str, str]]:
        out = []
        if self.validating_webhook_configuration:
            out.append(("validating", self.validating_webhook_configuration))
        if self.mutating_webhook_configuration:
            out.append(("mutating", self.mutating_webhook_configuration))
        return out


@dataclass
class CertState:
    """What the Secret holds (PEM), plus the rotation bookkeeping kept in its annotations."""

    ca_cert: bytes = b""
    ca_key: bytes = b""
    cert: bytes = b""
    key: bytes = b""
    next_ca_cert: bytes = b""
    next_ca_key: bytes = b""
    previous_ca_cert: bytes = b""
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def ca_bundle(self) -> bytes:
        return b"".join(p for p in (self.ca_cert, self.next_ca_cert, self.previous_ca_cert) if p)

    def secret_data(self) -> dict[str, str]:
        data = {"ca.crt": self.ca_cert, "ca.key": self.ca_key, "tls.crt": self.cert, "tls.key": self.key}
        if self.next_ca_cert:
            data["ca-next.crt"], data["ca-next.key"] = self.next_ca_cert, self.next_ca_key
        if self.previous_ca_cert:
            data["ca-previous.crt"] = self.previous_ca_cert
        return {k: base64.b64encode(v).decode() for k, v in data.items()}

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any]) -> CertState:
        data = secret.get("data") or {}

        def field_(name: str) -> bytes:
            value = data.get(name)
            try:
                return base64.b64decode(value) if isinstance(value, str) else b""
            except ValueError:
                return b""

        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        return cls(
            ca_cert=field_("ca.crt"),
            ca_key=field_("ca.key"),
            cert=field_("tls.crt"),
            key=field_("tls.key"),
            next_ca_cert=field_("ca-next.crt"),
            next_ca_key=field_("ca-next.key"),
            previous_ca_cert=field_("ca-previous.crt"),
            annotations={k: v for k, v in annotations.items() if k in {NEXT_CA_SINCE, PREVIOUS_CA_UNTIL}},
        )


def _usable_pair(cert: bytes, key: bytes) -> bool:
    try:
        return certs.key_matches(cert, key)
    except (ValueError, TypeError):
        return False


def _timestamp(value: str | None) -> datetime.datetime | None:
    """A rotation annotation's time; one written without a timezone (by hand, or by another tool) is UTC.

    Unreadable is None: the step it guards is then taken at once, which is safe (a retired CA leaves
    the bundle, a published one starts signing only after a full propagation period from now).
    """
    try:
        parsed = datetime.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed


class SelfManagedCertificates:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        settings: SelfManagedSettings,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.settings = settings
        self.clock = clock
        # Raw JSON in and out (_preload_content=False, dict bodies): the typed models add nothing here.
        self._core: Any = k8s.CoreV1Api(api_client)
        self._admission: Any = k8s.AdmissionregistrationV1Api(api_client)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one pass ---

    def ensure(self) -> CertState:
        """Bring the Secret, the served files and every caBundle up to date; retried on write races."""
        for _ in range(5):
            secret = self._read_secret()
            state = CertState.from_secret(secret) if secret is not None else CertState()
            updated = self._plan(state)
            if updated is state:
                break
            if self._write_secret(secret, updated):
                state = updated
                break
        else:
            raise RuntimeError(f"could not update Secret {self.settings.namespace}/{self.settings.secret_name}")
        self._write_files(state)
        self._publish_ca_bundle(state.ca_bundle)
        return state

    def _plan(self, state: CertState) -> CertState:
        """The state the Secret should hold now; the same object when nothing needs to change."""
        now = self.clock()
        s = self.settings
        if not _usable_pair(state.ca_cert, state.ca_key) or not certs.cert_info(state.ca_cert).is_ca:
            log.info("creating a new CA and serving certificate", extra={"fields": {"secret": s.secret_name}})
            ca_cert, ca_key = certs.make_ca(days=s.ca_validity_days, now=now)
            cert, key = self._issue(ca_cert, ca_key, now)
            return CertState(ca_cert, ca_key, cert, key)
        changed = False
        planned = CertState(**{**state.__dict__, "annotations": dict(state.annotations)})
        until = _timestamp(planned.annotations.get(PREVIOUS_CA_UNTIL))
        if planned.previous_ca_cert and (until is None or now >= until):
            planned.previous_ca_cert = b""
            planned.annotations.pop(PREVIOUS_CA_UNTIL, None)
            changed = True
        propagation = datetime.timedelta(seconds=s.ca_propagation_seconds)
        since = _timestamp(planned.annotations.get(NEXT_CA_SINCE))
        if planned.next_ca_cert and _usable_pair(planned.next_ca_cert, planned.next_ca_key):
            if since is not None and now - since >= propagation:
                # The next CA has been in caBundle long enough: it signs from now on.
                planned.previous_ca_cert = planned.ca_cert
                planned.ca_cert, planned.ca_key = planned.next_ca_cert, planned.next_ca_key
                planned.next_ca_cert = planned.next_ca_key = b""
                planned.annotations.pop(NEXT_CA_SINCE, None)
                planned.annotations[PREVIOUS_CA_UNTIL] = (now + propagation).isoformat()
                planned.cert, planned.key = self._issue(planned.ca_cert, planned.ca_key, now)
                log.info("switched the serving certificate to the new CA")
                return planned
            if since is None:
                # Missing or unreadable: the propagation period starts now, so the next CA is not
                # left published forever without ever signing.
                planned.annotations[NEXT_CA_SINCE] = now.isoformat()
                changed = True
        elif certs.cert_info(planned.ca_cert).not_after - now < datetime.timedelta(days=2 * s.renew_before_days):
            planned.next_ca_cert, planned.next_ca_key = certs.make_ca(days=s.ca_validity_days, now=now)
            planned.annotations[NEXT_CA_SINCE] = now.isoformat()
            log.info("the CA nears expiry: publishing its successor in caBundle first")
            changed = True
        if self._serving_cert_stale(planned, now):
            planned.cert, planned.key = self._issue(planned.ca_cert, planned.ca_key, now)
            log.info("renewed the serving certificate", extra={"fields": {"secret": s.secret_name}})
            changed = True
        return planned if changed else state

    def _issue(self, ca_cert: bytes, ca_key: bytes, now: datetime.datetime) -> tuple[bytes, bytes]:
        """A serving certificate for the Service's names, signed by the given CA."""
        return certs.make_serving_cert(
            ca_cert, ca_key, self.settings.dns_names, (), self.settings.validity_days, now=now
        )

    def _serving_cert_stale(self, state: CertState, now: datetime.datetime) -> bool:
        if not _usable_pair(state.cert, state.key) or not certs.signed_by(state.cert, state.ca_cert):
            return True
        info = certs.cert_info(state.cert)
        if set(self.settings.dns_names) - set(info.dns_names):
            return True
        return info.not_after - now < datetime.timedelta(days=self.settings.renew_before_days)

    # --- Kubernetes ---

    def _read_secret(self) -> dict[str, Any] | None:
        s = self.settings
        try:
            response = self._core.read_namespaced_secret(s.secret_name, s.namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        secret: dict[str, Any] = orjson.loads(response.data)
        return secret

    def _write_secret(self, current: dict[str, Any] | None, state: CertState) -> bool:
        """Create or replace; False when another replica wrote first (then the caller re-reads)."""
        s = self.settings
        metadata: dict[str, Any] = {"name": s.secret_name, "namespace": s.namespace}
        if current is not None:
            metadata = dict(current.get("metadata") or {})
            annotations = {
                k: v
                for k, v in (metadata.get("annotations") or {}).items()
                if k not in {NEXT_CA_SINCE, PREVIOUS_CA_UNTIL}
            }
            metadata["annotations"] = {**annotations, **state.annotations}
        else:
            metadata["annotations"] = dict(state.annotations)
            metadata["labels"] = {"app.kubernetes.io/managed-by": "karta-admission"}
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "kubernetes.io/tls",
                "data": state.secret_data()}  # fmt: skip
        try:
            if current is None:
                self._core.create_namespaced_secret(s.namespace, body)
            else:
                self._core.replace_namespaced_secret(s.secret_name, s.namespace, body)
        except ApiException as exc:
            if exc.status == CONFLICT:
                log.info("another replica updated the certificate Secret first; re-reading it")
                return False
            raise
        return True

    def _write_files(self, state: CertState) -> None:
        directory = self.settings.dir
        directory.mkdir(parents=True, exist_ok=True)
        # The key first: a reader that sees the new certificate also finds its key.
        for name, data, mode in (("tls.key", state.key, 0o600), ("tls.crt", state.cert, 0o644),
                                 ("ca.crt", state.ca_bundle, 0o644)):  # fmt: skip
            path = directory / name
            if not path.exists() or path.read_bytes() != data:
                certs.write_atomic(path, data, mode)

    def _publish_ca_bundle(self, bundle: bytes) -> None:
        encoded = base64.b64encode(bundle).decode()
        for kind, name in self.settings.webhook_configurations:
            for _ in range(5):
                try:
                    if self._patch_bundle(kind, name, encoded):
                        break
                except ApiException as exc:
                    if exc.status == NOT_FOUND:
                        log.warning(f"{kind} webhook configuration {name} not found yet; caBundle set later")
                        break
                    raise

    def _patch_bundle(self, kind: str, name: str, encoded: str) -> bool:
        """Replace the configuration with every webhook's caBundle set; False on a write race."""
        read = getattr(self._admission, f"read_{kind}_webhook_configuration")
        replace = getattr(self._admission, f"replace_{kind}_webhook_configuration")
        config: dict[str, Any] = orjson.loads(read(name, _preload_content=False).data)
        webhooks = config.get("webhooks") or []
        if all((w.get("clientConfig") or {}).get("caBundle") == encoded for w in webhooks):
            return True
        for webhook in webhooks:
            webhook.setdefault("clientConfig", {})["caBundle"] = encoded
        try:
            replace(name, config)
        except ApiException as exc:
            if exc.status == CONFLICT:
                return False
            raise
        log.info(f"set caBundle on {kind} webhook configuration {name}")
        return True

    # --- background ---

    def start_background(self, interval_seconds: float = 300.0) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_seconds * random.uniform(0.8, 1.2)):  # noqa: S311 (jitter, not crypto)
                try:
                    self.ensure()
                except Exception:
                    log.exception("certificate check failed; retrying at the next interval")

        self._thread = threading.Thread(target=loop, name="karta-admission-certificates", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
