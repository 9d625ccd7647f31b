"""Cron state in the cartridge: entries, runs, history.

`cron_entries` holds, per (app, entry), the spec that decides its slots, the
anchor unaligned intervals count from, and `last_slot`: the newest slot that
some scheduler claimed or passed over. A scheduler claims slots by moving
`last_slot` forward with a compare-and-set inside a write transaction, so each
slot goes to exactly one scheduler however many processes share the cartridge.

`cron_runs` has one row per attempt at a slot: `pending` (claimed, waiting for
a thread, for the run before it, or for a retry's backoff), `running`, then
`ok`, `failed`, `timeout` or `skipped`. The owner of an open row is the
scheduler process (`pid:starttime:nonce`); rows of a process that died are
taken over by a live one (pending) or closed as failed and retried (running).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import apsw
import msgspec

from ...cartridge import migrate, transaction
from .schedule import iso, parse

MIGRATIONS = [
    """
    CREATE TABLE cron_entries(
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        anchor INTEGER NOT NULL,
        last_slot INTEGER NOT NULL,
        PRIMARY KEY(app, name)
    ) STRICT;

    CREATE TABLE cron_runs(
        id INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        slot INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        due INTEGER NOT NULL,
        owner TEXT,
        manual INTEGER NOT NULL DEFAULT 0,
        request_id TEXT NOT NULL,
        started_at REAL,
        finished_at REAL,
        error TEXT,
        UNIQUE(app, name, slot, attempt)
    ) STRICT;
    CREATE INDEX cron_runs_open ON cron_runs(status) WHERE status IN ('pending', 'running');
    CREATE INDEX cron_runs_by_entry ON cron_runs(app, name, id);
    """
]
OWNER = "cron"
# Backoff before retry n+1: 1 s, 2 s, 4 s ... at most 5 min.
RETRY_BASE_MS = 1000
RETRY_MAX_MS = 300_000
KEEP_RUNS_PER_ENTRY = 1000


def setup(conn: apsw.Connection) -> None:
    migrate(conn, OWNER, MIGRATIONS)


def spec_of(entry) -> str:
    """What decides an entry's slots: a change of it restarts the entry's count from now."""
    return msgspec.json.encode([entry.schedule.strip(), entry.timezone]).decode()


def new_request_id(now_s: float) -> str:
    return f"cron-{int(now_s * 1000):x}-{secrets.token_hex(4)}"


def backoff_ms(attempt: int) -> int:
    return min(RETRY_BASE_MS << min(attempt - 1, 20), RETRY_MAX_MS)


# -- owners -------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the parenthesised command


def new_owner() -> str:
    pid = os.getpid()
    return f"{pid}:{_start_time(pid)}:{secrets.token_hex(4)}"


def owner_alive(owner: str | None) -> bool:
    """Processes sharing a cartridge share a machine (SQLite's WAL needs that), so /proc tells."""
    if not owner:
        return False
    pid, start, _ = (owner.split(":") + ["", ""])[:3]
    return pid.isdigit() and _start_time(int(pid)) == start


# -- entries ------------------------------------------------------------------
def sync_entries(
    conn: apsw.Connection, wanted: dict[tuple[str, str], str], now_ms: int
) -> dict[tuple[str, str], tuple[int, int]]:
    """Registers new entries, restarts changed ones from now, forgets removed ones; returns the
    (anchor, last_slot) of each wanted entry."""
    with transaction(conn):
        have = {(a, n): (s, anchor, last) for a, n, s, anchor, last in
                conn.execute("SELECT app, name, spec, anchor, last_slot FROM cron_entries")}
        states = {}
        for key, spec in wanted.items():
            if key not in have:
                conn.execute(
                    "INSERT INTO cron_entries(app, name, spec, anchor, last_slot) VALUES (?, ?, ?, ?, ?)",
                    (*key, spec, now_ms, now_ms),
                )
                states[key] = (now_ms, now_ms)
            elif have[key][0] != spec:
                # A slot claimed after this pass read its clock (by another scheduler) stays claimed:
                # moving last_slot back would let the new schedule claim it again.
                last = max(have[key][2], now_ms)
                conn.execute(
                    "UPDATE cron_entries SET spec = ?, anchor = ?, last_slot = ? WHERE app = ? AND name = ?",
                    (spec, now_ms, last, *key),
                )
                states[key] = (now_ms, last)
            else:
                states[key] = have[key][1:]
        gone = [key for key in have if key not in wanted]
        conn.executemany("DELETE FROM cron_entries WHERE app = ? AND name = ?", gone)
    return states


def entry_state(conn: apsw.Connection, app: str, name: str) -> tuple[str, int, int] | None:
    """(spec, anchor, last_slot) of a registered entry."""
    return conn.execute(
        "SELECT spec, anchor, last_slot FROM cron_entries WHERE app = ? AND name = ?", (app, name)
    ).fetchone()


def manual_slot(conn: apsw.Connection, app: str, entry, now_ms: int) -> int:
    """The slot of a run by hand (inside the caller's transaction): now, or the next millisecond
    that no run of the entry holds and that its schedule does not produce, so that neither another
    run by hand nor the scheduler's claim of a slot due at the same instant collides with it."""
    state = entry_state(conn, app, entry.name)
    # An entry not registered with this spec yet counts from its registration, after now.
    anchor = state[1] if state is not None and state[0] == spec_of(entry) else now_ms
    schedule = parse(entry.schedule, entry.timezone, anchor)
    slot = now_ms
    while schedule.latest_at(slot) == slot or conn.execute(
        "SELECT 1 FROM cron_runs WHERE app = ? AND name = ? AND slot = ?", (app, entry.name, slot)
    ).fetchone():
        slot += 1
    return slot


def advance(conn: apsw.Connection, app: str, name: str, seen: int, to: int) -> bool:
    """The compare-and-set: moves last_slot from `seen` to `to`; False if someone else moved it."""
    conn.execute(
        "UPDATE cron_entries SET last_slot = ? WHERE app = ? AND name = ? AND last_slot = ?", (to, app, name, seen)
    )
    return conn.changes() == 1


# -- runs ---------------------------------------------------------------------
@dataclass
class Run:
    id: int
    app: str
    name: str
    slot: int
    attempt: int
    due: int
    request_id: str
    manual: bool = False


def busy(conn: apsw.Connection, app: str, name: str, now_ms: int) -> bool:
    """A run of the entry is running, or claimed and due: what `overlap: skip` skips for."""
    return (
        conn.execute(
            "SELECT 1 FROM cron_runs WHERE app = ? AND name = ? AND "
            "(status = 'running' OR (status = 'pending' AND due <= ?)) LIMIT 1",
            (app, name, now_ms),
        ).fetchone()
        is not None
    )


def pending_count(conn: apsw.Connection, app: str, name: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM cron_runs WHERE app = ? AND name = ? AND status = 'pending'", (app, name)
    ).fetchone()[0]


def insert_run(
    conn: apsw.Connection,
    app: str,
    name: str,
    slot: int,
    attempt: int,
    status: str,
    due: int,
    owner: str | None,
    now_s: float,
    error: str | None = None,
    manual: bool = False,
) -> Run:
    rid = new_request_id(now_s)
    finished = now_s if status == "skipped" else None
    started = now_s if status in ("running", "skipped") else None
    conn.execute(
        "INSERT INTO cron_runs(app, name, slot, attempt, status, due, owner, manual, request_id, started_at, "
        "finished_at, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (app, name, slot, attempt, status, due, owner, int(manual), rid, started, finished, error),
    )
    return Run(conn.last_insert_rowid(), app, name, slot, attempt, due, rid, manual)


def start(conn: apsw.Connection, run: Run, owner: str, now_s: float, serial: bool) -> bool:
    """pending -> running, unless (for serial entries) another run of the entry is running, or an older
    one is due: with several hosts, that one may be another host's, which starts it at its next look
    (a host that finished a run would otherwise start its own next claim at once, every time)."""
    guard = (
        " AND NOT EXISTS (SELECT 1 FROM cron_runs WHERE app = ?3 AND name = ?4 AND (status = 'running'"
        " OR status = 'pending' AND (due < ?5 OR due = ?5 AND id < ?2)))"
        if serial
        else ""
    )
    conn.execute(
        "UPDATE cron_runs SET status = 'running', started_at = ?1 WHERE id = ?2 AND owner = ?6 AND status = 'pending'"
        + guard,
        (now_s, run.id, run.app, run.name, run.due, owner),
    )
    return conn.changes() == 1


def finish(
    conn: apsw.Connection,
    run: Run,
    status: str,
    error: str | None,
    now_s: float,
    retries: int,
    owner: str | None,
) -> Run | None:
    """Records an attempt's outcome (inside the caller's transaction); schedules the next attempt
    (returned) while retries remain."""
    conn.execute(
        "UPDATE cron_runs SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status = 'running'",
        (status, now_s, error, run.id),
    )
    if conn.changes() != 1:  # the app was removed meanwhile, or a scheduler took the run over
        return None
    retry = None
    if status != "ok" and not run.manual and run.attempt <= retries:
        due = int(now_s * 1000) + backoff_ms(run.attempt)
        retry = insert_run(conn, run.app, run.name, run.slot, run.attempt + 1, "pending", due, owner, now_s)
    if run.id % 64 == 0:
        prune(conn, run.app, run.name)
    return retry


def prune(conn: apsw.Connection, app: str, name: str) -> None:
    conn.execute(
        "DELETE FROM cron_runs WHERE app = ? AND name = ? AND status IN ('ok', 'failed', 'timeout', 'skipped') "
        "AND id <= (SELECT id FROM cron_runs WHERE app = ? AND name = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (app, name, app, name, KEEP_RUNS_PER_ENTRY),
    )


def skip(conn: apsw.Connection, run: Run, reason: str, now_s: float) -> None:
    conn.execute(
        "UPDATE cron_runs SET status = 'skipped', error = ?, started_at = coalesce(started_at, ?), finished_at = ? "
        "WHERE id = ? AND status IN ('pending', 'running')",
        (reason, now_s, now_s, run.id),
    )


def recover(conn: apsw.Connection, owner: str, now_s: float, retries_of) -> list[Run]:
    """Takes over the open runs of schedulers that died; returns the runs now pending for `owner`.

    A run that was pending never started: it is taken over as is. A run that
    was running died with its host: that attempt is recorded as failed and the
    next one is scheduled now, if the entry's retries allow (`retries_of(app,
    name)` gives them, or None for an entry that no longer exists).
    """
    rows = conn.execute(
        "SELECT id, app, name, slot, attempt, due, request_id, manual, status, owner FROM cron_runs "
        "WHERE status IN ('pending', 'running')"
    ).fetchall()
    dead = {o for *_, o in rows if o != owner and not owner_alive(o)}
    if not dead:
        return []
    taken = []
    with transaction(conn):
        for rid, app, name, slot, attempt, due, request_id, manual, status, old in rows:
            if old not in dead:
                continue
            run = Run(rid, app, name, slot, attempt, due, request_id, bool(manual))
            if status == "pending":
                conn.execute(
                    "UPDATE cron_runs SET owner = ? WHERE id = ? AND owner IS ? AND status = 'pending'",
                    (owner, rid, old),
                )
                if conn.changes() == 1:
                    taken.append(run)
                continue
            conn.execute(
                "UPDATE cron_runs SET status = 'failed', finished_at = ?, error = ? "
                "WHERE id = ? AND owner IS ? AND status = 'running'",
                (now_s, "the host stopped during the run", rid, old),
            )
            retries = retries_of(app, name)
            if conn.changes() == 1 and not manual and retries is not None and attempt <= retries:
                taken.append(insert_run(conn, app, name, slot, attempt + 1, "pending", int(now_s * 1000), owner, now_s))
    return taken


def last_run(conn: apsw.Connection, app: str, name: str, before_id: int) -> dict | None:
    """The newest finished, not skipped run of the entry before this one (the handler's `event.lastRun`)."""
    row = conn.execute(
        "SELECT slot, attempt, status, started_at, finished_at FROM cron_runs WHERE app = ? AND name = ? AND id < ? "
        "AND status IN ('ok', 'failed', 'timeout') ORDER BY id DESC LIMIT 1",
        (app, name, before_id),
    ).fetchone()
    if row is None:
        return None
    slot, attempt, status, started, finished = row
    return {"scheduledTime": iso(slot), "attempt": attempt, "status": status,
            "startedAt": iso_s(started), "finishedAt": iso_s(finished)}


def iso_s(t: float | None) -> str | None:
    return None if t is None else iso(round(t * 1000))


# -- reading ------------------------------------------------------------------
def history(conn: apsw.Connection, app: str, name: str | None = None, limit: int = 20) -> list[dict]:
    """Runs newest first, each with its log lines (linked by request id)."""
    where, params = ("app = ?", [app]) if name is None else ("app = ? AND name = ?", [app, name])
    rows = conn.execute(
        "SELECT id, name, slot, attempt, status, manual, request_id, started_at, finished_at, error, due "
        f"FROM cron_runs WHERE {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    out = []
    for rid, nm, slot, attempt, status, manual, request_id, started, finished, error, due in rows:
        out.append({
            "id": rid,
            "name": nm,
            "scheduledTime": iso(slot),
            "attempt": attempt,
            "status": status,
            "startedAt": iso_s(started),
            "finishedAt": iso_s(finished),
            "durationMs": None if started is None or finished is None else round((finished - started) * 1000, 1),
            "error": error,
            "manual": bool(manual),
            "requestId": request_id,
            "dueAt": iso(due) if status == "pending" else None,
            "logs": _logs(conn, app, request_id),
        })
    return out


HISTORY_LOG_LINES = 200  # of a run, in its history row: the first and the last half, a note between


def _logs(conn: apsw.Connection, app: str, request_id: str) -> list[dict]:
    query = "SELECT ts, level, message FROM logs WHERE app = ? AND request_id = ? ORDER BY id {} LIMIT ?"
    half = HISTORY_LOG_LINES // 2
    try:
        rows = conn.execute(query.format("ASC"), (app, request_id, HISTORY_LOG_LINES + 1)).fetchall()
        if len(rows) > HISTORY_LOG_LINES:  # the end holds how a failing run failed
            total = conn.execute("SELECT count(*) FROM logs WHERE app = ? AND request_id = ?", (app, request_id)).fetchone()[0]
            last = conn.execute(query.format("DESC"), (app, request_id, half)).fetchall()[::-1]
            note = (last[0][0], "info", f"({total - 2 * half} lines left out here: `fazt-host logs {app}` has them all)")
            rows = rows[:half] + [note] + last
    except apsw.SQLError:  # no log table yet: nothing was ever logged
        return []
    return [{"ts": iso_s(ts), "level": lvl, "message": msg} for ts, lvl, msg in rows]


def last_outcome(conn: apsw.Connection, app: str, name: str) -> dict | None:
    row = conn.execute(
        "SELECT slot, attempt, status, finished_at, error FROM cron_runs WHERE app = ? AND name = ? "
        "AND status != 'pending' ORDER BY id DESC LIMIT 1",
        (app, name),
    ).fetchone()
    if row is None:
        return None
    slot, attempt, status, finished, error = row
    return {"scheduledTime": iso(slot), "attempt": attempt, "status": status, "finishedAt": iso_s(finished),
            "error": error}


def forget(conn: apsw.Connection, app: str) -> None:
    """Drops a removed app's entries and history (a later app of the same name starts clean).

    Runs inside the removal's transaction, with the tables set up before it.
    """
    conn.execute("DELETE FROM cron_entries WHERE app = ?", (app,))
    conn.execute("DELETE FROM cron_runs WHERE app = ?", (app,))
