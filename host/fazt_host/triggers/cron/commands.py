"""`fazt-host cron APP`, `cron run APP NAME`, `cron history APP [NAME]`."""

from __future__ import annotations

import json
import sys
import time

from ...apps import load_active
from ...capabilities.log import printable
from . import store
from .schedule import iso, parse

USAGE = "fazt-host cron APP | cron run APP NAME | cron history APP [NAME]  [--json]"


def _deployed(conn, app: str):
    deployed = load_active(conn).get(app)
    if deployed is None:
        raise LookupError(f"no app named {app!r}")
    return deployed


def _entry(deployed, name: str):
    for entry in deployed.manifest.cron:
        if entry.name == name:
            return entry
    names = ", ".join(e.name for e in deployed.manifest.cron) or "none"
    raise LookupError(f"{deployed.name} has no cron entry {name!r} (entries: {names})")


def listing(conn, app: str) -> list[dict]:
    """Each entry of the active version with its next 5 fire times and last outcome."""
    store.setup(conn)
    deployed = _deployed(conn, app)
    now_ms = int(time.time() * 1000)
    rows = []
    for entry in deployed.manifest.cron:
        state = store.entry_state(conn, app, entry.name)
        registered = state is not None and state[0] == store.spec_of(entry)
        # An entry the scheduler has not registered yet starts counting when it does (about now).
        anchor, last_slot = (state[1], state[2]) if registered else (now_ms, now_ms)
        schedule = parse(entry.schedule, entry.timezone, anchor)
        rows.append({
            "name": entry.name,
            "schedule": entry.schedule,
            "timezone": entry.timezone,
            "file": entry.file,
            "catchUp": entry.catch_up,
            "overlap": entry.overlap,
            "timeout": entry.timeout,
            "retries": entry.retries,
            "next": [iso(t) for t in schedule.upcoming(max(last_slot, now_ms), 5)],
            "last": store.last_outcome(conn, app, entry.name),
        })
    return rows


def run_now(host, app: str, name: str, clock=None) -> dict:
    """Runs an entry once, now, in this process (one attempt, no retries); returns its history row."""
    from .scheduler import RealClock, execute

    clock = clock or RealClock()
    store.setup(host.conn)
    deployed = _deployed(host.conn, app)
    entry = _entry(deployed, name)
    host.start_ticker()
    now = clock.now()
    with store.transaction(host.conn):
        slot = store.manual_slot(host.conn, app, entry, int(now * 1000))
        run = store.insert_run(host.conn, app, name, slot, 1, "running", slot, store.new_owner(), now, manual=True)
    last = store.last_run(host.conn, app, name, run.id)
    status, error = execute(host, deployed, entry, run, last)
    with store.transaction(host.conn):
        store.finish(host.conn, run, status, error, clock.now(), 0, None)
    return next(r for r in store.history(host.conn, app, name, 50) if r["id"] == run.id)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2))


def _print_run(r: dict) -> None:
    """A run's line, then its log lines."""
    took = f"{r['durationMs']:.0f} ms" if r["durationMs"] is not None else "-"
    extra = f"  {r['error']}" if r["error"] else ""
    manual = " (run by hand)" if r["manual"] else ""
    print(f"{r['scheduledTime']}  {r['name']:<20} #{r['attempt']} {r['status']:<8} {took:>9}  "
          f"[{r['requestId']}]{manual}{extra}")
    for line in r["logs"]:
        print(f"  {line['level']:<5} {printable(line['message'])}")


def main(args, connect, make_host) -> int:
    """Dispatches `fazt-host cron ...`; `connect()` opens an existing cartridge."""
    words = args.words
    if words[0] in ("run", "history") and len(words) > 1:
        command, rest = words[0], words[1:]
    else:
        command, rest = "list", words
    if (command == "list" and len(rest) != 1) or (command == "run" and len(rest) != 2) or len(rest) > 2:
        print(f"usage: {USAGE}", file=sys.stderr)
        return 2
    try:
        if command == "run":
            row = run_now(make_host(), *rest)
            if args.json:
                _print_json(row)
            else:
                _print_run(row)
            return 0 if row["status"] == "ok" else 1
        conn = connect()
        store.setup(conn)
        if command == "history":
            deployed = _deployed(conn, rest[0])
            rows = store.history(conn, rest[0], rest[1] if len(rest) > 1 else None, args.lines)
            if len(rest) > 1 and not rows:
                _entry(deployed, rest[1])  # an entry removed since keeps its history: only a name never run is refused
            if args.json:
                _print_json(rows)
            elif not rows:
                print("no runs yet", file=sys.stderr)
            for r in [] if args.json else rows:
                _print_run(r)
            return 0
        rows = listing(conn, rest[0])
        if args.json:
            _print_json(rows)
            return 0
        if not rows:
            print(f"{rest[0]} has no cron entries (add \"cron\" to its fazt.json)", file=sys.stderr)
        for r in rows:
            last = r["last"]
            outcome = f"last {last['status']} for {last['scheduledTime']}" if last else "not run yet"
            print(f"{r['name']:<20} {r['schedule']:<18} {r['timezone']:<16} {outcome}")
            print(f"{'':<20} next: {', '.join(r['next'])}")
        return 0
    except LookupError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 1
