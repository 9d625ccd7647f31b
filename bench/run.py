"""`make bench`: every figure of bench/README.md, measured side by side in one run.

    .venv/bin/python bench/run.py [--quick]

Writes bench/.work/results.json and rewrites bench/README.md. Ratios matter
more than absolute numbers: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, FAZT, ROOT, WORK, FaztServer, cli, env_for, fresh_cartridge  # noqa: E402

from bench import peers  # noqa: E402
from bench import storage  # noqa: E402
from bench.docs import compare as docs_compare  # noqa: E402
from bench.peers import wrk  # noqa: E402

CONNECTIONS = (1, 8, 32)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def bench_app(name: str, source: Path, dest: Path) -> Path:
    """An app folder around a plain Workers-style source file."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, dest / "index.js")
    (dest / "fazt.json").write_text(json.dumps({"name": name}))
    return dest


def load_runs(duration: float) -> dict:
    """req/s and latency at 1/8/32 connections: fazt-host and its peers on the same handler."""
    app = bench_app("bench", peers.HELLO_JS, WORK / "apps" / "bench")
    cartridge = fresh_cartridge("load")
    cli(cartridge, "deploy", str(app))
    results = {}
    servers = {
        "fazt-host": lambda port: None,
        "wasmtime serve": lambda port: peers.start("wasmtime-serve", port),
        "workerd": lambda port: peers.start("workerd", port),
        "granian bare": lambda port: peers.start("granian", port),
    }
    for name, start in servers.items():
        log(f"load: {name}")
        if name == "fazt-host":
            server = FaztServer(cartridge)
            server.first_response("/bench/")
            url, stop = server.url + "/bench/", server.stop
        else:
            port = peers.free_port()
            proc = start(port)
            url, stop = f"http://127.0.0.1:{port}/", (lambda p=proc: peers.stop(p))
        try:
            body = httpx.get(url).json()
            assert body == {"hello": "world"}, body
            wrk.run(url, 8, duration_s=1)  # warm up
            results[name] = {str(c): wrk.run(url, c, duration_s=duration) for c in CONNECTIONS}
        finally:
            stop()
    return results


