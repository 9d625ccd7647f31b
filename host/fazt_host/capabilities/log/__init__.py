"""The app log: `console.*` in the guest, and the host's own notes about a call.

Lines are buffered per invocation and written in one short transaction when
it ends, so logging costs a handler nothing while it runs. Each invocation may
log at most `limits.logKb`: from the first line over it on, all of the app's
lines are dropped (what is kept is an unbroken start, with no gap), and one
note at the end says how many.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import apsw

from ...cartridge import app_exists, transaction
from ...runtime import Invocation
from ...sourcemap import BUNDLE_FRAME
from .. import Capability

KEEP_LINES_PER_APP = 10_000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
LEVELS = ("debug", "info", "warn", "error")


class LogBuffer:
    __slots__ = ("lines", "bytes", "dropped")

    def __init__(self) -> None:
        self.lines: list[tuple[float, str, str]] = []
        self.bytes = 0
        self.dropped = 0


class Log(Capability):
    name = "log"
    interface = "fazt:host/log@0.1.0"
    migrations = [
        """
        CREATE TABLE logs(
            id INTEGER PRIMARY KEY,
            app TEXT NOT NULL,
            ts REAL NOT NULL,
            level TEXT NOT NULL,
            request_id TEXT NOT NULL,
            message TEXT NOT NULL
        ) STRICT;
        CREATE INDEX logs_by_app ON logs(app, id);
        """
    ]

    def __init__(self) -> None:
        self._flushes: dict[str, int] = {}

    def functions(self):
        return {"write": self.write}

    def write(self, invocation: Invocation, level, message: str) -> None:
        self.record(invocation, str(level).lower(), message)

    @staticmethod
    def record(invocation: Invocation, level: str, message: str, host: bool = False) -> None:
        """Buffers a line; the host's own notes (errors, stacks) do not count against the app's budget."""
        buf: LogBuffer = invocation.state.setdefault("log", LogBuffer())
        size = len(message)
        if not host and (buf.dropped or buf.bytes + size > invocation.limits.log_kb * 1024):
            buf.dropped += 1
            return
        buf.bytes += 0 if host else size
        buf.lines.append((time.time(), level if level in LEVELS else "info", message))

    @staticmethod
    def map_frames(invocation: Invocation, map_stack: Callable[[str], str]) -> None:
        """Passes the app's lines that hold frames of its bundle (`console.error(err)` logs the
        stack) through `map_stack`, so they name the app's own files as thrown errors do."""
        buf: LogBuffer | None = invocation.state.get("log")
        if buf and any(BUNDLE_FRAME in msg for _, _, msg in buf.lines):
            buf.lines = [(ts, lvl, map_stack(msg) if BUNDLE_FRAME in msg else msg) for ts, lvl, msg in buf.lines]

    def forget(self, conn: apsw.Connection, app: str) -> None:
        conn.execute("DELETE FROM logs WHERE app = ?", (app,))

    def finish(self, invocation: Invocation) -> None:
        self.flush(self.conn, invocation)

    def flush(self, conn: apsw.Connection, invocation: Invocation) -> None:
        """Writes the invocation's buffered lines with `conn` (the connection of the thread it runs on)."""
        buf: LogBuffer | None = invocation.state.get("log")
        if not buf or not (buf.lines or buf.dropped):
            return
        rows = [(invocation.app, ts, lvl, invocation.request_id, msg) for ts, lvl, msg in buf.lines]
        if buf.dropped:
            rows.append(
                (
                    invocation.app,
                    time.time(),
                    "warn",
                    invocation.request_id,
                    f"{buf.dropped} log line{'s' * (buf.dropped != 1)} dropped: over the limit of {invocation.limits.log_kb} KiB per call",
                )
            )
        with transaction(conn):
            if not app_exists(conn, invocation.app):  # removed while it ran: its log went with it
                buf.lines, buf.dropped = [], 0
                return
            conn.executemany(
                "INSERT INTO logs(app, ts, level, request_id, message) VALUES (?, ?, ?, ?, ?)", rows
            )
            flushes = self._flushes[invocation.app] = self._flushes.get(invocation.app, 0) + 1
            if flushes % 100 == 1:
                prune(conn, invocation.app)
        buf.lines, buf.dropped = [], 0  # written: not again by a later flush


def prune(conn: apsw.Connection, app: str) -> None:
    conn.execute(
        "DELETE FROM logs WHERE app = ? AND id <= "
        "(SELECT id FROM logs WHERE app = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (app, app, KEEP_LINES_PER_APP),
    )




def tail(conn: apsw.Connection, app: str, limit: int = 100, after_id: int = 0) -> list[dict]:
    """The newest `limit` lines of an app (or those after `after_id`), oldest first."""
    rows = conn.execute(
        "SELECT id, ts, level, request_id, message FROM logs WHERE app = ? AND id > ? "
        "ORDER BY id DESC LIMIT ?",
        (app, after_id, limit),
    ).fetchall()
    return [
        {"id": r[0], "ts": r[1], "level": r[2], "requestId": r[3], "message": r[4]} for r in reversed(rows)
    ]


def printable(message: str) -> str:
    """An app's log message as a terminal may show it: control characters (escape sequences
    included) escaped, and its further lines indented, so that none passes for a line of its own."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", message).replace("\n", "\n    ")
