"""The envelope every resource shares (``apiVersion``, ``kind``, ``metadata``, ``spec``).

Each kind lives in its own module and registers itself in :data:`KINDS` with
:func:`register`. Models are strict: an unknown field is an error, so a typo in a policy is
refused instead of silently widening or narrowing it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "API_VERSION",
    "KINDS",
    "Metadata",
    "Resource",
    "Selector",
    "Strict",
    "register",
]

API_VERSION = "meshward.dev/v1alpha1"


class Strict(BaseModel):
    """Base for every spec model: unknown fields are refused, field names are camelCase in YAML."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Metadata(Strict):
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str = Field(
        default="default", min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Selector(Strict):
    """Which workloads (by label) a policy applies to; empty selects the whole namespace."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items())


SpecT = TypeVar("SpecT", bound=BaseModel)


class Resource(Strict, Generic[SpecT]):
    """One document. Subclasses fix ``kind`` and the spec type."""

    kind_name: ClassVar[str] = ""
    api_versions: ClassVar[tuple[str, ...]] = (API_VERSION,)

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: Metadata
    spec: SpecT

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of a resource in the store: (kind, namespace, name)."""
        return (self.kind, self.metadata.namespace, self.metadata.name)

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.metadata.namespace}/{self.metadata.name}"

    def to_doc(self) -> dict[str, Any]:
        """The document as a user would write it (aliases, no defaults-only noise)."""
        return self.model_dump(by_alias=True, exclude_defaults=False, mode="json")


KINDS: dict[str, type[Resource[Any]]] = {}

R = TypeVar("R", bound=type[Resource[Any]])


def register(cls: R) -> R:
    """Class decorator: make a kind known to the loader."""
    KINDS[cls.kind_name] = cls
    return cls
