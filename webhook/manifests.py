"""Kubernetes manifests from YAML or JSON files, loaded within bounds, for the offline commands.

A manifest is JSON data (what kubectl sends): mappings with string keys, lists, strings, numbers,
booleans and null. Anything else YAML can express is refused with the file, the document and the
line, instead of surfacing later as a traceback: non-string keys, `!!binary`, `!!set` and other
non-JSON tags, NaN and infinities. Timestamps stay the strings they were written as, as in kubectl.

Hostile files are bounded while they are read, before any of their content is used:

- at most MAX_FILE_BYTES per file;
- at most MAX_DEPTH levels of nesting (the KubeRay CRDs need 36; Python's own recursion and
  orjson's 255 levels are far above);
- at most MAX_NODES nodes per document, counted as written and again with every alias expanded
  (a "billion laughs" file of a few hundred bytes expands to 10^9 nodes).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from webhook.karta.native import json_type_name

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 100
MAX_NODES = 1_000_000
_JSON_TAGS = frozenset(
    "tag:yaml.org,2002:" + name for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge", "timestamp")
)


class ManifestError(ValueError):
    """A file that is not a readable set of manifests; the message names the file and the document."""


@dataclass(frozen=True)
class Document:
    """One object of a file: the YAML document, and the item when the document is a v1 List."""

    file: str
    index: int  # 1-based position of the YAML document in the file
    item: int | None  # position in a List's items
    obj: Any

    @property
    def where(self) -> str:
        return f"{self.file}#{self.index}" + (f".items[{self.item}]" if self.item is not None else "")


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts nesting and nodes while it composes, and builds JSON data only."""

    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)
        self.name = name  # shown in every error mark
        self._depth = 0
        self._nodes = 0

    def compose_document(self) -> Node | None:
        self._nodes = 0
        node = super().compose_document()
        if node is not None:
            _check_expanded_size(node)
        return node

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _problem(f"nested more than {MAX_DEPTH} levels deep", self._mark())
            if self._nodes > MAX_NODES:
                raise _problem(f"more than {MAX_NODES:,} nodes in one document", self._mark())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _mark(self) -> Any:
        return self.peek_event().start_mark  # type: ignore[no-untyped-call]

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        if node.tag not in _JSON_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise _problem(f"{_clip(tag, 80)} is not JSON data (manifests are JSON)", node.start_mark)
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. an integer of 5,000 digits
            raise _problem(f"cannot read this value: {exc}", node.start_mark) from exc

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep)
        for key in mapping:
            if not isinstance(key, str):
                mark = next((k.start_mark for k, _ in node.value if isinstance(k, ScalarNode) and k.value == str(key)),
                            node.start_mark)  # fmt: skip
                raise _problem(f"the key {_clip(repr(key), 80)} is a {_json_type(key)}, not a string: quote it", mark)
        return mapping

    def construct_yaml_float(self, node: ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise _problem(f"{node.value} is not a JSON number", node.start_mark)
        return value

    def construct_timestamp_text(self, node: ScalarNode) -> str:
        return str(node.value)


_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_yaml_float)
_BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", _BoundedLoader.construct_timestamp_text)


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML, but not a manifest we read (or beyond a bound)."""


def _problem(message: str, mark: Any) -> _Refused:
    return _Refused(problem=message, problem_mark=mark)


def _check_expanded_size(root: Node) -> None:
    """Refuse a document whose aliases expand it beyond MAX_NODES, or refer to themselves."""
    sizes: dict[int, int] = {}  # per node object: an alias is the same object, so it is sized once
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: no recursion on deep documents
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > MAX_NODES:
                raise _problem(f"expands to more than {MAX_NODES:,} nodes through aliases", node.start_mark)
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _problem("an alias refers to the node that contains it (JSON cannot be recursive)", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _read(name: str, stdin: TextIO | None) -> str:
    if name == "-":
        text = (stdin or sys.stdin).read(MAX_FILE_BYTES + 1)
    else:
        path = Path(name)
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ManifestError(f"{name}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        with path.open(encoding="utf-8") as handle:
            text = handle.read(MAX_FILE_BYTES + 1)
    if len(text) > MAX_FILE_BYTES:
        raise ManifestError(f"{name}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return text


def load_documents(name: str, stdin: TextIO | None = None) -> list[tuple[int, Any]]:
    """(1-based index, data) of every non-empty YAML document of a file ("-": stdin), all or nothing."""
    try:
        text = _read(name, stdin)
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{name}: cannot read: {exc}") from exc
    loader = _BoundedLoader(text, "<stdin>" if name == "-" else name)
    documents: list[tuple[int, Any]] = []
    index = 0
    try:
        while loader.check_data():  # type: ignore[no-untyped-call]
            index += 1
            data = loader.get_data()
            if data is not None:
                documents.append((index, data))
    except _Refused as exc:
        line = f", line {exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise ManifestError(f"{name}: document {index or 1}{line}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{name}: document {index or 1}: not valid YAML: {_clean(exc)}") from exc
    except RecursionError as exc:  # a defence behind MAX_DEPTH
        raise ManifestError(f"{name}: document {index or 1}: nested too deeply") from exc
    finally:
        loader.dispose()
    return documents


def load_manifests(name: str, stdin: TextIO | None = None) -> list[Document]:
    """Every object of a file: each document, or each item of a document that is a v1 List."""
    out: list[Document] = []
    for index, data in load_documents(name, stdin):
        if isinstance(data, Mapping) and data.get("kind") == "List" and isinstance(data.get("items"), list):
            out.extend(Document(name, index, position, item) for position, item in enumerate(data["items"]))
        else:
            out.append(Document(name, index, None, data))
    return out


def object_problem(obj: Any) -> str | None:
    """Why a document is not a Kubernetes object at all, or None. A missing kind is not a problem here."""
    if not isinstance(obj, Mapping):
        return f"not a Kubernetes object (a {_json_type(obj)}, not a mapping)"
    for key in ("apiVersion", "kind"):
        if key in obj and not isinstance(obj[key], str):
            return f"{key} is a {_json_type(obj[key])}, not a string"
    metadata = obj.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        return f"metadata is a {_json_type(metadata)}, not a mapping"
    for key in ("name", "namespace", "generateName"):
        if key in metadata and not isinstance(metadata[key], str):
            return f"metadata.{key} is a {_json_type(metadata[key])}, not a string"
    for key in ("labels", "annotations"):
        values = metadata.get(key)
        if values is not None and (
            not isinstance(values, Mapping) or not all(isinstance(v, str) for v in values.values())
        ):
            return f"metadata.{key} is not a map of strings"
    return None


def describe(obj: Mapping[str, Any]) -> str:
    """What identifies an object in a message: its kind and name, as far as it has them."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    kind = obj.get("kind") or "(no kind)"
    api_version = obj.get("apiVersion") or "(no apiVersion)"
    name = metadata.get("name") or (f"{metadata.get('generateName')}*" if metadata.get("generateName") else "")
    namespace = metadata.get("namespace")
    named = f" {namespace}/{name}" if namespace and name else (f" {name}" if name else " (no name)")
    return _clip(f"{api_version} {kind}{named}")


def _json_type(value: Any) -> str:
    """The type of a YAML value in YAML's words (a list, a mapping), for messages about manifests."""
    name = json_type_name(value)
    return {"array": "list", "object": "mapping"}.get(name, name)


def _clean(exc: yaml.YAMLError) -> str:
    return _clip(" ".join(str(exc).split()), 400)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
