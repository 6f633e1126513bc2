"""Network policy shapes (reference §7.2). Stored now; enforced by the network layer."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


_STRICT = ConfigDict(extra="forbid", strict=True)


class Matcher(BaseModel):
    """`{exact}`, `{startsWith}` or `{regex}`: exactly one."""

    model_config = _STRICT
    exact: str | None = None
    startsWith: str | None = None  # the wire name
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Matcher:
        if sum(v is not None for v in (self.exact, self.startsWith, self.regex)) != 1:
            raise ValueError("a matcher has exactly one of exact, startsWith, regex")
        return self


class KeyValueMatcher(BaseModel):
    model_config = _STRICT
    key: Matcher | None = None
    value: Matcher | None = None


class RequestMatch(BaseModel):
    model_config = _STRICT
    path: Matcher | None = None
    method: list[str] | None = None
    queryString: list[KeyValueMatcher] | None = None  # the wire name
    headers: list[KeyValueMatcher] | None = None


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_DOMAIN_PATTERN = re.compile(r"(\*|[a-z0-9_-]{1,63})(\.(\*|[a-z0-9_-]{1,63}))*", re.IGNORECASE)


class Transform(BaseModel):
    model_config = _STRICT
    headers: dict[str, str] | None = None

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (value or {}).items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name")
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"the value of header {name!r} has a line break or NUL")
        return value


class Rule(BaseModel):
    """A domain's rule: inject headers (`transform`) or forward (`forwardURL`), not both."""

    model_config = _STRICT
    match: RequestMatch | None = None
    transform: list[Transform] | None = None
    forwardURL: str | None = None  # the wire name

    @model_validator(mode="after")
    def _either(self) -> Rule:
        if (self.transform is None) == (self.forwardURL is None):
            raise ValueError("a rule has either transform or forwardURL")
        return self


class NetworkPolicyRequest(BaseModel):
    """`{"mode": "allow-all"|"deny-all"}` or the object form `{allow, subnets}`."""

    model_config = _STRICT
    mode: Literal["allow-all", "deny-all", "custom"] | None = None
    allow: list[str] | dict[str, list[Rule]] | None = None
    subnets: Subnets | None = None

    @field_validator("allow")
    @classmethod
    def _domains(
        cls, value: list[str] | dict[str, list[Rule]] | None
    ) -> list[str] | dict[str, list[Rule]] | None:
        for domain in value or ():
            if len(domain) > 253 or not _DOMAIN_PATTERN.fullmatch(domain):
                raise ValueError(
                    f"{domain!r} is not a domain pattern (labels, `*` for one label, "
                    "a leading `*` for any subdomain)"
                )
        return value

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
