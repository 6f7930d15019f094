"""The set of Karta definitions in force, keyed by root kind, with their compiled evaluators."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from webhook.karta.load import builtin_definitions, load_directory
from webhook.karta.model import GVK, KartaDefinition
from webhook.karta.pods import PodClassifier
from webhook.karta.resolve import ResolvedWorkload, WorkloadResolver


@dataclass(frozen=True)
class CompiledDefinition:
    definition: KartaDefinition
    resolver: WorkloadResolver
    classifier: PodClassifier

    @classmethod
    def compile(cls, definition: KartaDefinition) -> CompiledDefinition:
        return cls(definition, WorkloadResolver(definition), PodClassifier(definition))

    def resolve(self, obj: Mapping[str, Any]) -> ResolvedWorkload:
        return self.resolver.resolve(obj)


class DefinitionSet:
    """Definitions by root kind. Later ones replace earlier ones for the same kind (cluster > files > built-in)."""

    def __init__(self, definitions: Iterable[KartaDefinition] = ()) -> None:
        self._by_kind: dict[GVK, CompiledDefinition] = {}
        for definition in definitions:
            self._by_kind[definition.root_kind] = CompiledDefinition.compile(definition)

    @classmethod
    def builtin(cls, extra: Iterable[KartaDefinition] = ()) -> DefinitionSet:
        return cls([*builtin_definitions(), *extra])

    @classmethod
    def from_directories(cls, directories: Iterable[Path]) -> DefinitionSet:
        """Built-in definitions, then those of the directories in order (later wins for the same kind)."""
        return cls.builtin(d for directory in directories for d in load_directory(directory))

    def for_kind(self, kind: GVK) -> CompiledDefinition | None:
        return self._by_kind.get(kind)

    def for_object(self, obj: Mapping[str, Any]) -> CompiledDefinition | None:
        return self._by_kind.get(GVK.of(obj))

    def kinds(self) -> list[GVK]:
        return sorted(self._by_kind)

    @cached_property
    def kind_names(self) -> frozenset[str]:
        """The root kinds' names (a metric label per kind; computed once, the set never changes)."""
        return frozenset(kind.kind for kind in self._by_kind)

    def __iter__(self) -> Iterator[CompiledDefinition]:
        return iter(self._by_kind[k] for k in sorted(self._by_kind))

    def __len__(self) -> int:
        return len(self._by_kind)
