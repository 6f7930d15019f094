"""Regenerate the chart's ValidatingAdmissionPolicies (charts/karta-admission/files/validating-admission-policies.json).

Helm cannot run Python at install time, so the policies the chart installs (`validation: policy` or
`both`) are compiled here, by the same compiler as `karta-admission export vap`, from the built-in
definitions and the policy settings of the chart's default values. The chart renders the bindings itself
(they depend on the release: mode, namespace label, excluded namespaces) and refuses policy settings
other than the ones compiled in. tests/unit/test_vap_chart.py fails when this file is out of date.

    python scripts/gen_chart_vap.py --out charts/karta-admission/files/validating-admission-policies.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from webhook.vap.chart import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    args.out.write_text(render(), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
