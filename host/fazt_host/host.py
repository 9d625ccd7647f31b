"""The composition root: capabilities + runtime + triggers, once per process.

`Host` wires the capability list into the runtime's linker and calls their
per-invocation hooks; the HTTP trigger (server.py) and the CLI's deploy use
it. Granian imports `rsgi_app` in every worker process.
"""

from __future__ import annotations

import signal
from functools import partial

import msgspec

from . import apps, cartridge
from .apps import Deployed
from .capabilities import Capability
from .capabilities.documents import Documents
from .capabilities.log import Log
from .capabilities.storage import Storage
from .config import HostSettings
from .runtime import ComponentCache, EpochTicker, Guest, GuestError, Invocation, ResponseUnwanted, Runtime, make_engine
from .server import HTTP_INTERFACE, HttpTrigger, http_functions
from .signals import die_with_parent
from .sourcemap import StackMapper


def capabilities(conn) -> list[Capability]:
    """Every capability, with its tables migrated on `conn` (not yet set up for invocations)."""
    caps: list[Capability] = [Log(), Documents(), Storage()]
    for cap in caps:
        cartridge.migrate(conn, cap.name, cap.migrations)
    return caps


class Host:
    def __init__(self, settings: HostSettings, engine=None, guests: dict | None = None):
        """`engine` and `guests` (the mapped components) are shared by the hosts of a worker's wasm threads."""
        self.settings = settings
        self.conn = cartridge.connect(settings.cartridge)
        self.capabilities = capabilities(self.conn)
        for cap in self.capabilities:
            cap.setup(self.conn)
        self.log = next(c for c in self.capabilities if isinstance(c, Log))
        self.routes = {p: fn for cap in self.capabilities for p, fn in cap.routes().items()}
        self.results = {k: fn for cap in self.capabilities for k, fn in cap.results().items()}
        self.engine = engine or make_engine()  # the cron scheduler shares one among its threads
        interfaces = {cap.interface: cap.functions() for cap in self.capabilities}
        interfaces[HTTP_INTERFACE] = http_functions()
        self.runtime = Runtime(self.engine, interfaces)
        self.cache = ComponentCache(self.engine, settings.cache_dir)
        self._guests: dict[str, Guest] = {} if guests is None else guests
        self.stacks = StackMapper(
            lambda app, version: apps.source_map_of(self.conn, app, version),
            lambda digest: cartridge.get_object(self.conn, digest),
        )
        self._ticker: EpochTicker | None = None
        self.checkpointer: cartridge.Checkpointer | None = None

    def start_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = EpochTicker(self.engine)

    def start_checkpointer(self, checkpointer: cartridge.Checkpointer | None = None) -> None:
        """Moves the writer's WAL checkpoints to a thread (large uploads no longer wait on them);
        the process's hosts share one."""
        if self.checkpointer is None:
            self.checkpointer = checkpointer or cartridge.Checkpointer(self.settings.cartridge)
            self.checkpointer.attach(self.conn)

    def retain(self, component_hashes: set[str]) -> None:
        """Forgets mapped components no active version uses (calls in flight keep theirs)."""
        for h in set(self._guests) - component_hashes:
            self._guests.pop(h, None)

    def mapped(self, component_hash: str) -> bool:
        return component_hash in self._guests

    def guest(self, component_hash: str) -> Guest:
        guest = self._guests.get(component_hash)
        if guest is None:
            component = self.cache.load(component_hash, lambda: cartridge.get_object(self.conn, component_hash))
            guest = self._guests[component_hash] = Guest(component)
        return guest

    def housekeep(self) -> None:
        for cap in self.capabilities:
            cap.housekeep()

    def note(self, invocation: Invocation, message: str) -> None:
        """Writes a host error to the app's log for an invocation whose guest never ran."""
        self.log.record(invocation, "error", message, host=True)
        self.log.finish(invocation)

    def invoke(self, deployed: Deployed, interface: str, name: str, payload: str, invocation: Invocation) -> dict:
        """Runs one export in a fresh instance and returns its decoded JSON result.

        A handler that threw (`{"error", "stack"}`), trapped or broke a limit is
        logged with its stack (read through the app's source map) and raised as GuestError.
        """
        map_stack = partial(self.stacks.map, deployed.name, deployed.version)
        try:
            raw = self.runtime.call(self.guest(deployed.component), interface, name, payload, invocation)
            try:
                result = _decode_result(raw) if raw else {}
            except msgspec.DecodeError:
                raise GuestError("the app returned a malformed result", raw[:200]) from None
            if "error" in result:
                thrown = "a ctx.waitUntil promise rejected with" if result.get("source") == "waitUntil" else "the handler threw"
                raise GuestError(f"{thrown} {result['error']}", map_stack(str(result.get("stack", ""))))
            return result
        except GuestError as e:
            invocation.spent = None  # no response to hurry: the instance's memory goes now
            if not isinstance(e, ResponseUnwanted):
                self.log.record(invocation, "error", f"{e}\n{e.detail}".rstrip(), host=True)
            raise
        except Exception as e:  # a host call refused the guest (a response over its limit, say)
            invocation.spent = None
            self.log.record(invocation, "error", str(e) or type(e).__name__, host=True)
            raise
        finally:
            self.log.map_frames(invocation, map_stack)
            for cap in self.capabilities:
                cap.finish(invocation)


_decode_result = msgspec.json.Decoder(dict).decode


def cron_scheduler(settings: HostSettings, clock=None, threads: int | None = None):
    """The cron trigger's service; its wasm threads each get a Host over one shared engine."""
    from .triggers.cron.scheduler import Scheduler

    return Scheduler(settings, lambda engine: Host(settings, engine=engine), clock, threads)


def rsgi_app() -> HttpTrigger:
    """Granian's factory: one Host and one HTTP trigger per worker process."""
    from .serve import claim_core

    die_with_parent(signal.SIGTERM)  # Granian's main process starts its workers from its main thread
    settings = HostSettings.from_env()
    claim_core(settings)  # before the worker starts any thread
    host = Host(settings)
    host.start_ticker()  # ticks the engine every host of the worker shares
    host.start_checkpointer()

    def standby_host() -> Host:
        standby = Host(settings, engine=host.engine, guests=host._guests)
        standby.start_checkpointer(host.checkpointer)
        return standby

    return HttpTrigger(host, standby_host, settings.wasm_threads, settings.domain)
