"""JS-cron: schedules (DST, intervals), the scheduler's semantics under a fake clock, and real hosts.

The semantics (catchUp, overlap, retries, exactly-once between two schedulers,
recovery from a dead host) run in-process with a clock the tests move; the
guest runs for real every time. The contract seen from outside (deploy
refusals, `fazt-host up` running schedules, the CLI, two hosts on one
cartridge, a host killed during a run) runs against real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import apsw
import pytest

from conftest import FAZT, TEST_APPS, Cartridge
from fazt_host.config import HostSettings, ManifestError, decode_manifest
from fazt_host.host import Host, cron_scheduler
from fazt_host import serve as serve_module
from fazt_host.serve import SchedulerProcess, died, restart_delay
from fazt_host.triggers.cron import scheduler as scheduler_module
from fazt_host.triggers.cron import store
from fazt_host.triggers.cron.commands import run_now
from fazt_host.triggers.cron.scheduler import FakeClock
from fazt_host.triggers.cron.schedule import ScheduleError, iso, parse

APP = TEST_APPS / "cronapp"
BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc


def ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- schedules ------------------------------------------------------------------
def fires(schedule, start: datetime, end: datetime) -> list[datetime]:
    out, t = [], ms(start)
    while True:
        t = schedule.next_after(t)
        if t > ms(end):
            return out
        out.append(datetime.fromtimestamp(t / 1000, UTC))


def test_dst_spring_forward_runs_once_and_fall_back_does_not_run_twice():
    daily = parse("30 2 * * *", "Europe/Berlin")
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 never happens: it runs once, at the change.
    spring = fires(daily, utc(2026, 3, 27, 12), utc(2026, 3, 31, 12))
    assert [f.astimezone(BERLIN).strftime("%d %H:%M") for f in spring] == ["28 02:30", "29 03:00", "30 02:30", "31 02:30"]
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice: it runs at the first only.
    fall = fires(daily, utc(2026, 10, 23, 12), utc(2026, 10, 27, 12))
    assert [f.strftime("%d %H:%M") for f in fall] == ["24 00:30", "25 00:30", "26 01:30", "27 01:30"]
    # prev_before agrees with next_after across the change (catch-up walks backwards).
    assert daily.prev_before(ms(utc(2026, 10, 26, 0))) == ms(utc(2026, 10, 25, 0, 30))
    # An every-hour job keeps firing every real hour through both 02:xx hours.
    hourly = fires(parse("0 * * * *", "Europe/Berlin"), utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 3, 30))
    assert [f.strftime("%H:%M") for f in hourly] == ["00:00", "01:00", "02:00", "03:00"]


def test_schedule_shapes():
    start = utc(2026, 1, 5, 6, 59, 58)  # a Monday
    assert [f.strftime("%H:%M:%S") for f in fires(parse("*/20 * * * * *"), start, utc(2026, 1, 5, 7, 0, 41))] == [
        "07:00:00", "07:00:20", "07:00:40"]
    assert fires(parse("0 7 * * 1-5", "Europe/Berlin"), start, utc(2026, 1, 5, 7)) == []
    assert fires(parse("0 7 * * 1-5", "Europe/Berlin"), start, utc(2026, 1, 6, 7))[0] == utc(2026, 1, 6, 6)
    assert fires(parse("@hourly"), start, utc(2026, 1, 5, 8, 30)) == [utc(2026, 1, 5, 7), utc(2026, 1, 5, 8)]
    assert fires(parse("@daily", "Asia/Tokyo"), start, utc(2026, 1, 6, 14)) == [utc(2026, 1, 5, 15)]
    # Unaligned intervals count from their anchor (registration), aligned ones from local midnight.
    every = parse("every 90m", anchor=ms(utc(2026, 1, 5, 6, 10)))
    assert fires(every, start, utc(2026, 1, 5, 10)) == [utc(2026, 1, 5, 7, 40), utc(2026, 1, 5, 9, 10)]
    assert every.prev_before(ms(utc(2026, 1, 5, 7, 40))) is None  # the anchor itself is not a slot
    aligned = parse("every 15m aligned", "Asia/Kolkata")  # UTC+05:30: local quarters are UTC quarters
    assert fires(aligned, start, utc(2026, 1, 5, 7, 31)) == [utc(2026, 1, 5, 7), utc(2026, 1, 5, 7, 15), utc(2026, 1, 5, 7, 30)]
    seven = parse("every 7h aligned", "UTC")  # restarts at each midnight
    assert [f.hour for f in fires(seven, utc(2026, 1, 5, 20), utc(2026, 1, 6, 15))] == [21, 0, 7, 14]
    assert iso(ms(utc(2026, 1, 5, 7, 0, 0, 5000))) == "2026-01-05T07:00:00.005Z"


def manifest(*entries: dict, name: str = "cronapp", **extra) -> dict:
    return {"name": name, "limits": {"timeoutMs": 2000, "memoryMb": 32}, "cron": list(entries), **extra}


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "digest", "schedule": "0 7 * * 1-9"}, "cron entry 'digest': invalid cron expression"),
        ({"name": "digest", "schedule": "7 * *"}, "cron entry 'digest': invalid schedule"),
        ({"name": "digest", "schedule": "@reboot"}, "cron entry 'digest': unknown macro"),
        ({"name": "digest", "schedule": "every 5 parsecs"}, "cron entry 'digest': invalid interval"),
        ({"name": "digest", "schedule": "@daily", "timezone": "Mars/Olympus"}, "cron entry 'digest': unknown timezone"),
        ({"name": "digest", "schedule": "@daily", "timeout": "5 fortnights"}, "cron entry 'digest': invalid duration"),
        ({"name": "digest", "schedule": "@daily", "catchUp": "most"}, "cron entry 'digest': catchUp must be one of"),
        ({"name": "digest", "schedule": "@daily", "overlap": "stack"}, "cron entry 'digest': overlap must be one of"),
        ({"name": "digest", "schedule": "@daily", "file": "../x.js"}, "cron entry 'digest': file must be a relative"),
        ({"name": "digest", "schedule": "@daily", "colour": "red"}, "unknown field `colour`"),
    ],
)
def test_bad_entries_are_refused_naming_the_entry(entry, message):
    with pytest.raises(ManifestError, match=message.replace("(", r"\(")):
        decode_manifest(json.dumps(manifest(entry)).encode())


def test_duplicate_entry_names_are_refused():
    with pytest.raises(ManifestError, match="unique"):
        decode_manifest(json.dumps(manifest({"name": "a", "schedule": "@daily"}, {"name": "a", "schedule": "@hourly"})).encode())


# -- the scheduler in-process, with a clock the tests move -------------------------
T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC).timestamp()


class World:
    """A cartridge with cronapp deployed from a given manifest, and schedulers over it."""

    def __init__(self, tmp_path: Path, cache: Path, start: float = T0):
        self.tmp = tmp_path
        self.cart = Cartridge(tmp_path / "fazt.db", cache)
        self.settings = HostSettings(cartridge=str(self.cart.path), cache=str(cache))
        self.clock = FakeClock(start)
        self.schedulers = []

    def deploy(self, *entries: dict, name: str = "cronapp", check: bool = True, **extra):
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(manifest(*entries, name=name, **extra)))
        return self.cart.cli("deploy", str(APP), "--manifest", str(path), check=check)

    def scheduler(self, threads: int = 2):
        s = cron_scheduler(self.settings, self.clock, threads)
        self.schedulers.append(s)
        return s

    def at(self, seconds: float, *schedulers) -> None:
        """Moves the clock to T0 + seconds and lets every scheduler claim and finish what is due."""
        self.clock.set(T0 + seconds)
        for s in schedulers:
            s.settle()

    def runs(self, app: str = "cronapp", name: str | None = None) -> list[dict]:
        conn = self.schedulers[0].conn
        return list(reversed(store.history(conn, app, name, 10_000)))

    def close(self) -> None:
        for s in self.schedulers:
            s.stop(0)


@pytest.fixture
def world(tmp_path, cache_dir):
    w = World(tmp_path, cache_dir)
    yield w
    w.close()


def slots(runs: list[dict]) -> list[str]:
    return [r["scheduledTime"][11:19] for r in runs]


def test_interval_runs_each_slot_once_with_event_and_logs(world):
    world.deploy({"name": "tick", "schedule": "every 10s", "file": "cron/tick.js"}, {"name": "own", "schedule": "every 10s"},
                 env={"K": "v"})
    s = world.scheduler()
    world.at(0, s)
    assert world.runs() == []
    for t in (5, 10, 15, 20, 29.9, 30):
        world.at(t, s)
    tick = world.runs(name="tick")
    assert slots(tick) == ["12:00:10", "12:00:20", "12:00:30"]
    assert {r["status"] for r in tick} == {"ok"} and {r["attempt"] for r in tick} == {1}
    event = json.loads(tick[1]["logs"][0]["message"])
    assert event["file"] == "tick" and event["requestId"] == tick[1]["requestId"] and event["app"] == "cronapp"
    assert event["event"]["scheduledTime"] == "2026-05-04T12:00:20.000Z" and event["event"]["attempt"] == 1
    assert event["event"]["lastRun"]["scheduledTime"] == "2026-05-04T12:00:10.000Z"
    assert event["event"]["lastRun"]["status"] == "ok"
    own = json.loads(world.runs(name="own")[0]["logs"][0]["message"])
    assert own["handler"] == "scheduled" and own["event"]["name"] == "own" and own["env"] == {"K": "v"}
    assert own["url"] == "/cronapp/storage/v1/object/public/files/k"  # before: on the build's warm-up origin


@pytest.mark.parametrize("policy, expected", [("none", []), ("one", ["12:10:00"]), ("all", [f"12:{m:02d}:00" for m in range(1, 11)])])
def test_catch_up_after_downtime(world, policy, expected):
    world.deploy({"name": "job", "schedule": "* * * * *", "catchUp": policy})
    first = world.scheduler()
    world.at(0, first)
    first.stop(0)  # the host goes down for ten minutes
    world.clock.set(T0 + 630)
    second = world.scheduler()
    world.at(630, second)
    assert slots(world.runs()) == expected
    world.at(660, second)  # on-time slots run whatever the policy
    assert slots(world.runs())[len(expected):] == ["12:11:00"]


def test_overlap_skip_queue_allow(world):
    world.deploy({"name": "slow-skip", "schedule": "every 1s"}, {"name": "slow-queue", "schedule": "every 1s", "overlap": "queue"},
                 {"name": "slow-allow", "schedule": "every 1s", "overlap": "allow"})
    s = world.scheduler(threads=5)  # up to 4 runs of one app at once
    world.at(0, s)
    world.clock.set(T0 + 1)
    s.step()  # three slow runs start (1.5 s of real time each)
    world.clock.set(T0 + 2)
    s.step()  # the next slot of each comes due while they run
    time.sleep(0.2)
    s.step()
    running = {r["name"]: r["status"] for r in store.history(s.conn, "cronapp", None, 10) if r["scheduledTime"].endswith("02.000Z")}
    assert running == {"slow-skip": "skipped", "slow-queue": "pending", "slow-allow": "running"}
    world.at(2.5, s)
    world.at(2.6, s)
    skip, queue_, allow = (world.runs(name=n) for n in ("slow-skip", "slow-queue", "slow-allow"))
    assert [r["status"] for r in skip] == ["ok", "skipped"]
    assert "overlap: skip" in skip[1]["error"]
    assert [r["status"] for r in queue_] == ["ok", "ok"] and [r["status"] for r in allow] == ["ok", "ok"]
    # queue waits for the run before it, allow does not
    assert queue_[1]["startedAt"] >= queue_[0]["finishedAt"]
    assert allow[1]["startedAt"] < allow[0]["finishedAt"]


def test_with_two_threads_an_app_runs_one_at_a_time_and_a_waiting_run_counts_as_in_progress(world):
    world.deploy({"name": "slow-a", "schedule": "every 1s"}, {"name": "slow-b", "schedule": "every 1s"})
    s = world.scheduler(threads=2)  # one app holds at most one of them
    world.at(0, s)
    world.clock.set(T0 + 1)
    s.step()  # one slow run starts (1.5 s of real time), the other waits for the app's thread
    world.clock.set(T0 + 2)
    s.step()  # the next slot of each comes due meanwhile

    def statuses(second: int) -> list[str]:
        return sorted(r["status"] for r in store.history(s.conn, "cronapp", None, 10)
                      if r["scheduledTime"].endswith(f"0{second}.000Z"))

    assert statuses(1) == ["pending", "running"]
    assert statuses(2) == ["skipped", "skipped"]  # also the slot of the entry whose run only waits
    world.at(2.5, s)
    first, second = sorted((r for r in world.runs() if r["status"] == "ok"), key=lambda r: r["startedAt"])
    assert second["startedAt"] >= first["finishedAt"]


def test_apps_with_a_backlog_take_turns_with_the_others(world):
    for name in ("one", "two"):  # runs of 1.5 s every second, side by side: a backlog that only grows
        world.deploy({"name": "slow", "schedule": "every 1s", "overlap": "allow"}, name=name)
    world.deploy({"name": "tick", "schedule": "every 3s"}, name="other")
    s = world.scheduler(threads=2)  # each app may hold one
    world.at(0, s)
    for t in (1, 2, 3):
        world.clock.set(T0 + t)
        s.step()  # one@1 and two@1 run; their slots 2 and 3 and other's 3 wait for a thread
    time.sleep(1.8)  # the first two runs end
    s.step()

    def status(app: str, second: int) -> str:
        return next(r["status"] for r in store.history(s.conn, app, None, 10) if r["scheduledTime"].endswith(f"0{second}.000Z"))

    # before: one@2 and two@2 (older) took both threads, and other waited behind the backlog
    assert status("other", 3) != "pending" and "pending" in (status("one", 2), status("two", 2))
    world.at(8, s)


def test_failures_are_retried_with_backoff_then_marked_failed(world):
    world.deploy({"name": "boom", "schedule": "every 1h", "retries": 2})
    s = world.scheduler()
    world.at(0, s)
    world.at(3600, s)
    world.at(3600.5, s)  # the first retry waits 1 s
    assert [r["attempt"] for r in world.runs()] == [1, 2]
    assert world.runs()[1]["status"] == "pending" and world.runs()[1]["dueAt"] == "2026-05-04T13:00:01.000Z"
    world.at(3601, s)
    world.at(3603, s)  # the second waits 2 s more
    world.at(3700, s)
    runs = world.runs()
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert {r["scheduledTime"] for r in runs} == {"2026-05-04T13:00:00.000Z"}
    assert "the handler threw Error: boom at 2026-05-04T13:00:00.000Z attempt 3" in runs[2]["error"]
    stack = next(line["message"] for line in runs[2]["logs"] if "boom at" in line["message"])  # the stack went to the log
    assert "\nscheduled@index.js:22:" in stack and "initializer.js" not in stack, stack
    assert store.last_outcome(s.conn, "cronapp", "boom")["status"] == "failed"


def test_hang_and_memory_bomb_are_recorded_and_other_apps_keep_their_schedule(world):
    world.deploy({"name": "hang", "schedule": "every 10s", "timeout": "5s", "retries": 1},
                 {"name": "bomb", "schedule": "every 10s"})
    world.deploy({"name": "tick", "schedule": "every 1s"}, name="other")
    s = world.scheduler(threads=2)
    world.at(0, s)
    world.clock.set(T0 + 10)
    s.step()  # cronapp's hang takes one thread (its bomb waits: one app keeps a thread free)
    started = time.monotonic()
    t = 10.0
    while not [r for r in world.runs("other") if r["status"] == "ok"] and time.monotonic() - started < 4:
        t += 0.2
        world.clock.set(T0 + t)
        s.step()
        time.sleep(0.2)
    assert [r for r in world.runs("other") if r["status"] == "ok"], "the other app waited for the hung job"
    assert time.monotonic() - started < 4.5  # well before the hung job's 5 s timeout
    for t in (11, 12, 13, 14):
        world.at(t, s)
    hang, bomb = world.runs(name="hang"), world.runs(name="bomb")
    assert [(r["attempt"], r["status"]) for r in hang] == [(1, "timeout"), (2, "timeout")]
    assert "time limit of 5000 ms" in hang[0]["error"]
    assert [r["status"] for r in bomb] == ["failed"] and "out of memory" in bomb[0]["error"]
    assert [r["status"] for r in world.runs("other")][:4] == ["ok"] * 4


def test_two_schedulers_on_one_cartridge_claim_each_slot_once(world):
    world.deploy({"name": "a", "schedule": "every 1s"}, {"name": "b", "schedule": "*/2 * * * * *"})
    one, two = world.scheduler(), world.scheduler()
    world.at(0, one, two)
    for i in range(1, 41):
        world.clock.set(T0 + i / 2)
        if i % 3 == 0:  # racing each other for the same slots
            threads = [threading.Thread(target=s.step) for s in (one, two)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:  # one after the other, each first in turn: the second finds the slots taken
            for s in (one, two) if i % 3 == 1 else (two, one):
                s.step()
        for s in (one, two):
            s.drain()
    world.at(20.4, one, two)  # runs still waiting for a thread
    runs = world.runs()
    keys = [(r["name"], r["scheduledTime"]) for r in runs]
    assert len(keys) == len(set(keys)) == 20 + 10
    assert {r["status"] for r in runs} == {"ok"}
    starts = [json.loads(line["message"])["event"]["scheduledTime"] for r in runs for line in r["logs"]]
    assert len(starts) == 30  # each handler ran once per slot
    owners = {row[0] for row in one.conn.execute("SELECT owner FROM cron_runs")}
    assert len(owners) == 2, "both schedulers took part"


def test_runs_of_a_dead_scheduler_are_taken_over_or_retried(world):
    world.deploy({"name": "job", "schedule": "@daily", "retries": 1}, {"name": "once", "schedule": "@daily"})
    s = world.scheduler()
    world.at(0, s)
    dead = "999999999:0:dead"
    with store.transaction(s.conn):
        running = store.insert_run(s.conn, "cronapp", "job", ms(utc(2026, 5, 4)), 1, "running", 0, dead, T0)
        pending = store.insert_run(s.conn, "cronapp", "job", ms(utc(2026, 5, 3)), 1, "pending", 0, dead, T0)
        store.insert_run(s.conn, "cronapp", "once", ms(utc(2026, 5, 4)), 1, "running", 0, dead, T0)
    world.at(1, s)
    rows = {(r["name"], r["scheduledTime"][:10], r["attempt"]): r for r in world.runs()}
    assert rows[("job", "2026-05-04", 1)]["status"] == "failed"
    assert rows[("job", "2026-05-04", 1)]["error"] == "the host stopped during the run"
    assert rows[("job", "2026-05-04", 2)]["status"] == "ok"  # retried once, as the entry allows
    assert rows[("job", "2026-05-03", 1)]["status"] == "ok"  # never started: taken over as is
    assert rows[("once", "2026-05-04", 1)]["status"] == "failed"  # no retries: failed, visible, not rerun
    assert len(rows) == 4 and running.id and pending.id


def test_redeploy_changes_take_effect_at_once_and_removal_stops(world):
    world.deploy({"name": "job", "schedule": "every 1h"}, {"name": "gone", "schedule": "every 1h"})
    s = world.scheduler()
    world.at(0, s)
    world.clock.set(T0 + 100)
    world.deploy({"name": "job", "schedule": "every 10s"})  # `gone` removed, `job` faster from now
    world.at(100, s)
    world.at(110, s)
    world.at(120, s)
    assert slots(world.runs(name="job")) == ["12:01:50", "12:02:00"]
    world.at(3600, s)
    assert world.runs(name="gone") == []
    world.cart.cli("remove", "cronapp")
    world.at(3700, s)
    assert s.conn.execute("SELECT count(*) FROM cron_entries").fetchone()[0] == 0
    assert s.conn.execute("SELECT count(*) FROM cron_runs").fetchone()[0] == 0


def test_fall_back_day_runs_a_daily_berlin_job_once(world):
    world.clock.set(datetime(2026, 10, 23, 12, tzinfo=UTC).timestamp())
    global T0
    saved, T0 = T0, world.clock.now()
    try:
        world.deploy({"name": "night", "schedule": "30 2 * * *", "timezone": "Europe/Berlin"})
        s = world.scheduler()
        for hour in range(0, 4 * 24 * 2):  # four days in half-hour steps
            world.at(hour * 1800, s)
        assert [r["scheduledTime"][:16] for r in world.runs()] == [
            "2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30", "2026-10-27T01:30"]
    finally:
        T0 = saved


def test_a_failed_claim_leaves_its_slots_for_the_next_pass(world, monkeypatch):
    world.deploy({"name": "a", "schedule": "every 10s"}, {"name": "b", "schedule": "every 10s"})
    s = world.scheduler()
    world.at(0, s)
    real, calls = store.insert_run, []

    def locked_on_second(*args, **kwargs):  # the first entry's claim went through, then the write fails
        calls.append(args)
        if len(calls) == 2:
            raise apsw.BusyError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "insert_run", locked_on_second)
    world.clock.set(T0 + 10)
    with pytest.raises(apsw.BusyError):
        s.step()
    monkeypatch.setattr(store, "insert_run", real)
    assert world.runs() == []  # rolled back whole
    world.at(10.5, s)  # the next pass claims both slots
    world.at(20, s)
    for name in ("a", "b"):
        assert slots(world.runs(name=name)) == ["12:00:10", "12:00:20"]
        assert {r["status"] for r in world.runs(name=name)} == {"ok"}


def test_a_failed_start_leaves_its_runs_for_the_next_pass(world, monkeypatch):
    world.deploy({"name": "job", "schedule": "every 10s"})
    s = world.scheduler()
    world.at(0, s)

    def locked(*args, **kwargs):
        raise apsw.BusyError("database is locked")

    monkeypatch.setattr(store, "start", locked)
    world.clock.set(T0 + 10)
    with pytest.raises(apsw.BusyError):
        s.step()  # the slot is claimed, its run cannot start
    monkeypatch.undo()
    assert [r["status"] for r in world.runs()] == ["pending"]
    world.at(10.5, s)
    assert [(r["scheduledTime"][11:19], r["status"]) for r in world.runs()] == [("12:00:10", "ok")]

def test_runs_by_hand_take_a_slot_of_their_own(world):
    world.deploy({"name": "job", "schedule": "every 10s"})
    s = world.scheduler()
    world.at(0, s)
    host = Host(world.settings)
    world.clock.set(T0 + 10)  # by hand twice at the instant the slot comes due, before the scheduler claims it
    first = run_now(host, "cronapp", "job", world.clock)
    second = run_now(host, "cronapp", "job", world.clock)
    world.at(10, s)
    world.at(20, s)
    third = run_now(host, "cronapp", "job", world.clock)  # after the scheduler claimed this instant's slot
    assert [first["scheduledTime"], second["scheduledTime"], third["scheduledTime"]] == [
        "2026-05-04T12:00:10.001Z", "2026-05-04T12:00:10.002Z", "2026-05-04T12:00:20.001Z"]
    rows = json.loads(world.cart.cli("cron", "history", "cronapp", "job", "--json").stdout)
    assert [(r["scheduledTime"], r["manual"], r["status"], r["attempt"]) for r in rows] == [
        ("2026-05-04T12:00:20.001Z", True, "ok", 1),
        ("2026-05-04T12:00:20.000Z", False, "ok", 1),
        ("2026-05-04T12:00:10.000Z", False, "ok", 1),
        ("2026-05-04T12:00:10.002Z", True, "ok", 1),
        ("2026-05-04T12:00:10.001Z", True, "ok", 1),
    ]
    events = [json.loads(r["logs"][0]["message"])["event"] for r in rows]
    assert [e["scheduledTime"] for e in events] == [r["scheduledTime"] for r in rows]  # the key the handler sees
    text = world.cart.cli("cron", "history", "cronapp", "job", "-n", "1").stdout.splitlines()
    assert text[0].startswith("2026-05-04T12:00:20.001Z") and text[1].split(None, 1) == ["info", rows[0]["logs"][0]["message"]]


def test_a_restarted_count_never_fires_the_old_counts_slot(world):
    world.deploy({"name": "job", "schedule": "every 10s"})
    one, two = world.scheduler(), world.scheduler()
    world.at(0, one, two)  # both count from 12:00:00
    world.clock.set(T0 + 3)
    world.deploy({"name": "job", "schedule": "every 20s"})
    world.at(3, one)
    world.clock.set(T0 + 4)
    world.deploy({"name": "job", "schedule": "every 10s"})  # and back: the count restarts at 12:00:04
    world.at(4, one)
    for t in (10, 14, 20, 24):
        world.at(t, two)  # the one that still had the old count
    assert slots(world.runs()) == ["12:00:14", "12:00:24"]
    # The same when the count restarts between a pass's look at the apps and its claim.
    with store.transaction(two.conn):
        two.conn.execute("UPDATE cron_entries SET anchor = ?, last_slot = ?", (int((T0 + 27) * 1000),) * 2)
    for t in (30, 34, 37):
        world.at(t, two)
    assert slots(world.runs()) == ["12:00:14", "12:00:24", "12:00:37"]


def test_a_changed_spec_never_moves_the_claimed_slot_back(world):
    world.deploy({"name": "job", "schedule": "*/10 * * * * *"})
    one, two = world.scheduler(), world.scheduler()
    world.at(0, one, two)
    world.at(10, one)  # one claims 12:00:10
    world.deploy({"name": "job", "schedule": "*/10 * * * * *", "timezone": "Etc/UTC"})  # new spec, same slots
    two.refresh(T0 + 9.9)  # a pass of two's that read the clock before one's claim
    world.at(10, two, one)
    world.at(20, two, one)
    assert slots(world.runs()) == ["12:00:10", "12:00:20"]


def test_catch_up_all_past_its_cap_records_the_slots_it_drops(world, monkeypatch):
    monkeypatch.setattr(scheduler_module, "CATCH_UP_MAX", 4)
    world.deploy({"name": "job", "schedule": "* * * * *", "catchUp": "all"})
    first = world.scheduler()
    world.at(0, first)
    first.stop(0)  # down for ten minutes
    world.clock.set(T0 + 630)
    second = world.scheduler()
    world.at(630, second)
    runs = world.runs()
    assert [(r["scheduledTime"][11:16], r["status"]) for r in runs] == [
        ("12:06", "skipped"), ("12:07", "ok"), ("12:08", "ok"), ("12:09", "ok"), ("12:10", "ok")]
    assert "missed slots since 2026-05-04T12:01:00.000Z" in runs[0]["error"]
    assert "catchUp: all runs the newest 4" in runs[0]["error"]


def test_queue_cap_records_the_slots_it_turns_away(world):
    world.deploy({"name": "job", "schedule": "* * * * *", "catchUp": "all", "overlap": "queue"})
    first = world.scheduler()
    world.at(0, first)
    first.stop(0)
    world.clock.set(T0 + 930)  # fifteen missed slots: ten may wait
    second = world.scheduler()
    world.at(930, second)
    runs = world.runs()
    assert len(runs) == 15 and [r["status"] for r in runs] == ["ok"] * 10 + ["skipped"] * 5
    assert {r["error"] for r in runs[10:]} == {"10 runs were already waiting (overlap: queue)"}


@pytest.mark.parametrize("overlap", ["skip", "queue"])
def test_a_backlog_turned_away_whole_is_recorded_slot_by_slot(world, overlap):
    world.deploy({"name": "job", "schedule": "* * * * *", "catchUp": "all", "overlap": overlap})
    first = world.scheduler()
    world.at(0, first)
    first.stop(0)
    world.clock.set(T0 + 210)
    second = world.scheduler()
    elsewhere = store.new_owner()  # a live scheduler that holds a running run, or a full queue
    yesterday = ms(utc(2026, 5, 3))
    with store.transaction(second.conn):
        if overlap == "skip":
            store.insert_run(second.conn, "cronapp", "job", yesterday, 1, "running", yesterday, elsewhere, T0)
        else:
            for i in range(10):
                store.insert_run(second.conn, "cronapp", "job", yesterday + i, 1, "pending", ms(utc(2027, 1, 1)),
                                 elsewhere, T0)
    world.at(210, second)
    backlog = [r for r in world.runs() if r["scheduledTime"] >= "2026-05-04"]
    assert [(r["scheduledTime"][11:16], r["status"]) for r in backlog] == [
        ("12:01", "skipped"), ("12:02", "skipped"), ("12:03", "skipped")]
    assert all(f"overlap: {overlap}" in r["error"] for r in backlog)


def test_a_queued_entry_runs_its_oldest_due_run_first_whichever_host_claimed_it(world):
    """Two hosts: the one that just finished a run used to start its own next claim at once, every
    time, while the other's older claim waited (slots ran out of order, some 90 s late)."""
    world.deploy({"name": "job", "schedule": "* * * * *", "overlap": "queue"})
    conn = world.scheduler().conn
    here, elsewhere = store.new_owner(), store.new_owner()
    now = T0 + 600

    def at(seconds: float) -> int:  # ms since the epoch, `seconds` after T0
        return round((T0 + seconds) * 1000)

    with store.transaction(conn):
        older = store.insert_run(conn, "cronapp", "job", at(60), 1, "pending", at(60), elsewhere, T0)
        newer = store.insert_run(conn, "cronapp", "job", at(120), 1, "pending", at(120), here, T0)
        later = store.insert_run(conn, "cronapp", "job", at(180), 2, "pending", at(605), elsewhere, T0)
        assert not store.start(conn, newer, here, now, serial=True)  # the older claim goes first
        assert store.start(conn, older, elsewhere, now, serial=True)
        assert not store.start(conn, newer, here, now, serial=True)  # one at a time
        store.finish(conn, older, "ok", None, now, 0, elsewhere)
        assert store.start(conn, newer, here, now, serial=True)  # a retry not yet due holds nothing up
        assert not store.start(conn, later, elsewhere, now + 10, serial=True)


