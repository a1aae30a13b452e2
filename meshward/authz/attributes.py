"""The plain data an authorization decision is made from, and the decision itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshward.authn.enduser import claim_value
from meshward.patterns.ipblocks import ip_to_int

__all__ = ["AuthzDecision", "RequestAttributes"]

_UNSET = -1  # an IP cache slot not yet computed (None means "not an address")
_PARSED_IPS: dict[str, int | None] = {}  # callers' addresses repeat: parse each once
_PARSED_IPS_MAX = 4096


def _ip(text: str) -> int | None:
    found = _PARSED_IPS.get(text, _UNSET)
    if found == _UNSET:
        found = ip_to_int(text)
        if len(_PARSED_IPS) >= _PARSED_IPS_MAX:
            _PARSED_IPS.clear()
        _PARSED_IPS[text] = found
    return found


@dataclass(slots=True)
class RequestAttributes:
    """One request as policies see it. Fill it from the request context; nothing here does I/O.

    ``principal`` is in Istio's form (``td/ns/NS/sa/SA``, None for plaintext); ``path`` is
    already normalized and without the query; ``headers`` have lower-case names; ``now`` is
    seconds since the epoch (only ``request.time`` conditions read it).
    """

    method: str
    path: str
    host: str = ""
    port: int = 0
    principal: str | None = None
    namespace: str | None = None
    source_ip: str = ""
    remote_ip: str | None = None  # the original client (X-Forwarded-For); None: same as source_ip
    headers: Mapping[str, str] = field(default_factory=dict)
    model: str | None = None
    operation: str = "other"
    request_principal: str | None = None  # the end user: JWT "iss/sub" or an API key's principal
    auth_audiences: tuple[str, ...] = ()
    auth_presenter: str | None = None
    auth_claims: Mapping[str, Any] = field(default_factory=dict)
    now: float = 0.0
    host_lower: str = field(init=False, default="")
    _source_ip_int: int | None = field(init=False, default=_UNSET, repr=False)
    _remote_ip_int: int | None = field(init=False, default=_UNSET, repr=False)

    def __post_init__(self) -> None:
        self.host_lower = self.host.lower()

    def claim(self, path: tuple[str, ...]) -> list[str]:
        """``request.auth.claims[a][b]``: the string values there (none when absent)."""
        return claim_value(self.auth_claims, path)

    def source_ip_int(self) -> int | None:
        if self._source_ip_int == _UNSET:
            self._source_ip_int = _ip(self.source_ip)
        return self._source_ip_int

    def remote_ip_int(self) -> int | None:
        if self.remote_ip is None:
            return self.source_ip_int()
        if self._remote_ip_int == _UNSET:
            self._remote_ip_int = _ip(self.remote_ip)
        return self._remote_ip_int


@dataclass(frozen=True, slots=True)
class AuthzDecision:
    """The outcome, explained.

    ``policy`` (``ns/name``) and ``rule`` (index into its ``rules``) name what decided, or are
    None when nothing matched; ``reason`` says it in words ("denied by ml/deny-admin rules[0]",
    "no ALLOW policy matched", "default deny"). ``dry_run`` is what the decision would be with
    the dry-run policies enforced too (None when the workload has none); ``audit`` lists the
    AUDIT policies that matched.
    """

    allowed: bool
    reason: str
    action: Literal["ALLOW", "DENY"] | None = None
    policy: str | None = None
    rule: int | None = None
    dry_run: AuthzDecision | None = None
    audit: tuple[str, ...] = ()

    @property
    def rule_ref(self) -> str | None:
        """``rules[N]`` for logs, or None."""
        return None if self.rule is None else f"rules[{self.rule}]"

    def to_json(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "decision": "allow" if self.allowed else "deny",
            "reason": self.reason,
            "action": self.action,
            "policy": self.policy,
            "rule": self.rule,
            "dry_run": self.dry_run.to_json() if self.dry_run is not None else None,
            "audit": list(self.audit),
        }
