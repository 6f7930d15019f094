"""Reading object metadata the way controllers do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference marked controller: true (the object that manages this one), if any."""
    refs = (obj.get("metadata") or {}).get("ownerReferences")
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None
