"""Cron at scale: 10,000 schedules across 100 apps, and exactly-once over a simulated day.

    .venv/bin/python bench/run.py --only cron

1. 100 apps (one shared component, `bench/apps/cron.js`) with 100 entries each.
   Entry k fires hourly at its own moment (six-field cron `S M * * * *`), the
   10,000 spread over the hour (~3 due every second, 2-3 of them at the same
   second); the hour is placed so nothing fires for the first 150 s (deploys,
   start-up, idle measurement).
   - idle: CPU of the scheduler process (and of the whole host) over up to 60 s while
     all 10,000 wait;
   - lateness: `startedAt - scheduledTime` of every run, first without other
     load, then while wrk drives HTTP requests at one of the apps (8 connections).
2. Exactly-once: two schedulers on one cartridge (threads of one process,
   stepping at the same moments) move a fake clock through 24 h in 1-minute
   steps; every slot must have exactly one run, and every handler exactly one
   execution (counted from the log line each one writes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import apsw

from common import CACHE, FAZT, ROOT, WORK, env_for, fresh_cartridge, percentiles

from bench import peers
from bench.peers import wrk

APPS, PER_APP = 100, 100
CYCLE_S = 3600
QUIET_S = 150  # from the start of the deploys to the first fire
FIRING_S = 3420  # seconds of the hour that have entries: the other 180 hold the quiet start
IDLE_S = 60
CALM_S = 30
LOADED_S = 45


def log(msg: str) -> None:
    print(f"[bench cron] {msg}", file=sys.stderr, flush=True)


def component() -> Path:
    """The shared component, built once per source (reused between bench runs)."""
    from fazt_host import build
    from fazt_host.config import Manifest

    folder = WORK / "apps" / "cronbench"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.js").write_text((ROOT / "bench" / "apps" / "cron.js").read_text())
    (folder / "fazt.json").write_text(json.dumps({"name": "cronbench"}))
    key = build.source_hash(build.app_sources(folder, Manifest(name="cronbench")))[:16]
    wasm = CACHE / "builds" / f"cronbench-{key}.wasm"
    if not wasm.exists():
        log("building the shared component")
        wasm.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([FAZT, "build", str(folder), "-o", str(wasm)], check=True, env=env_for(WORK / "unused.db"))
    return wasm


def deploy_apps(cartridge: Path, wasm: Path, entries_for) -> None:
    """Deploys APPS apps of the prebuilt component in this process (one Host, no rebuilds)."""
    from fazt_host.config import HostSettings
    from fazt_host.deploy import deploy
    from fazt_host.host import Host

    host = Host(HostSettings(cartridge=str(cartridge), cache=str(CACHE)))
    for a in range(APPS):
        name = f"cron{a:03d}"
        manifest = WORK / "apps" / "manifests" / f"{name}.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"name": name, "entry": wasm.name, "cron": entries_for(a)}))
        deploy(host, wasm, manifest, progress=open(os.devnull, "w"))
    host.conn.close()


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle_cpu(pid: int, limit_s: float = 30) -> None:
    end = time.time() + limit_s
    while time.time() < end:
        before = cpu_s(pid)
        time.sleep(1)
        if cpu_s(pid) - before < 0.02:
            return


def tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [p for c in out for p in tree(int(c))]


def lateness(conn: apsw.Connection, start: float, end: float) -> dict:
    rows = conn.execute(
        "SELECT slot, started_at, status FROM cron_runs WHERE slot >= ? AND slot < ?",
        (int(start * 1000), int(end * 1000)),
    ).fetchall()
    late = [(started - slot / 1000) * 1000 for slot, started, status in rows if status == "ok"]
    p = percentiles(late)
    return {"runs": len(rows), "ok": len(late), "p50_ms": round(p["p50"], 1), "p99_ms": round(p["p99"], 1),
            "max_ms": round(max(late), 1)}


def registered(conn: apsw.Connection) -> int:
    try:
        return conn.execute("SELECT count(*) FROM cron_entries").fetchone()[0]
    except apsw.SQLError:  # the scheduler has not created its tables yet
        return 0


def at_scale(wasm: Path) -> dict:
    cartridge = fresh_cartridge("cron")
    now = time.time()
    base = int(now + QUIET_S) % CYCLE_S

    def entries(a: int) -> list[dict]:
        out = []
        for j in range(PER_APP):
            k = a * PER_APP + j
            p = (base + k * FIRING_S // (APPS * PER_APP)) % CYCLE_S
            out.append({"name": f"e{j:03d}", "schedule": f"{p % 60} {p // 60} * * * *"})
        return out

    log(f"deploying {APPS} apps x {PER_APP} entries")
    started = time.perf_counter()
    deploy_apps(cartridge, wasm, entries)
    deploy_s = time.perf_counter() - started
    log(f"deployed in {deploy_s:.1f} s; starting fazt-host up")
    port = peers.free_port()
    up = subprocess.Popen([FAZT, "up", "--port", str(port), "--workers", "2"], env=env_for(cartridge),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        peers.wait_ready(up, port)
        conn = apsw.Connection(str(cartridge))
        conn.set_busy_timeout(30_000)
        t = time.perf_counter()
        while registered(conn) < APPS * PER_APP:
            time.sleep(0.05)
        sync_s = time.perf_counter() - t
        log(f"the scheduler registered every entry {sync_s:.1f} s after the host answered")
        scheduler = next(p for p in tree(up.pid) if "fazt_host.triggers.cron" in Path(f"/proc/{p}/cmdline").read_text())
        first_fire = next(t for t in range(int(time.time()) + 1, int(time.time()) + CYCLE_S + 1)
                          if (t % CYCLE_S - base) % CYCLE_S < FIRING_S)
        settle_cpu(scheduler)  # the scheduler computes every entry's next slot after registering them
        idle_s = min(IDLE_S, first_fire - time.time() - 2)
        assert idle_s > 10, f"too little quiet time before the first fire ({idle_s:.0f} s)"
        log(f"idle: measuring {idle_s:.0f} s with all {APPS * PER_APP} entries waiting")
        pids = tree(up.pid)
        before = {p: cpu_s(p) for p in pids}
        time.sleep(idle_s)
        after = {p: cpu_s(p) for p in pids}
        idle = {
            "seconds": round(idle_s),
            "scheduler_cpu_pct": round(100 * (after[scheduler] - before[scheduler]) / idle_s, 2),
            "host_cpu_pct": round(100 * sum(after[p] - before[p] for p in pids) / idle_s, 2),
        }
        time.sleep(max(0.0, first_fire - time.time()))
        log(f"lateness: {CALM_S} s without load")
        calm_from = time.time()
        time.sleep(CALM_S)
        calm_to = time.time()
        log(f"lateness: {LOADED_S} s under HTTP load (wrk, 8 connections)")
        load = wrk.run(f"http://127.0.0.1:{port}/cron000/", 8, duration_s=LOADED_S)
        loaded_to = time.time()
        time.sleep(2)
        return {
            "schedules": APPS * PER_APP,
            "apps": APPS,
            "deploy_s": round(deploy_s, 1),
            "scheduler_sync_s": round(sync_s, 2),
            "idle": idle,
            "calm": lateness(conn, calm_from, calm_to),
            "loaded": {**lateness(conn, calm_to, loaded_to - 1), "http_rps": round(load["rps"]),
                       "http_p99_ms": round(load["p99_ms"], 1)},
        }
    finally:
        peers.stop(up)


def exactly_once(wasm: Path, apps: int = 40) -> dict:
    """Two schedulers, one cartridge, 24 simulated hours: one run and one execution per slot."""
    from fazt_host.config import HostSettings
    from fazt_host.host import cron_scheduler
    from fazt_host.triggers.cron.scheduler import FakeClock

    global APPS
    cartridge = fresh_cartridge("cron-day")
    saved, APPS = APPS, apps
    try:
        deploy_apps(cartridge, wasm, lambda a: [{"name": "q", "schedule": "*/15 * * * *"},
                                                {"name": "e", "schedule": "every 20m", "catchUp": "none"}])
    finally:
        APPS = saved
    settings = HostSettings(cartridge=str(cartridge), cache=str(CACHE))
    t0 = 1_780_000_000.0  # a fixed day: 2026-05-28 20:26:40 UTC
    clock = FakeClock(t0)
    schedulers = [cron_scheduler(settings, clock), cron_scheduler(settings, clock)]
    started = time.perf_counter()
    for minute in range(24 * 60 + 1):
        clock.set(t0 + minute * 60)
        threads = [threading.Thread(target=s.step) for s in schedulers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in schedulers:
            s.settle()
        if minute % 240 == 0:
            log(f"simulated {minute // 60} h")
    for s in schedulers:
        s.stop(0)
    wall = time.perf_counter() - started
    conn = apsw.Connection(str(cartridge))
    rows = conn.execute("SELECT app, name, slot, status, owner, request_id FROM cron_runs").fetchall()
    per_slot: dict = {}
    for app, name, slot, *_ in rows:
        per_slot[(app, name, slot)] = per_slot.get((app, name, slot), 0) + 1
    executions = conn.execute("SELECT count(*), count(DISTINCT message) FROM logs").fetchone()
    expected = apps * (24 * 4 + 24 * 3)  # */15 from the next quarter, every 20m after registration
    return {
        "apps": apps,
        "entries": apps * 2,
        "slots": len(per_slot),
        "expected_slots": expected,
        "runs": len(rows),
        "runs_not_ok": sum(1 for r in rows if r[3] != "ok"),
        "slots_with_more_than_one_run": sum(1 for n in per_slot.values() if n > 1),
        "handler_executions": executions[0],
        "distinct_executions": executions[1],
        "runs_per_scheduler": sorted(
            n for (n,) in conn.execute("SELECT count(*) FROM cron_runs GROUP BY owner").fetchall()),
        "wall_s": round(wall, 1),
    }


def run() -> dict:
    wasm = component()
    out = {"exactly_once": exactly_once(wasm)}
    log(f"exactly-once: {out['exactly_once']}")
    out["scale"] = at_scale(wasm)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(run(), indent=2))
