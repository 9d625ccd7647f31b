"""Storage figures, side by side in one run.

- A large object PUT and GET through the S3 endpoint with boto3 (internal
  backend) against a plain copy of the same file on the same disk (the
  physical limit; once as written to the page cache, once flushed to the disk
  with fsync), with the workers' RSS growth: with boto3's default
  transfer settings, and with larger parts and reads (TUNED).
- The client's ceiling: the same upload_file/download_file against a null S3
  server (bench/peers/null_s3.py: bodies read and dropped, objects made of
  zeros), i.e. boto3 and HTTP on loopback with no storage work behind them.
- 8 MiB through a handler: the request body read into the guest and uploaded
  from there, and an object downloaded into the guest and returned; then the
  same bytes without crossing the sandbox: `upload(key, request.body)` (piped
  host-side) and `stream(key)` (streamed by the host).
- Many small objects: PUT/GET of 4 KiB objects through the S3 endpoint, against
  moto_server (an S3 server in Python: a floor) and raw SQLite inserts of the
  same bytes (a ceiling), with the same boto3 client settings.

    .venv/bin/python bench/storage.py [--quick]     (also run.py --only storage)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import apsw
import boto3
import httpx
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, WORK, FaztServer, cli, fresh_cartridge  # noqa: E402

from bench import peers  # noqa: E402

FILES_APP = ROOT / "tests" / "apps" / "files"
MIB = 1 << 20
# A client set up for large objects: 16 MiB parts and ranges, 4 at a time, read 1 MiB at a time
# (boto3's defaults: 8 MiB, 10, 256 KiB, for which the client's own work is most of a GET).
TUNED = TransferConfig(multipart_chunksize=16 * MIB, max_concurrency=4, io_chunksize=1 * MIB)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def s3_client(endpoint: str, key_id: str, secret: str):
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _write_source(size: int) -> Path:
    src = WORK / "storage-large.bin"
    with open(src, "wb") as f:
        for _ in range(size // (64 * MIB)):
            f.write(os.urandom(64 * MIB))
    return src


def large_object(s3, size: int, config: TransferConfig | None = None) -> dict:
    src = _write_source(size)
    kw = {"Config": config} if config else {}
    copy_s = timed(lambda: shutil.copyfile(src, WORK / "storage-large.copy"))
    (WORK / "storage-large.copy").unlink()
    durable_s = timed(lambda: _durable_copy(src, WORK / "storage-large.copy"))
    put_s = timed(lambda: s3.upload_file(str(src), "big", "large.bin", **kw))
    get_s = timed(lambda: s3.download_file("big", "large.bin", str(WORK / "storage-large.back"), **kw))
    same = _same_file(src, WORK / "storage-large.back")
    for p in ("storage-large.bin", "storage-large.copy", "storage-large.back"):
        (WORK / p).unlink(missing_ok=True)
    mbps = lambda s: round(size / MIB / s, 1)  # noqa: E731
    return {
        "bytes": size, "byteExact": same, "fileCopyMBps": mbps(copy_s), "durableCopyMBps": mbps(durable_s),
        "putMBps": mbps(put_s), "getMBps": mbps(get_s), "putVsCopy": round(copy_s / put_s, 2),
        "putVsDurableCopy": round(durable_s / put_s, 2), "getVsCopy": round(copy_s / get_s, 2),
    }


def _durable_copy(src: Path, dst: Path) -> None:
    """A copy that is on the disk when it returns, as a checkpointed SQLite write is."""
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())


def null_s3_ceiling(size: int) -> dict:
    """upload_file/download_file of SIZE bytes against the null S3 server, default and tuned client.

    Timed as large_object times fazt-host (a fresh random file, the download written
    to a file); the bytes that come back are zeros, so they are not compared.
    """
    port = peers.free_port()
    proc = peers.start("null-s3", port)
    try:
        s3 = s3_client(f"http://127.0.0.1:{port}", "x", "y")
        s3.create_bucket(Bucket="null")
        key = f"null-{size}"  # the null server serves an object of the size its key names
        mbps = lambda s: round(size / MIB / s, 1)  # noqa: E731
        out = {"bytes": size}
        for label, config in (("", None), ("Tuned", TUNED)):
            src = _write_source(size)
            back = WORK / "storage-null.back"
            kw = {"Config": config} if config else {}
            put_s = timed(lambda: s3.upload_file(str(src), "null", key, **kw))
            get_s = timed(lambda: s3.download_file("null", key, str(back), **kw))
            if back.stat().st_size != size:
                raise RuntimeError(f"null S3 download: {back.stat().st_size} bytes, expected {size}")
            src.unlink(missing_ok=True)
            back.unlink(missing_ok=True)
            out[f"put{label}"], out[f"get{label}"] = mbps(put_s), mbps(get_s)
            log(f"null S3 server{', tuned client' if label else ''}: PUT {out[f'put{label}']} MB/s, "
                f"GET {out[f'get{label}']} MB/s")
        return out
    finally:
        peers.stop(proc)


def _same_file(a: Path, b: Path) -> bool:
    with open(a, "rb") as x, open(b, "rb") as y:
        while True:
            p, q = x.read(8 * MIB), y.read(8 * MIB)
            if p != q:
                return False
            if not p:
                return True


def guest_path(url: str) -> dict:
    body = os.urandom(8 * MIB)
    with httpx.Client(base_url=url, timeout=60) as c:
        c.put("/files/bytes/docs/warm", content=body[:1024])
        up = min(timed(lambda: c.put("/files/bytes/docs/eight?upsert=1", content=body)) for _ in range(3))
        down = min(timed(lambda: c.get("/files/get/docs/eight")) for _ in range(3))
        exact = c.get("/files/get/docs/eight").content == body
        # The same bytes without crossing the sandbox: the SDK hands request.body to the host,
        # which writes it to storage; stream() returns a body the host reads from storage.
        pipe_up = min(timed(lambda: c.put("/files/pipe/docs/eight-pipe?upsert=1", content=body).raise_for_status())
                      for _ in range(3))
        stream_down = min(timed(lambda: c.get("/files/stream/docs/eight-pipe").raise_for_status()) for _ in range(3))
        pipe_exact = c.get("/files/stream/docs/eight-pipe").content == body
    return {
        "byteExact": exact, "inMBps": round(8 / up, 1), "outMBps": round(8 / down, 1),
        "pipeByteExact": pipe_exact, "pipeInMBps": round(8 / pipe_up, 1), "streamOutMBps": round(8 / stream_down, 1),
    }


def anon_rss_mib(server: FaztServer) -> list[float]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(server.proc.pid)], capture_output=True, text=True).stdout
    sizes = []
    for pid in out.split():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


def small_objects(s3, n: int, label: str, suffix: str = "") -> dict:
    """PUT then GET of n 4 KiB objects, one at a time; also the client's own CPU per operation."""
    data = os.urandom(4096)
    cpu = time.process_time()
    put_s = timed(lambda: [s3.put_object(Bucket="small", Key=f"o/{i:06}{suffix}", Body=data) for i in range(n)])
    get_s = timed(lambda: [s3.get_object(Bucket="small", Key=f"o/{i:06}{suffix}")["Body"].read() for i in range(n)])
    client_ms = (time.process_time() - cpu) / (2 * n) * 1000
    log(f"small objects ({label}): {n / put_s:.0f} PUT/s, {n / get_s:.0f} GET/s, client CPU {client_ms:.2f} ms/op")
    return {"n": n, "putPerS": round(n / put_s), "getPerS": round(n / get_s), "clientCpuMs": round(client_ms, 2)}