def body_throughput() -> dict:
    """8 MiB in and out of a handler over HTTP, byte-exact."""
    app = bench_app("body", ROOT / "bench" / "apps" / "body.js", WORK / "apps" / "body")
    cartridge = fresh_cartridge("body")
    cli(cartridge, "deploy", str(app))
    server = FaztServer(cartridge, workers=1)
    try:
        server.first_response("/body/out?n=8")
        payload = os.urandom(8 << 20)
        out = {"in": [], "out": [], "in_guest_read": []}
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for _ in range(7):
                t = time.perf_counter()
                r = c.post("/body/in", content=payload)
                out["in"].append(time.perf_counter() - t)
                assert r.json()["length"] == len(payload)
                out["in_guest_read"].append(r.json()["readMs"] / 1000)
                t = time.perf_counter()
                r = c.get(f"/body/out?n={8 << 20}")
                out["out"].append(time.perf_counter() - t)
                assert len(r.content) == 8 << 20
        mb = (8 << 20) / 1e6
        return {k: round(mb / sorted(v)[len(v) // 2], 1) for k, v in out.items()}
    finally:
        server.stop()


def restart_20_apps() -> dict:
    """Restart to first served request with 20 deployed apps; RSS per worker."""
    cartridge = fresh_cartridge("twenty")
    source = (ROOT / "apps" / "hello" / "index.js").read_text()
    for i in range(20):
        dest = WORK / "apps" / f"app{i:02d}"
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "index.js").write_text(source.replace("'world'", f"'world {i}'"))
        (dest / "fazt.json").write_text(json.dumps({"name": f"app{i:02d}"}))
        log(f"restart: deploying app{i:02d}")
        cli(cartridge, "deploy", str(dest))
    before = {p.name: p.stat().st_mtime_ns for p in CACHE.glob("*.cwasm")}
    server = FaztServer(cartridge)
    first = server.first_response("/app00/hello")
    for i in range(20):
        for _ in range(4):  # reach both workers
            httpx.get(f"{server.url}/app{i:02d}/hello")
    rss = server.worker_rss_mib()
    server.stop()
    restarts = []
    for _ in range(3):
        server = FaztServer(cartridge)
        restarts.append(server.first_response("/app07/hello"))
        server.stop()
    after = {p.name: p.stat().st_mtime_ns for p in CACHE.glob("*.cwasm")}
    return {
        "first_start_s": round(first, 2),
        "restart_to_first_request_s": round(sorted(restarts)[1], 2),
        "recompiled": sum(1 for k in before if after.get(k) != before[k]),
        "rss_per_worker_mib_after_all_20": [round(x) for x in rss],
    }


def deploy_times() -> dict:
    """apps/hello: cold deploy (nothing cached) and unchanged redeploy, each to first served request."""
    results = {}
    cold_cache = WORK / "cold-cache"
    shutil.rmtree(cold_cache, ignore_errors=True)
    for label, cache in (("cold", cold_cache), ("unchanged", CACHE)):
        cartridge = fresh_cartridge(f"deploy-{label}")
        env = {**env_for(cartridge), "FAZT_CACHE": str(cache)}
        if label == "unchanged":  # the build and the compiled artifact are in the cache already
            subprocess.run([FAZT, "deploy", str(ROOT / "apps" / "hello")], env=env, check=True, capture_output=True)
            fresh_cartridge(f"deploy-{label}")
        server = subprocess.Popen([FAZT, "up", "--port", str(port := peers.free_port()), "--workers", "2"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            peers.wait_ready(server, port)
            t = time.perf_counter()
            out = subprocess.run([FAZT, "deploy", "--json", str(ROOT / "apps" / "hello")], env=env, check=True,
                                 capture_output=True, text=True).stdout
            while httpx.get(f"http://127.0.0.1:{port}/hello/hello").status_code != 200:
                time.sleep(0.01)
            total = time.perf_counter() - t
            d = json.loads(out)
            results[label] = {"to_first_request_s": round(total, 2), "phases_s": d["phases"], "built": d["built"]}
        finally:
            peers.stop(server)
    shutil.rmtree(cold_cache, ignore_errors=True)
    return results


def coldstart() -> dict:
    out = WORK / "coldstart.json"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", str(ROOT / "bench" / "test_coldstart.py"),
                    f"--benchmark-json={out}", "-p", "no:cacheprovider"], check=True, cwd=ROOT)
    data = json.loads(out.read_text())["benchmarks"][0]["stats"]
    return {"p50_ms": round(data["median"] * 1000, 3), "mean_ms": round(data["mean"] * 1000, 3),
            "min_ms": round(data["min"] * 1000, 3), "rounds": data["rounds"],
            "breakdown": json.loads((WORK / "breakdown.json").read_text())}


def cron_bench() -> dict:
    import cron

    return cron.run()


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="shorter load runs")
    p.add_argument("--only", nargs="*", help="coldstart load body restart deploy docs storage cron")
    p.add_argument("--docs-n", type=int, default=1_000_000, help="documents for the docs step (default 1000000)")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    results_path = WORK / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    steps = {"coldstart": coldstart, "load": lambda: load_runs(3 if args.quick else 8),
             "body": body_throughput, "restart": restart_20_apps, "deploy": deploy_times,
             "docs": lambda: {**results.get("docs", {}), str(args.docs_n): docs_compare.run(args.docs_n)},
             "storage": lambda: storage.run(args.quick), "cron": cron_bench}
    for name, step in steps.items():
        if args.only and name not in args.only:
            continue
        log(f"running {name}")
        results[name] = step()
        results_path.write_text(json.dumps(results, indent=2))
    results["machine"] = machine()
    results["date"] = time.strftime("%Y-%m-%d")
    results_path.write_text(json.dumps(results, indent=2))
    from report import write_readme

    write_readme(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
