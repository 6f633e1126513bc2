"""Identifiers and generated names."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_lowercase + string.digits
_ADJECTIVES = (
    "amber",
    "brisk",
    "calm",
    "bright",
    "silver",
    "quiet",
    "swift",
    "golden",
    "misty",
    "bold",
    "clever",
    "gentle",
    "lively",
    "polar",
    "rapid",
    "sunny",
    "vivid",
    "wild",
    "young",
    "zesty",
)
_NOUNS = (
    "wren",
    "otter",
    "falcon",
    "maple",
    "comet",
    "harbor",
    "lynx",
    "meadow",
    "orca",
    "pine",
    "quartz",
    "raven",
    "river",
    "spruce",
    "tiger",
    "willow",
    "ember",
    "cedar",
    "heron",
    "finch",
)


def new_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}_{''.join(secrets.choice(_ALPHABET) for _ in range(length))}"


def new_token() -> str:
    return "ember_" + secrets.token_urlsafe(30)


def new_sandbox_name() -> str:
    suffix = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(6))
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{suffix}"
