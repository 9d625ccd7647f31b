"""`fazt-host up`'s process layout: workers claiming cores, and all of it stopping on a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import TEST_APPS

from fazt_host.config import HostSettings, ManifestError
from fazt_host.serve import claim_core

CORES = sorted(os.sched_getaffinity(0))

# A worker: claims a core, reports it and the affinity a thread started afterwards has, then waits.
WORKER = textwrap.dedent(
    """
    import os, sys, threading
    from fazt_host.config import HostSettings
    from fazt_host.serve import claim_core
    core = claim_core(HostSettings(cartridge=sys.argv[1], workers=int(sys.argv[2])))
    seen = []
    t = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))
    t.start(); t.join()
    print(core, seen[0], flush=True)
    sys.stdin.read()
    """
)


def start_worker(cartridge, workers: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(cartridge), str(workers)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    return proc, proc.stdout.readline().strip()


def test_workers_as_many_as_cores_each_hold_a_core_of_their_own(tmp_path):
    cartridge = tmp_path / "fazt.db"
    workers = [start_worker(cartridge, len(CORES)) for _ in CORES]
    extra = start_worker(cartridge, len(CORES))  # one more than there are cores: none left for it
    try:
        claimed = [line for _, line in workers]
        assert sorted(int(line.split()[0]) for line in claimed) == CORES
        for line in claimed:  # threads started after the claim inherit the one core
            core, later = line.split(" ", 1)
            assert later == f"[{core}]"
        assert extra[1] == f"None {CORES}"
        # A worker that exits leaves its core to the next one started.
        gone, line = workers.pop()
        gone.stdin.close()
        gone.wait(10)
        again = start_worker(cartridge, len(CORES))
        workers.append(again)
        assert again[1].split()[0] == line.split()[0]
    finally:
        for proc, _ in [*workers, extra]:
            proc.stdin.close()
            proc.wait(10)


def test_fewer_workers_than_cores_are_not_pinned(tmp_path):
    if len(CORES) < 2:
        pytest.skip("needs two cores")
    before = os.sched_getaffinity(0)
    assert claim_core(HostSettings(cartridge=str(tmp_path / "fazt.db"), workers=len(CORES) - 1)) is None
    assert os.sched_getaffinity(0) == before


def session_processes(sid: int) -> list[str]:
    """The live processes (not zombies) of a session: `up`, its workers and its scheduler."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == sid and state != "Z":
            found.append(f"{entry.name} {cmdline}")
    return found


def wait_until(predicate, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


@pytest.mark.parametrize("how", ["SIGTERM to up", "SIGINT to the process group", "SIGKILL to up"])
def test_up_its_workers_and_scheduler_all_stop_on_a_signal(cartridge, how):
    """Killed outright, up takes its workers with it too: before, they served on, orphaned, and held the port."""
    cartridge.deploy(TEST_APPS / "cronapp")  # the scheduler runs its entries every second meanwhile
    server = cartridge.serve(workers=2)
    sid = server.proc.pid  # up leads a session of its own
    wait_until(lambda: any("fazt_host.triggers.cron" in p for p in session_processes(sid)), timeout=30)
    assert server.get("/_/health").status_code == 200
    time.sleep(1.5)  # at least one run of each entry, so the scheduler is busy when the signal comes
    if how != "SIGINT to the process group":
        os.kill(server.proc.pid, signal.SIGKILL if how == "SIGKILL to up" else signal.SIGTERM)
    else:
        os.killpg(server.proc.pid, signal.SIGINT)
    try:
        server.proc.wait(20)
        wait_until(lambda: not session_processes(sid), timeout=20)
    finally:
        left = session_processes(sid)
        if left:
            os.killpg(sid, signal.SIGKILL)
    assert not left, left
    assert server.proc.returncode == (-signal.SIGKILL if how == "SIGKILL to up" else 0)
    log = server.proc.stderr.read().decode()
    assert "started it again" not in log, log


def test_a_second_up_on_a_port_in_use_refuses_before_deploying(cartridge, tmp_path):
    """Granian's workers bind with SO_REUSEPORT: without the check a second host would share the port."""
    server = cartridge.serve(workers=1)
    other = tmp_path / "other.db"
    proc = cartridge.cli("up", "--port", str(server.port), "--cartridge", str(other),
                         "--deploy", str(TEST_APPS / "cronapp"), check=False, timeout=60)
    assert proc.returncode == 1
    assert f"127.0.0.1:{server.port} is already in use" in proc.stderr
    assert not other.exists()  # refused before deploying anything
    assert server.get("/_/health").status_code == 200


@pytest.mark.parametrize("overrides", [{"port": 99999}, {"port": -1}, {"workers": -1}, {"cron_threads": 0}])
def test_out_of_range_settings_are_a_usage_error(overrides):
    # `up --workers -1` served with one worker; `--port 99999` died at bind with an OverflowError.
    with pytest.raises(ManifestError, match="host settings: .* not -?[0-9]+"):
        HostSettings.from_env(**overrides)


def test_a_setting_of_the_wrong_type_names_its_variable(monkeypatch):
    monkeypatch.setenv("FAZT_PORT", "abc")
    with pytest.raises(ManifestError, match="FAZT_PORT"):
        HostSettings.from_env()