# -- real hosts ------------------------------------------------------------------
def write_manifest(tmp_path: Path, *entries: dict, **extra) -> Path:
    path = tmp_path / "fazt.json"
    path.write_text(json.dumps(manifest(*entries, **extra)))
    return path


def history(cart: Cartridge, *args: str) -> list[dict]:
    return json.loads(cart.cli("cron", "history", "cronapp", *args, "-n", "1000", "--json").stdout)


def wait_for(predicate, timeout: float = 20, step: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


@pytest.mark.parametrize(
    "entry, message, code",
    [
        # Invalid in fazt.json itself, or naming a file missing from the folder: a manifest error (exit 2).
        ({"name": "digest", "schedule": "0 7 * * 1-5", "timezone": "Europe/Berlln"}, "cron entry 'digest': unknown timezone", 2),
        ({"name": "digest", "schedule": "0 25 * * *"}, "cron entry 'digest': invalid cron expression", 2),
        ({"name": "nofile", "schedule": "@daily", "file": "cron/missing.js"}, "cron entry 'nofile': file cron/missing.js not found", 2),
        ({"name": "far", "schedule": "every 99999999999d"}, "cron entry 'far': invalid interval 'every 99999999999d': an interval is at most 3650d", 2),
        # Below this host's minimum interval: fazt.json must change too (exit 2).
        ({"name": "fast", "schedule": "every 0.5s"}, "cron entry 'fast': 'every 0.5s' fires every 0.5s, below the minimum interval of 1s", 2),
        ({"name": "fast", "schedule": "*/0.5 * * * * *"}, "cron entry 'fast'", 2),
    ],
)
def test_deploy_refuses_bad_cron_entries(cartridge, tmp_path, entry, message, code):
    proc = cartridge.cli("deploy", str(APP), "--manifest", str(write_manifest(tmp_path, entry)), check=False)
    assert proc.returncode == code if code is not None else proc.returncode in (1, 2), proc.stderr
    assert message in proc.stderr
    assert not cartridge.path.exists() or "cronapp" not in cartridge.cli("apps", check=False).stdout


def test_an_entry_without_file_needs_the_apps_scheduled_export(cartridge, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "index.js").write_text("export default { async fetch() { return new Response('no scheduled here'); } };")
    write_manifest(app, {"name": "nightly", "schedule": "@daily"}, name="plain")
    proc = cartridge.cli("deploy", str(app), check=False)  # before: deployed, and every run failed
    assert proc.returncode == 2 and "cron entry 'nightly' has no handler" in proc.stderr, proc.stderr
    assert json.loads(cartridge.cli("apps", "--json").stdout) == []


def test_a_cron_file_without_a_default_export_is_named_with_its_entry(cartridge, tmp_path):
    app = tmp_path / "app"
    (app / "cron").mkdir(parents=True)
    (app / "index.js").write_text("export default { async fetch() { return new Response('x'); } };")
    (app / "cron" / "named.js").write_text("export function run(event) { console.log(event); }")
    write_manifest(app, {"name": "nightly", "schedule": "@daily", "file": "cron/named.js"}, name="plain")
    proc = cartridge.cli("deploy", str(app), check=False)
    # before: "<fazt entry>:4:8: No matching export in ... for import "default""
    assert proc.returncode == 1 and "cron entry 'nightly': cron/named.js has no default export" in proc.stderr, proc.stderr
    (app / "cron" / "named.js").write_text("export default 42;")
    proc = cartridge.cli("deploy", str(app), check=False)  # before: 'has no handler: give it a "file"', exit 2
    assert proc.returncode == 1 and "cron entry 'nightly': cron/named.js must export default a function" in proc.stderr, proc.stderr
    (app / "cron" / "named.js").write_text("export default function (event) {}")
    (app / "index.js").write_text("export const fetch = () => new Response('x');")
    proc = cartridge.cli("deploy", str(app), check=False)
    assert proc.returncode == 1 and "index.js has no default export: export default {" in proc.stderr, proc.stderr


def test_a_prebuilt_component_with_cron_files_is_a_manifest_error(cartridge, tmp_path):
    (tmp_path / "app.wasm").write_bytes(b"\0asm")  # refused before the component is read
    path = write_manifest(tmp_path, {"name": "nightly", "schedule": "@daily", "file": "cron/nightly.js"})
    proc = cartridge.cli("deploy", str(tmp_path / "app.wasm"), "--manifest", str(path), check=False)
    assert proc.returncode == 2 and "cron entry 'nightly': a prebuilt component cannot take cron files" in proc.stderr


def test_minimum_interval_is_configurable(cartridge, tmp_path):
    path = write_manifest(tmp_path, {"name": "often", "schedule": "*/30 * * * * *"})
    proc = subprocess.run([FAZT, "deploy", str(APP), "--manifest", str(path)], capture_output=True, text=True,
                          env={**cartridge.env, "FAZT_CRON_MIN_INTERVAL": "60"})
    assert proc.returncode == 2 and "fires every 30s, below the minimum interval of 60s" in proc.stderr
    cartridge.cli("deploy", str(APP), "--manifest", str(path))


def test_up_runs_schedules_once_per_host_with_cli(cartridge, tmp_path):
    cartridge.cli("deploy", str(APP), "--manifest", str(write_manifest(
        tmp_path,
        {"name": "tick", "schedule": "every 1s", "file": "cron/tick.js"},
        {"name": "boom", "schedule": "@yearly"},
        {"name": "nap", "schedule": "@yearly", "timeout": "1s"},
        {"name": "late", "schedule": "@yearly"},
        {"name": "digest", "schedule": "0 7 * * 1-5", "timezone": "Europe/Berlin", "catchUp": "one",
         "overlap": "skip", "timeout": "5m", "retries": 3},
    )))
    server = cartridge.serve(workers=2)
    wait_for(lambda: len([r for r in history(cartridge, "tick") if r["status"] == "ok"]) >= 4)
    runs = [r for r in history(cartridge, "tick") if r["status"] == "ok" and not r["manual"]]
    rows = history(cartridge)
    for row in rows:
        assert {"name", "scheduledTime", "startedAt", "finishedAt", "status", "attempt"} <= set(row)
        assert row["scheduledTime"].endswith("Z")
    keys = [(r["name"], r["scheduledTime"], r["attempt"]) for r in rows]
    assert len(keys) == len(set(keys)), "a slot ran twice with two Granian workers"
    assert [r["scheduledTime"] for r in runs] == sorted((r["scheduledTime"] for r in runs), reverse=True)  # newest first
    gaps = [datetime.fromisoformat(a["scheduledTime"]) - datetime.fromisoformat(b["scheduledTime"]) for a, b in zip(runs, runs[1:])]
    assert all(g.total_seconds() >= 1.0 and g.total_seconds() % 1 == 0 for g in gaps)  # whole slots, each once
    # (a slot may be skipped while a slow first run maps the component on a busy machine: overlap skip)
    late = [datetime.fromisoformat(r["startedAt"]) - datetime.fromisoformat(r["scheduledTime"]) for r in runs]
    assert max(late).total_seconds() < 1.5  # the first run also maps the component
    assert server.get("/cronapp/").json() == {"ok": True}  # HTTP is served beside it

    listing = json.loads(cartridge.cli("cron", "cronapp", "--json").stdout)
    digest = next(e for e in listing if e["name"] == "digest")
    assert len(digest["next"]) == 5 and digest["timezone"] == "Europe/Berlin" and digest["retries"] == 3
    berlin = [datetime.fromisoformat(t).astimezone(BERLIN) for t in digest["next"]]
    assert {(t.hour, t.minute) for t in berlin} == {(7, 0)} and all(t.weekday() < 5 for t in berlin)
    assert next(e for e in listing if e["name"] == "tick")["last"]["status"] == "ok"
    assert "next:" in cartridge.cli("cron", "cronapp").stdout

    ok = cartridge.cli("cron", "run", "cronapp", "boom", check=False)
    assert ok.returncode == 1 and "failed" in ok.stdout and "boom at" in ok.stdout
    manual = [r for r in history(cartridge, "boom") if r["manual"]]
    assert len(manual) == 1 and manual[0]["status"] == "failed" and manual[0]["attempt"] == 1
    assert cartridge.cli("cron", "run", "cronapp", "tick", "--json").returncode == 0
    late = cartridge.cli("cron", "run", "cronapp", "late", check=False)  # before: "the handler threw"
    assert late.returncode == 1 and "a ctx.waitUntil promise rejected with Error: late rejection" in late.stdout, late.stdout
    started = time.monotonic()  # a handler waiting on a timer is stopped at its entry's timeout
    nap = cartridge.cli("cron", "run", "cronapp", "nap", check=False)
    assert nap.returncode == 1 and "time limit of 1000 ms" in nap.stdout, nap.stdout
    assert time.monotonic() - started < 20  # the CLI maps the component first; the nap alone is 60 s
    missing = cartridge.cli("cron", "run", "cronapp", "nope", check=False)
    assert missing.returncode == 1 and "no cron entry 'nope'" in missing.stderr
    never = cartridge.cli("cron", "history", "cronapp", "nope", check=False)
    assert never.returncode == 1 and "no cron entry 'nope'" in never.stderr
    cartridge.cli("deploy", str(APP), "--manifest", str(write_manifest(  # `boom` removed: its runs stay readable
        tmp_path, {"name": "tick", "schedule": "every 1s", "file": "cron/tick.js"})))
    assert [r["manual"] for r in history(cartridge, "boom")] == [True]  # before: "no cron entry 'boom'"
    assert "no app named 'ghost'" in cartridge.cli("cron", "ghost", check=False).stderr

    scheduler_processes = subprocess.run(["pgrep", "-s", str(server.proc.pid), "-f", "fazt_host.triggers.cron"],
                                         capture_output=True, text=True).stdout.split()
    assert len(scheduler_processes) == 1

    cartridge.cli("remove", "cronapp")  # its crons stop, its history goes with it
    time.sleep(2.5)
    gone = cartridge.cli("cron", "history", "cronapp", check=False)
    assert gone.returncode == 1 and "no app named 'cronapp'" in gone.stderr
    conn = apsw.Connection(str(cartridge.path))
    assert conn.execute("SELECT count(*) FROM cron_runs WHERE app = 'cronapp'").fetchone()[0] == 0


def test_two_hosts_on_one_cartridge_run_each_slot_once(cartridge, tmp_path):
    cartridge.cli("deploy", str(APP), "--manifest", str(write_manifest(
        tmp_path, {"name": "a", "schedule": "every 1s"}, {"name": "b", "schedule": "* * * * * *"})))
    one, two = cartridge.serve(workers=1), cartridge.serve(workers=1)
    wait_for(lambda: len(history(cartridge, "a")) >= 6)
    one.stop()
    two.stop()
    rows = history(cartridge)
    keys = [(r["name"], r["scheduledTime"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert {r["status"] for r in rows} <= {"ok"}
    starts = [(e["name"], e["scheduledTime"]) for r in rows for e in
              (json.loads(line["message"])["event"] for line in r["logs"])]
    assert sorted(starts) == sorted(keys), "each handler ran once per slot"
    owners = {r["requestId"] for r in rows}
    assert len(owners) == len(rows)


def test_host_killed_during_a_run_is_retried_not_lost_nor_doubled(cartridge, tmp_path):
    cartridge.cli("deploy", str(APP), "--manifest", str(write_manifest(
        tmp_path, {"name": "crash", "schedule": "*/5 * * * * *", "timeout": "20s", "retries": 1})))
    server = cartridge.serve(workers=1)
    first = wait_for(lambda: [r for r in history(cartridge) if r["status"] == "running"], timeout=15, step=0.1)[0]
    time.sleep(0.5)
    os.killpg(server.proc.pid, signal.SIGKILL)  # host, workers and scheduler: all at once, mid-run
    server.proc.wait()
    cartridge.serve(workers=1)
    slot = first["scheduledTime"]
    attempts = wait_for(lambda: [r for r in history(cartridge) if r["scheduledTime"] == slot and r["status"] == "ok"],
                        timeout=40)
    rows = sorted((r for r in history(cartridge) if r["scheduledTime"] == slot), key=lambda r: r["attempt"])
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "failed"), (2, "ok")]
    assert rows[0]["error"] == "the host stopped during the run"
    assert len(attempts) == 1
    every = history(cartridge)
    per_slot = {}
    for r in every:
        per_slot.setdefault(r["scheduledTime"], []).append(r)
    assert all(len([r for r in rs if r["status"] == "ok"]) <= 1 for rs in per_slot.values())
    assert all(len(rs) <= 2 for rs in per_slot.values())


def test_up_starts_a_scheduler_that_died_again_and_keeps_serving(cartridge, tmp_path):
    cartridge.cli("deploy", str(APP), "--manifest", str(write_manifest(tmp_path, {"name": "tick", "schedule": "every 1s"})))
    server = cartridge.serve(workers=1)

    def schedulers() -> list[str]:
        return subprocess.run(["pgrep", "-s", str(server.proc.pid), "-f", "fazt_host.triggers.cron"],
                              capture_output=True, text=True).stdout.split()

    def ok_runs() -> int:
        return len([r for r in history(cartridge, "tick") if r["status"] == "ok"])

    wait_for(lambda: ok_runs() >= 1)
    for _ in range(2):  # dying again soon after a restart doubles the wait before the next
        old = wait_for(schedulers)
        assert len(old) == 1
        os.kill(int(old[0]), signal.SIGKILL)
        assert server.get("/cronapp/").json() == {"ok": True}  # HTTP is served meanwhile
        wait_for(lambda: [p for p in schedulers() if p not in old], timeout=30)
    done = ok_runs()
    wait_for(lambda: ok_runs() > done, timeout=30)  # the schedule goes on
    assert len(schedulers()) == 1
    server.stop()
    log = server.proc.stderr.read().decode()
    assert "the cron scheduler exited with status -9; started it again after 1 s" in log
    assert "the cron scheduler exited with status -9; started it again after 2 s" in log


def test_scheduler_restarts_back_off_to_a_minute():
    assert [restart_delay(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


# The scheduler process, with its clock's wait changed so that SIGTERM arrives while the main thread
# holds the lock inside the wake-up Event, as it does for a moment in every Event.wait.
SIGNAL_IN_WAIT = textwrap.dedent(
    """
    import os, signal, sys, time
    from fazt_host.triggers.cron import __main__ as entry
    from fazt_host.triggers.cron.scheduler import RealClock

    wait = RealClock.wait

    def wait_holding_the_lock(self, event, until):
        with event._cond:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(50):  # Python runs the handler here, while the lock is held
                time.sleep(0.01)
        print("signalled while holding the lock", file=sys.stderr, flush=True)
        wait(self, event, until)

    RealClock.wait = wait_holding_the_lock
    entry.main()
    """
)


def test_scheduler_stops_on_a_signal_that_lands_while_its_loop_holds_a_lock(cartridge):
    proc = subprocess.run([sys.executable, "-c", SIGNAL_IN_WAIT], env=cartridge.env, capture_output=True,
                          text=True, timeout=60)  # before: the handler waited for ever on the held lock
    assert "signalled while holding the lock" in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_only_a_scheduler_that_died_is_started_again():
    assert died(1) and died(-signal.SIGKILL) and died(-signal.SIGSEGV)
    assert not died(0) and not died(-signal.SIGTERM) and not died(-signal.SIGINT)


def supervised(tmp_path, body: str) -> tuple[SchedulerProcess, Path]:
    """A SchedulerProcess over a stand-in scheduler that notes each start in a file, then runs `body`."""
    starts = tmp_path / "starts"
    script = f"import os, signal, sys, time\nopen({str(starts)!r}, 'a').write('x')\n{body}"
    return SchedulerProcess([sys.executable, "-c", script]), starts


@pytest.mark.parametrize(
    "body",
    [
        "sys.exit(0)",  # what the scheduler does after SIGTERM or SIGINT
        "os.kill(os.getpid(), signal.SIGTERM)",  # a signal before its handlers were set
        "signal.signal(signal.SIGINT, signal.SIG_DFL); os.kill(os.getpid(), signal.SIGINT)",
    ],
)
def test_a_scheduler_asked_to_stop_is_not_started_again(tmp_path, body):
    process, starts = supervised(tmp_path, body)
    process.start()
    process._thread.join(30)  # before: the supervisor started it again, and again
    assert not process._thread.is_alive()
    assert starts.read_text() == "x"
    process.stop()


def test_a_scheduler_that_dies_is_started_again_until_up_stops(tmp_path):
    process, starts = supervised(tmp_path, "sys.exit(3)")
    process.start()
    wait_for(lambda: starts.exists() and len(starts.read_text()) >= 2, timeout=30)  # after 1 s
    process.stop()
    assert not process._thread.is_alive()
    count = len(starts.read_text())
    time.sleep(0.1)
    assert len(starts.read_text()) == count


def test_a_scheduler_that_dies_while_up_shuts_down_is_not_started_again(tmp_path):
    go = tmp_path / "go"
    process, starts = supervised(tmp_path, f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\nsys.exit(3)")
    process.start()
    process.shutting_down()  # up received SIGTERM: Granian stops its workers before stop() is called
    go.touch()
    process._thread.join(30)
    assert not process._thread.is_alive()
    assert starts.read_text() == "x"
    process.stop()


def test_stop_kills_a_scheduler_that_does_not_stop(tmp_path, monkeypatch):
    monkeypatch.setattr(serve_module, "STOP_WAIT_S", 0.5)
    ready = tmp_path / "ready"
    process, starts = supervised(
        tmp_path, f"signal.signal(signal.SIGTERM, signal.SIG_IGN); open({str(ready)!r}, 'w').close(); time.sleep(600)")
    process.start()
    wait_for(ready.exists, timeout=30)
    stopper = threading.Thread(target=process.stop, daemon=True)
    stopper.start()
    stopper.join(30)  # before: stop() waited for ever
    assert not stopper.is_alive()
    assert process._proc.returncode == -signal.SIGKILL


def test_a_run_with_many_log_lines_keeps_its_first_and_last_in_history(tmp_path):
    from fazt_host import cartridge
    from fazt_host.capabilities.log import Log

    conn = cartridge.connect(tmp_path / "fazt.db")
    cartridge.migrate(conn, Log.name, Log.migrations)
    conn.executemany("INSERT INTO logs(app, ts, level, request_id, message) VALUES ('a', 1, 'info', 'r1', ?)",
                     [(f"line {i}",) for i in range(450)])
    lines = [entry["message"] for entry in store._logs(conn, "a", "r1")]
    # before: the first 200 alone, so a run that logged much and then threw lost its error line
    assert lines[:2] == ["line 0", "line 1"] and lines[99] == "line 99" and lines[-1] == "line 449"
    assert "250 lines left out here" in lines[100] and len(lines) == 201
    assert len(store._logs(conn, "a", "nope")) == 0


def test_cron_commands_on_a_missing_cartridge_make_none(tmp_path):
    missing = tmp_path / "none.db"
    for words in (["run", "app", "entry"], ["history", "app"], ["app"]):  # before: `run` made an empty cartridge
        proc = subprocess.run([FAZT, "cron", *words, "--cartridge", str(missing)], capture_output=True, text=True)
        assert proc.returncode == 1 and f"no cartridge at {missing}" in proc.stderr, words
    assert not missing.exists()
