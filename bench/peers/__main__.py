"""python -m bench.peers {serve NAME [--port N] | check [-c N] [-d S] [NAME ...] | build}"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import urllib.request

from . import HOST, OTHER_PEERS, PEERS, build_wasi_http, ensure_wasmtime, ensure_workerd, free_port, start, stop
from . import wrk


def _listeners(pid_group: int) -> list[str]:
    """Listening TCP addresses owned by the peer's process group (for the bind check)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    pids = set(
        subprocess.run(["pgrep", "-g", str(pid_group)], capture_output=True, text=True).stdout.split()
    )
    found = []
    for line in out.splitlines():
        if any(f"pid={p}," in line for p in pids):
            found.append(line.split()[3])
    return sorted(set(found))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_serve(args) -> int:
    port = args.port or free_port()
    proc = start(args.name, port)
    print(f"{args.name} serving on http://{HOST}:{port}/ (log: {proc.log_path}); Ctrl-C stops it", flush=True)
    try:
        signal.signal(signal.SIGTERM, _interrupt)
        proc.wait()
        print(f"{args.name} exited with {proc.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(proc)


def cmd_check(args) -> int:
    names = args.names or list(PEERS)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        print(f"unknown peer(s): {', '.join(unknown)}; known: {', '.join(PEERS)}", file=sys.stderr)
        return 2
    results = {}
    failed = False
    for name in names:
        port = free_port()
        proc = start(name, port)
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5) as resp:
                body = resp.read()
                ctype = resp.headers.get("content-type")
            listening = _listeners(proc.pid)
            r = wrk.run(f"http://{HOST}:{port}/", connections=args.connections, duration_s=args.duration)
            r.pop("output")
            ok = json.loads(body) == {"hello": "world"} and all(a.startswith(f"{HOST}:") for a in listening)
            failed |= not ok or r["socket_errors"] > 0 or r["status_errors"] > 0
            results[name] = {"body": body.decode(), "content_type": ctype, "listening": listening, **r}
            print(
                f"{name:15s} {r['rps']:10.0f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                f"errors {r['socket_errors']}+{r['status_errors']}  listening {','.join(listening)}  body {body.decode()}",
                flush=True,
            )
        finally:
            stop(proc)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def cmd_build(args) -> int:
    ensure_wasmtime()
    ensure_workerd()
    print(build_wasi_http())
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description="Benchmark peer servers")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve one peer on 127.0.0.1 until Ctrl-C")
    s.add_argument("name", choices=[*PEERS, *OTHER_PEERS])
    s.add_argument("--port", type=int, default=0)
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser("check", help="start each peer, curl it, run a short wrk, stop it")
    c.add_argument("names", nargs="*", metavar="NAME", help=f"peers to check (default: all of {', '.join(PEERS)})")
    c.add_argument("-c", "--connections", type=int, default=8)
    c.add_argument("-d", "--duration", type=float, default=3)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check)
    b = sub.add_parser("build", help="install wasmtime and workerd, build the wasi:http component")
    b.set_defaults(func=cmd_build)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
