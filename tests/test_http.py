"""The HTTP trigger end to end: a real host process, a fresh sandbox per request."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

import apsw
import httpx
import pytest

from conftest import APPS, TEST_APPS, copy_app, stalled_clients, workers_anon_mib
from fazt_host import static


def test_hello_json_and_static_page(served):
    r = served.get("/hello/hello")
    assert r.status_code == 200
    assert r.json()["hello"] == "world"
    assert r.headers["x-fazt-request-id"] == r.json()["requestId"]
    page = served.get("/hello/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>hello</h1>" in page.text


def test_app_root_without_slash_redirects(served):
    r = served.get("/hello?x=1")
    assert r.status_code == 308
    assert r.headers["location"] == "/hello/?x=1"


def test_every_request_gets_a_fresh_instance(served):
    counters = {served.get("/probe/global").json()["counter"] for _ in range(5)}
    assert counters == {1}


def test_entropy_and_clock_are_fresh_per_request(served):
    seen = [served.get("/probe/random").json() for _ in range(4)]
    for field in ("uuid", "random", "bytes"):
        values = [repr(s[field]) for s in seen]
        assert len(set(values)) == len(values), f"{field} repeated across requests: {values}"
    now_ms = time.time() * 1000
    for s in seen:
        assert abs(s["now"] - now_ms) < 60_000, "Date.now() is not the current time"


def test_status_headers_and_multiple_set_cookie(served):
    r = served.get("/probe/headers", headers={"x-in": "abc"})
    assert r.status_code == 201
    assert r.text == "method=GET x-in=abc"
    assert r.headers["x-custom"] == "yes"
    assert r.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]


def test_a_status_out_of_range_is_the_fetch_standards_range_error(served):
    assert served.get("/probe/status?s=599").status_code == 599
    for bad in ("99999", "199", "1.5"):
        r = served.get(f"/probe/status?s={bad}")
        # before: the engine wrapped 99999 to 16 bits, and the host refused "invalid response status 34463"
        assert r.status_code == 500 and f"RangeError: a response's status must be 200 to 599, not {bad}" in r.json()["error"]


def test_several_cookie_headers_reach_the_app_as_one_joined_with_semicolons(served):
    r = served.get("/probe/cookie", headers=[("cookie", "a=1; b=2"), ("x-in", "abc"), ("cookie", "c=3")])
    assert r.text == "a=1; b=2; c=3"  # RFC 6265 5.4, RFC 9113 8.2.3
    assert served.get("/probe/cookie", headers={"cookie": "only=1"}).text == "only=1"


def test_the_app_sees_the_headers_a_server_sees_host_included(served):
    seen = served.get("/probe/request-headers", headers={"x-in": "1", "te": "trailers"}).json()
    # before: the engine's Request dropped what the Fetch standard forbids a browser to set
    assert seen["host"] == f"127.0.0.1:{served.port}" and seen["te"] == "trailers" and seen["x-in"] == "1"
    assert seen["x-forwarded-prefix"] == "/probe"


def test_manifest_env_reaches_the_handler(served):
    assert served.get("/probe/env").json() == {"GREETING": "hi"}
    assert served.get("/hello/hello").status_code == 200  # hello declares no env


def test_app_sees_its_own_path_and_prefix(served):
    r = served.get("/probe/url?q=1").json()
    assert r["url"].endswith("/url?q=1")
    assert r["prefix"] == "/probe"


def test_binary_body_round_trip_8_mib(served):
    body = os.urandom(8 << 20)
    r = served.request("POST", "/probe/digest", content=body)
    assert r.status_code == 200
    assert r.json()["length"] == len(body)
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
    echo = served.request("POST", "/probe/echo", content=body)
    assert echo.status_code == 200 and echo.content == body


def test_body_as_json_once_and_as_a_stream(served):
    r = served.request("POST", "/probe/json", json={"a": [1, 2], "s": "ünï"})
    assert r.json() == {"value": {"a": [1, 2], "s": "ünï"}, "second": "TypeError"}
    body = os.urandom(5 << 20)
    r = served.request("POST", "/probe/read-stream", content=body)
    assert r.json()["total"] == len(body) and r.json()["chunks"] >= 3  # streamed in 2 MiB pieces


def test_chunked_request_body(served):
    parts = [os.urandom(100_000) for _ in range(5)]
    r = served.request("POST", "/probe/digest", content=iter(parts))
    assert r.json()["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_large_response_body_beyond_list_u8_limit(served):
    n = 6 << 20
    r = served.get(f"/probe/big?n={n}")
    assert r.status_code == 200
    expected = bytes(((i * 31 + 7) & 255) for i in range(256)) * (n // 256)
    assert len(r.content) == n and r.content == expected


def test_streamed_response_arrives_chunk_by_chunk(served):
    arrivals = []
    with served.client.stream("GET", "/probe/stream") as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line:
                arrivals.append((time.monotonic(), line))
    assert [line.split(" at ")[0] for _, line in arrivals] == ["chunk 0", "chunk 1", "chunk 2"]
    # the handler sleeps 300 ms between chunks: each must reach us before the next is made
    assert arrivals[1][0] - arrivals[0][0] > 0.2
    assert arrivals[2][0] - arrivals[1][0] > 0.2


def test_a_stream_whose_handler_fails_still_ends(served):
    started = time.monotonic()
    r = served.client.get("/probe/stream?fail", timeout=10)  # before: the response never ended
    assert r.status_code == 200 and r.text.count("chunk ") == 3
    assert time.monotonic() - started < 5
    logs = served.cart.cli("logs", "probe", "-n", "20").stdout
    assert "failed mid-stream" in logs and r.headers["x-fazt-request-id"] in logs


def test_thrown_error_gives_500_json_and_stack_in_logs(served):
    r = served.get("/probe/throw")
    assert r.status_code == 500
    body = r.json()
    assert "boom from probe" in body["error"] and body["requestId"]
    assert set(body) == {"error", "requestId"}  # the stack is for the log only
    logs = served.cart.cli("logs", "probe", "--json", "-n", "50").stdout
    lines = [json.loads(line)["message"] for line in logs.splitlines() if body["requestId"] in line]
    assert lines and "boom from probe" in lines[-1]
    # The frames are the app's own files and lines (through the build's source map), the SDK's
    # and componentize-js's collapsed into one line.
    stack = lines[-1].splitlines()[1:]
    assert stack[:2] == ["raise@fail.js:3:9", "/throw@index.js:103:5"], lines[-1]
    assert "(fazt runtime)" in stack and not any("app.js" in s or "initializer.js" in s for s in stack)


def test_console_goes_to_the_app_log_with_request_id(served):
    rid = served.get("/probe/log").json()["requestId"]
    out = served.cart.cli("logs", "probe", "-n", "20").stdout
    mine = [line for line in out.splitlines() if rid in line]
    assert any("info" in line and 'hello from the log {"n":1}' in line for line in mine)
    assert any("warn" in line and "a warning" in line for line in mine)
    # An error the app logs itself names its own files too, as a thrown one does.
    logged = [json.loads(line)["message"] for line in served.cart.cli("logs", "probe", "--json", "-n", "20").stdout.splitlines()
              if rid in line and "caught and logged" in line]
    assert logged and logged[0].splitlines()[:3] == ["Error: caught and logged", "raise@fail.js:3:9", "/log@index.js:99:11"], logged


def test_log_lines_cannot_forge_lines_or_drive_the_terminal():
    from fazt_host.capabilities.log import printable

    forged = "ok\n2026-01-01T00:00:00.000Z info  [forged] FORGED\x1b[31m\x1b]0;title\x07"
    assert printable(forged) == "ok\n    2026-01-01T00:00:00.000Z info  [forged] FORGED\\x1b[31m\\x1b]0;title\\x07"
    assert printable("tab\tand é stay") == "tab\tand é stay"


def test_log_volume_is_capped(served):
    r = served.get("/probe/log-flood")
    assert r.status_code == 200
    rid = r.headers["x-fazt-request-id"]
    out = served.cart.cli("logs", "probe", "--json", "-n", "1000").stdout
    mine = [line["message"] for line in map(json.loads, out.splitlines()) if line["requestId"] == rid]
    # 655 lines of 100 bytes fit in 64 KiB; from the first over it on, every line is dropped,
    # also the short ones after the flood that would still fit.
    assert mine[:-1] == ["x" * 100] * 655
    assert mine[-1] == "9347 log lines dropped: over the limit of 64 KiB per call"


def test_infinite_loop_is_stopped_and_host_keeps_serving(served):
    started = time.monotonic()
    r = served.get("/probe/loop")
    assert r.status_code == 504
    assert "time limit" in r.json()["error"]
    assert time.monotonic() - started < 10
    assert served.get("/probe/global").status_code == 200
    assert served.get("/hello/hello").status_code == 200


def test_a_handler_waiting_on_a_timer_is_stopped_at_its_limit(served):
    # Waiting for a timer happens in the host's poll, out of the interrupt's reach: the SDK
    # replaces a timer due after the limit (probe: 2000 ms) with one at the limit.
    assert served.get("/probe/sleep?ms=50").json() == {"slept": 50}
    for query in ("ms=20000", "ms=20000&interval"):
        started = time.monotonic()
        r = served.get(f"/probe/sleep?{query}")
        assert r.status_code == 504, r.text
        assert "time limit" in r.json()["error"]
        assert time.monotonic() - started < 6
    assert served.get("/hello/hello").status_code == 200


def test_memory_bomb_gives_500_and_next_request_works(served):
    r = served.get("/probe/bomb")
    assert r.status_code == 500
    assert r.json()["requestId"]
    assert served.get("/probe/global").json() == {"counter": 1}


def test_request_blob_keeps_its_type_and_a_204_with_a_body_is_named(served):
    r = served.request("POST", "/probe/blob", content=b"12345", headers={"content-type": "text/csv"}).json()
    assert r == {"type": "text/csv", "size": 5, "refused": "a response with status 204 cannot have a body"}


def test_json_with_a_string_of_two_million_characters(served):
    for n in (1_000, 2_000_000):  # before: the engine's JSON.stringify ran out of memory at ~1.5-2.5M
        r = served.get(f"/probe/big-json?n={n}")
        assert r.status_code == 200 and r.json() == {"s": "y" * n, "tail": "é\n"}, r.text[:200]


def test_handler_that_never_settles_or_returns_garbage(served):
    never = served.get("/probe/never")
    assert never.status_code == 500 and "can never settle" in never.json()["error"]
    outbound = served.get("/probe/outbound").json()  # before: a fetch() never settled, so the engine stopped
    assert outbound["caught"] == "TypeError" and "not available" in outbound["message"]
    r = served.get("/probe/not-a-response")
    assert r.status_code == 500 and "must return a Response" in r.json()["error"]


def test_unknown_app_is_404_json(served):
    r = served.get("/nosuchapp/x")
    assert r.status_code == 404
    assert "nosuchapp" in r.json()["error"]
    assert served.get("/").status_code == 404


def test_path_traversal_is_refused(served):
    for path in ("/hello/../probe/x", "/hello/%2e%2e/secret", "/hello/a/%2E%2E/b", "/hello/x%00y", "/hello/..%2fx"):
        with socket.create_connection(("127.0.0.1", served.port)) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            reply = s.recv(4096).decode(errors="replace")
        assert reply.split(" ")[1] == "400", (path, reply)
        assert '"error"' in reply


def test_body_over_limit_is_413_before_reading_it(served):
    # probe declares no body limit, so the default (100 MiB) applies; announce more than that
    with socket.create_connection(("127.0.0.1", served.port)) as s:
        s.sendall(b"POST /probe/digest HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n")
        s.settimeout(5)
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "limit" in reply and '"requestId"' in reply
    rid = json.loads(reply.partition("\r\n\r\n")[2])["requestId"]
    logged = [json.loads(line) for line in served.cart.cli("logs", "probe", "--json", "-n", "50").stdout.splitlines()]
    assert any(line["requestId"] == rid and "exceeds the limit" in line["message"] for line in logged)  # before: not logged
    # A client that waits on 100-continue is answered without being asked for the body (the
    # drain would have waited for it up to its time limit, 2 s).
    with socket.create_connection(("127.0.0.1", served.port)) as s:
        s.sendall(b"POST /probe/digest HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 209715200\r\n\r\n")
        s.settimeout(1.5)
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply


def test_the_host_is_one_and_reaches_the_app_over_http2_too(served):
    def status(head: bytes) -> str:
        with socket.create_connection(("127.0.0.1", served.port)) as s:
            s.sendall(head)
            return s.recv(4096).decode().split(" ")[1]

    # RFC 9112 3.2: several Host headers, or none in HTTP/1.1, are a 400 (with --domain, Host picks the app)
    assert status(b"GET /probe/url HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n") == "400"
    assert status(b"GET /probe/url HTTP/1.1\r\nConnection: close\r\n\r\n") == "400"
    assert status(b"GET /probe/url HTTP/1.0\r\n\r\n") == "200"

    # HTTP/2 (h2c) sends :authority, not Host: the app sees it as `host`, as over HTTP/1.1 (before: no host)
    with httpx.Client(http1=False, http2=True) as h2:
        r = h2.get(f"http://127.0.0.1:{served.port}/probe/url")
    assert r.http_version == "HTTP/2" and r.json()["host"] == f"127.0.0.1:{served.port}", r.json()
    assert served.get("/probe/url").json()["host"] == f"127.0.0.1:{served.port}"


def test_http2_bodies_without_a_length_and_heads_with_a_body(served):
    with httpx.Client(http1=False, http2=True, base_url=f"http://127.0.0.1:{served.port}") as h2:
        # DATA frames need no content-length (RFC 9113 8.1.1); before, such a body was dropped with a 200
        r = h2.post("/probe/echo", content=iter([b"over ", b"http/2"]))
        assert r.http_version == "HTTP/2" and "content-length" not in r.request.headers
        assert r.content == b"over http/2", r.text
        # a HEAD whose answer has a whole body: its length goes, not the body (before: a PROTOCOL_ERROR)
        for path, status in (("/probe/url", 200), ("/nosuchapp/x", 404), ("/_/health", 200)):
            head, get = h2.head(path), h2.get(path)
            assert (head.status_code, head.content) == (status, b"") and get.status_code == status, path
            assert head.headers["content-length"] == str(len(get.content)), path
    plain = served.request("HEAD", "/probe/url")
    assert plain.status_code == 200 and plain.content == b"" and int(plain.headers["content-length"]) > 0


def test_a_transfer_coding_the_server_does_not_apply_is_a_501(served):
    # RFC 9112 6.1; before, a gzip-coded body reached the app still encoded
    with socket.create_connection(("127.0.0.1", served.port)) as s:
        s.sendall(b"POST /probe/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
                  b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 501") and "not supported" in reply, reply
    assert served.request("POST", "/probe/echo", content=iter([b"ab", b"c"])).content == b"abc"  # chunked is fine


def test_malformed_http_gets_400_and_server_survives(served):
    for junk in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost x\r\n\r\n", b"\x00\x01\x02\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", served.port)) as s:
            s.sendall(junk)
            s.settimeout(5)
            try:
                reply = s.recv(4096)
            except (ConnectionResetError, socket.timeout):
                reply = b""
        assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply
    assert served.get("/hello/hello").status_code == 200


def test_a_static_folder_without_its_slash_redirects_to_it(served):
    r = served.get("/probe/guide?x=1", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/probe/guide/?x=1"  # before: the handler's 404
    assert served.get("/probe/guide/").text == "<h1>guide</h1>\n"


def test_static_etag_range_and_head(served):
    r = served.get("/probe/file.txt")
    assert r.status_code == 200 and r.text == "static probe file\n"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "must-revalidate" in r.headers["cache-control"]
    etag = r.headers["etag"]
    assert served.get("/probe/file.txt", headers={"if-none-match": etag}).status_code == 304
    part = served.get("/probe/file.txt", headers={"range": "bytes=7-11"})
    assert part.status_code == 206 and part.text == "probe"
    assert part.headers["content-range"] == "bytes 7-11/18"
    assert served.get("/probe/file.txt", headers={"range": "bytes=-5"}).text == "file\n"
    bad = served.get("/probe/file.txt", headers={"range": "bytes=100-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == "bytes */18"
    for malformed in ("bytes=+7-11", "bytes=0_7-11", "bytes=-", "bytes=7-11, 0-1"):  # ignored: the whole file
        whole = served.get("/probe/file.txt", headers={"range": malformed})
        assert whole.status_code == 200 and whole.text == "static probe file\n", malformed
    head = served.request("HEAD", "/probe/file.txt")
    assert head.status_code == 200 and head.headers["content-length"] == "18" and head.content == b""


def test_compressed_files_are_served_as_compressed_files():
    # before: x.txt.gz was text/plain (a browser showed the gzip bytes), a.tar.gz application/x-tar
    assert [static.content_type(p) for p in ("x.txt.gz", "a.tar.gz", "a.svgz", "x.css.br", "d.json.bz2")] == [
        "application/gzip", "application/gzip", "application/gzip", "application/octet-stream", "application/x-bzip2"]
    assert static.content_type("a.css") == "text/css; charset=utf-8"


def test_requests_to_different_apps_stay_apart(served):
    # a path that is static in probe is not visible under hello
    assert served.get("/hello/file.txt").status_code == 404
    assert served.get("/probe/index.html").status_code == 404


def test_health_endpoint(served):
    r = httpx.get(served.base + "/_/health")
    assert r.json()["ok"] is True and r.json()["apps"] == 2


def test_slow_request_body_times_out_without_stalling_the_worker(served):
    with socket.create_connection(("127.0.0.1", served.port)) as s:
        s.sendall(b"POST /probe/digest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        started = time.monotonic()
        # meanwhile both workers keep serving
        for _ in range(4):
            assert served.get("/hello/hello").status_code == 200
        s.settimeout(10)
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 504"), reply
    assert "did not arrive" in reply
    assert time.monotonic() - started < 8


def test_form_data_keeps_binary_files_byte_exact(served):
    blob = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n"
    r = served.client.post(
        "/probe/form",
        data={"title": "héllo", "empty": ""},
        files={"file": ("data.bin", blob, "application/octet-stream"), "note": ('a "q".txt', b"text", "text/plain")},
    )
    assert r.status_code == 200, r.text
    entries = {e["name"]: e for e in r.json()}
    assert entries["title"]["value"] == "héllo" and entries["empty"]["value"] == ""
    file = entries["file"]
    assert (file["filename"], file["type"], file["size"]) == ("data.bin", "application/octet-stream", len(blob))
    assert file["sha256"] == hashlib.sha256(blob).hexdigest()
    assert entries["note"]["size"] == 4 and entries["note"]["type"] == "text/plain"
    urlencoded = served.client.post("/probe/form", data={"a": "1 2", "b": "ü"})  # the engine's own parser
    assert urlencoded.json() == [{"name": "a", "value": "1 2"}, {"name": "b", "value": "ü"}]
    bad = served.client.post("/probe/form", content=b"no parts here",
                             headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert bad.status_code == 500 and "malformed multipart" in bad.json()["error"]


def test_every_response_carries_a_request_id(served):
    for path in ("/probe/file.txt", "/probe", "/nosuchapp/x", "/probe/%2e%2e/x", "/_/health", "/hello/hello"):
        r = served.client.get(path)
        assert len(r.headers.get_list("x-fazt-request-id")) == 1, (path, r.status_code)


def test_the_app_sees_the_path_as_the_client_encoded_it(served):
    # Granian decodes the path once; the app's URL has it encoded again, never decoded twice.
    r = served.get("/probe/x%2541%20y%C3%A9")
    assert r.status_code == 404 and r.json()["path"] == "/x%2541%20y%C3%A9"
    with socket.create_connection(("127.0.0.1", served.port)) as s:  # as a browser sends them: unescaped
        s.sendall(b"GET /probe/a|b^[c] HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = s.recv(4096).decode()
    assert json.loads(reply.partition("\r\n\r\n")[2])["path"] == "/a|b^[c]", reply  # before: /a%7Cb%5E%5Bc%5D


def test_a_body_shorter_than_its_content_length_is_a_400(served):
    with socket.create_connection(("127.0.0.1", served.port)) as s:
        s.sendall(b"POST /probe/digest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 400"), reply
    assert "ended before it was complete" in reply


def test_a_stalled_body_does_not_hold_up_its_worker(cartridge):
    """The guest runs only once the body's first piece is in: a client that stalls costs only itself."""
    cartridge.deploy(TEST_APPS / "probe", "--timeout-ms", "20000")
    cartridge.deploy(APPS / "hello")
    server = cartridge.serve(workers=1)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /probe/digest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        assert server.get("/hello/hello").status_code == 200  # the only worker answers meanwhile
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(1)  # while the stalled request is still waiting for its body


