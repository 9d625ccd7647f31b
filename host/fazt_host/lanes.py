"""A worker's wasm threads: the first runs every job, a standby takes over while it is held.

Fresh instances on two threads of one process are slower than on one (kernel
page-fault and unmap contention), so a worker runs its guests, and its writes
to the cartridge, on one thread. A call that runs on, though (a loop until its
time limit, a response streamed for minutes, a slow scan), would hold up every
request queued behind it, whatever app it is for. So once a thread has been on
one job for HELD_AFTER_S, the next thread takes jobs from the same queue, with
a `Host` of its own (its own cartridge connection, made when first needed):
jobs run in arrival order, each on the first thread whose predecessors are all
held. Short jobs never leave the first thread.

One app holds at most all but one of the threads (as cron keeps one thread for
other apps): its runaway requests, or waitUntil work that runs on, would
otherwise take every thread, and every other app's requests would wait out
their time limits. Its further jobs wait for one of its own to end.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

HELD_AFTER_S = 0.2  # a call this long is no usual request (a trivial one takes about a millisecond)


class Lane:
    def __init__(self, host=None):
        self.host = host
        self.busy_since: float | None = None  # when its current job started
        self.app: str | None = None  # whose job it runs

    def held(self, now: float) -> bool:
        since = self.busy_since
        return since is not None and now - since >= HELD_AFTER_S


class Lanes:
    def __init__(self, host, make_host: Callable[[], Any], count: int):
        """`host` serves the first thread; `make_host()` makes each standby's, on its thread."""
        self._make_host = make_host
        self.lanes = [Lane(host)] + [Lane() for _ in range(count - 1)]
        self.share = max(1, count - 1)  # threads one app may hold at once
        self._jobs: deque[tuple[Callable, Future, str | None]] = deque()
        lock = threading.Lock()
        # A job wakes the first thread only, unless that one is held: waking every standby for each
        # request would cost context switches on the worker's core. Standbys also look on their own,
        # a few times per HELD_AFTER_S, for a first thread that became held with jobs queued.
        self._first = threading.Condition(lock)
        self._standby = threading.Condition(lock)
        for i in range(count):
            threading.Thread(target=self._serve, args=(i,), name=f"fazt-wasm-{i}", daemon=True).start()

    def submit(self, fn: Callable[[Any], Any], app: str | None = None) -> Future:
        """Runs fn(host) on a wasm thread, host being that thread's; the future holds its result.
        `app`: whose job it is, for the threads' share (None: the host's own, never held back)."""
        future: Future = Future()
        with self._first:
            self._jobs.append((fn, future, app))
            self._first.notify()
            if self.lanes[0].held(time.monotonic()):  # a standby takes it now, not at its next look
                self._standby.notify_all()
        return future

    def _next(self):
        """The first queued job whose app holds fewer threads than its share (under the lock)."""
        for k, job in enumerate(self._jobs):
            app = job[2]
            if app is None or sum(lane.app == app for lane in self.lanes) < self.share:
                del self._jobs[k]
                return job
        return None

    def _serve(self, i: int) -> None:
        lane, before = self.lanes[i], self.lanes[:i]
        cond = self._standby if before else self._first
        while True:
            with cond:
                while not (self._jobs and all(b.held(time.monotonic()) for b in before)
                           and (job := self._next()) is not None):
                    cond.wait(HELD_AFTER_S / 4 if before else None)
                fn, future, lane.app = job
                lane.busy_since = time.monotonic()
            try:
                if future.set_running_or_notify_cancel():
                    if lane.host is None:
                        lane.host = self._make_host()
                    future.set_result(fn(lane.host))
            except BaseException as e:  # noqa: BLE001 - the awaiting side gets it
                future.set_exception(e)
            finally:
                del fn, future, job  # a failed call's traceback would keep its instance alive until the next job
                with cond:
                    lane.busy_since = lane.app = None
                    if self._jobs:  # one held back for its app's share may go now
                        self._first.notify()