def null_s3_small(n: int) -> dict:
    """small_objects against the null S3 server (its GETs answer 4 KiB too): what boto3 reaches one at a time."""
    port = peers.free_port()
    proc = peers.start("null-s3", port)
    try:
        return small_objects(s3_client(f"http://127.0.0.1:{port}", "x", "y"), n, "null S3 server", "-null-4096")
    finally:
        peers.stop(proc)


def raw_sqlite(n: int) -> dict:
    path = fresh_cartridge("storage-raw")
    conn = apsw.Connection(str(path))
    conn.pragma("journal_mode", "wal")
    conn.pragma("synchronous", "normal")
    conn.execute("CREATE TABLE o(key TEXT PRIMARY KEY, data BLOB)")
    data = os.urandom(4096)

    def put():
        for i in range(n):
            with conn:  # one transaction per object, as a PUT is
                conn.execute("INSERT INTO o VALUES (?, ?)", (f"o/{i:06}", data))

    put_s = timed(put)
    get_s = timed(lambda: [conn.execute("SELECT data FROM o WHERE key = ?", (f"o/{i:06}",)).fetchone() for i in range(n)])
    return {"n": n, "putPerS": round(n / put_s), "getPerS": round(n / get_s)}


def raw_sqlite_large(size: int) -> dict:
    """SIZE bytes written as the internal backend lays them out (CHUNK-sized rows, CHUNKS_PER_COMMIT
    per transaction) by one cartridge connection, then checkpointed into the file: the storage
    engine's own ceiling for a PUT, with no HTTP, hashing or Python in between."""
    from fazt_host import cartridge
    from fazt_host.capabilities.storage.store import CHUNK, CHUNKS_PER_COMMIT

    path = fresh_cartridge("storage-raw-large")
    conn = cartridge.connect(path)
    conn.execute("CREATE TABLE chunks(data BLOB)")
    block = os.urandom(CHUNK * CHUNKS_PER_COMMIT)

    def put():
        for _ in range(size // len(block)):
            with cartridge.transaction(conn):
                for off in range(0, len(block), CHUNK):
                    conn.execute("INSERT INTO chunks VALUES (?)", (memoryview(block)[off : off + CHUNK],))
        conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)

    seconds = timed(put)
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"bytes": size, "MBps": round(size / MIB / seconds, 1)}


