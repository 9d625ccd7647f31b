"""Host capabilities: each owns a WIT interface, its tables and its hooks.

A capability is set up once per process (`setup`), configured per app when a
version becomes active (`configure`, inside the activating transaction) and
forgotten with a removed app (`forget`); it contributes host functions for
its interface (each called with the current `Invocation` first), and may
finish each invocation (`finish`, e.g. to flush buffered writes) and keep
house while the process serves (`housekeep`). The
composition root (`fazt_host.host`) lists them; adding one touches its own
folder, that list and the WIT.
"""

from __future__ import annotations

from typing import Any, Callable

import apsw

from ..config import Manifest
from ..runtime import Invocation


class Capability:
    name: str = ""
    interface: str = ""
    migrations: list[str] = []

    def setup(self, conn: apsw.Connection) -> None:
        """Once per process, with the process's cartridge connection (tables are migrated by then)."""
        self.conn = conn

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {}

    def finish(self, invocation: Invocation) -> None:
        """After every invocation, on the wasm thread."""

    def housekeep(self) -> None:
        """Now and then (about a minute apart) on a serving worker's wasm thread, between invocations."""

    def configure(self, conn: apsw.Connection, manifest: Manifest) -> list[str]:
        """A version of the app becomes active (deploy, rollback). Raise ValueError to refuse it.

        Returns notes on what changed, for the deploy's output.
        """
        return []

    def forget(self, conn: apsw.Connection, app: str) -> None:
        """The app is removed: drop what it owned, so a later app of that name starts empty."""

    def routes(self) -> dict[str, Callable[..., Any]]:
        """HTTP paths under each app this capability serves itself: prefix -> async
        handler(trigger, scope, proto, deployed, inner path, mount base)."""
        return {}

    def results(self) -> dict[str, Callable[..., Any]]:
        """Handler results this capability answers (a result holding the key): key -> async
        handler(trigger, scope, proto, deployed, result, request id)."""
        return {}
