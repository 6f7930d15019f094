"""Field paths printed the way Kubernetes prints them in field errors."""

from __future__ import annotations

import re
from collections.abc import Sequence

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

PathParts = tuple[str | int, ...]


def format_path(parts: Sequence[str | int]) -> str:
    """("spec", "workerGroupSpecs", 1, "replicas") -> "spec.workerGroupSpecs[1].replicas";
    map keys that are not identifiers go in brackets: "limits[nvidia.com/gpu]"."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{part}]")
    return "".join(out)
