"""The external S3 backend against a real S3-speaking server (moto_server), and `blobs migrate`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import apsw
import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from conftest import FAZT, TEST_APPS, Cartridge, moto_server, put_parts, register_apps, s3_env

MIB = 1 << 20
BIG = os.urandom(11 * MIB + 7)  # three parts of 5 MiB, the last one short


def app_copy(dest, name: str, backend: str | None):
    shutil.copytree(TEST_APPS / "files", dest / name)
    manifest = json.loads((dest / name / "fazt.json").read_text())
    manifest["name"] = name
    manifest["storage"]["backend"] = backend
    if backend is None:
        del manifest["storage"]["backend"]
    (dest / name / "fazt.json").write_text(json.dumps(manifest))
    return dest / name


def bucket_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))


def external_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    c = bucket_client(endpoint)
    try:
        listed = c.list_objects_v2(Bucket=bucket, Prefix=prefix)
    except c.exceptions.NoSuchBucket:  # the host creates it on first use
        return []
    return [o["Key"] for o in listed.get("Contents", [])]


def chunk_count(cart: Cartridge, app: str) -> int:
    """Chunks in the cartridge that the app's objects point at."""
    conn = apsw.Connection(str(cart.path))
    try:
        return conn.execute(
            "SELECT count(*) FROM blob_chunks WHERE data IN (SELECT o.data FROM blob_objects o "
            "JOIN blob_buckets b ON b.id = o.bucket WHERE b.app = ?)", (app,)
        ).fetchone()[0]
    finally:
        conn.close()


def ok(r):
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("error") is None, body
    return body["data"]


@pytest.fixture(scope="module")
def host(tmp_path_factory, cache_dir, moto_endpoint):
    root = tmp_path_factory.mktemp("external")
    cart = Cartridge(root / "fazt.db", cache_dir)
    cart.env.update(s3_env(moto_endpoint, "fazt-external"))
    assert "new objects go to the external S3 bucket" in cart.deploy(app_copy(root, "files", "s3")).stderr
    cart.deploy(app_copy(root, "plain", None))
    server = cart.serve()
    yield cart, server
    server.stop()


def test_an_app_on_s3_keeps_its_bytes_in_the_external_bucket(host, moto_endpoint):
    cart, s = host
    ok(s.request("PUT", "/files/pipe/docs/big.bin", content=BIG))
    assert s.get("/files/stream/docs/big.bin").headers["etag"] == f'"{hashlib.md5(BIG).hexdigest()}"'
    assert ok(s.request("PUT", "/files/bytes/docs/small.txt", content=b"small"))["path"] == "small.txt"
    ok(s.request("PUT", "/files/bytes/docs/empty", content=b""))
    assert s.get("/files/stream/docs/big.bin").content == BIG  # host streams from S3 to the client
    assert s.get("/files/get/docs/big.bin").content == BIG  # through the guest
    assert s.get("/files/get/docs/empty").content == b""
    part = s.get("/files/stream/docs/big.bin", headers={"range": "bytes=5242870-5242889"})
    assert part.status_code == 206 and part.content == BIG[5242870:5242890]
    copied = s.request("POST", "/files/copy/docs", json={"from": "big.bin", "to": "copy.bin"})
    assert copied.status_code == 200 and s.get("/files/stream/docs/copy.bin").content == BIG
    listed = ok(s.get("/files/list/docs"))
    assert sorted(o["name"] for o in listed) == ["big.bin", "copy.bin", "empty", "small.txt"]
    assert len(external_keys(moto_endpoint, "fazt-external", "fazt/files/")) == 4
    assert chunk_count(cart, "files") == 0
    # The other app keeps its bytes in the cartridge, and neither sees the other's objects.
    ok(s.request("PUT", "/files/pipe/docs/mine", content=b"files'"))
    ok(s.request("PUT", "/plain/pipe/docs/mine", content=b"plain's"))
    assert s.get("/plain/get/docs/mine").content == b"plain's" and s.get("/files/get/docs/mine").content == b"files'"
    assert chunk_count(cart, "plain") == 1 and external_keys(moto_endpoint, "fazt-external", "fazt/plain/") == []


