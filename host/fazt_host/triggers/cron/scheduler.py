"""The cron service: one per host, sleeping until the next due time.

The loop (one thread) refreshes the app registry, claims the slots that came
due (compare-and-set on `cron_entries.last_slot`, so several schedulers on one
cartridge never claim a slot twice), and hands pending runs to a small pool of
wasm threads. Each pool thread has its own `Host` (its own cartridge
connection and runtime) over one shared engine, so a job that hangs until its
timeout holds one thread, not every app's schedule.

It wakes at the earliest of: the next due slot or retry, a run finishing, or
REFRESH_S (to notice deploys and removals through the cartridge's
`data_version`, one cheap pragma, and to take over runs of dead schedulers).
Time comes from a clock the scheduler is given: `RealClock`, or `FakeClock` in
tests that move time.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec

from ... import cartridge
from ...apps import Deployed, Registry
from ...config import CronEntry, HostSettings
from ...runtime import GuestError, GuestTimeout, Invocation, make_engine
from ...runtime.engine import EPOCH_TICK_S
from . import store
from .checks import HANDLER_INTERFACE
from .schedule import Schedule, iso, parse, parse_duration_ms
from .store import Run

# How often the loop looks for deploys, removals and dead schedulers when nothing is due.
REFRESH_S = 1.0
# Missed slots run at most this many per entry after downtime (catchUp: all); one skipped run
# in the history stands for the older ones.
CATCH_UP_MAX = 100
# A slot claimed later than this counts as missed even while the scheduler ran (host suspended, stalled).
LATE_LIMIT_MS = 60_000
# With overlap queue or allow, at most this many runs of one entry wait; later slots are recorded as skipped.
QUEUE_MAX = 10


class RealClock:
    def now(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, until: float) -> None:
        event.wait(max(0.0, until - time.time()))


class FakeClock:
    """A clock tests move by hand; `wait` returns when the event is set or time passes `until`."""

    def __init__(self, start: float):
        self.t = start
        self._cond = threading.Condition()

    def now(self) -> float:
        return self.t

    def set(self, t: float) -> None:
        with self._cond:
            self.t = t
            self._cond.notify_all()

    def advance(self, seconds: float) -> None:
        self.set(self.t + seconds)

    def wait(self, event: threading.Event, until: float) -> None:
        with self._cond:
            while not event.is_set() and self.t < until:
                self._cond.wait(0.01)


@dataclass
class Entry:
    app: str
    config: CronEntry
    schedule: Schedule
    spec: str
    anchor: int
    next_due: int
    serial: bool = field(init=False)

    def __post_init__(self) -> None:
        self.serial = self.config.overlap != "allow"

    @property
    def key(self) -> tuple[str, str]:
        return (self.app, self.config.name)


def entry_limits(deployed: Deployed, entry: CronEntry):
    limits = deployed.manifest.limits
    if entry.timeout is not None:
        limits = limits.merged({"timeout_ms": parse_duration_ms(entry.timeout)})
    return limits


def event_payload(deployed: Deployed, entry: CronEntry, run: Run, last: dict | None, timeout_ms: int) -> str:
    event = {
        "name": entry.name,
        "scheduledTime": iso(run.slot),
        "attempt": run.attempt,
        "lastRun": last,
        "schedule": entry.schedule,
        "timezone": entry.timezone,
        "manual": run.manual,
        "requestId": run.request_id,
        "app": deployed.name,
        "timeoutMs": timeout_ms,  # the SDK stops timers at it
    }
    if deployed.manifest.env:
        event["env"] = deployed.manifest.env
    return msgspec.json.encode(event).decode()


def execute(host, deployed: Deployed, entry: CronEntry, run: Run, last: dict | None) -> tuple[str, str | None]:
    """Runs one attempt in a fresh instance: (status, error)."""
    limits = entry_limits(deployed, entry)
    invocation = Invocation(deployed.name, run.request_id, limits)
    try:
        payload = event_payload(deployed, entry, run, last, limits.timeout_ms)
        host.invoke(deployed, HANDLER_INTERFACE, "scheduled", payload, invocation)
        return "ok", None
    except GuestTimeout as e:
        return "timeout", str(e)
    except GuestError as e:
        return "failed", str(e)
    except Exception as e:  # noqa: BLE001 - a host-side failure (missing component...) is the run's outcome
        note = Invocation(deployed.name, run.request_id, invocation.limits)
        host.log.record(note, "error", f"the host could not run the job: {type(e).__name__}: {e}", host=True)
        host.log.finish(note)
        return "failed", f"{type(e).__name__}: {e}"


class Ticker:
    """Advances the engine's epoch only while guests run, so an idle scheduler costs nothing."""

    def __init__(self, engine):
        self._engine = engine
        self._active = 0
        self._cond = threading.Condition()
        self._stopped = False
        threading.Thread(target=self._run, name="fazt-cron-epoch", daemon=True).start()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._active == 0:
                    self._cond.wait()
                    continue
                self._cond.wait(EPOCH_TICK_S)
                self._engine.increment_epoch()

    def enter(self) -> None:
        with self._cond:
            self._active += 1
            self._cond.notify()

    def leave(self) -> None:
        with self._cond:
            self._active -= 1

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()


