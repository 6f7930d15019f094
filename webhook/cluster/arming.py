"""Arming: the enforce webhooks fail closed only once a server that can answer them is running.

The chart installs the webhooks whose failure policy is Fail with `Ignore` instead and names them in
`cluster.armWebhooks`. The agent holding the Lease sets them to `Fail` once the server beside it
answers /readyz. So an install whose pods never start (a wrong image, a crash at start) blocks no
one: it never arms. After that, enforcement fails closed as configured: when every replica is down,
Ray objects are refused until one is back (docs/runbook.md says how to step out of the way). A
`helm upgrade` renders `Ignore` again; the leader arms again within a round.
"""

from __future__ import annotations

import logging
import ssl
import threading
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from webhook.observability import logs, metrics

from .client import CONNECTION_ERRORS, api_error, connection_error

log = logs.get("cluster.arming")

ARMED_POLICY = "Fail"
CONFLICT, NOT_FOUND = 409, 404


@dataclass(frozen=True)
class ArmSettings:
    configuration: str  # the ValidatingWebhookConfiguration
    webhooks: tuple[str, ...]  # the entries to fail closed once armed

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ArmSettings:
        return cls(str(raw["validatingWebhookConfiguration"]), tuple(str(w) for w in raw["webhooks"]))


def readyz_probe(url: str, timeout: float = 2.0) -> Callable[[], bool]:
    """Whether the server beside this agent answers its /readyz with 200 (over loopback).

    The certificate is not verified: the probe asks its own server whether it is up, sends nothing
    secret and acts only on the status code.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:  # noqa: S310 (our own URL)
                return bool(answer.status == 200)
        except OSError:
            return False

    return ready


def armed(configuration: Mapping[str, Any], names: Sequence[str]) -> list[dict[str, Any]]:
    """JSON patch operations that set the named webhooks to Fail (empty when they already are)."""
    ops: list[dict[str, Any]] = []
    for index, webhook in enumerate(configuration.get("webhooks") or []):
        if webhook.get("name") in names and webhook.get("failurePolicy") != ARMED_POLICY:
            # test first: a webhook list changed since it was read (e.g. by helm) makes the patch fail.
            ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook["name"]})
            ops.append({"op": "replace", "path": f"/webhooks/{index}/failurePolicy", "value": ARMED_POLICY})
    return ops


class WebhookArming:
    """A leader-only loop: while the server beside it is ready, keep the named webhooks armed."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        settings: ArmSettings,
        server_ready: Callable[[], bool],
        *,
        is_leader: Callable[[], bool],
        interval_seconds: float = 5.0,
    ) -> None:
        self.settings = settings
        self.server_ready = server_ready
        self.is_leader = is_leader
        self.interval = interval_seconds
        self._api: Any = k8s.AdmissionregistrationV1Api(api_client)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.armed = False  # the last look found every named webhook at Fail

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="karta-admission-arming", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self.is_leader() and self.server_ready():
                try:
                    self.arm_once()
                except ApiException as exc:
                    logs.event(log, logging.WARNING, f"cannot arm the webhooks: {api_error(exc)}")
                except CONNECTION_ERRORS as exc:
                    logs.event(log, logging.WARNING, f"cannot arm the webhooks: {connection_error(exc)}")
            self._wake.wait(self.interval)
            self._wake.clear()

    def arm_once(self) -> bool:
        """One look: patch the named webhooks to Fail if they are not; whether all are armed now."""
        name = self.settings.configuration
        try:
            current = orjson.loads(self._api.read_validating_webhook_configuration(name, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                self.armed = False
                return False
            raise
        ops = armed(current, self.settings.webhooks)
        if ops:
            try:
                self._api.patch_validating_webhook_configuration(name, ops)
            except ApiException as exc:
                if exc.status in (CONFLICT, 422):  # changed since it was read: the next round reads again
                    return False
                raise
            metrics.WEBHOOKS_ARMED.inc()
            logs.event(log, logging.INFO, "armed: the enforce webhooks now fail closed", configuration=name,
                       webhooks=[op["value"] for op in ops if op["op"] == "test"])  # fmt: skip
        self.armed = True
        return True