def test_objects_put_over_the_s3_endpoint_land_in_the_external_bucket(host):
    cart, s = host
    key = json.loads(cart.cli("keys", "create", "files", "--json").stdout)
    c = boto3.client("s3", endpoint_url=f"{s.base}/files/storage/v1/s3", aws_access_key_id=key["accessKeyId"],
                     aws_secret_access_key=key["secretAccessKey"], region_name="us-east-1",
                     config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    upload = c.create_multipart_upload(Bucket="docs", Key="multi.bin")["UploadId"]
    parts = []
    for n, off in enumerate(range(0, len(BIG), 5 * MIB), 1):
        etag = c.upload_part(Bucket="docs", Key="multi.bin", UploadId=upload, PartNumber=n,
                             Body=BIG[off : off + 5 * MIB])["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    c.complete_multipart_upload(Bucket="docs", Key="multi.bin", UploadId=upload, MultipartUpload={"Parts": parts})
    assert c.get_object(Bucket="docs", Key="multi.bin")["Body"].read() == BIG
    assert s.get("/files/get/docs/multi.bin").content == BIG
    assert chunk_count(cart, "files") == 0


def test_removed_objects_leave_the_external_bucket(host, moto_endpoint, tmp_path):
    cart, s = host
    ok(s.request("PUT", "/files/pipe/docs/gone.bin", content=b"x" * 1000))
    before = set(external_keys(moto_endpoint, "fazt-external", "fazt/files/"))
    assert ok(s.request("DELETE", "/files/o/docs?keys=gone.bin"))
    # Orphans wait out readers that started before; a sweep past that grace time deletes their bytes.
    sweep = ("from fazt_host import cartridge; from fazt_host.host import capabilities; "
             "from fazt_host.capabilities.storage import store; import sys, time; "
             "c = cartridge.connect(sys.argv[1]); capabilities(c); print(store.sweep(c, now=time.time() + 4000))")
    out = subprocess.run([os.path.join(os.path.dirname(FAZT), "python"), "-c", sweep, str(cart.path)],
                         env=cart.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    after = set(external_keys(moto_endpoint, "fazt-external", "fazt/files/"))
    assert len(before - after) == 1 and not after - before
    assert s.get("/files/get/docs/big.bin").content == BIG  # others untouched


def _fill(s, app: str, n: int) -> dict[str, bytes]:
    objects = {f"o/{i:03}": os.urandom(100 + i * 997) for i in range(n)}
    objects["o/big"] = BIG
    objects["o/empty"] = b""
    for key, body in objects.items():  # an empty PUT has no request body to pipe: its bytes go through the guest
        ok(s.request("PUT", f"/{app}/{'pipe' if body else 'bytes'}/docs/{key}", content=body))
    return objects


def _all_intact(s, app: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        r = s.get(f"/{app}/stream/docs/{key}")
        assert r.status_code == 200 and r.content == body, key


@pytest.fixture
def internal_app(tmp_path, cache_dir, moto_endpoint):
    """The files app on the internal backend, on a host that has an external bucket of its own."""
    bucket = "fazt-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    cart = Cartridge(tmp_path / "fazt.db", cache_dir)
    cart.env.update(s3_env(moto_endpoint, bucket))
    cart.deploy(app_copy(tmp_path, "files", None))
    s = cart.serve()
    yield cart, s, bucket
    s.stop()


def test_migrate_moves_every_object_verified_while_serving_and_switches(internal_app, moto_endpoint):
    cart, s, bucket = internal_app
    objects = _fill(s, "files", 6)
    assert external_keys(moto_endpoint, bucket) == []
    done = cart.cli("blobs", "migrate", "files", "--to", "s3")
    assert "moved 8 objects" in done.stdout and "[8/8] docs/o/empty" in done.stderr
    assert chunk_count(cart, "files") == 0
    _all_intact(s, "files", objects)
    assert len(external_keys(moto_endpoint, bucket, "fazt/files/")) == 8
    ok(s.request("PUT", "/files/pipe/docs/after", content=b"new"))  # switched: new objects go to S3 too
    assert len(external_keys(moto_endpoint, bucket, "fazt/files/")) == 9
    assert {b["backend"] for b in json.loads(cart.cli("blobs", "files", "--json").stdout)} == {"s3"}
    assert "files stores its objects' bytes in the external S3 bucket (s3)" in cart.cli("blobs", "files").stderr
    again = json.loads(cart.cli("blobs", "migrate", "files", "--to", "s3", "--json").stdout)
    assert again == {"app": "files", "backend": "s3", "moved": 0, "bytes": 0}
    back = json.loads(cart.cli("blobs", "migrate", "files", "--to", "internal", "--json").stdout)
    assert back["moved"] == 9 and back["backend"] == "internal"
    _all_intact(s, "files", objects)
    assert s.get("/files/get/docs/after").content == b"new"
    ok(s.request("PUT", "/files/pipe/docs/later", content=b"in the cartridge"))
    assert chunk_count(cart, "files") > 0


def test_an_interrupted_migration_loses_nothing_and_resumes(internal_app, moto_endpoint):
    cart, s, bucket = internal_app
    objects = _fill(s, "files", 24)
    proc = subprocess.Popen([FAZT, "blobs", "migrate", "files", "--to", "s3"], env=cart.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = ""
    deadline = time.monotonic() + 120
    while "[3/" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line, f"migrate ended early: {seen}"
        seen += line
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run, no chance to clean up
    proc.wait()
    _all_intact(s, "files", objects)
    rest = json.loads(cart.cli("blobs", "migrate", "files", "--to", "s3", "--json").stdout)
    assert 0 < rest["moved"] < len(objects)
    _all_intact(s, "files", objects)
    assert chunk_count(cart, "files") == 0
    assert len(external_keys(moto_endpoint, bucket, "fazt/files/")) >= len(objects)


def test_an_object_whose_bytes_are_gone_does_not_stop_the_others(internal_app, moto_endpoint):
    cart, s, bucket = internal_app
    objects = _fill(s, "files", 3)
    cart.cli("blobs", "migrate", "files", "--to", "s3")
    lost = external_keys(moto_endpoint, bucket, "fazt/files/")[0]
    bucket_client(moto_endpoint).delete_object(Bucket=bucket, Key=lost)
    failed = cart.cli("blobs", "migrate", "files", "--to", "internal", check=False)
    # before: it stopped at that object, every run, leaving the rest where they were
    assert failed.returncode == 1 and "1 objects could not be moved (docs/" in failed.stderr, failed.stderr
    assert "[4/5]" in failed.stderr
    broken = failed.stderr.split("(docs/", 1)[1].split(":", 1)[0]
    ok(s.request("DELETE", f"/files/o/docs?keys={broken}"))
    done = json.loads(cart.cli("blobs", "migrate", "files", "--to", "internal", "--json").stdout)
    assert done == {"app": "files", "backend": "internal", "moved": 0, "bytes": 0}
    _all_intact(s, "files", {k: v for k, v in objects.items() if k != broken})


def test_bad_backend_settings_say_what_to_do(tmp_path, cache_dir, moto_endpoint):
    cart = Cartridge(tmp_path / "fazt.db", cache_dir)
    bad = cart.cli("deploy", str(app_copy(tmp_path, "files", "gcs")), check=False)
    assert bad.returncode == 2 and 'storage.backend must be "internal" or "s3"' in bad.stderr
    cart.deploy(app_copy(tmp_path, "plain", None))
    for var in ("FAZT_S3_BUCKET", "FAZT_S3_ENDPOINT"):
        cart.env.pop(var, None)
    no_bucket = cart.cli("blobs", "migrate", "plain", "--to", "s3", check=False)
    assert no_bucket.returncode == 1 and "FAZT_S3_BUCKET" in no_bucket.stderr
    assert "moving objects to external S3, but" in no_bucket.stderr  # before: "this app stores objects on external S3"
    unknown = cart.cli("blobs", "migrate", "nope", "--to", "s3", check=False)
    assert unknown.returncode == 1 and "no app named 'nope'" in unknown.stderr
    assert cart.cli("blobs", "migrate", "plain", "--to", "gcs", check=False).returncode == 2
    # An app on s3 on a host whose bucket is unreachable: a clear 503, and nothing half-stored.
    shutil.rmtree(tmp_path / "plain")
    cart.deploy(app_copy(tmp_path, "plain", "s3"))
    cart.env.update(s3_env("http://127.0.0.1:9", "fazt-down"))
    s = cart.serve()
    try:
        error = s.request("PUT", "/plain/pipe/docs/x", content=b"bytes").json()["error"]
        assert error["statusCode"] == "503" and "external S3 bucket is unavailable" in error["message"]
        assert ok(s.get("/plain/list/docs")) == []
        assert s.get("/_/health").status_code == 200
    finally:
        s.stop()


def test_a_bucket_gone_down_is_a_quick_generic_503_before_any_status(tmp_path, cache_dir):
    cart = Cartridge(tmp_path / "fazt.db", cache_dir)
    cart.deploy(app_copy(tmp_path, "files", "s3"))
    key = json.loads(cart.cli("keys", "create", "files", "--json").stdout)
    with moto_server() as endpoint:
        cart.env.update(s3_env(endpoint, "fazt-gone"))
        s = cart.serve()
        ok(s.request("PUT", "/files/pipe/docs/there", content=b"was here"))
    try:  # the bucket's server is gone; the host still knows the object
        c = boto3.client("s3", endpoint_url=f"{s.base}/files/storage/v1/s3", aws_access_key_id=key["accessKeyId"],
                         aws_secret_access_key=key["secretAccessKey"], region_name="us-east-1",
                         config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        started = time.monotonic()
        put, get, stream = (s.request("PUT", "/files/pipe/docs/new", content=b"bytes"), s.get("/files/get/docs/there"),
                            s.get("/files/stream/docs/there"))
        assert get.status_code == stream.status_code == 503  # the handler's reply, and the host's before any status
        for error in (put.json()["error"], get.json()["error"], stream.json()):
            assert error["error"] == "ServiceUnavailable" and "external S3 bucket is unavailable" in error["message"]
            assert "127.0.0.1" not in error["message"] and "fazt-gone" not in error["message"]
        for call in (lambda: c.put_object(Bucket="docs", Key="new", Body=b"bytes"),
                     lambda: c.get_object(Bucket="docs", Key="there")):
            with pytest.raises(botocore.exceptions.ClientError) as failed:
                call()
            assert failed.value.response["Error"]["Code"] == "ServiceUnavailable"
            assert "127.0.0.1" not in str(failed.value) and "fazt-gone" not in str(failed.value)
        assert time.monotonic() - started < 30
        assert [o["name"] for o in ok(s.get("/files/list/docs"))] == ["there"]  # nothing new was stored
    finally:
        s.stop()


def test_an_object_made_of_parts_migrates_there_and_back(tmp_path, moto_endpoint):
    from fazt_host import cartridge
    from fazt_host.capabilities.storage import external, migrate, store
    from fazt_host.host import capabilities

    conn = cartridge.connect(tmp_path / "fazt.db")
    capabilities(conn)
    register_apps(conn, "files")
    parts = [os.urandom(5 * MIB), os.urandom(1234)]
    put_parts(conn, "whole", parts, app="files", bucket="docs", etag="e-2", content_type="", metadata={})
    settings = {k.removeprefix("FAZT_S3_").lower(): v for k, v in s3_env(moto_endpoint, "fazt-pieces").items()}
    external.configure(external.S3Settings(**{**settings, "part_mb": 5}))
    try:
        assert migrate.migrate(conn, "files", "s3")["moved"] == 1
        data = store.head(conn, "files", "docs", "whole")[1]
        assert b"".join(store.read(conn, data, 5 * MIB - 1, 5 * MIB + 1)) == parts[0][-1:] + parts[1][:1]
        assert migrate.migrate(conn, "files", "internal")["moved"] == 1
        data = store.head(conn, "files", "docs", "whole")[1]
        assert b"".join(store.read(conn, data)) == b"".join(parts)
        store.sweep(conn, now=time.time() + store.ORPHAN_GRACE_S + 1)
        assert conn.execute("SELECT count(*) FROM blob_pieces").fetchone()[0] == 0  # the parts' copy is gone
    finally:
        external.configure(None)


def test_a_large_object_migrates_while_another_process_writes(tmp_path, moto_endpoint, monkeypatch):
    """Before: the source was read through the connection the copy records its progress on, and once
    another process had written, that read could not become a write: BusyError, every run."""
    from fazt_host import cartridge
    from fazt_host.capabilities.storage import external, migrate, store
    from fazt_host.host import capabilities

    conn = cartridge.connect(tmp_path / "fazt.db")
    capabilities(conn)
    register_apps(conn, "files", "other")
    data = os.urandom(11 * MIB)
    up = store.Upload(conn, "files", "docs", "big", "", {}, True, 1 << 40)
    up.write(data)
    up.finish()
    other = cartridge.connect(tmp_path / "fazt.db")  # another worker, writing all along
    record = external.Sink._record

    def written_meanwhile(self, *args):
        with cartridge.transaction(other):
            other.execute("INSERT INTO logs(app, ts, level, request_id, message) VALUES ('other', 0, 'info', 'r', 'x')")
        return record(self, *args)

    monkeypatch.setattr(external.Sink, "_record", written_meanwhile)
    settings = {k.removeprefix("FAZT_S3_").lower(): v for k, v in s3_env(moto_endpoint, "fazt-busy").items()}
    external.configure(external.S3Settings(**{**settings, "part_mb": 5}))
    try:
        assert migrate.migrate(conn, "files", "s3")["moved"] == 1
        assert b"".join(store.read(conn, store.head(conn, "files", "docs", "big")[1])) == data
    finally:
        external.configure(None)


def test_credentials_the_bucket_refuses_are_named_as_such():
    from botocore.exceptions import ClientError

    from fazt_host.capabilities.storage import store

    refused = ClientError({"Error": {"Code": "InvalidAccessKeyId"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "HeadBucket")
    assert "refused the host's credentials (FAZT_S3_ACCESS_KEY_ID" in str(store.unavailable("connecting to storage", refused))
    down = ClientError({"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "HeadBucket")
    assert str(store.unavailable("connecting to storage", down)).endswith("the external S3 bucket is unavailable")
