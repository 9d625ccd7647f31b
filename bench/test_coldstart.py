"""Cold start in-process: fresh instance + `fetch` of apps/hello through the SDK, no sockets.

Run: .venv/bin/pytest bench/test_coldstart.py --benchmark-json bench/.work/coldstart.json
"""

from __future__ import annotations

import json
import time

import pytest
from common import ROOT, WORK, InProcess, cli, fresh_cartridge


@pytest.fixture(scope="module")
def hello():
    cartridge = fresh_cartridge("coldstart")
    cli(cartridge, "deploy", str(ROOT / "apps" / "hello"))
    return InProcess(cartridge, "hello")


def test_cold_start_fetch(benchmark, hello):
    payload = hello.request("/hello")
    exchange = hello.fetch(payload)
    assert exchange.head.status == 200 and b'"hello":"world"' in b"".join(exchange.chunks)
    benchmark.pedantic(hello.fetch, args=(payload,), rounds=2000, warmup_rounds=100)


def test_cold_start_breakdown(hello):
    """Where the time goes: store + instantiate, the guest call, dropping the store."""
    from wasmtime import Store, WasiConfig

    from fazt_host.runtime.abi import call_export
    from fazt_host.runtime.engine import ticks_for

    runtime, guest = hello.host.runtime, hello.host.guest(hello.deployed.component)
    payload = hello.request("/hello")
    parts = {"store+instantiate": [], "call": [], "drop": []}
    from fazt_host.runtime import Invocation
    from fazt_host.server import HANDLER_INTERFACE, Exchange

    for _ in range(1000):
        exchange = Exchange(hello.loop, None, 1 << 30, 1 << 30, time.monotonic() + 30)
        runtime.current = Invocation("hello", "b", hello.deployed.manifest.limits, {"http": exchange})
        t0 = time.perf_counter()
        store = Store(runtime.engine)
        store.set_wasi(WasiConfig())
        store.set_epoch_deadline(ticks_for(30_000))
        store.set_limits(memory_size=128 << 20)
        instance = runtime.linker.instantiate(store, guest.component)
        func = instance.get_func(store, guest.export(HANDLER_INTERFACE, "fetch"))
        t1 = time.perf_counter()
        call_export(func, store, payload)
        t2 = time.perf_counter()
        del func, instance, store
        t3 = time.perf_counter()
        parts["store+instantiate"].append(t1 - t0)
        parts["call"].append(t2 - t1)
        parts["drop"].append(t3 - t2)
    p50 = {name: round(sorted(v)[len(v) // 2] * 1000, 3) for name, v in parts.items()}
    print(p50)
    (WORK / "breakdown.json").write_text(json.dumps(p50))