def _busy_retry(attempt: int) -> bool:
    """Waits for the cartridge's write lock in short naps: SQLite's own busy timeout sleeps up to
    25 ms at a time, far longer than the scheduler's writes hold the lock."""
    time.sleep(0.0005 if attempt < 100 else 0.005)
    return attempt < 100 + cartridge.BUSY_TIMEOUT_MS // 5


class Scheduler:
    def __init__(self, settings: HostSettings, make_host, clock=None, threads: int | None = None):
        """`make_host(engine)` builds one thread's Host (the composition root passes it)."""
        self.settings = settings
        self.clock = clock or RealClock()
        self.owner = store.new_owner()
        self.conn = cartridge.connect(settings.cartridge)
        store.setup(self.conn)
        self.registry = Registry(self.conn)
        self.engine = make_engine()
        self.ticker = Ticker(self.engine)
        self.threads = max(1, threads or settings.cron_threads)
        # One app may hold all threads but one, so a hung job leaves the others running.
        self.per_app = max(1, self.threads - 1)
        self._free_hosts = [make_host(self.engine) for _ in range(self.threads)]
        for conn in (self.conn, *(h.conn for h in self._free_hosts)):
            conn.set_busy_handler(_busy_retry)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fazt-cron-wasm")
        self.started_ms = int(self.clock.now() * 1000)
        self.apps: dict[str, Deployed] = {}
        self.entries: dict[tuple[str, str], Entry] = {}
        self._heap: list[tuple[int, int, tuple[str, str]]] = []  # (due, seq, key); stale items skipped
        self._seq = 0
        self._ready: list[tuple[int, int, int, Run]] = []  # (due, slot, seq, run) this scheduler owns
        # Touched by the loop thread only; pool threads report through _finished.
        self._running: dict[int, Future] = {}  # run id -> future
        self._running_apps: dict[str, int] = {}
        self._turns: dict[str, int] = {}  # app -> when its last run began, counted in launches
        self._turn = 0
        self._finished: queue.SimpleQueue = queue.SimpleQueue()  # (run, host, retry or None)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_recover: float | None = None

    # -- the loop -------------------------------------------------------------
    def run_forever(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wake_at = self.step()
            except Exception:  # noqa: BLE001 - e.g. the cartridge locked past its busy timeout: try again
                traceback.print_exc()
                wake_at = self.clock.now() + REFRESH_S
            self.clock.wait(self._wake, wake_at)

    def stop_soon(self) -> None:
        """Makes run_forever return; from any thread, but not from a signal handler (Event.set takes a
        lock the interrupted thread may hold): see fazt_host.signals.lock_free."""
        self._stop.set()
        self._wake.set()

    def stop(self, wait_s: float = 3.0) -> None:
        """Stops claiming; waits a little for runs in flight (the rest are recovered by the next scheduler)."""
        self.stop_soon()
        deadline = time.monotonic() + wait_s
        for future in list(self._running.values()):
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - outcomes are recorded by the run itself
                pass
        try:
            self._collect()  # what finished meanwhile is recorded, not left to look interrupted
        except Exception:  # noqa: BLE001 - the next scheduler recovers what is left
            traceback.print_exc()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.ticker.stop()

    def step(self) -> float:
        """One pass: refresh, recover, claim what is due, start what can start. Returns when to wake."""
        now = self.clock.now()
        self._collect()
        self.refresh(now)
        if self._last_recover is None or now - self._last_recover >= REFRESH_S:
            self._last_recover = now
            for run in store.recover(self.conn, self.owner, now, self._retries_of):
                self._enqueue(run)
        self.claim_due(now)
        self.dispatch(now)
        return self.next_wake(now)

    def next_wake(self, now: float) -> float:
        """The next due slot or retry. Runs already due but held back (no free thread, or the run
        before them still running) wait for a run to finish here (which wakes the loop) or elsewhere
        (noticed within REFRESH_S)."""
        wake = now + REFRESH_S
        if self._heap:
            wake = min(wake, self._heap[0][0] / 1000)
        now_ms = now * 1000
        for due, *_ in self._ready:
            if due > now_ms:
                wake = min(wake, due / 1000)
        return wake

    def drain(self, timeout: float = 60) -> None:
        """Waits for the runs in flight (tests move a fake clock between steps)."""
        for future in list(self._running.values()):
            future.result(timeout)
        self._collect()

    def settle(self) -> None:
        """Steps until nothing due at the clock's time is left to start: what the loop does between
        wake-ups in real time, for tests that move a fake clock."""
        while True:
            self.step()
            if not self._running:
                return
            self.drain()

    def _collect(self) -> None:
        done = []
        while True:
            try:
                done.append(self._finished.get_nowait())
            except queue.Empty:
                break
        if not done:
            return
        try:
            with cartridge.transaction(self.conn):
                retries = [store.finish(self.conn, run, status, error, at, n, self.owner)
                           for run, _, status, error, at, n in done]
        except BaseException:
            for d in done:  # kept for the next pass: losing them would strand their hosts
                self._finished.put(d)
            raise
        for (run, host, *_), retry in zip(done, retries):
            self._free_hosts.append(host)
            self._running_apps[run.app] -= 1
            self._running.pop(run.id, None)
            if retry is not None:
                self._enqueue(retry)

    # -- entries ----------------------------------------------------------------
    def refresh(self, now: float) -> None:
        apps = self.registry.refresh()
        if apps is self.apps:
            return
        for host in self._free_hosts:
            host.retain({d.component for d in apps.values()})
        now_ms = int(now * 1000)
        wanted = {
            (app, e.name): (deployed, e) for app, deployed in apps.items() for e in deployed.manifest.cron
        }
        specs = {k: store.spec_of(e) for k, (_, e) in wanted.items()}
        states = store.sync_entries(self.conn, specs, now_ms)
        entries = {}
        for key, (deployed, config) in wanted.items():
            old = self.entries.get(key)
            spec = specs[key]
            anchor, last_slot = states[key]
            # The same spec with another anchor was changed and changed back (here or by another
            # scheduler): the old next due time belongs to the old count.
            if old is not None and old.spec == spec and old.anchor == anchor:
                old.config = config
                old.serial = config.overlap != "allow"
                entries[key] = old
                continue
            schedule = parse(config.schedule, config.timezone, anchor)
            entry = entries[key] = Entry(key[0], config, schedule, spec, anchor, schedule.next_after(last_slot))
            self._push(entry)
        self.entries = entries
        self.apps = apps  # last: a pass that failed above is tried again on the next wake

    def _retries_of(self, app: str, name: str) -> int | None:
        entry = self.entries.get((app, name))
        return entry.config.retries if entry else None

    def _push(self, entry: Entry) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (entry.next_due, self._seq, entry.key))

    # -- claiming -----------------------------------------------------------------
    def claim_due(self, now: float) -> None:
        now_ms = int(now * 1000)
        due: dict[tuple[str, str], Entry] = {}
        while self._heap and self._heap[0][0] <= now_ms:
            next_due, _, key = heapq.heappop(self._heap)
            entry = self.entries.get(key)
            if entry is not None and entry.next_due == next_due:
                due[key] = entry
        if not due:
            return
        claimed: list[Run] = []
        saved = [(entry, entry.next_due, entry.anchor, entry.schedule) for entry in due.values()]
        try:
            with cartridge.transaction(self.conn):
                for entry in due.values():
                    claimed += self._claim(entry, now, now_ms)
        except BaseException:
            # The transaction was rolled back, so the slots are still unclaimed in the cartridge:
            # the entries must come due for them again rather than wait for their following slots.
            for entry, next_due, anchor, schedule in saved:
                entry.next_due, entry.anchor, entry.schedule = next_due, anchor, schedule
            raise
        finally:
            for entry in due.values():
                self._push(entry)
        for run in claimed:
            self._enqueue(run)

    def _claim(self, entry: Entry, now: float, now_ms: int) -> list[Run]:
        """Claims the entry's due slots (inside the caller's transaction) and sets its next due time."""
        state = store.entry_state(self.conn, *entry.key)
        if state is None or state[0] != entry.spec:  # removed or changed by a deploy: the next refresh resyncs
            entry.next_due = now_ms + int(REFRESH_S * 1000)
            return []
        last = state[2]
        if state[1] != entry.anchor:  # another scheduler restarted the count (the spec changed and back)
            entry.anchor = state[1]
            entry.schedule = parse(entry.config.schedule, entry.config.timezone, entry.anchor)
            # The slot this entry waited for belongs to the old count: firing it would be off schedule.
            entry.next_due = entry.schedule.next_after(last)
        # Slots that came due before this scheduler started were missed (the host was down), and so
        # were slots over a minute old: `catchUp` decides about those; the rest are on time.
        missed_before = max(self.started_ms, now_ms - LATE_LIMIT_MS)
        due, after, cap_skip = entry.next_due, None, None
        if last < due <= now_ms and due >= missed_before:
            # The usual case, one schedule computation: the slot we waited for, on time, and the only one
            # (`due` is the first slot after any last_slot below it).
            after = entry.schedule.next_after(due)
        if after is not None and after > now_ms:
            latest, run_slots, entry.next_due = due, [due], after
        else:
            latest = entry.schedule.latest_at(now_ms)
            if latest is None or latest <= last:
                entry.next_due = entry.schedule.next_after(max(last, now_ms))
                return []
            slots, over_cap = [latest], None  # over_cap: the newest slot beyond CATCH_UP_MAX
            while True:
                prev = entry.schedule.prev_before(slots[-1])
                if prev is None or prev <= last:
                    break
                if len(slots) == CATCH_UP_MAX:
                    over_cap = prev
                    break
                slots.append(prev)
            on_time = [s for s in slots if s >= missed_before]
            missed = [s for s in slots if s < missed_before]
            policy = entry.config.catch_up
            run_slots = on_time + (missed if policy == "all" else missed[:1] if policy == "one" else [])
            if policy == "all" and over_cap is not None:
                # One row stands for the whole dropped stretch (it may hold any number of slots).
                first = entry.schedule.next_after(last)
                cap_skip = (over_cap, f"over the catch-up limit: this slot and the missed slots since {iso(first)} "
                                      f"were not run (catchUp: all runs the newest {CATCH_UP_MAX})")
            entry.next_due = entry.schedule.next_after(latest)
        if not store.advance(self.conn, *entry.key, last, latest):
            return []
        if cap_skip is not None:
            store.insert_run(self.conn, entry.app, entry.config.name, cap_skip[0], 1, "skipped", cap_skip[0],
                             self.owner, now, cap_skip[1])
        runs = []
        # The slots of one claim are a backlog, run one after another whatever the overlap policy, so
        # a backlog whose first slot overlaps a run in progress is skipped whole (each slot recorded).
        overlapped = bool(run_slots) and entry.config.overlap == "skip" and store.busy(self.conn, *entry.key, now_ms)
        for slot in sorted(run_slots):
            reason = None
            if overlapped:
                reason = "the previous run was still in progress (overlap: skip)"
            elif entry.config.overlap != "skip" and store.pending_count(self.conn, *entry.key) >= QUEUE_MAX:
                # allow: runs waiting for a free thread pile up as queue's wait for the run before them
                reason = f"{QUEUE_MAX} runs were already waiting (overlap: {entry.config.overlap})"
            run = store.insert_run(self.conn, entry.app, entry.config.name, slot, 1,
                                   "pending" if reason is None else "skipped", slot, self.owner, now, reason)
            if reason is None:
                runs.append(run)
        return runs

    # -- running ------------------------------------------------------------------
    def _enqueue(self, run: Run) -> None:
        self._seq += 1
        heapq.heappush(self._ready, (run.due, run.slot, self._seq, run))

    def dispatch(self, now: float) -> None:
        now_ms = int(now * 1000)
        if not (self._ready and self._ready[0][0] <= now_ms and len(self._running) < self.threads):
            return
        launches, taken = [], []
        busy_apps = dict(self._running_apps)
        while self._ready and self._ready[0][0] <= now_ms:
            taken.append(heapq.heappop(self._ready))
        due = list(taken)
        waiting = []
        try:
            with cartridge.transaction(self.conn):  # one write for the whole batch
                while due and len(launches) + len(self._running) < self.threads:
                    # Apps take turns: the app running the fewest, then the one whose last run began
                    # longest ago, runs its oldest due run. By due time alone, apps whose runs outlast
                    # their interval (a backlog always older than anyone's new slot) starved the others.
                    item = min(due, key=lambda it: (busy_apps.get(it[3].app, 0), self._turns.get(it[3].app, 0), it[:3]))
                    run = item[3]
                    if busy_apps.get(run.app, 0) >= self.per_app:
                        break  # every app with a run due holds its share of the threads
                    due.remove(item)
                    entry = self.entries.get((run.app, run.name))
                    deployed = self.apps.get(run.app)
                    if entry is None or deployed is None:
                        store.skip(self.conn, run, "the entry was removed before the run started", now)
                        continue
                    if not store.start(self.conn, run, self.owner, now, entry.serial):
                        if entry.serial and self._still_pending(run):
                            waiting.append(item)  # its entry's previous run is still running (here or elsewhere)
                        continue
                    busy_apps[run.app] = busy_apps.get(run.app, 0) + 1
                    launches.append((deployed, entry.config, run, store.last_run(self.conn, run.app, run.name, run.id)))
        except BaseException:
            # Rolled back: the runs taken off the heap are still pending and owned here, and no other
            # scheduler takes over a live one's runs, so they must go back or never run.
            for item in taken:
                heapq.heappush(self._ready, item)
            raise
        for item in waiting + due:
            heapq.heappush(self._ready, item)
        for deployed, config, run, last in launches:
            self._turn += 1
            self._turns[run.app] = self._turn
            host = self._free_hosts.pop()
            self._running_apps[run.app] = self._running_apps.get(run.app, 0) + 1
            self.ticker.enter()
            self._running[run.id] = self.pool.submit(self._execute, host, deployed, config, run, last)

    def _still_pending(self, run: Run) -> bool:
        row = self.conn.execute("SELECT status, owner FROM cron_runs WHERE id = ?", (run.id,)).fetchone()
        return row is not None and row == ("pending", self.owner)

    def _execute(self, host, deployed: Deployed, config: CronEntry, run: Run, last: dict | None) -> None:
        status, error = "failed", "the scheduler failed to run the job"
        try:
            status, error = execute(host, deployed, config, run, last)
        finally:
            self.ticker.leave()
            # The loop thread records outcomes, several in one write.
            self._finished.put((run, host, status, error, self.clock.now(), config.retries))
            self._wake.set()
