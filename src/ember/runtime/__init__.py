"""Runtimes: the Runtime protocol and its implementations.

Imports nothing from wire, control or api; may import ember.agent.protocol.
"""

from .agent_client import (
    AgentClient,
    AgentError,
    AgentUnavailableError,
    ExitStatus,
    OutputChunk,
    Terminal,
)
from .base import (
    EmberRuntimeError,
    FrozenLayer,
    Resources,
    ResourceUsage,
    Runtime,
    SessionInfo,
    SessionNotFoundError,
    SessionSpec,
    SessionStartError,
    SessionStatus,
    UnsupportedError,
)

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentUnavailableError",
    "EmberRuntimeError",
    "ExitStatus",
    "FrozenLayer",
    "OutputChunk",
    "ResourceUsage",
    "Resources",
    "Runtime",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionSpec",
    "SessionStartError",
    "SessionStatus",
    "Terminal",
    "UnsupportedError",
]
