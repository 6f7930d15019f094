"""Certificates: SANs, chain, key usage, a real TLS handshake, file modes, the certs command."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest

from webhook import certs
from webhook.cli import main


def test_bundle_chains_and_names(tmp_path: Path) -> None:
    bundle = certs.make_bundle(["karta-admission.ns.svc", "localhost"], ["127.0.0.1"], days=30)
    info = certs.cert_info(bundle.cert_pem)
    assert info.dns_names == ("karta-admission.ns.svc", "localhost")
    assert info.ip_addresses == ("127.0.0.1",)
    assert not info.is_ca and certs.cert_info(bundle.ca_cert_pem).is_ca
    assert certs.signed_by(bundle.cert_pem, bundle.ca_cert_pem)
    assert not certs.signed_by(bundle.cert_pem, certs.make_ca()[0])
    assert certs.key_matches(bundle.cert_pem, bundle.key_pem)
    assert not certs.key_matches(bundle.cert_pem, bundle.ca_key_pem)
    assert 29 <= (info.not_after - info.not_before).days <= 31


def test_serving_cert_never_outlives_its_ca() -> None:
    ca_cert, ca_key = certs.make_ca(days=10)
    cert, _ = certs.make_serving_cert(ca_cert, ca_key, ["x"], days=365)
    assert certs.cert_info(cert).not_after <= certs.cert_info(ca_cert).not_after


def test_names_are_required() -> None:
    ca_cert, ca_key = certs.make_ca()
    with pytest.raises(ValueError, match="at least one"):
        certs.make_serving_cert(ca_cert, ca_key, [], [])


def test_service_names() -> None:
    assert certs.service_dns_names("webhook", "ops") == [
        "webhook", "webhook.ops", "webhook.ops.svc", "webhook.ops.svc.cluster.local",
    ]  # fmt: skip


def handshake(tmp_path: Path, server_hostname: str) -> str:
    """Serve one TLS handshake with the written files; connect trusting only ca.crt."""
    certs.write_bundle(certs.make_bundle(["webhook.ns.svc"], ["127.0.0.1"]), tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_context.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            version = tls.version() or ""
            tls.sendall(b"x")
            return version
    finally:
        thread.join(timeout=5)
        listener.close()


def test_tls_handshake_verifies_against_the_ca(tmp_path: Path) -> None:
    assert handshake(tmp_path, "webhook.ns.svc").startswith("TLSv1.")


def test_tls_handshake_fails_for_a_name_not_in_the_san(tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(tmp_path, "other.ns.svc")


def test_certs_command_writes_private_keys_0600(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out), "--dns", "localhost", "--ip", "127.0.0.1", "--days", "7"]) == 0
    printed = capsys.readouterr().out
    assert "localhost, 127.0.0.1" in printed and "PRIVATE KEY" not in printed
    for name, mode in (("tls.key", 0o600), ("ca.key", 0o600), ("tls.crt", 0o644), ("ca.crt", 0o644)):
        assert stat.S_IMODE((out / name).stat().st_mode) == mode
    assert certs.signed_by((out / "tls.crt").read_bytes(), (out / "ca.crt").read_bytes())


def test_certs_command_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "--out", str(tmp_path), "--dns", "x", "--ip", "not-an-ip"]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["certs", "--out", str(blocker / "sub"), "--dns", "x"]) == 2
    assert "cannot write certificates" in capsys.readouterr().err
