"""Issue 13: `check` on hostile or odd files (webhook/manifests.py): bounded, named, exit 2.

The hostile files are generated here and `check` runs as a subprocess with 1 GiB of address space
and a time limit, so an unbounded reader fails the test instead of the machine. Against the previous
commit (checked): the alias bomb ran out of memory, integer keys, !!binary, !!set, list-shaped
metadata and deep nesting ended in tracebacks with exit 1 ("would be denied"), a file of other kinds
passed with exit 0, and documents without a kind were listed as "? ?".
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BROKEN = ROOT / "docs" / "examples" / "broken-rayservice.yaml"
GOOD = ROOT / "docs" / "examples" / "rayservice.yaml"
MEMORY_LIMIT = 1024 * 1024 * 1024
MAX_DEPTH = 100  # webhook.manifests.MAX_DEPTH


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def check(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", "check", *map(str, args)],
        input=stdin,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,  # only setrlimit, before exec
        cwd=ROOT,
    )


def alias_bomb() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "apiVersion: ray.io/v1\nkind: RayService\nmetadata: {name: bomb}\nspec:\n" + "".join(
        f"  {line}\n" for line in lines
    )


HOSTILE = {
    "alias-bomb.yaml": (alias_bomb(), "expands to more than 1,000,000 nodes through aliases"),
    "integer-key.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels:\n    1: one\n",
        "the key 1 is a number, not a string",
    ),
    "binary.yaml": ("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: !!binary aGVsbG8=\n", "!!binary"),
    "set.yaml": ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: !!set {a, b}\n", "!!set"),
    "list-metadata.yaml": ("apiVersion: ray.io/v1\nkind: RayService\nmetadata: [a, b]\n", "metadata is a list"),
    "deep-flow.yaml": (
        "apiVersion: v1\nkind: ConfigMap\ndata: " + "[" * 20_000 + "]" * 20_000 + "\n",
        f"nested more than {MAX_DEPTH} levels deep",
    ),
    "deep-block.yaml": (
        "".join("  " * i + f"k{i}:\n" for i in range(2_000)) + "  " * 2_000 + "leaf: 1\n",
        f"nested more than {MAX_DEPTH} levels deep",
    ),
    "huge-integer.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nn: " + "9" * 5000 + "\n",
        "cannot read this value",
    ),
    "nan.yaml": ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nn: .nan\n", "is not a JSON number"),
    "recursive.yaml": ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: &r [*r]\n", "refers to the node"),
    "scalar.yaml": ("just a string\n", "not a Kubernetes object"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_or_odd_files_exit_2_with_a_message_naming_file_and_document(name: str, tmp_path: Path) -> None:
    text, expected = HOSTILE[name]
    path = tmp_path / name
    path.write_text(text)
    result = check(path, BROKEN)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr and expected in result.stderr, result.stderr
    assert f"{path}: document 1" in result.stderr or f"{path}#1" in result.stderr, result.stderr
    # The other file is still checked and reported.
    assert f"{BROKEN}: RayService ml/broken-service: DENIED" in result.stdout


def test_nothing_checked_is_an_error_unless_allowed(tmp_path: Path) -> None:
    other = tmp_path / "configmap.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n")
    refused = check(other)
    assert refused.returncode == 2
    assert "no objects checked" in refused.stderr and "--allow-empty" in refused.stderr
    assert check("--allow-empty", other).returncode == 0
    assert check(GOOD).returncode == 0


def test_documents_without_a_kind_are_named(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "apiVersion: ray.io/v1\nmetadata: {name: nameless-kind, namespace: ml}\n---\n"
        "metadata: {name: bare}\n---\n" + GOOD.read_text()
    )
    result = check("-v", path)
    assert result.returncode == 0, result.stderr
    assert f"skipped {path}#1: ray.io/v1 (no kind) ml/nameless-kind" in result.stdout
    assert f"skipped {path}#2: (no apiVersion) (no kind) bare" in result.stdout
    assert "? ?" not in result.stdout


def test_items_of_a_list_are_named_by_position(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    items = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Pod",
                                                                           "metadata": []}]})  # fmt: skip
    path.write_text(items)
    result = check(path)
    assert result.returncode == 2
    assert f"{path}#1.items[0]: metadata is a list, not a mapping" in result.stderr


def test_stdin_is_bounded_the_same_way() -> None:
    result = check("-", stdin=alias_bomb())
    assert result.returncode == 2 and "<stdin>" not in result.stdout
    assert "-: document 1" in result.stderr and "aliases" in result.stderr


def test_timestamps_stay_strings_as_kubectl_sends_them(tmp_path: Path) -> None:
    path = tmp_path / "stamped.yaml"
    stamp = "metadata:\n  creationTimestamp: 2024-05-01T10:00:00Z\n"
    path.write_text(GOOD.read_text().replace("metadata:\n", stamp, 1))
    from webhook.manifests import load_manifests

    (document,) = load_manifests(str(path))
    assert document.obj["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"
    assert check(path).returncode == 0


def test_large_plain_files_still_load(tmp_path: Path) -> None:
    """Bounds are far above real manifests: 400 RayServices in one file."""
    path = tmp_path / "many.yaml"
    path.write_text("---\n".join([GOOD.read_text()] * 400))
    from webhook.manifests import load_manifests

    assert len(load_manifests(str(path))) == 400


def test_object_problem_names_the_field() -> None:
    from webhook.manifests import MAX_DEPTH as LOADER_DEPTH
    from webhook.manifests import ManifestError, load_manifests, object_problem

    assert LOADER_DEPTH == MAX_DEPTH
    assert object_problem({"kind": 3}) == "kind is a number, not a string"
    assert object_problem({"metadata": {"labels": {"a": 1}}}) == "metadata.labels is not a map of strings"
    assert object_problem({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}) is None
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifests("/nonexistent/file.yaml")
