"""Shared fixtures: real host processes (Granian over sockets) on temporary cartridges.

Every component is built once per test run: all hosts share one cache folder
(FAZT_CACHE), which holds JS builds by source hash and compiled artifacts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "apps"
TEST_APPS = Path(__file__).resolve().parent / "apps"
FAZT = str(Path(sys.executable).parent / "fazt-host")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


class Cartridge:
    """A cartridge file plus helpers to run the CLI and a server against it."""

    def __init__(self, path: Path, cache: Path):
        self.path = path
        self.env = {**os.environ, "FAZT_CARTRIDGE": str(path), "FAZT_CACHE": str(cache)}
        self.servers: list[Server] = []

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run([FAZT, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"fazt-host {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def deploy(self, folder: Path, *flags: str) -> subprocess.CompletedProcess:
        return self.cli("deploy", str(folder), *flags)

    def serve(self, *flags: str, workers: int = 2, ready_timeout: float = 30) -> Server:
        server = Server(self, workers, flags, ready_timeout)
        self.servers.append(server)
        return server


class Server:
    def __init__(self, cart: Cartridge, workers: int, flags: tuple[str, ...], ready_timeout: float = 30):
        self.cart = cart
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [FAZT, "up", "--port", str(self.port), "--workers", str(workers), *flags],
            env=cart.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.client = httpx.Client(base_url=self.base, timeout=30)
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float = 30) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stderr.read().decode()}")
            try:
                if httpx.get(self.base + "/_/health", timeout=1).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("server did not become ready")

    def get(self, path: str, **kw) -> httpx.Response:
        return self.client.get(path, **kw)

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        return self.client.request(method, path, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.client.close()


@contextlib.contextmanager
def moto_server():
    """A real S3-speaking server on loopback (moto in server mode), stopped on leaving."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("moto_server did not start")
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def moto_endpoint():
    """The external storage backend's server, shared by the session."""
    with moto_server() as endpoint:
        yield endpoint


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    """The host settings that put an app's bytes in `bucket` of the server at `endpoint`."""
    return {"FAZT_S3_ENDPOINT": endpoint, "FAZT_S3_BUCKET": bucket, "FAZT_S3_REGION": "us-east-1",
            "FAZT_S3_ACCESS_KEY_ID": "testing", "FAZT_S3_SECRET_ACCESS_KEY": "testing", "FAZT_S3_PART_MB": "5"}


def cut_short(port: int, path: str) -> str:
    """PUTs 10 of a promised 1000 bytes, then half-closes: the reply."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 1000\r\n\r\n"  # as signed
        sock.sendall(head.encode() + b"0123456789")
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        return sock.recv(4096).decode(errors="replace")


def workers_anon_mib(server: Server) -> float:
    """The anonymous memory (not the cartridge's mapped pages) of the server's workers together."""
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    total = 0
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                total += int(line.split()[1])
    return total / 1024


def stalled_clients(port: int, path: str, count: int) -> list[socket.socket]:
    """Connections that ask for `path` and then read nothing (a receive buffer of a page)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(sock)
    return socks


def serve_apps(tmp_path_factory, cache_dir, name: str, *apps: Path, workers: int = 2):
    """A module's own host with these apps deployed: `yield from` it in a fixture."""
    cart = Cartridge(tmp_path_factory.mktemp(name) / "fazt.db", cache_dir)
    for app in apps:
        cart.deploy(app)
    server = cart.serve(workers=workers)
    yield cart, server
    server.stop()


@pytest.fixture
def cartridge(tmp_path, cache_dir):
    cart = Cartridge(tmp_path / "fazt.db", cache_dir)
    yield cart
    for server in cart.servers:
        server.stop()


@pytest.fixture(scope="session")
def served(tmp_path_factory, cache_dir):
    """One host with hello and probe deployed, shared by the tests that only read."""
    cart = Cartridge(tmp_path_factory.mktemp("served") / "fazt.db", cache_dir)
    cart.deploy(APPS / "hello")
    cart.deploy(TEST_APPS / "probe")
    server = cart.serve()
    yield server
    server.stop()


def copy_app(src, dest, **manifest_changes):
    """A copy of an app folder, its fazt.json changed (another name, limits...)."""
    import json
    import shutil

    shutil.copytree(src, dest)
    manifest = json.loads((dest / "fazt.json").read_text())
    manifest.update(manifest_changes)
    (dest / "fazt.json").write_text(json.dumps(manifest))
    return dest


def put_parts(conn, key, parts, app="a", bucket="files", etag="etag-2", content_type="app/parts", metadata=None):
    """An object made of multipart parts, as the S3 endpoint's UploadPart and CompleteMultipartUpload make it."""
    from fazt_host import cartridge
    from fazt_host.capabilities.storage import store

    upload_id = f"test-{key}"
    with cartridge.transaction(conn):
        conn.execute("INSERT INTO s3_uploads(id, app, bucket, key, content_type, metadata, created_at) "
                     "VALUES (?, ?, ?, ?, '', '{}', 0)", (upload_id, app, bucket, key))
    for number, part in enumerate(parts, 1):
        up = store.Upload(conn, app, bucket, key, "", {}, True, 1 << 40, part=True)
        up.write(part)
        up.finish_part(upload_id, number)
    with cartridge.transaction(conn):
        pieces = conn.execute("SELECT data, size FROM s3_parts WHERE upload = ? ORDER BY number", (upload_id,)).fetchall()
        made = store.assemble(conn, app, bucket, key, pieces, etag, content_type, metadata or {"m": "1"})
        conn.execute("DELETE FROM s3_parts WHERE upload = ?", (upload_id,))
        conn.execute("DELETE FROM s3_uploads WHERE id = ?", (upload_id,))
    return made


def register_apps(conn, *names: str) -> None:
    """Apps the store-level tests write for, as deploy registers them: an app's collections, buckets
    and log lines are made only while it exists."""
    from fazt_host import cartridge

    with cartridge.transaction(conn):
        conn.executemany("INSERT OR IGNORE INTO apps(name, active, created_at, updated_at) VALUES (?, 0, 0, 0)",
                         [(n,) for n in names])
