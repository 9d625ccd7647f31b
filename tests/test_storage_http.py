"""Storage end to end: the SDK in a real guest, host-side pipes and streams, signed and public URLs, the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from datetime import datetime
from email.utils import formatdate
from urllib.parse import urlsplit

import apsw
import pytest

from conftest import TEST_APPS, cut_short, serve_apps, stalled_clients, workers_anon_mib

FILES = TEST_APPS / "files"
DATA = os.urandom(3_000_000)
MD5 = hashlib.md5(DATA).hexdigest()


@pytest.fixture(scope="module")
def host(tmp_path_factory, cache_dir):
    yield from serve_apps(tmp_path_factory, cache_dir, "storage", FILES)


def ok(r):
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("error") is None, body
    return body["data"]


def test_three_ways_in_and_two_ways_out(host):
    _, s = host
    piped = ok(s.request("PUT", "/files/pipe/avatars/u/42.png?meta=me", content=DATA, headers={"content-type": "image/png"}))
    assert piped == {"path": "u/42.png", "id": piped["id"], "fullPath": "avatars/u/42.png"}
    assert ok(s.request("PUT", "/files/bytes/docs/b.bin", content=DATA))["path"] == "b.bin"
    ok(s.request("PUT", "/files/chunks/docs/c.bin?n=3&size=1000000"))
    chunked = s.get("/files/stream/docs/c.bin").headers["etag"]
    assert chunked == f'"{hashlib.md5(b"".join(bytes([i]) * 1_000_000 for i in range(3))).hexdigest()}"'
    got = s.get("/files/get/avatars/u/42.png")
    assert got.content == DATA and got.headers["content-type"] == "image/png"
    streamed = s.get("/files/stream/docs/b.bin")
    assert streamed.content == DATA and streamed.headers["etag"] == f'"{MD5}"'
    assert streamed.headers["cache-control"] == "private, max-age=60" and streamed.headers["content-length"] == str(len(DATA))
    head = ok(s.get("/files/head/avatars/u/42.png"))
    assert head["size"] == len(DATA) and head["contentType"] == "image/png" and head["metadata"] == {"note": "me"}
    info = ok(s.get("/files/info/avatars/u/42.png"))  # storage-js's shape
    assert info["name"] == "u/42.png" and info["bucketId"] == "avatars" and info["etag"] == f'"{MD5}"'
    assert info["size"] == len(DATA) and info["contentType"] == "image/png" and info["metadata"] == {"note": "me"}
    assert info["createdAt"].endswith("Z") and time.time() - datetime.fromisoformat(info["lastModified"]).timestamp() < 60
    assert ok(s.request("PUT", "/files/text/docs/t.txt"))["path"] == "t.txt"
    assert s.get("/files/get/docs/t.txt").text == "hello text"
    missing = s.get("/files/get/docs/nothing.txt")
    assert missing.status_code == 404 and missing.json()["classed"] is True
    assert missing.json()["error"] == {"name": "StorageApiError", "message": missing.json()["error"]["message"],
                                       "status": 404, "statusCode": "404", "error": "not_found"}


def test_every_stored_version_has_an_id_of_its_own(host):
    _, s = host
    first = ok(s.request("PUT", "/files/pipe/docs/ids/a", content=b"same"))["id"]
    second = ok(s.request("PUT", "/files/bytes/docs/ids/b", content=b"same"))["id"]  # before: both the MD5
    assert first != second and uuid.UUID(first).version == uuid.UUID(second).version == 4
    listed = {e["name"]: e["id"] for e in ok(s.get("/files/list/docs?path=ids"))}
    assert listed == {"a": first, "b": second}
    assert ok(s.get("/files/info/docs/ids/a"))["id"] == ok(s.get("/files/head/docs/ids/a"))["id"] == first
    replaced = ok(s.request("PUT", "/files/pipe/docs/ids/a?upsert=1", content=b"same"))["id"]
    assert replaced not in (first, second)
    ok(s.request("POST", "/files/copy/docs", json={"from": "ids/a", "to": "ids/c"}))
    assert ok(s.get("/files/info/docs/ids/c"))["id"] not in (first, second, replaced)
    ok(s.request("POST", "/files/move/docs", json={"from": "ids/a", "to": "ids/d"}))
    assert ok(s.get("/files/info/docs/ids/d"))["id"] == replaced  # a move keeps it, as in Supabase
    signed = ok(s.get("/files/sign-upload/docs/ids/e"))["signedUrl"]
    put = s.request("PUT", signed, content=b"same").json()
    assert put["Id"] == ok(s.get("/files/info/docs/ids/e"))["id"] and uuid.UUID(put["Id"])


def test_objects_are_served_with_the_cache_control_they_were_stored_with(host):
    _, s = host
    ok(s.request("PUT", "/files/pipe/avatars/cc/default.png", content=b"x"))
    ok(s.request("PUT", "/files/bytes/avatars/cc/minute.png?cache=60", content=b"y"))
    public = ok(s.get("/files/public/avatars/cc/default.png"))["publicUrl"]
    assert s.get(public).headers["cache-control"] == "max-age=3600"  # storage-js's default
    signed = ok(s.get("/files/sign/avatars/cc/minute.png"))["signedUrl"]
    assert s.get(signed).headers["cache-control"] == "max-age=60" and s.request("HEAD", signed).headers["cache-control"] == "max-age=60"
    assert s.get("/files/stream/avatars/cc/minute.png").headers["cache-control"] == "private, max-age=60"  # the handler's
    assert ok(s.get("/files/info/avatars/cc/minute.png"))["cacheControl"] == "max-age=60"
    assert ok(s.get("/files/list/avatars?path=cc"))[1]["metadata"]["cacheControl"] == "max-age=60"
    upload = ok(s.get("/files/sign-upload/avatars/cc/put.png"))["signedUrl"]
    assert s.request("PUT", upload, content=b"z", headers={"cache-control": "max-age=5"}).status_code == 200  # uploadToSignedUrl's header
    assert s.get(ok(s.get("/files/sign/avatars/cc/put.png"))["signedUrl"]).headers["cache-control"] == "max-age=5"
    for bad in ("soon", "-1", "1%0D%0Ax-evil:%201", "99999999999"):
        r = s.request("PUT", f"/files/pipe/avatars/cc/bad.png?cache={bad}", content=b"x").json()
        assert r["error"]["statusCode"] == "400", (bad, r)
    refused = s.request("PUT", ok(s.get("/files/sign-upload/avatars/cc/bad.png"))["signedUrl"], content=b"x",
                        headers={"cache-control": "x" * 300})
    assert refused.status_code == 400 and s.get("/files/exists/avatars/cc/bad.png").json()["data"] is False


def test_streamed_objects_honour_range_and_conditionals(host):
    _, s = host
    ok(s.request("PUT", "/files/pipe/docs/r.bin?upsert=1", content=DATA))
    part = s.get("/files/stream/docs/r.bin", headers={"range": "bytes=1000000-1000009"})
    assert part.status_code == 206 and part.content == DATA[1000000:1000010]
    assert part.headers["content-range"] == f"bytes 1000000-1000009/{len(DATA)}"
    chosen = s.get("/files/stream/docs/r.bin?range=bytes=-5", headers={"range": "bytes=0-0"})
    assert chosen.status_code == 206 and chosen.content == DATA[-5:]  # the handler's range wins
    ignored = s.get("/files/stream/docs/r.bin?range=", headers={"range": "bytes=0-0"})
    assert ignored.status_code == 200 and len(ignored.content) == len(DATA)
    assert s.get("/files/stream/docs/r.bin", headers={"range": f"bytes={len(DATA)}-"}).status_code == 416
    assert s.get("/files/stream/docs/r.bin", headers={"if-none-match": f'"{MD5}"'}).status_code == 304
    now = formatdate(time.time(), usegmt=True)
    assert s.get("/files/stream/docs/r.bin", headers={"if-modified-since": now}).status_code == 304
    ahead = formatdate(time.time() + 3600, usegmt=True)  # a date later than now is invalid (RFC 9110): ignored
    assert s.get("/files/stream/docs/r.bin", headers={"if-modified-since": ahead}).status_code == 200
    earlier = formatdate(time.time() - 3600, usegmt=True)
    assert s.get("/files/stream/docs/r.bin", headers={"if-modified-since": earlier}).status_code == 200
    assert s.request("HEAD", "/files/stream/docs/r.bin").headers["content-length"] == str(len(DATA))
    missing = s.get("/files/stream/docs/never")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_signed_and_public_urls(host):
    _, s = host
    ok(s.request("PUT", "/files/pipe/avatars/pub.png?upsert=1", content=b"public bytes"))
    ok(s.request("PUT", "/files/pipe/docs/priv.txt?upsert=1", content=b"private bytes"))
    url = ok(s.get("/files/sign/docs/priv.txt?expires=60"))["signedUrl"]
    assert url.startswith(f"{s.base}/files/storage/v1/object/sign/docs/priv.txt?token=")  # absolute, as storage-js's
    assert s.get(url).content == b"private bytes"
    tampered = s.get(url.replace("priv.txt", "pub.png"))
    assert tampered.status_code == 400 and tampered.json()["error"] == "InvalidSignature"
    assert s.get(url[:-2] + ("AA" if not url.endswith("AA") else "BB")).status_code == 400
    ok(s.request("PUT", "/files/pipe/docs/sp/%2541.txt?upsert=1", content=b"percent"))  # the key is sp/%41.txt
    assert s.get(ok(s.get("/files/sign/docs/sp/%2541.txt?expires=60"))["signedUrl"]).content == b"percent"
    short = ok(s.get("/files/sign/docs/priv.txt?expires=1"))["signedUrl"]
    time.sleep(2.1)
    assert s.get(short).json()["error"] == "ExpiredToken"
    assert s.get("/files/sign/docs/none.txt").json()["error"] == {
        "name": "StorageApiError", "message": "Object not found", "statusCode": "404", "status": 404, "error": "not_found"}
    public = ok(s.get("/files/public/avatars/pub.png"))["publicUrl"]
    assert s.get(public).content == b"public bytes"
    ok(s.request("PUT", "/files/pipe/avatars/u/q%3Fx%3D1%23frag%25?upsert=1", content=b"odd key"))  # u/q?x=1#frag%
    assert s.get(ok(s.get("/files/public/avatars/u/q%3Fx%3D1%23frag%25"))["publicUrl"]).content == b"odd key"
    assert s.get("/files/storage/v1/object/public/docs/priv.txt").status_code == 404  # private bucket
    assert "content-disposition" not in s.get(url).headers
    saved = s.get(ok(s.get("/files/sign/docs/priv.txt?download=r%C3%A9sum%C3%A9.txt"))["signedUrl"])
    assert saved.content == b"private bytes"
    assert saved.headers["content-disposition"] == "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"
    assert s.get(ok(s.get("/files/sign/docs/priv.txt?download"))["signedUrl"]).headers["content-disposition"] == "attachment"
    assert s.get(ok(s.get("/files/public/avatars/pub.png?download"))["publicUrl"]).headers["content-disposition"] == "attachment"
    many = ok(s.get("/files/signs/docs?keys=priv.txt,none.txt"))
    assert s.get(many[0]["signedUrl"]).content == b"private bytes" and many[0]["error"] is None
    assert many[1] == {"error": "Object not found", "path": "none.txt", "signedUrl": None}
    upload = ok(s.get("/files/sign-upload/docs/via-url.bin"))["signedUrl"]
    put = s.request("PUT", upload, content=DATA, headers={"content-type": "application/x-thing"})
    assert put.status_code == 200 and put.json()["Key"] == "docs/via-url.bin"
    assert s.get("/files/stream/docs/via-url.bin").content == DATA
    assert s.request("PUT", upload.replace("via-url", "other"), content=b"x").status_code == 400
    # An existing object: replaced only through a URL signed with upsert; the client cannot widen it.
    plain = ok(s.get("/files/sign-upload/docs/via-url.bin"))["signedUrl"]
    for headers in ({}, {"x-upsert": "true"}):
        again = s.request("PUT", plain, content=b"new", headers=headers)
        assert again.status_code == 409 and again.json()["error"] == "Duplicate", headers
    replacing = ok(s.get("/files/sign-upload/docs/via-url.bin?upsert=1"))["signedUrl"]
    assert s.request("PUT", replacing, content=b"new").status_code == 200
    assert s.get("/files/stream/docs/via-url.bin").content == b"new"
    # The app's own uploadToSignedUrl: the token names app, bucket and key, and alone decides upsert.
    token = ok(s.get("/files/sign-upload/docs/app-signed.bin"))["token"]
    first = ok(s.request("PUT", f"/files/to-signed/docs/app-signed.bin?token={token}", content=b"one"))
    assert first["path"] == "app-signed.bin" and first["fullPath"] == "docs/app-signed.bin" and uuid.UUID(first["id"])
    again = s.request("PUT", f"/files/to-signed/docs/app-signed.bin?token={token}&upsert=1", content=b"two").json()["error"]
    assert again["error"] == "Duplicate"
    other = s.request("PUT", f"/files/to-signed/docs/elsewhere.bin?token={token}", content=b"x").json()["error"]
    assert other["error"] == "InvalidSignature" and other["statusCode"] == "400"
    token = ok(s.get("/files/sign-upload/docs/app-signed.bin?upsert=1"))["token"]
    ok(s.request("PUT", f"/files/to-signed/docs/app-signed.bin?token={token}", content=b"two"))
    assert s.get("/files/stream/docs/app-signed.bin").content == b"two"
    # supabase-js's uploadToSignedUrl sends a Blob as a form: a cacheControl field, then the file
    form = ok(s.get("/files/sign-upload/docs/via-form.png"))["signedUrl"]
    sent = s.request("PUT", form, data={"cacheControl": "3600", "metadata": '{"owner": "ann"}'},
                     files={"": ("blob", DATA, "image/png")})
    assert sent.status_code == 200, sent.text
    back = s.get("/files/stream/docs/via-form.png")  # before: the whole form, boundaries and all
    assert back.content == DATA and back.headers["content-type"] == "image/png"
    kept = ok(s.get("/files/info/docs/via-form.png"))  # before: the form's settings were dropped
    assert kept["cacheControl"] == "max-age=3600" and kept["metadata"] == {"owner": "ann"}
    raw = ok(s.get("/files/sign-upload/docs/via-raw.bin"))["signedUrl"]  # a body that is no Blob: headers
    meta = base64.b64encode(b'{"owner": "bo"}').decode()
    assert s.request("PUT", raw, content=b"raw", headers={"cache-control": "max-age=60", "x-metadata": meta}).status_code == 200
    kept = ok(s.get("/files/info/docs/via-raw.bin"))
    assert kept["cacheControl"] == "max-age=60" and kept["metadata"] == {"owner": "bo"}
    bad = s.request("PUT", raw, content=b"raw", headers={"x-upsert": "true", "x-metadata": "not base64!"})
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidRequest"
    fileless = ok(s.get("/files/sign-upload/docs/fileless.bin"))["signedUrl"]
    refused = s.request("PUT", fileless, content=b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
                        headers={"content-type": "multipart/form-data; boundary=b"})
    assert refused.status_code == 400 and "no file part" in refused.text
    assert s.get("/files/exists/docs/fileless.bin").json()["data"] is False


def test_a_refused_signed_upload_reads_the_body_so_the_client_gets_the_answer(host):
    _, s = host
    url = ok(s.get("/files/sign-upload/docs/refused.bin"))["signedUrl"]
    for path in (url.replace("refused", "other"), "/files/storage/v1/object/docs/refused.bin"):  # bad token, no route
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n".encode())
            time.sleep(0.2)  # a client (Node's fetch sending a form) writes the body after the headers
            for _ in range(2):  # before: the host had answered and closed, so the second write failed (EPIPE)
                sock.sendall(b"x" * 1000)
                time.sleep(0.1)
            sock.settimeout(10)
            reply = sock.recv(4096).decode(errors="replace")
        assert reply.startswith(("HTTP/1.1 400", "HTTP/1.1 404")), (path, reply)


def test_signed_url_options_read_as_storage_js_sends_them(host):
    _, s = host
    ok(s.request("PUT", "/files/pipe/docs/opts.txt?upsert=1", content=b"opts"))
    for expires in ("60", "31536000"):  # a string of a number; a year (before: at most 7 days)
        assert s.get(ok(s.get(f"/files/sign/docs/opts.txt?expires={expires}"))["signedUrl"]).content == b"opts"
    bad = s.get("/files/sign/docs/opts.txt?expires=soon").json()["error"]
    assert bad["message"].startswith("expiresIn: Expected `int`"), bad  # before: "invalid storage request: ..."
    many = ok(s.get("/files/signs/docs?keys=opts.txt,a/%2e%2e/x,none"))  # before: one bad path failed them all
    assert [e["error"] is None for e in many] == [True, False, False] and many[0]["signedUrl"]


def test_keys_with_a_backslash_are_served_by_their_urls(host):
    _, s = host
    ok(s.request("PUT", "/files/pipe/avatars/k?key=dir%5Cback%5Cslash.txt&upsert=1", content=b"\\ kept"))
    signed = ok(s.get("/files/sign/avatars/k?key=dir%5Cback%5Cslash.txt"))["signedUrl"]
    public = ok(s.get("/files/public/avatars/k?key=dir%5Cback%5Cslash.txt"))["publicUrl"]
    for url in (signed, public):  # before: 400 "invalid path", refused before the storage route saw it
        r = s.get(url)
        assert r.status_code == 200 and r.content == b"\\ kept", (url, r.text)
    assert s.get("/files/storage/v1/object/public/avatars/a/%2e%2e/x").json()["error"] == "InvalidKey"


def test_a_signed_upload_cut_short_is_a_400_and_stores_nothing(host):
    _, s = host
    url = urlsplit(ok(s.get("/files/sign-upload/docs/cut/short.bin"))["signedUrl"])
    reply = cut_short(s.port, f"{url.path}?{url.query}")
    assert reply.startswith("HTTP/1.1 400") and "IncompleteBody" in reply, reply  # before: 500 RSGIProtocolClosed
    assert s.get("/files/exists/docs/cut/short.bin").json()["data"] is False


def test_bad_input(host):
    cart, s = host
    for key in ["..%2Fx", "a%00b", "x" * 1025]:
        r = s.request("PUT", f"/files/pipe/docs/{key}", content=b"x")
        assert r.status_code == 400 or r.json()["error"]["statusCode"] == "400", (key, r.text)
    ok(s.request("PUT", "/files/pipe/docs/src?upsert=1", content=b"x"))
    for key in ["a\nb", "../up", "a\u0000b", "//"]:
        r = s.request("POST", "/files/copy/docs", json={"from": "src", "to": key}).json()
        assert r["error"]["error"] == "InvalidKey", key
    # A leading slash is cleaned off as for an upload, not refused.
    assert ok(s.request("POST", "/files/copy/docs", json={"from": "src", "to": "/abs"})) == {"path": "docs/abs"}
    assert s.request("PUT", "/files/pipe/NOPE/k", content=b"x").json()["error"]["error"] == "InvalidBucketName"
    for limit in ("0", "-1", "1.5"):
        assert s.get(f"/files/list/docs?limit={limit}").json()["error"]["statusCode"] == "400", limit
    ok(s.request("PUT", "/files/pipe/docs/once", content=b"1"))
    assert s.request("PUT", "/files/pipe/docs/once", content=b"2").json()["error"]["error"] == "Duplicate"
    big = s.request("PUT", "/files/pipe/docs/too-big", content=b"x" * (49 << 20))
    assert big.status_code == 413  # limits.bodyMb 48 in the app's fazt.json, refused by Content-Length
    chunked = s.request("PUT", "/files/pipe/docs/too-big", content=iter([b"x" * (1 << 20)] * 49))
    assert chunked.json()["error"]["statusCode"] == "413"
    assert s.get("/files/exists/docs/too-big").json()["data"] is False


def test_quota(host):
    _, s = host
    for i in range(40):  # limits.storageMb is 64
        r = s.request("PUT", f"/files/pipe/quota/{i}", content=DATA).json()
        if r["error"]:
            assert r["error"]["error"] == "QuotaExceeded" and i > 5
            break
    else:
        pytest.fail("the quota never stopped an upload")
    ok(s.request("DELETE", "/files/o/quota?keys=" + ",".join(str(k) for k in range(40))))
    assert ok(s.request("PUT", "/files/pipe/quota/again", content=DATA))["path"] == "again"


def test_a_client_gone_mid_upload_leaves_no_object(host):
    cart, s = host
    sock = socket.create_connection(("127.0.0.1", s.port))
    sock.sendall(b"PUT /files/pipe/docs/cut.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 700_000)
    time.sleep(0.5)
    sock.close()
    time.sleep(1)
    assert s.get("/files/exists/docs/cut.bin").json()["data"] is False
    conn = apsw.Connection(str(cart.path))
    writing = conn.execute("SELECT count(*) FROM blob_data WHERE state = 'writing'").fetchone()[0]
    assert writing == 0  # aborted, not left behind


def test_an_http2_upload_without_a_length_stores_whole_or_not_at_all(host):
    """HTTP/2 bodies need no Content-Length: one sent whole is stored, one whose stream the client resets is not."""
    import h2.config
    import h2.connection

    _, s = host
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    sock = socket.create_connection(("127.0.0.1", s.port))
    conn.initiate_connection()
    head = [(":scheme", "http"), (":authority", f"127.0.0.1:{s.port}")]
    conn.send_headers(1, [(":method", "PUT"), (":path", "/files/pipe/docs/h2-cut.bin"), *head])
    conn.send_data(1, b"x" * 5000)
    sock.sendall(conn.data_to_send())
    time.sleep(0.3)
    conn.reset_stream(1)
    conn.send_headers(3, [(":method", "PUT"), (":path", "/files/pipe/docs/h2-whole.bin"), *head])
    conn.send_data(3, b"y" * 5000)
    conn.send_data(3, b"z", end_stream=True)
    sock.sendall(conn.data_to_send())
    time.sleep(1.5)
    sock.close()
    assert s.get("/files/exists/docs/h2-cut.bin").json()["data"] is False  # before: stored, 5000 bytes of it
    assert s.get("/files/get/docs/h2-whole.bin").content == b"y" * 5000 + b"z"


def test_clients_that_do_not_read_do_not_have_the_object_held_in_memory(host):
    _, s = host
    data = os.urandom(40 << 20)
    ok(s.request("PUT", "/files/pipe/docs/large.bin?upsert=1", content=data))
    before = workers_anon_mib(s)
    stalled = stalled_clients(s.port, "/files/stream/docs/large.bin", 4)
    time.sleep(3)
    grown = workers_anon_mib(s) - before
    # a download waiting on its client holds no read open: the workers see what is written meanwhile
    ok(s.request("PUT", "/files/pipe/docs/meanwhile.txt?upsert=1", content=b"new"))
    seen = [s.get("/files/stream/docs/meanwhile.txt").status_code for _ in range(6)]
    for sock in stalled:
        sock.close()
    assert grown < 40, grown  # before: the whole object for each client (120 MiB and more)
    assert seen == [200] * 6, seen
    assert s.get("/files/stream/docs/large.bin").content == data  # one that reads gets it whole


def test_a_chunked_upload_cut_short_or_malformed_leaves_no_object(host):
    _, s = host
    head = b"PUT /files/pipe/docs/chunked-%d.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    cut = head % 1 + b"20000\r\n" + b"x" * 0x20000 + b"\r\n400\r\nxx"  # a chunk, part of the next, gone
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.sendall(cut)
        time.sleep(0.5)
    malformed = head % 2 + b"3\r\nabc\r\nzz\r\nmore"  # a chunk size that is not hex
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.sendall(malformed)
        sock.settimeout(10)
        reply = sock.recv(4096).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 400") and "ended before it was complete" in reply, reply
    time.sleep(0.5)
    for n in (1, 2):  # before: stored with the bytes before the break, as if complete
        assert s.get(f"/files/exists/docs/chunked-{n}.bin").json()["data"] is False
    ok(s.request("PUT", "/files/pipe/docs/chunked-3.bin", content=iter([b"a" * 200_000, b"b" * 1000])))  # whole
    assert s.get("/files/stream/docs/chunked-3.bin").content == b"a" * 200_000 + b"b" * 1000


def test_a_streamed_object_keeps_the_rules_of_any_response(host):
    _, s = host
    ok(s.request("PUT", "/files/pipe/docs/framed.bin?upsert=1", content=DATA))
    r = s.get("/files/stream/docs/framed.bin?framing")  # before: an empty reply (content-length 5 for more bytes)
    assert r.status_code == 200 and r.content == DATA and r.headers["cache-control"] == "private, max-age=60"
    assert r.headers.get_list("x-fazt-request-id") != ["forged"] and len(r.headers.get_list("x-fazt-request-id")) == 1


def test_listing_copy_move_remove_through_the_sdk(host):
    _, s = host
    for k in ["l/a.txt", "l/b.txt", "l/sub/c.txt"]:
        ok(s.request("PUT", f"/files/pipe/docs/{k}?upsert=1", content=k.encode()))
    listed = s.get("/files/list/docs?path=l").json()
    assert [e["name"] for e in listed["data"]] == ["sub", "a.txt", "b.txt"]
    assert listed["data"][1]["metadata"]["size"] == 7
    page = s.get("/files/list/docs?path=l&limit=2").json()
    rest = s.get(f"/files/list/docs?path=l&limit=2&cursor={page['cursor']}").json()
    assert len(page["data"]) == 2 and len(rest["data"]) == 1 and "cursor" not in rest
    by_offset = [s.get(f"/files/list/docs?path=l&limit=2&offset={o}").json()["data"] for o in (0, 2, 4)]
    assert sorted(e["name"] for page in by_offset for e in page) == ["a.txt", "b.txt", "sub"] and by_offset[2] == []
    copied = ok(s.request("POST", "/files/copy/docs", json={"from": "/l/a.txt", "to": "/l//a2.txt/"}))  # cleaned
    assert copied == {"path": "docs/l/a2.txt"}  # storage-js's: the server's Key, bucket first
    ok(s.request("POST", "/files/move/docs", json={"from": "l/b.txt", "to": "m/b.txt", "destinationBucket": "avatars"}))
    assert s.get("/files/get/avatars/m/b.txt").content == b"l/b.txt"
    missing = s.get("/files/exists/docs/l/b.txt").json()
    assert missing["data"] is False and missing["error"]["statusCode"] == "404"  # storage-js's: false, and the error
    removed = ok(s.request("DELETE", "/files/o/docs?keys=/l/a.txt,l/a2.txt,nope,../bad"))
    assert sorted(r["name"] for r in removed) == ["l/a.txt", "l/a2.txt"]  # before: ../bad refused the whole call


def test_an_empty_request_body_pipes_into_an_empty_object(host):
    _, s = host
    for length in ({"content-length": "0"}, {}):  # before: request.body was null, and refused
        r = s.request("PUT", "/files/pipe/docs/empty.bin?upsert=1", content=b"", headers=length)
        assert r.status_code == 200 and ok(r)["path"] == "empty.bin"
        assert s.get("/files/get/docs/empty.bin").content == b""


def test_a_piped_upload_is_stored_as_the_requests_content_type(host):
    _, s = host
    ok(s.request("PUT", "/files/pipe-as-sent/docs/sent.png", content=b"png", headers={"content-type": "image/png"}))
    assert ok(s.get("/files/info/docs/sent.png"))["contentType"] == "image/png"  # before: application/octet-stream
    ok(s.request("PUT", "/files/pipe-as-sent/docs/untyped", content=b"x", headers={"content-type": ""}))
    assert ok(s.get("/files/info/docs/untyped"))["contentType"] == "application/octet-stream"


def test_a_body_already_read_is_refused_not_stored_empty(host):
    _, s = host
    r = s.request("POST", "/files/read-first/docs", content=b"read by the handler")
    out = r.json()
    assert out["text"] == "read by the handler"
    for reply in (out["body"], out["request"]):  # before: an empty object, and a TypeError thrown
        assert reply["data"] is None and reply["error"]["error"] == "InvalidRequest"
        assert "already read" in reply["error"]["message"]
    assert s.get("/files/exists/docs/used").json()["data"] is False


def test_the_other_body_kinds_and_option_forms_storage_js_takes(host):
    _, s = host
    out = s.request("POST", "/files/forms/docs").json()
    assert out["form"]["error"] is None
    assert (out["formInfo"]["contentType"], out["formInfo"]["size"]) == ("image/png", len(b"form bytes"))
    assert out["noFile"]["error"]["message"] == "a FormData body needs a file in it"
    assert out["params"]["error"] is None and out["paramsText"] == "a=1&b=x+y"
    assert out["nullOptions"] == ["ok"] * 6  # before: TypeError, null has no properties
    assert out["upsertText"] is None and out["limitText"] == 1
    assert out["listNumber"] == "path must be a string" and out["signsText"] == "paths must be an array of paths"
    assert out["bucketThrows"] == {"threw": "not_found"} and out["bucketReturns"] == "not_found"
    assert out["storageThrows"] == {"threw": "NoSuchBucket"} and out["storageReturns"] == "NoSuchBucket"


def test_paths_are_cleaned_as_storage_js_cleans_them(host):
    # An upload drops leading, trailing and repeated slashes; reads drop leading ones.
    _, s = host
    assert ok(s.request("PUT", "/files/bytes/docs/k?key=/clean//up/a.txt/", content=b"c"))["path"] == "clean/up/a.txt"
    assert s.get("/files/get/docs/k?key=/clean/up/a.txt").content == b"c"
    assert [e["name"] for e in s.get("/files/list/docs?path=clean/up").json()["data"]] == ["a.txt"]
    assert ok(s.get("/files/sign/docs/k?key=//clean/up/a.txt"))["signedUrl"]
    assert ok(s.request("PUT", "/files/bytes/docs/k?key=//lead2//", content=b"d"))["path"] == "lead2"


def buckets(s, method, bucket="", options=None):
    """storage.METHOD(bucket, options) in the app."""
    return s.request("POST", f"/files/buckets/{method}/{bucket}", json=options)


def test_the_bucket_api_and_its_rules(host):
    _, s = host
    made = buckets(s, "createBucket", "photos", {"public": False, "fileSizeLimit": "1KB", "allowedMimeTypes": ["image/*"]})
    assert made.json() == {"data": {"name": "photos"}, "error": None}
    again = buckets(s, "createBucket", "photos").json()["error"]
    assert (again["statusCode"], again["error"]) == ("409", "BucketAlreadyExists")
    got = ok(buckets(s, "getBucket", "photos"))
    assert (got["id"], got["name"], got["public"], got["file_size_limit"], got["allowed_mime_types"]) == (
        "photos", "photos", False, 1000, ["image/*"])
    assert got["created_at"].endswith("Z") and got["updated_at"] == got["created_at"]
    listed = {b["name"]: b for b in ok(buckets(s, "listBuckets"))}
    assert listed["avatars"]["public"] is True and listed["photos"] == got  # fazt.json's buckets and the new one
    wrong_type = s.request("PUT", "/files/pipe/photos/a.txt", content=b"x", headers={"content-type": "text/plain"}).json()
    assert (wrong_type["error"]["statusCode"], wrong_type["error"]["error"]) == ("415", "InvalidMimeType")
    too_big = s.request("PUT", "/files/bytes/photos/big.png", content=b"x" * 1001, headers={"content-type": "image/png"}).json()
    assert (too_big["error"]["statusCode"], too_big["error"]["error"]) == ("413", "EntityTooLarge")
    ok(s.request("PUT", "/files/pipe/photos/ok.png", content=b"x" * 1000, headers={"content-type": "image/png"}))
    assert ok(buckets(s, "updateBucket", "photos", {"public": True, "fileSizeLimit": None})) == {"message": "Successfully updated"}
    got = ok(buckets(s, "getBucket", "photos"))
    assert (got["public"], got["file_size_limit"], got["allowed_mime_types"]) == (True, None, ["image/*"])
    ok(s.request("PUT", "/files/pipe/photos/big.png", content=b"x" * 5000, headers={"content-type": "image/png"}))
    assert s.get("/files/storage/v1/object/public/photos/big.png").content == b"x" * 5000
    full = buckets(s, "deleteBucket", "photos").json()["error"]
    assert (full["statusCode"], full["error"]) == ("409", "ResourceNotEmpty")
    assert ok(buckets(s, "emptyBucket", "photos")) == {"message": "Successfully emptied"}
    assert s.get("/files/exists/photos/ok.png").json()["data"] is False
    assert ok(buckets(s, "deleteBucket", "photos")) == {"message": "Successfully deleted"}
    assert buckets(s, "getBucket", "photos").json()["error"]["statusCode"] == "404"


def test_an_unchanged_deploy_applies_the_declared_buckets_again(host):
    cart, s = host
    ok(buckets(s, "updateBucket", "avatars", {"public": False}))
    done = cart.deploy(FILES)
    assert "already live" in done.stdout + done.stderr  # no new version
    assert ok(buckets(s, "getBucket", "avatars"))["public"] is True  # fazt.json declares it public


@pytest.mark.parametrize("options", [{"fileSizeLimit": "lots"}, {"fileSizeLimit": -1}, {"fileSizeLimit": 1.5},
                                     {"allowedMimeTypes": ["image"]}, {"allowedMimeTypes": ["a/b\r\nx: y"]},
                                     {"allowedMimeTypes": "image/png"}, {"public": "yes"}])
def test_bad_bucket_settings_are_refused(host, options):
    _, s = host
    for method in ("createBucket", "updateBucket"):
        error = buckets(s, method, "docs", options).json()["error"]
        assert error["statusCode"] == "400", (method, error)
    assert ok(buckets(s, "getBucket", "docs"))["file_size_limit"] is None


def test_bucket_methods_name_a_valid_existing_bucket(host):
    _, s = host
    for bad in ("Bad_Name", "docs%0A"):  # "docs\n": a regex's $ matches before a final newline
        assert buckets(s, "createBucket", bad).json()["error"]["error"] == "InvalidBucketName", bad
    for method in ("getBucket", "updateBucket", "deleteBucket", "emptyBucket"):
        error = buckets(s, method, "never-made", {}).json()["error"]
        assert (error["statusCode"], error["error"]) == ("404", "NoSuchBucket"), method
        assert buckets(s, method, "UP", {}).json()["error"]["error"] == "InvalidBucketName"


def test_listing_searches_and_sorts_as_storage_js(host):
    _, s = host
    for k in ["ls/Banana.txt", "ls/apple.txt", "ls/Avocado/x", "ls/cherry.txt"]:
        ok(s.request("PUT", f"/files/pipe/docs/{k}?upsert=1", content=b"x"))
    names = lambda query: [e["name"] for e in ok(s.get(f"/files/list/docs?path=ls&{query}"))]  # noqa: E731
    assert names("search=a") == ["Avocado", "apple.txt"]  # before: case-sensitive, and no folder
    assert names("search=B") == ["Banana.txt"]
    assert names("sort=created_at&order=desc") == ["Avocado", "cherry.txt", "apple.txt", "Banana.txt"]
    assert names("sort=name&order=desc&limit=2&offset=1") == ["cherry.txt", "apple.txt"]
    for query in ("sort=size", "sort=name&order=up", "sort=created_at&cursor=YQ"):
        assert s.get(f"/files/list/docs?path=ls&{query}").json()["error"]["statusCode"] == "400", query


def test_copy_and_move_refuse_an_existing_destination_unless_upsert(host):
    _, s = host
    for k in ["cm/a", "cm/b"]:
        ok(s.request("PUT", f"/files/pipe/docs/{k}?upsert=1", content=k.encode()))
    for action in ("copy", "move"):
        r = s.request("POST", f"/files/{action}/docs", json={"from": "cm/a", "to": "cm/b"}).json()
        assert r["error"]["error"] == "Duplicate" and r["error"]["statusCode"] == "409", (action, r)
        assert s.get("/files/get/docs/cm/b").content == b"cm/b" and s.get("/files/get/docs/cm/a").content == b"cm/a"
    ok(s.request("POST", "/files/copy/docs", json={"from": "cm/a", "to": "cm/b", "upsert": True}))
    assert s.get("/files/get/docs/cm/b").content == b"cm/a"
    ok(s.request("PUT", "/files/pipe/docs/cm/c?upsert=1", content=b"c"))
    ok(s.request("POST", "/files/move/docs", json={"from": "cm/c", "to": "cm/b", "upsert": True}))
    assert s.get("/files/get/docs/cm/b").content == b"c" and s.get("/files/exists/docs/cm/c").json()["data"] is False


def test_cli_and_isolation(host, tmp_path):
    cart, s = host
    listing = json.loads(cart.cli("blobs", "files", "--json").stdout)
    assert {b["name"]: b["public"] for b in listing}["avatars"] is True
    assert {b["backend"] for b in listing} == {"internal"}
    assert "files stores its objects' bytes in the cartridge (internal)" in cart.cli("blobs", "files").stderr
    objects = json.loads(cart.cli("blobs", "files", "avatars", "--json").stdout)
    assert any(o["key"] == "u/42.png" and o["size"] == len(DATA) for o in objects)
    assert cart.cli("blobs", "files", "BAD", check=False).returncode == 1
    assert cart.cli("blobs", "files", "avatars", "--limit", "0", check=False).returncode == 2  # before: an IndexError
    assert cart.cli("blobs", "migrate", check=False).returncode == 2  # no app named migrate: migrate's usage
    for args, message in [(("blobs", "nosuchapp"), "error: no app named 'nosuchapp'"),
                          (("keys", "create", "nosuchapp"), "error: no app named 'nosuchapp'"),
                          (("blobs", "files", "nosuchbucket"), "error: files has no bucket 'nosuchbucket'")]:
        refused = cart.cli(*args, check=False)
        assert refused.returncode == 1 and message in refused.stderr and not refused.stdout, args
    twin = tmp_path / "twin"
    shutil.copytree(FILES, twin)
    manifest = json.loads((twin / "fazt.json").read_text())
    (twin / "fazt.json").write_text(json.dumps({**manifest, "name": "twin"}))
    cart.deploy(twin)
    assert s.get("/twin/get/avatars/u/42.png").status_code == 404
    assert s.get("/twin/storage/v1/object/public/avatars/u/42.png").status_code == 404
    url = ok(s.get("/files/sign/avatars/u/42.png"))["signedUrl"]
    assert s.get(url.replace("/files/", "/twin/")).status_code == 400  # a token names its app
    cart.cli("remove", "twin")


def test_storage_urls_on_the_apps_own_host_name_have_no_prefix(cartridge):
    cartridge.deploy(TEST_APPS / "files")
    server = cartridge.serve("--domain", "apps.test", workers=1)
    on_host = {"host": "files.apps.test"}
    ok(server.request("PUT", "/pipe/avatars/pub.png?upsert=1", content=b"public bytes", headers=on_host))
    public = ok(server.get("/public/avatars/pub.png", headers=on_host))["publicUrl"]
    assert public == "http://files.apps.test/storage/v1/object/public/avatars/pub.png"  # before: /files/..., a 404 here
    assert server.get(urlsplit(public).path, headers=on_host).content == b"public bytes"
    signed = urlsplit(ok(server.get("/sign/avatars/pub.png?expires=60", headers=on_host))["signedUrl"])
    assert signed.netloc == "files.apps.test"
    assert server.get(f"{signed.path}?{signed.query}", headers=on_host).content == b"public bytes"


class Recorder:
    """Stands in for Granian's protocol object: records the response it is given."""

    def __init__(self):
        self.sent = []

    def response_bytes(self, status, headers, body):
        self.sent.append((status, body))

    response_empty = response_stream = response_str = lambda self, *a: pytest.fail(f"unexpected response {a}")


def test_a_host_sent_response_with_a_status_http_lacks_is_a_500_not_a_dead_worker():
    """A guest that forges its stream() answer (say, JSON.stringify replaced) cannot crash Granian."""
    import asyncio

    from fazt_host.capabilities.storage.http import answer

    for status, headers in ((1000, []), (101, []), (200, [["bad name", "x"]]), (200, [["x", "a\r\nb"]])):
        proto = Recorder()
        result = {"status": status, "headers": headers, "object": {"bucket": "docs", "key": "k"}}
        asyncio.run(answer(None, None, proto, None, result, "rid"))
        [(sent, body)] = proto.sent
        assert sent == 500 and b"the handler's response" in body, (status, headers, body)
    from fazt_host.runtime import GuestError
    from fazt_host.server import ResponseHead, check_response_head

    for status in (100, 101, 199, 600):  # the rule every response follows; a 101 would hand the connection over
        with pytest.raises(GuestError, match="200 to 599"):
            check_response_head(ResponseHead(status=status))
    for header in (("x-a\n", "v"), ("x-a", "v\n")):  # a line end the regex's "$" let through
        with pytest.raises(GuestError, match="invalid response header"):
            check_response_head(ResponseHead(status=200, headers=[header]))
