"""`fazt-host up`'s process layout: workers claiming cores."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from fazt_host.config import HostSettings
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
