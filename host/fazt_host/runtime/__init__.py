"""Runs guests: one fresh instance of a precompiled component per invocation.

The runtime knows nothing of capabilities: it is handed host functions per
WIT interface, each taking the current `Invocation` first, and the triggers
(HTTP server, scheduler, mail) call `Runtime.call`.
"""

from .engine import ComponentCache, EpochTicker, make_engine
from .invoke import Guest, GuestError, GuestTimeout, Invocation, ResponseUnwanted, Runtime, ValidationError, remaining_ms

__all__ = [
    "ComponentCache",
    "EpochTicker",
    "Guest",
    "GuestError",
    "GuestTimeout",
    "Invocation",
    "ResponseUnwanted",
    "Runtime",
    "ValidationError",
    "make_engine",
    "remaining_ms",
]
