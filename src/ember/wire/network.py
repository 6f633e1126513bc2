"""Network policy shapes (reference §7.2). Stored now; enforced by the network layer."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .base import ResponseModel


class Subnets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)

    @field_validator("allow", "deny")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR") from exc
        return value


class NetworkPolicyRequest(BaseModel):
    """`{"mode": "allow-all"|"deny-all"}` or the object form `{allow, subnets}`."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["allow-all", "deny-all", "custom"] | None = None
    allow: list[str] | dict[str, list[dict[str, Any]]] | None = None
    subnets: Subnets | None = None

    def to_stored(self) -> dict[str, Any]:
        if self.mode in ("allow-all", "deny-all") and self.allow is None and self.subnets is None:
            return {"mode": self.mode}
        return self.model_dump(exclude_none=True) | {"mode": "custom"}


def parse_network_policy(value: Any) -> dict[str, Any]:
    """Accept the string shorthand the JS SDK sends as well as the object forms."""
    if isinstance(value, str):
        value = {"mode": value}
    return NetworkPolicyRequest.model_validate(value).to_stored()


class NetworkPolicy(ResponseModel):
    """The normalised response shape; injected header values never appear."""

    mode: str
    allowed_domains: list[str] | None = Field(default=None, alias="allowedDomains")  # noqa: RUF100
    allowed_cidrs: list[str] | None = Field(default=None, alias="allowedCIDRs")
    denied_cidrs: list[str] | None = Field(default=None, alias="deniedCIDRs")
    injection_rules: list[dict[str, Any]] | None = None
    forward_rules: list[dict[str, Any]] | None = None


def normalise_network_policy(stored: dict[str, Any] | None) -> NetworkPolicy:
    if not stored or stored.get("mode") in ("allow-all", "deny-all"):
        return NetworkPolicy(mode=(stored or {}).get("mode", "allow-all"))
    allow = stored.get("allow") or []
    domains = list(allow) if isinstance(allow, list) else list(allow.keys())
    injection, forward = [], []
    if isinstance(allow, dict):
        for domain, rules in allow.items():
            for rule in rules:
                match = {"match": rule["match"]} if "match" in rule else {}
                if "transform" in rule:
                    names = sorted({h for t in rule["transform"] for h in (t.get("headers") or {})})
                    injection.append({"domain": domain, "headerNames": names, **match})
                if "forwardURL" in rule:
                    forward.append({"domain": domain, "forwardURL": rule["forwardURL"], **match})
    subnets = stored.get("subnets") or {}
    return NetworkPolicy(
        mode="custom",
        allowedDomains=domains,
        allowedCIDRs=list(subnets.get("allow", [])),
        deniedCIDRs=list(subnets.get("deny", [])),
        injection_rules=injection,
        forward_rules=forward,
    )
