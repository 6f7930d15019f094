"""gojq, the jq Karta runs its paths with, as a test oracle (Debian's `gojq`, installed by `make tools`).

Karta decodes the object into Go's `any` before running a path, so every number it sees is a float64;
the gojq command line would read big integers exactly. Documents are therefore handed to gojq the way
Karta would hold them: integers beyond 2^53 become the float64 they round to. jq has one number type
and gojq prints large float64 values without an exponent, so answers are read as float64.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any

GOJQ = shutil.which("gojq")
_EXACT_MAX = 2**53

# Where libjq, the other oracle, differs from gojq in the subset the native paths and the compiler
# cover, gojq's answers are the ones to give: it indexes a string by character (libjq: "Cannot index
# string with number"), and `tostring` writes a float64 as Go does ("1", not libjq's "1.0" for the
# literal 1.0).


def as_karta_holds_it(value: Any) -> Any:
    """The value after Go's json.Unmarshal into `any`: numbers are float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return float(value) if abs(value) > _EXACT_MAX else value
    if isinstance(value, list):
        return [as_karta_holds_it(v) for v in value]
    return {k: as_karta_holds_it(v) for k, v in value.items()}


def gojq(expression: str, documents: Iterable[Any]) -> list[tuple[bool, Any]]:
    """gojq's answer per document: (True, all outputs) or (False, None) when the path fails."""
    assert GOJQ is not None, "gojq is installed by `make tools` (Debian package gojq)"
    program = f'try [{expression}] catch {{"gojq error": .}}'
    stream = "\n".join(json.dumps(as_karta_holds_it(d)) for d in documents)
    run = subprocess.run([GOJQ, "-c", program], input=stream, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, (expression, run.stderr)
    answers = []
    for line in run.stdout.splitlines():
        value = json.loads(line, parse_int=float)
        failed = isinstance(value, dict) and set(value) == {"gojq error"}
        answers.append((False, None) if failed else (True, value))
    return answers


def as_float64(values: Any) -> Any:
    """Outputs read back as gojq's answers are: every number a float."""
    return json.loads(json.dumps(values), parse_int=float)