def test_a_runaway_handler_does_not_hold_up_the_requests_behind_it(cartridge):
    cartridge.deploy(TEST_APPS / "probe", "--timeout-ms", "8000")
    cartridge.deploy(APPS / "hello")
    server = cartridge.serve(workers=1)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /probe/loop HTTP/1.1\r\nHost: x\r\n\r\n")  # holds the first wasm thread for 8 s
        time.sleep(0.5)
        start = time.monotonic()
        # the standby thread serves them (before: each waited until the loop was stopped, 7.5 s later)
        assert [server.get("/hello/hello").status_code for _ in range(5)] == [200] * 5
        assert server.get("/probe/random").status_code == 200  # the runaway's own app too
        assert time.monotonic() - start < 3
        s.settimeout(15)
        assert s.recv(64).startswith(b"HTTP/1.1 504")


def test_a_request_queued_behind_runaways_is_answered_at_its_own_deadline(cartridge, tmp_path):
    cartridge.deploy(TEST_APPS / "probe", "--timeout-ms", "8000")
    cartridge.deploy(copy_app(TEST_APPS / "probe", tmp_path / "probe2", name="probe2"), "--timeout-ms", "8000")
    cartridge.deploy(APPS / "hello", "--timeout-ms", "1000")
    cartridge.env["FAZT_WASM_THREADS"] = "2"
    server = cartridge.serve(workers=1)  # two apps' loops hold both wasm threads (one app may hold only one)
    loops = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    try:
        for s, app in zip(loops, ("probe", "probe2")):
            s.sendall(f"GET /{app}/loop HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(0.5)  # the first is held before the second comes
        start = time.monotonic()
        queued = server.get("/hello/hello")
        waited = time.monotonic() - start
        # before: answered only once a loop was stopped, 7 s later
        assert queued.status_code == 504 and "waited past its time limit of 1000 ms" in queued.json()["error"]
        assert waited < 4, waited
        for s in loops:
            s.settimeout(15)
            assert s.recv(64).startswith(b"HTTP/1.1 504")
    finally:
        for s in loops:
            s.close()
    assert server.get("/hello/hello").status_code == 200
    logged = cartridge.cli("logs", "hello", "--json").stdout
    assert "waited past its time limit of 1000 ms" in logged and queued.json()["requestId"] in logged


def test_guest_cannot_set_framing_headers_or_forge_the_request_id(served):
    r = served.get("/probe/framing")
    assert r.status_code == 200 and r.content == b"abc"
    assert r.headers["content-length"] == "3" and r.headers["x-ok"] == "1"
    assert r.headers["x-fazt-request-id"] != "forged"


def test_client_cannot_forge_the_mount_prefix(served):
    r = served.get("/probe/url", headers={"x-forwarded-prefix": "/evil"}).json()
    assert r["prefix"] == "/probe"


def test_client_cannot_forge_the_request_id_the_app_sees(served):
    r = served.get("/probe/url", headers={"x-fazt-request-id": "forged"})
    assert r.json()["requestId"] is None and r.headers["x-fazt-request-id"] != "forged"


def test_if_range_with_another_etag_sends_the_whole_file(served):
    r = served.get("/probe/file.txt", headers={"range": "bytes=0-3", "if-range": '"stale"'})
    assert r.status_code == 200 and r.text == "static probe file\n"
    etag = served.get("/probe/file.txt").headers["etag"]
    r = served.get("/probe/file.txt", headers={"range": "bytes=0-5", "if-range": etag})
    assert r.status_code == 206 and r.text == "static"


def logged(cart, app: str, rid: str, text: str, timeout: float = 10) -> str:
    """The app's log line of request `rid` containing `text`, once it is there."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in cart.cli("logs", app, "-n", "50").stdout.splitlines():
            if rid in line and text in line:
                return line
        time.sleep(0.2)
    raise AssertionError(f"no log line of {rid} with {text!r}")


def test_the_response_leaves_before_wait_until_promises_settle(served):
    r = served.get("/probe/wait-until?ms=1200")
    received = time.time()
    assert r.status_code == 200 and r.text == "returned"
    rid = r.headers["x-fazt-request-id"]
    logged(served.cart, "probe", rid, "wait-until done after 1200 ms")
    conn = apsw.Connection(str(served.cart.path), flags=apsw.SQLITE_OPEN_READONLY)
    [(at,)] = conn.execute("SELECT ts FROM logs WHERE request_id = ? AND message LIKE 'wait-until done%'", (rid,))
    assert received < at  # before: the response waited for the promise, which logs as it settles


def test_wait_until_past_the_time_limit_is_stopped_and_logged_after_the_response(served):
    r = served.get("/probe/wait-until?ms=5000&reject")  # probe's limit: 2 s
    assert r.status_code == 200 and r.text == "returned"  # before: 504 after 2 s
    rid = r.headers["x-fazt-request-id"]
    assert "a late failure" in logged(served.cart, "probe", rid, "a waitUntil promise rejected")
    logged(served.cart, "probe", rid, "ran past its time limit")
    assert served.get("/probe/global").status_code == 200


def test_a_streamed_response_goes_at_the_clients_pace(served):
    before = workers_anon_mib(served)
    stalled = stalled_clients(served.port, "/probe/long-stream?mb=200", 2)
    time.sleep(2.5)  # the probe's time limit: 2 s
    grown = workers_anon_mib(served) - before
    for sock in stalled:
        sock.close()
    assert grown < 40, grown  # before: what the guest made in its 2 s, queued for each client
    assert len(served.get("/probe/long-stream?mb=8").content) == 8 << 20


def test_a_response_sent_is_kept_when_a_wait_until_promise_can_never_settle(served):
    # before: about half of them a 500, when the engine's end came as fast as the response
    replies = [served.get("/probe/wait-until?ms=0&never") for _ in range(12)]
    assert [r.status_code for r in replies] == [200] * 12 and {r.text for r in replies} == {"returned"}
    logged(served.cart, "probe", replies[-1].headers["x-fazt-request-id"], "can never settle")


def test_wait_until_work_runs_on_when_the_handler_fails(served):
    # before: the thrown error (or the broken stream) ended the invocation, its waitUntil work silently with it
    started = time.monotonic()
    thrown = served.get("/probe/wait-until?ms=1500&throw")  # answered at once; the work runs on past it
    assert time.monotonic() - started < 1.2
    assert thrown.status_code == 500 and thrown.json() == {
        "error": "the handler threw Error: thrown with work pending", "requestId": thrown.headers["x-fazt-request-id"]}
    rid = thrown.headers["x-fazt-request-id"]
    logged(served.cart, "probe", rid, "the handler threw Error: thrown with work pending")
    conn = apsw.Connection(str(served.cart.path), flags=apsw.SQLITE_OPEN_READONLY)
    [(message,)] = conn.execute("SELECT message FROM logs WHERE request_id = ? AND message LIKE 'the handler threw%'", (rid,))
    assert "index.js:" in message  # its stack, in the app's own file
    logged(served.cart, "probe", thrown.headers["x-fazt-request-id"], "wait-until done after 1500 ms")
    broken = served.get("/probe/wait-until?ms=300&stream-error")
    logged(served.cart, "probe", broken.headers["x-fazt-request-id"], "wait-until done after 300 ms")


def test_a_request_without_a_body_reads_as_empty_after_the_response(served):
    # its body is null: no body that went with the response
    r = served.get("/probe/wait-until?ms=10&late-body")
    line = logged(served.cart, "probe", r.headers["x-fazt-request-id"], "late body")
    assert "late body read: 0 chars" in line


def test_the_request_body_cannot_be_read_after_the_response(served):
    r = served.request("POST", "/probe/wait-until?ms=10&late-body", content=b"sent before the response")
    assert r.text == "returned"
    line = logged(served.cart, "probe", r.headers["x-fazt-request-id"], "late body")
    assert "TypeError: the request body can't be read after the response has been sent" in line  # before: ""


def test_a_small_response_over_its_limit_is_logged_as_a_large_one_is(cartridge):
    cartridge.deploy(TEST_APPS / "probe", "--response-mb", "0")
    server = cartridge.serve(workers=1)
    r = server.get("/probe/url")  # a small body comes back in the export's result, checked after the call
    assert r.status_code == 500 and "exceeds the limit of 0 MiB" in r.json()["error"]
    logged(cartridge, "probe", r.headers["x-fazt-request-id"], "exceeds the limit of 0 MiB")  # before: not in the log
    server.stop()


def test_wait_until_work_gets_the_shutdown_grace_and_then_is_stopped_and_logged(cartridge):
    cartridge.deploy(TEST_APPS / "probe", "--timeout-ms", "20000")
    server = cartridge.serve(workers=1)
    short = server.get("/probe/wait-until?ms=1500")
    long = server.get("/probe/wait-until?ms=15000")
    assert short.text == long.text == "returned"
    start = time.monotonic()
    server.stop()  # SIGTERM
    assert time.monotonic() - start < 8
    logs = cartridge.cli("logs", "probe", "-n", "50").stdout
    # before: the worker ended under both; neither line, nor any line they had logged, was kept
    assert any(short.headers["x-fazt-request-id"] in line and "wait-until done after 1500 ms" in line
               for line in logs.splitlines()), logs
    assert any(long.headers["x-fazt-request-id"] in line and "stopped, the host shutting down" in line
               for line in logs.splitlines()), logs


def test_one_apps_runaways_leave_a_thread_to_the_other_apps(cartridge):
    cartridge.deploy(TEST_APPS / "probe", "--timeout-ms", "6000")
    cartridge.deploy(APPS / "hello", "--timeout-ms", "2000")
    cartridge.env["FAZT_WASM_THREADS"] = "3"
    server = cartridge.serve(workers=1)
    loops = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        for s in loops:
            s.sendall(b"GET /probe/loop HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(1)
        start = time.monotonic()
        # before: the four loops took all three threads, and hello waited out its 2 s limit: 504
        assert [server.get("/hello/hello").status_code for _ in range(3)] == [200] * 3
        assert time.monotonic() - start < 2
    finally:
        for s in loops:
            s.close()


def test_the_time_limit_counts_from_the_requests_arrival(cartridge):
    cartridge.deploy(TEST_APPS / "probe", "--timeout-ms", "2000")
    cartridge.env["FAZT_WASM_THREADS"] = "1"
    server = cartridge.serve(workers=1)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /probe/sleep?ms=1200 HTTP/1.1\r\nHost: x\r\n\r\n")  # holds the only thread 1.2 s
        time.sleep(0.2)
        start = time.monotonic()
        queued = server.get("/probe/loop")
        # before: 2 s more once it began, about 3 s in all
        assert queued.status_code == 504 and time.monotonic() - start < 2.6, time.monotonic() - start


def test_head_of_a_streamed_response_is_the_head_and_no_error(served):
    r = served.client.head("/probe/stream")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-type"] == "text/plain"
    rid = r.headers["x-fazt-request-id"]
    time.sleep(1.5)  # the guest is stopped at its next piece, well within this
    lines = [line for line in served.cart.cli("logs", "probe", "-n", "200").stdout.splitlines() if rid in line]
    assert not any("error" in line for line in lines), lines  # before: "the client went away" each time


def test_a_cloned_request_reads_the_whole_body_too(served):
    r = served.client.post("/probe/clone", content=b'{"k":"v"}')
    assert r.json() == {"first": '{"k":"v"}', "copy": '{"k":"v"}', "used": True}  # before: copy "" and used false
    r = served.client.post("/probe/clone", content=b"\xff\xfebad")  # the engine's own text() threw on bad UTF-8
    assert r.json()["copy"] == "\ufffd\ufffdbad"
    data = bytes(range(256)) * 20
    r = served.client.post("/probe/clone?form", files={"file": ("b.bin", data, "application/octet-stream")})
    # before: the engine's Request, whose multipart parser turned the file's bytes into 12,852 of text
    assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "host": r.request.headers["host"],
                        "text": True}


def test_a_complete_body_over_the_response_limit_is_a_500_before_any_byte(cartridge):
    cartridge.deploy(TEST_APPS / "probe", "--response-mb", "1")
    server = cartridge.serve(workers=1)
    r = server.get("/probe/big?n=2000000")  # the guest takes longer than STREAM_AFTER_S to build it
    assert r.status_code == 500 and "exceeds the limit of 1 MiB" in r.json()["error"]  # before: 200, cut at 1 MiB
    assert server.get("/probe/big?n=500000").content[:2] == bytes([7, 38])


def test_a_handler_sends_more_than_its_memory_limit(cartridge):
    """Each piece sent is freed once the host has it (the generated bindings kept them all)."""
    cartridge.deploy(TEST_APPS / "probe", "--memory-mb", "128", "--response-mb", "200")
    server = cartridge.serve(workers=1)
    r = server.get("/probe/long-stream?mb=160")
    assert r.status_code == 200 and len(r.content) == 160 << 20  # before: cut off at about 119 MiB
    assert r.content[-1] == 9


def test_a_malformed_chunked_body_is_a_400_not_a_shorter_body(served):
    head = b"POST /probe/digest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for body in (b"3\r\nabc\r\nzz\r\nmore",  # broken before the handler starts
                 b"30000\r\n" + b"x" * 0x30000 + b"\r\nzz\r\nmore"):  # broken while the handler reads it
        with socket.create_connection(("127.0.0.1", served.port)) as s:
            s.sendall(head + body)
            s.settimeout(10)
            reply = s.recv(4096).decode(errors="replace")
        assert reply.startswith("HTTP/1.1 400") and "ended before it was complete" in reply, reply  # before: 200
    assert served.get("/probe/global").status_code == 200


def test_a_host_header_that_is_no_url_host_is_a_400(served):
    for host in ("a b", "a/b", "x@y"):
        with socket.create_connection(("127.0.0.1", served.port)) as s:
            s.sendall(f"GET /probe/global HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            s.settimeout(10)
            reply = s.recv(4096).decode(errors="replace")
        assert reply.startswith("HTTP/1.1 400") and "invalid Host header" in reply, (host, reply)  # before: a 500
    assert served.get("/probe/global", headers={"host": "[::1]:8080"}).status_code == 200


def test_responses_clone_and_text_streams_work(served):
    got = served.get("/probe/clones-and-text-streams").json()
    decoded, encoded = got.pop("decoded"), got.pop("encoded")
    assert got == {
        "bytes": [0, 255, 104], "bytesCopy": [0, 255, 104], "streamed": [1, 2], "streamedCopy": [1, 2],
        "textCopy": ["same", 201, "1"], "used": "TypeError",
    }
    assert "".join(decoded) == "€uro"  # the € split across chunks is decoded whole, not as two U+FFFD
    assert bytes(b for chunk in encoded for b in chunk) == "😀!".encode()  # the split pair is one character
    cloned = served.get("/probe/cloned-response")
    assert (cloned.status_code, cloned.text, cloned.headers["content-type"]) == (200, "ok", "text/plain")


def test_response_bodies_read_as_fetch_reads_them_and_unsupported_keys_are_refused(served):
    got = served.get("/probe/response-bodies").json()
    # before: the file part came back as the text "0255120" (9 bytes), the blob without its type,
    # bytes() did not exist, and an RSA key ended the sandbox with a 500 that blamed memory
    assert got == {"file": [0, 255, 120], "name": "a.bin", "blobType": "image/png", "bytes": [97, 98],
                   "rsa": "NotSupportedError"}
