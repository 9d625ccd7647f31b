"""A worker's wasm threads: the standby runs jobs only while the first is held by a long one."""

import threading
import time

from fazt_host.lanes import HELD_AFTER_S, Lanes


def test_short_jobs_all_run_on_the_first_thread_and_no_standby_host_is_made():
    made = []
    lanes = Lanes("first", lambda: made.append(1) or "standby", 2)
    ran = [lanes.submit(lambda host: (host, threading.current_thread().name)) for _ in range(50)]
    assert {f.result(5) for f in ran} == {("first", "fazt-wasm-0")}
    assert made == [] and lanes.lanes[1].host is None


def test_a_held_first_thread_hands_the_jobs_behind_it_to_the_standby_in_order():
    made = []
    lanes = Lanes("first", lambda: made.append(1) or "standby", 2)
    release = threading.Event()
    long_job = lanes.submit(lambda host: release.wait(10) and host)
    order = []
    start = time.monotonic()
    behind = [lanes.submit(lambda host, i=i: order.append(i) or host) for i in range(5)]
    assert [f.result(5) for f in behind] == ["standby"] * 5 and order == list(range(5))
    assert HELD_AFTER_S <= time.monotonic() - start < HELD_AFTER_S + 1
    release.set()
    assert long_job.result(5) == "first"
    assert lanes.submit(lambda host: host).result(5) == "first"  # the first takes over again once free
    assert made == [1]  # the standby's host, made once, on first use


def test_a_job_arriving_while_the_first_thread_is_held_starts_at_once_on_the_standby():
    lanes = Lanes("first", lambda: "standby", 2)
    release = threading.Event()
    long_job = lanes.submit(lambda host: release.wait(10) and host)
    time.sleep(HELD_AFTER_S * 2)  # held by now; the standby is asleep between its looks
    waits = []
    for _ in range(10):
        start = time.monotonic()
        assert lanes.submit(lambda host: host).result(5) == "standby"
        waits.append(time.monotonic() - start)
        time.sleep(0.013)  # off the rhythm of the standby's looks
    release.set()
    assert long_job.result(5) == "first"
    assert sorted(waits)[5] < HELD_AFTER_S / 8  # before: up to HELD_AFTER_S / 4 each, half of that typical


def test_a_failing_job_reaches_its_future_and_the_thread_serves_on():
    lanes = Lanes("first", lambda: "standby", 1)
    failed = lanes.submit(lambda host: 1 / 0)
    assert isinstance(failed.exception(5), ZeroDivisionError)
    assert lanes.submit(lambda host: host).result(5) == "first"


def test_one_app_holds_at_most_all_but_one_thread():
    lanes = Lanes("first", lambda: "standby", 3)
    release = threading.Event()
    runaway = [lanes.submit(lambda host: release.wait(10) and threading.current_thread().name, app="a") for _ in range(4)]
    time.sleep(2 * HELD_AFTER_S)
    # Two threads are a's; its third and fourth jobs wait, and the last thread serves another app.
    other = lanes.submit(lambda host: threading.current_thread().name, app="b")
    assert other.result(5) == "fazt-wasm-2"
    assert [f.done() for f in runaway] == [False] * 4
    assert lanes.submit(lambda host: "host's own", app=None).result(5) == "host's own"
    release.set()
    assert sorted(f.result(5) for f in runaway[:2]) == ["fazt-wasm-0", "fazt-wasm-1"]
    assert all(f.result(5) for f in runaway[2:])  # run once a's own jobs ended
