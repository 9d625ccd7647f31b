"""Run wrk against a URL and return req/s and latency percentiles.

    from bench.peers import wrk
    wrk.run("http://127.0.0.1:8000/", connections=8, duration_s=3)
    # {'rps': 12345.6, 'p50_ms': 0.61, 'p99_ms': 2.3, 'requests': ..., ...}

Needs the `wrk` binary (Debian: `apt-get install -y wrk`). The numbers come from
wrk's Lua `done` hook (wrk_report.lua), which sees the exact histogram; the
`--latency` table that wrk prints is parsed as a fallback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

REPORT_LUA = Path(__file__).resolve().parent / "wrk_report.lua"

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value.strip())
    if not m:
        raise ValueError(f"unparsable wrk latency {value!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse(output: str) -> dict:
    """Parse wrk --latency output (with or without the WRK_JSON line)."""
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            r = json.loads(line[len("WRK_JSON "):])
            seconds = r["duration_us"] / 1e6
            errors = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
            return {
                "rps": r["requests"] / seconds if seconds else 0.0,
                "p50_ms": r["p50_us"] / 1e3,
                "p99_ms": r["p99_us"] / 1e3,
                "p90_ms": r["p90_us"] / 1e3,
                "max_ms": r["max_us"] / 1e3,
                "mean_ms": r["mean_us"] / 1e3,
                "requests": r["requests"],
                "duration_s": seconds,
                "socket_errors": errors,
                "status_errors": r["status_errors"],
            }
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise ValueError(f"could not parse wrk output:\n{output}")
    requests = re.search(r"^\s+(\d+) requests in", output, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _to_ms(p50.group(1)),
        "p99_ms": _to_ms(p99.group(1)),
        "requests": int(requests.group(1)) if requests else None,
        "socket_errors": sum(map(int, sock.groups())) if sock else 0,
        "status_errors": int(non2xx.group(1)) if non2xx else 0,
    }


def run(url: str, connections: int, duration_s: float = 5, threads: int | None = None,
        timeout_s: float = 10) -> dict:
    """wrk -t THREADS -c CONNECTIONS -d DURATION --latency URL -> dict(rps, p50_ms, p99_ms, ...).

    THREADS defaults to min(2, connections) (the machine has 2 cores).
    """
    if threads is None:
        threads = min(2, connections)
    binary = shutil.which("wrk")
    if binary is None:
        raise FileNotFoundError("wrk is not installed (Debian: apt-get install -y wrk)")
    argv = [
        binary,
        "-t", str(threads),
        "-c", str(connections),
        "-d", f"{duration_s:g}s",
        "--timeout", f"{timeout_s:g}s",
        "--latency",
        "-s", str(REPORT_LUA),
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    result = parse(proc.stdout)
    result["output"] = proc.stdout
    return result


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("-c", "--connections", type=int, default=8)
    ap.add_argument("-d", "--duration", type=float, default=5)
    ap.add_argument("-t", "--threads", type=int, default=None)
    args = ap.parse_args()
    r = run(args.url, args.connections, args.duration, args.threads)
    print(r.pop("output"))
    print(json.dumps(r, indent=2))
