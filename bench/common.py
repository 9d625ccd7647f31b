"""Helpers the benchmarks share: a bench cartridge under bench/.work and in-process invocation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
FAZT = str(Path(sys.executable).parent / "fazt-host")
# Builds and compiled artifacts survive between bench runs (keyed by source hash).
CACHE = WORK / "cache"


def env_for(cartridge: Path) -> dict:
    return {**os.environ, "FAZT_CARTRIDGE": str(cartridge), "FAZT_CACHE": str(CACHE)}


def cli(cartridge: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FAZT, *args], env=env_for(cartridge), check=True, capture_output=True, text=True)


def fresh_cartridge(name: str) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


class FaztServer:
    """`fazt-host up` on a free loopback port."""

    def __init__(self, cartridge: Path, workers: int = 2):
        from bench import peers  # the repo root is on sys.path only in bench scripts, not in pytest

        self.cartridge = cartridge
        self.port = peers.free_port()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [FAZT, "up", "--port", str(self.port), "--workers", str(workers)],
            env=env_for(cartridge), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def first_response(self, path: str, timeout: float = 60) -> float:
        """Seconds from process start to the first 200 on `path`."""
        while time.perf_counter() - self.started < timeout:
            try:
                if httpx.get(self.url + path, timeout=5).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                time.sleep(0.01)
        raise RuntimeError(f"no answer on {path}")

    def worker_rss_mib(self) -> list[float]:
        out = subprocess.run(["ps", "-o", "pid=,ppid=,rss=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [int(line.split()[2]) / 1024 for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        from bench import peers

        peers.stop(self.proc)


class InProcess:
    """One Host in this process, invoking an app's fetch without sockets."""

    def __init__(self, cartridge: Path, app: str):
        from fazt_host.apps import load_active
        from fazt_host.config import HostSettings
        from fazt_host.host import Host

        self.host = Host(HostSettings(cartridge=str(cartridge), cache=str(CACHE)))
        self.host.start_ticker()
        self.deployed = load_active(self.host.conn)[app]
        self.loop = asyncio.new_event_loop()

    def request(self, path: str, method: str = "GET", has_body: bool = False) -> str:
        return msgspec.json.encode(
            {"method": method, "url": f"http://bench{path}", "headers": [["host", "bench"]],
             "requestId": "bench", "hasBody": has_body, "app": self.deployed.name}
        ).decode()

    def fetch(self, payload: str):
        from fazt_host.runtime import Invocation
        from fazt_host.server import HANDLER_INTERFACE, Exchange

        exchange = Exchange(self.loop, None, 1 << 30, 1 << 30, time.monotonic() + 30)
        invocation = Invocation(self.deployed.name, "bench", self.deployed.manifest.limits, {"http": exchange})
        result = self.host.invoke(self.deployed, HANDLER_INTERFACE, "fetch", payload, invocation)
        if "status" in result:
            exchange.finish_inline(result)
        return exchange


def percentiles(samples_ms: list[float]) -> dict:
    s = sorted(samples_ms)
    return {"p50": s[len(s) // 2], "p99": s[min(len(s) - 1, int(len(s) * 0.99))], "n": len(s)}
