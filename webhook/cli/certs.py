"""`karta-admission certs`: a development CA and serving certificate."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from webhook.certs import cert_info, make_bundle, write_bundle
from webhook.cli.exits import Exit


def run_certs_command(out_dir: Path, dns_names: list[str], ip_addresses: list[str], days: int) -> Exit:
    """`karta-admission certs`: a development CA and serving certificate; never prints key material."""
    try:
        for address in ip_addresses:
            ipaddress.ip_address(address)
    except ValueError as exc:
        print(f"karta-admission: --ip: {exc}", file=sys.stderr)
        return Exit.ERROR
    if days < 1:
        print("karta-admission: --days must be at least 1", file=sys.stderr)
        return Exit.ERROR
    try:
        written = write_bundle(make_bundle(dns_names, ip_addresses, days), out_dir)
    except OSError as exc:
        print(f"karta-admission: cannot write certificates to {out_dir}: {exc}", file=sys.stderr)
        return Exit.ERROR
    info = cert_info((out_dir / "tls.crt").read_bytes())
    print(f"wrote {', '.join(str(p) for p in written)}")
    names = ", ".join([*info.dns_names, *info.ip_addresses])
    print(f"serving certificate for {names}, valid until {info.not_after:%Y-%m-%d}")
    return Exit.OK
