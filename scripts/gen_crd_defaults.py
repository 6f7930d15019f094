"""Regenerate the CRD defaulting data (webhook/kube/data/crd_defaults.json) from CRD YAML files.

Keeps, for every served version of every CRD, only the schema branches that defaulting reads (see
webhook/kube/defaults.py), as compact JSON with sorted keys, so the same CRDs always give the same bytes.

    python scripts/gen_crd_defaults.py --out webhook/kube/data/crd_defaults.json \
        tests/data/corpus/kuberay/crd/ray.io_{rayclusters,rayjobs,rayservices}.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from webhook.kube.defaults import CRDSchemaError, Schemas, defaulting_schemas

# The CRDs are megabytes of YAML: libyaml's loader is some twenty times faster when present.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_documents(paths: list[Path]) -> list[Any]:
    documents: list[Any] = []
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            documents.extend(yaml.load_all(handle, Loader=_LOADER))
    return documents


def render(schemas: Schemas) -> str:
    return json.dumps(schemas, sort_keys=True, separators=(",", ":")) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("crds", type=Path, nargs="+", metavar="CRD.yaml", help="CustomResourceDefinition files")
    args = parser.parse_args(argv)
    try:
        schemas = defaulting_schemas(load_documents(args.crds))
    except (OSError, yaml.YAMLError, CRDSchemaError) as exc:
        print(f"gen_crd_defaults: {exc}", file=sys.stderr)
        return 2
    if not schemas:
        print("gen_crd_defaults: no served CRD versions in the given files", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(schemas), encoding="utf-8")
    kinds = sorted(f"{api_version} {kind}" for api_version, by_kind in schemas.items() for kind in by_kind)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): {', '.join(kinds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
