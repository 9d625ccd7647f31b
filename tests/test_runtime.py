"""The runtime in-process: limits leave the host as it was; types stay generated from the WIT."""

from __future__ import annotations

import asyncio
import filecmp
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

from conftest import ROOT, TEST_APPS
from fazt_host.apps import load_active
from fazt_host.config import HostSettings
from fazt_host.host import Host
from fazt_host.runtime import GuestError, GuestTimeout, Invocation
from fazt_host.server import HANDLER_INTERFACE, Exchange


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def probe(tmp_path_factory, cache_dir):
    cart = tmp_path_factory.mktemp("inproc") / "fazt.db"
    from conftest import Cartridge

    Cartridge(cart, cache_dir).deploy(TEST_APPS / "probe")
    host = Host(HostSettings(cartridge=str(cart), cache=str(cache_dir)))
    host.start_ticker()
    return host, load_active(host.conn)["probe"]


def call(probe, path: str):
    host, deployed = probe
    loop = asyncio.new_event_loop()
    exchange = Exchange(loop, None, 1 << 20, 1 << 20, time.monotonic() + 30)
    invocation = Invocation("probe", "t", deployed.manifest.limits, {"http": exchange})
    payload = msgspec.json.encode(
        {"method": "GET", "url": f"http://t{path}", "headers": [], "requestId": "t", "hasBody": False, "app": "probe"}
    ).decode()
    result = host.invoke(deployed, HANDLER_INTERFACE, "fetch", payload, invocation)
    if "status" in result:
        exchange.finish_inline(result)
    loop.close()
    return exchange


def test_memory_bomb_traps_and_rss_returns_to_baseline(probe):
    for _ in range(3):
        call(probe, "/global")
    baseline = rss_mib()
    for _ in range(5):
        with pytest.raises(GuestError):
            call(probe, "/bomb")  # the default limit: 128 MiB
    after = rss_mib()
    assert after - baseline < 32, f"RSS grew from {baseline:.0f} to {after:.0f} MiB"
    assert call(probe, "/global").head.status == 200


def test_a_trapped_instance_gives_its_memory_back_at_once(probe):
    import gc
    from dataclasses import replace

    host, deployed = probe
    big = replace(deployed, manifest=msgspec.structs.replace(
        deployed.manifest, limits=deployed.manifest.limits.merged({"memory_mb": 768})))
    call(probe, "/global")
    baseline = rss_mib()
    gc.disable()  # what a worker between two cycle collections sees
    try:
        with pytest.raises(GuestTimeout):
            call((host, big), "/fat-loop")  # 600 MiB written, then interrupted at the time limit
        after = rss_mib()
    finally:
        gc.enable()
    # before: the trap's traceback held the store, its 600 MiB mapped until a later collection
    assert after - baseline < 64, f"RSS grew from {baseline:.0f} to {after:.0f} MiB"


def test_loop_is_interrupted_at_the_deadline(probe):
    started = time.monotonic()
    with pytest.raises(GuestTimeout):
        call(probe, "/loop")  # probe's limit is 2 s
    assert 1.9 < time.monotonic() - started < 5
    assert call(probe, "/global").head.status == 200


def test_response_limit(probe):
    host, deployed = probe
    import msgspec as m

    small = m.structs.replace(deployed.manifest, limits=deployed.manifest.limits.merged({"response_mb": 1}))
    from dataclasses import replace

    limited = (host, replace(deployed, manifest=small))
    with pytest.raises(Exception, match="exceeds the limit of 1 MiB"):
        call(limited, "/big?n=2000000")
    logged = [m for (m,) in host.conn.execute("SELECT message FROM logs WHERE app = 'probe' AND level = 'error'")]
    assert any("exceeds the limit of 1 MiB" in m for m in logged)  # also when the response had started
    assert len(b"".join(call(limited, "/big?n=500000").chunks)) == 500_000


def test_typescript_declarations_are_generated_from_the_wit(tmp_path):
    sdk = ROOT / "guest-sdk"
    subprocess.run(
        [str(sdk / "node_modules" / ".bin" / "jco"), "types", str(ROOT / "wit"), "-n", "app", "-o", str(tmp_path), "-q"],
        check=True,
    )
    committed = sdk / "types" / "wit"
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.d.ts"))
    assert generated == sorted(p.relative_to(committed) for p in committed.rglob("*.d.ts"))
    for rel in generated:
        assert filecmp.cmp(tmp_path / rel, committed / rel, shallow=False), f"{rel} is stale: run npm run types"
