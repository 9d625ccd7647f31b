"""A fresh instance per invocation, with wall-time and memory limits."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wasmtime import Engine, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component, Linker

from ..config import MIB, Limits
from .abi import add_host_function, call_export
from .engine import ticks_for

WORLD_EXPORTS = {"fazt:host/handler@0.1.0": ("fetch",)}

HostFunction = Callable[..., Any]


class GuestError(Exception):
    """The guest trapped, threw, or broke a limit. `status` is the HTTP status it maps to."""

    status = 500

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class GuestTimeout(GuestError):
    status = 504


class ResponseUnwanted(GuestError):
    """The response takes no more body (a HEAD request's stream): the guest stops, and that is no failure."""


class ValidationError(ValueError):
    """A component that does not fit the fazt:host world."""


@dataclass
class Invocation:
    """What host functions see of the call in progress."""

    app: str
    request_id: str
    limits: Limits
    # Capability state for this call, keyed by capability name (e.g. the HTTP exchange).
    state: dict[str, Any] = field(default_factory=dict)
    # The finished instance's store: dropping it unmaps the instance's memory (~0.07 ms), which the
    # HTTP trigger does once the response is on its way; otherwise it goes with the invocation.
    spent: Any = None
    # The response went out before the call ended: what runs on is ctx.waitUntil's.
    responded: bool = False
    # When its time is up (time.monotonic()): a request's counts from its arrival, the wait for a
    # wasm thread included. None: limits.timeout_ms from the start of the call.
    deadline: float | None = None


def remaining_ms(limits: Limits, deadline: float | None) -> int:
    """What is left of the time limit (at least 1 ms)."""
    if deadline is None:
        return limits.timeout_ms
    return max(1, int((deadline - time.monotonic()) * 1000))


class Runtime:
    """One per Host, used from that host's wasm thread."""

    def __init__(self, engine: Engine, interfaces: dict[str, dict[str, HostFunction]]):
        self.engine = engine
        self.current: Invocation | None = None
        self.linker = Linker(engine)
        self.linker.add_wasip2()
        self.provided = {name: set(funcs) for name, funcs in interfaces.items()}
        with self.linker.root() as root:
            for name, funcs in interfaces.items():
                with root.add_instance(name) as instance:
                    for fname, fn in funcs.items():
                        add_host_function(instance, fname, self._bind(fn))

    def _bind(self, fn: HostFunction):
        def host_function(*args):
            return fn(self.current, *args)

        return host_function

    def validate(self, component: Component) -> None:
        """Refuses a component that imports what the host lacks or does not export the handler."""
        ctype = component.type
        unknown = sorted(
            name
            for name in ctype.imports(self.engine)
            if not name.startswith("wasi:") and name not in self.provided
        )
        if unknown:
            raise ValidationError(
                f"the component imports {', '.join(unknown)}, which the fazt:host world does not provide"
            )
        exports = ctype.exports(self.engine)
        missing = sorted(name for name in WORLD_EXPORTS if name not in exports)
        if missing:
            raise ValidationError(
                f"the component does not export {', '.join(missing)}: "
                "it was not built for the fazt:host app world"
            )
        # A trial instantiation checks every import's type against ours; the
        # caller runs the epoch ticker, so a start-up that never ends is cut off.
        limits = Limits(timeout_ms=5_000)
        store = self._store(limits)
        self.current = Invocation("validate", "validate", limits)
        try:
            instance = self.linker.instantiate(store, component)
            guest = Guest(component)
            for interface, names in WORLD_EXPORTS.items():
                for name in names:
                    func = instance.get_func(store, guest.export(interface, name))
                    if func is None:
                        raise ValidationError(f"{interface}#{name} is not a function")
                    ftype = func.type(store)
                    if [type(t).__name__ for _, t in ftype.params] != ["String"] or type(
                        ftype.result
                    ).__name__ != "String":
                        raise ValidationError(f"{interface}#{name} must take a string and return a string")
        except (WasmtimeError, GuestError) as e:
            raise ValidationError(f"the component does not link against the fazt:host world: {e}") from None
        finally:
            self.current = None

    def _store(self, limits: Limits, deadline: float | None = None) -> Store:
        store = Store(self.engine)
        store.set_wasi(WasiConfig())  # entropy and clocks only: no files, no sockets, no env
        store.set_epoch_deadline(ticks_for(remaining_ms(limits, deadline)))
        store.set_limits(memory_size=limits.memory_mb * MIB)
        return store

    def call(self, guest: Guest, interface: str, name: str, arg: str, invocation: Invocation) -> str:
        """Instantiates the guest afresh and calls one export with a JSON string."""
        limits = invocation.limits
        store = self._store(limits, invocation.deadline)
        self.current = invocation
        try:
            instance = self.linker.instantiate(store, guest.component)
            result = call_export(instance.get_func(store, guest.export(interface, name)), store, arg)
            invocation.spent = store
            return result
        except WasmtimeError as e:
            # The frames the trap passed through hold the store: cleared, the instance's memory goes now,
            # not whenever a cycle collection reaches this error (a 4 GiB instance stayed mapped till then).
            traceback.clear_frames(e.__traceback__)
            store = instance = None
            raise trap_error(str(e), limits, invocation.responded) from None
        finally:
            self.current = None


def trap_error(message: str, limits: Limits, responded: bool = False) -> GuestError:
    """What a trap means for the app's author; the detail is the trap itself (the wasm backtrace of
    the engine's own functions tells them nothing)."""
    trap = next((line.strip() for line in reversed(message.splitlines()) if line.strip()), message)
    if "wasm trap: interrupt" in message:
        after = " (its ctx.waitUntil promises, after the response, count in it)" if responded else ""
        return GuestTimeout(f"the handler ran past its time limit of {limits.timeout_ms} ms{after}")
    if "unreachable" in message:  # the engine aborted: out of memory, or nothing left to wait for
        return GuestError(
            f"the handler stopped the engine: it ran out of memory (limit {limits.memory_mb} MiB) or awaited "
            "a promise that can never settle, one nothing resolves (a ctx.waitUntil promise too, after the response)",
            trap,
        )
    return GuestError(f"the handler trapped (memory limit {limits.memory_mb} MiB, time limit {limits.timeout_ms} ms)", trap)


class Guest:
    """A compiled component ready to instantiate, with its export lookups cached."""

    def __init__(self, component: Component):
        self.component = component
        self._exports: dict[tuple[str, str], Any] = {}

    def export(self, interface: str, name: str):
        key = (interface, name)
        index = self._exports.get(key)
        if index is None:
            iface = self.component.get_export_index(interface)
            index = self.component.get_export_index(name, iface) if iface is not None else None
            if index is None:
                raise GuestError(f"the app does not export {interface}#{name}")
            self._exports[key] = index
        return index
