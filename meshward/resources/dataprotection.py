"""``DataProtectionPolicy``: placeholder shape until its issue defines the spec (owned by that issue)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from meshward.resources.base import Resource, Selector, Strict, register

__all__ = ["DataProtectionPolicy", "DataProtectionPolicySpec"]


class DataProtectionPolicySpec(Strict):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)
    selector: Selector = Field(default_factory=Selector)
    extra: dict[str, Any] = Field(default_factory=dict)


@register
class DataProtectionPolicy(Resource[DataProtectionPolicySpec]):
    kind_name = "DataProtectionPolicy"