def moto_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("moto_server did not start")


def run(quick: bool = False) -> dict:
    large = (256 if quick else 1024) * MIB
    n = 1000 if quick else 10_000
    cartridge = fresh_cartridge("storage")
    cli(cartridge, "deploy", str(FILES_APP), "--storage-mb", str(4 * large // MIB + 1024), "--body-mb", "64")
    key = json.loads(cli(cartridge, "keys", "create", "files", "--json").stdout)
    server = FaztServer(cartridge)
    try:
        server.first_response("/files/list/docs")
        s3 = s3_client(f"{server.url}/files/storage/v1/s3", key["accessKeyId"], key["secretAccessKey"])
        s3.create_bucket(Bucket="big")
        s3.create_bucket(Bucket="small")
        anon_before = anon_rss_mib(server)
        log(f"storage: {large // MIB} MiB object PUT/GET vs file copy")
        results = {"large": large_object(s3, large)}
        # Anonymous memory: RSS also counts the cartridge pages the memory map touched (page cache).
        results["large"]["anonRssGrowthMiB"] = round(max(anon_rss_mib(server)) - max(anon_before), 1)
        log(f"storage: {large // MIB} MiB object PUT/GET vs file copy, tuned client")
        results["largeTuned"] = large_object(s3, large, TUNED)
        results["largeTuned"]["anonRssGrowthMiB"] = round(max(anon_rss_mib(server)) - max(anon_before), 1)
        log("storage: 8 MiB through a handler")
        results["guest"] = guest_path(server.url)
        log(f"storage: {n} small objects")
        results["small"] = {"fazt-host": small_objects(s3, n, "fazt-host")}
    finally:
        server.stop()
    log(f"storage: {large // MIB} MiB written by SQLite alone (the storage engine's ceiling)")
    results["sqlite"] = raw_sqlite_large(large)
    log(f"storage: {large // MIB} MiB object PUT/GET against the null S3 server (the client's ceiling)")
    results["ceiling"] = null_s3_ceiling(large)
    port = peers.free_port()
    moto = moto_server(port)
    try:
        s3 = s3_client(f"http://127.0.0.1:{port}", "x", "y")
        s3.create_bucket(Bucket="small")
        results["small"]["moto_server"] = small_objects(s3, n, "moto_server")
    finally:
        peers.stop(moto)
    results["small"]["null S3 server"] = null_s3_small(n)
    results["small"]["raw SQLite"] = raw_sqlite(n)
    return results


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
