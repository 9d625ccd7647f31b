"""Documents end to end: the SDK's query builder in a real guest, over HTTP, plus the docs CLI.

tests/apps/dbproxy replays a builder chain sent as JSON, so each test names
the exact supabase-js calls an app would make.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading

import pytest

from conftest import FAZT, TEST_APPS, copy_app, serve_apps

DBPROXY = TEST_APPS / "dbproxy"


@pytest.fixture(scope="module")
def host(tmp_path_factory, cache_dir):
    yield from serve_apps(tmp_path_factory, cache_dir, "docs", DBPROXY)


def chain(server, *calls, app="dbproxy"):
    r = server.request("POST", f"/{app}/chain", json={"chain": [list(c) for c in calls]})
    assert r.status_code == 200, r.text
    return r.json()


def names(server, collection, *calls):
    """The names of the documents a filter chain matches, in `n` order."""
    reply = chain(server, ("from", collection), ("select", "name"), *calls, ("order", "n"))
    assert reply["error"] is None, reply
    return [d["name"] for d in reply["data"]]


def test_the_issue_example_works(host):
    _, server = host
    uid = "u-42"
    inserted = chain(server, ("from", "ex"), ("insert", [{"title": "a plan", "owner": uid, "tags": ["x"], "n": 3, "status": "open"}]), ("select",))
    [row] = inserted["data"]
    assert row["id"] and row["createdAt"] and inserted["error"] is None and inserted["status"] == 201
    chain(server, ("from", "ex"), ("insert", [
        {"title": "Plan B", "owner": uid, "n": 5, "status": "done"},
        {"title": "plan c", "owner": uid, "n": 1, "status": "open"},
        {"title": "other plan", "owner": "someone", "n": 9, "status": "open"},
        {"title": "no", "owner": uid, "n": 7, "status": "open"},
    ]))
    page = chain(server, ("from", "ex"), ("select", "id,title,n", {"count": "exact"}), ("eq", "owner", uid), ("gte", "n", 2),
                 ("in", "status", ["open", "done"]), ("ilike", "title", "%plan%"), ("order", "n", {"ascending": False}),
                 ("order", "id"), ("limit", 20))
    assert [d["title"] for d in page["data"]] == ["Plan B", "a plan"] and page["count"] == 2
    assert set(page["data"][0]) == {"id", "title", "n"}
    updated = chain(server, ("from", "ex"), ("update", {"n": 4}), ("eq", "id", row["id"]))
    assert updated["data"] is None and updated["error"] is None
    got = chain(server, ("from", "ex"), ("select",), ("eq", "id", row["id"]), ("single",))
    assert got["data"]["n"] == 4 and got["data"]["tags"] == ["x"]
    first = chain(server, ("from", "ex"), ("select",), ("eq", "owner", uid), ("order", "createdAt"), ("limit", 2))
    page2 = chain(server, ("from", "ex"), ("select",), ("eq", "owner", uid), ("order", "createdAt"), ("after", first["cursor"]), ("limit", 2))
    assert [d["title"] for d in first["data"] + page2["data"]] == ["a plan", "Plan B", "plan c", "no"]
    assert "cursor" not in page2  # no further page
    gone = chain(server, ("from", "ex"), ("delete", {"count": "exact"}), ("eq", "owner", "someone"))
    assert gone["count"] == 1 and gone["data"] is None


def test_postgrest_string_filters(host):
    _, server = host
    chain(server, ("from", "pg"), ("insert", [
        {"name": "a", "n": 1, "tags": ["x", "y"], "s": None},
        {"name": "b.c", "n": 2, "tags": ["y"]},
        {"name": "d", "n": 3, "tags": [], "s": "set"},
    ]))

    def pg(*calls):
        return names(server, "pg", *calls)

    assert pg(("or", "n.eq.1,name.eq.d")) == ["a", "d"]
    assert pg(("or", 'name.eq."b.c",and(n.gt.2,s.eq.set)')) == ["b.c", "d"]
    assert pg(("or", "n.in.(1,3),not.tags.cs.{y}")) == ["a", "d"]
    assert pg(("not", "n", "in", "(1,2)")) == ["d"]
    assert pg(("not", "s", "is", None)) == ["d"]
    assert pg(("filter", "tags", "cs", '["x"]')) == ["a"]
    assert pg(("filter", "n", "not.eq", 2)) == ["a", "d"]
    assert pg(("match", {"n": 2, "name": "b.c"})) == ["b.c"]
    assert pg(("contains", "tags", ["y"])) == ["a", "b.c"]
    assert pg(("containedBy", "tags", ["y", "z"])) == ["b.c", "d"]
    assert pg(("overlaps", "tags", "{x,z}")) == ["a"]
    assert pg(("or", "tags.cd.{y},tags.ov.(x)")) == ["a", "b.c", "d"]
    assert pg(("not", "tags", "cd", '["y"]')) == ["a"]
    assert pg(("filter", "tags", "ov", ["y"])) == ["a", "b.c"]
    assert pg(("like", "name", "*.*")) == ["b.c"]
    assert pg(("range", 1, 2)) == ["b.c", "d"]
    assert pg(("range", 1, 0)) == []  # postgrest-js sends limit=0: an empty page
    assert pg(("likeAnyOf", "name", ["a", "d*"])) == ["a", "d"] and pg(("ilikeAllOf", "name", ["B*", "*C"])) == ["b.c"]
    assert pg(("likeAnyOf", "name", [])) == [] and pg(("likeAllOf", "name", [])) == ["a", "b.c", "d"]
    # a BigInt as the number it is, as postgrest-js sends it (before: a TypeError out of the SDK)
    assert pg(("eq", "n", {"$bigint": "2"})) == ["b.c"] and pg(("in", "n", [{"$bigint": "1"}])) == ["a"]
    assert chain(server, ("from", "pg"), ("select",), ("eq", "n", {"$bigint": str(2**60)}))["error"]["code"] == "22003"
    # the same in strings, as postgrest-js sends them (before: unknown operator)
    assert pg(("filter", "name", "like(any)", "{a,d*}")) == ["a", "d"] and pg(("or", "name.ilike(all).{B*,*C}")) == ["b.c"]
    assert pg(("not", "n", "eq(any)", "(1,3)")) == ["b.c"] and pg(("or", "n.gt(all).{1,2},name.eq.a")) == ["a", "d"]
    # before: limit(NaN) went as null, no limit at all
    for bad in (("limit", 2.5), ("limit", -1), ("range", 0.5, 3)):
        assert chain(server, ("from", "pg"), ("select",), bad)["error"]["code"] == "PGRST100", bad
    assert pg(("isDistinct", "s", "set")) == ["a", "b.c"] and pg(("isDistinct", "s", None)) == ["d"]
    assert pg(("isDistinct", "n", "2")) == ["a", "b.c", "d"]  # a string is distinct from the number 2
    assert pg(("or", "s.isdistinct.null,n.eq.1")) == ["a", "d"] and pg(("not", "n", "isdistinct", 2)) == ["b.c"]
    # two keys, as PostgREST reads postgrest-js's order=tags,n.desc (before: one field named "tags,n")
    assert names(server, "pg", ("order", "s,n", {"ascending": False})) == ["d", "b.c", "a"]
    # a key's own modifiers, as PostgREST reads them (before: 'n.desc' was the nested path n -> desc)
    assert names(server, "pg", ("order", "n.desc")) == ["d", "b.c", "a"]
    assert names(server, "pg", ("order", "s.desc.nullsfirst,n.desc", {"ascending": True})) == ["b.c", "a", "d"]
    assert pg(("or", "s.is.UNKNOWN,s.is.NULL")) == ["a", "b.c"]  # is values in any case; unknown is null
    assert pg(("filter", "s", "not.is", "Null")) == ["d"]
    for malformed in ("n.regex.1", "(n.eq.1)", "and(n.eq.1", "n.eq.1)", 'name.eq."a', "n.eq.1,", "n.eq.1,,name.eq.d"):
        bad = chain(server, ("from", "pg"), ("select",), ("or", malformed))
        assert bad["data"] is None and bad["error"]["code"] == "PGRST100", malformed  # as PostgREST, not an empty match



def test_filter_and_not_read_a_string_value_as_or_does(host):
    # postgrest-js sends filter()/not() values as they are, in PostgREST's syntax: '4' is the number 4.
    _, server = host
    chain(server, ("from", "txt"), ("insert", [
        {"name": "a", "n": 3, "ok": True, "zip": "007", "s": "4"},
        {"name": "b", "n": 5, "ok": False, "zip": "7", "s": 4},
        {"name": "c", "n": 6, "zip": 7},
    ]))

    def txt(*calls):
        return names(server, "txt", *calls)

    assert txt(("filter", "n", "gt", "4")) == ["b", "c"]  # as .gt('n', 4)
    assert txt(("filter", "n", "not.gt", "4")) == ["a"]
    assert txt(("not", "ok", "eq", "true")) == ["b"]  # c has no ok: NULL, as in SQL
    assert txt(("filter", "s", "eq", '"4"')) == ["a"]  # "quoted" stays text
    assert txt(("filter", "s", "eq", 4)) == ["b"]  # a value that is not a string keeps its type
    assert txt(("filter", "ok", "is", "true")) == ["a"]
    assert txt(("filter", "zip", "like", "00*")) == ["a"]
    assert txt(("or", "zip.like.7")) == ["b", "c"]  # a like pattern is text, even one that reads as a number
    # JSON's number grammar: 007 is no number, so it stays the text "007".
    assert txt(("or", "zip.eq.007")) == ["a"]
    assert txt(("filter", "zip", "eq", "007")) == ["a"]
    assert txt(("filter", "zip", "eq", "7")) == ["c"]
    assert txt(("or", "n.eq.-0,n.eq.6.0,n.lt.3e0")) == ["c"]
    for calls in (("or", "n.gt.1e400"), ("filter", "n", "lt", "-1e400"), ("in", "n", "(1,1e999)")):
        bad = chain(server, ("from", "txt"), ("select",), calls)
        assert bad["error"]["code"] == "22003" and "out of range for a number" in bad["error"]["message"], calls


def test_like_escapes_come_before_stars(host):
    _, server = host
    chain(server, ("from", "stars"), ("insert", [
        {"name": "star*", "n": 1}, {"name": "starry", "n": 2}, {"name": "st%r", "n": 3}, {"name": "a\\b", "n": 4},
    ]))

    def stars(*calls):
        return names(server, "stars", *calls)

    assert stars(("like", "name", "star\\*")) == ["star*"]  # an escaped * is a literal *
    assert stars(("like", "name", "star*")) == ["star*", "starry"]
    assert stars(("ilike", "name", "STAR\\*")) == ["star*"]
    assert stars(("like", "name", "st\\%*")) == ["st%r"]
    assert stars(("like", "name", "*\\\\*")) == ["a\\b"]  # an escaped backslash, then a star: any run
    assert stars(("or", 'name.like."star\\\\*"')) == ["star*"]  # in quotes, \\ is one backslash
    assert stars(("filter", "name", "like", "star\\*")) == ["star*"]



def test_json_arrows_through_the_sdk(host):
    _, server = host
    chain(server, ("from", "arrows"), ("insert", [
        {"name": "a", "n": 1, "address": {"city": "Oslo", "zip": 7}},
        {"name": "b", "n": 2, "address": {"city": "Rome", "zip": "75"}},
    ]))
    rows = chain(server, ("from", "arrows"), ("select", "name,address->>city,zip:address->zip"),
                 ("order", "address->>city", {"ascending": False}))
    assert rows["data"] == [{"name": "b", "city": "Rome", "zip": "75"}, {"name": "a", "city": "Oslo", "zip": 7}]

    def arrows(*calls):
        return names(server, "arrows", *calls)

    assert arrows(("eq", "address->>city", "Oslo")) == ["a"]
    assert arrows(("or", "address->>zip.eq.7,address->city.eq.Rome")) == ["a", "b"]
    assert arrows(("filter", "address->>zip", "like", "7*")) == ["a", "b"]
    assert arrows(("filter", "address->zip", "like", "7*")) == ["a", "b"]  # like reads text either way

def test_errors_come_back_as_values_or_throw_on_request(host):
    _, server = host
    chain(server, ("from", "err"), ("insert", {"email": "a@x"}))
    dup = chain(server, ("from", "notes"), ("insert", [{"email": "dup@x"}, {"email": "dup@x"}]))
    assert dup["data"] is None and dup["error"]["code"] == "23505" and dup["status"] == 409
    bad = chain(server, ("from", "err"), ("select",), ("eq", "x') OR 1=1 --", 1))
    assert bad["error"]["code"] == "42703"
    r = server.request("POST", "/dbproxy/throw", json={"chain": [["from", "err"], ["select"], ["eq", "email", "none"], ["single"]]})
    assert r.json() == {"thrown": True, "name": "DocumentsError", "code": "PGRST116",
                        "message": "JSON object requested, multiple (or no) rows returned"}
    r = server.request("POST", "/dbproxy/throw", json={"chain": [["from", "err"], ["select"], ["eq", "email", "a@x"], ["single"]]})
    assert r.json() == {"thrown": False}
    inverted = chain(server, ("from", "err"), ("select",), ("range", 3, 1))
    assert inverted["error"]["code"] == "PGRST103" and "to (1) is before from (3)" in inverted["error"]["message"]
    typed = chain(server, ("from", "err"), ("select", "email"), ("eq", "email", "a@x"), ("returns",), ("overrideTypes",))
    assert typed["data"] == [{"email": "a@x"}]  # TypeScript's casts, kept in the bundle as calls
    nested = {"i": 1}
    for key in "hgfedcba":
        nested = {key: nested}
    too_deep = chain(server, ("from", "err"), ("insert", nested))
    assert too_deep["error"]["code"] == "54000"  # the app's fazt.json sets documentDepth 8


def test_a_value_or_filter_nested_past_the_engines_stack_is_an_error_value(host):
    _, server = host
    deep = "[" * 3000 + "1" + "]" * 3000  # as JSON text: Python's own encoder would recurse too deep
    cases = [
        '["insert", {"x": %s}]' % deep,
        '["select"], ["contains", "x", %s]' % deep,
        '["select"], ["or", "%s"]' % ("and(" * 300 + "id.eq.1" + ")" * 300),
    ]
    for calls in cases:
        body = '{"chain": [["from", "err"], %s]}' % calls
        r = server.request("POST", "/dbproxy/chain", content=body, headers={"content-type": "application/json"})
        reply = r.json()  # before: the SDK threw "too much recursion"
        assert reply["data"] is None and reply["error"]["code"] == "54001", (calls[:20], reply)


def test_options_for_an_embedded_collection_are_an_error(host):
    _, server = host
    for call in (("order", "n", {"foreignTable": "x"}), ("or", "n.eq.1", {"referencedTable": "x"}),
                 ("limit", 1, {"foreignTable": "x"}), ("range", 0, 1, {"referencedTable": "x"})):
        reply = chain(server, ("from", "err"), ("select",), call)  # before: applied to the top level
        assert reply["error"]["code"] == "PGRST108" and reply["data"] is None, call


def test_limit_bounds_an_update_or_delete_sent_by_the_sdk(host):
    _, server = host
    chain(server, ("from", "limited"), ("insert", [{"g": 1, "n": i} for i in range(5)]))
    gone = chain(server, ("from", "limited"), ("delete",), ("eq", "g", 1), ("order", "n", {"ascending": False}),
                 ("limit", 1), ("select", "n"))
    assert gone["data"] == [{"n": 4}]
    left = chain(server, ("from", "limited"), ("select", "n"), ("order", "n"))
    assert left["data"] == [{"n": i} for i in range(4)]


def test_batch_is_atomic(host):
    _, server = host
    r = server.request("POST", "/dbproxy/batch", json={"chains": [
        [["from", "orders"], ["insert", {"id": "o1", "total": 5}]],
        [["from", "stock"], ["insert", {"id": "s1", "left": 0}]],
        [["from", "stock"], ["insert", {"id": "s1", "left": 1}]],
    ]}).json()
    assert r["error"]["code"] == "23505" and "operation 2" in r["error"]["details"]
    assert chain(server, ("from", "orders"), ("select",))["data"] == []
    r = server.request("POST", "/dbproxy/batch", json={"chains": [
        [["from", "orders"], ["insert", {"id": "o1", "total": 5}]],
        [["from", "stock"], ["insert", {"id": "s1", "left": 0}], ["select", "id"]],
    ]}).json()
    assert r["error"] is None and r["data"][1]["data"] == [{"id": "s1"}]
    r = server.request("POST", "/dbproxy/batch", json={"chains": [[["from", "orders"], ["insert", {"id": "o2"}]], "junk"]})
    assert r.status_code == 200 and r.json()["error"]["code"] == "PGRST100"  # an error value, not a throw
    assert chain(server, ("from", "orders"), ("select", "id"), ("eq", "id", "o2"))["data"] == []


def test_keyset_walk_through_the_sdk(host):
    _, server = host
    chain(server, ("from", "walk"), ("insert", [{"i": i, "g": i % 3} for i in range(53)]))
    pages = server.request("POST", "/dbproxy/walk", json={"chain": [["from", "walk"], ["select", "id,i"], ["order", "g"], ["limit", 10]]}).json()
    flat = [i for p in pages for i in p]
    assert len(pages) == 6 and len(flat) == 53 and len(set(flat)) == 53


def test_concurrent_writers_in_two_workers_never_see_locks(host):
    _, server = host
    errors = []

    def writer(k):
        for i in range(15):
            r = chain(server, ("from", "race"), ("insert", {"k": k, "i": i}))
            if r["error"] is not None:
                errors.append(r["error"])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert chain(server, ("from", "race"), ("select", "id", {"count": "exact", "head": True}))["count"] == 120


def test_apps_cannot_reach_each_others_documents(host, tmp_path):
    cart, server = host
    twin = copy_app(DBPROXY, tmp_path / "twin", name="twin")
    cart.deploy(twin)
    chain(server, ("from", "secret"), ("insert", {"v": "dbproxy's"}))
    assert chain(server, ("from", "secret"), ("select",), app="twin")["data"] == []
    chain(server, ("from", "secret"), ("insert", {"v": "twin's"}), app="twin")
    assert [d["v"] for d in chain(server, ("from", "secret"), ("select",))["data"]] == ["dbproxy's"]
    cart.cli("remove", "twin")
    cart.deploy(twin)
    assert chain(server, ("from", "secret"), ("select",), app="twin")["data"] == []  # removal dropped its documents
    cart.cli("remove", "twin")


def test_cli_lists_explains_imports_and_exports(host, tmp_path):
    cart, server = host
    src = tmp_path / "in.ndjson"
    src.write_text("".join(json.dumps({"owner": f"u{i % 5}", "n": i}) + "\n" for i in range(300)))
    out = cart.cli("import", "dbproxy", "imported", str(src), "--batch", "100")
    assert "imported 300 documents" in out.stdout and "progress:" in out.stderr
    assert chain(server, ("from", "imported"), ("select", "n"), ("eq", "owner", "u3"), ("order", "n"), ("limit", 2))["data"] == [{"n": 3}, {"n": 8}]
    listing = json.loads(cart.cli("docs", "dbproxy", "--json").stdout)
    assert {"name": "imported", "count": 300, "indexes": []} in listing
    notes = next(c for c in listing if c["name"] == "notes")
    assert {"fields": ["owner", "createdAt"], "unique": False} in notes["indexes"]
    shown = cart.cli("docs", "dbproxy", "imported", "--query", '{"where": [["eq", "owner", "u1"]], "count": "exact"}', "--limit", "2")
    assert len(shown.stdout.splitlines()) == 2 and "count: 60" in shown.stderr
    plan = json.loads(cart.cli("docs", "explain", "dbproxy", "notes", '{"where": [["eq", "owner", "x"]], "order": [{"field": "createdAt"}]}', "--json").stdout)
    assert any("USING INDEX" in p for p in plan["plan"]) and "SCAN" not in " ".join(plan["plan"])
    exported = cart.cli("export", "dbproxy", "imported").stdout.splitlines()
    assert len(exported) == 300 and json.loads(exported[0])["n"] == 0
    many = tmp_path / "many.ndjson"
    many.write_text("".join(json.dumps({"n": i, "pad": "x" * 200}) + "\n" for i in range(2000)))  # past a pipe's buffer
    cart.cli("import", "dbproxy", "many", str(many))
    head = subprocess.Popen([FAZT, "export", "dbproxy", "many"], env=cart.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(head.stdout.readline())["n"] == 0
    head.stdout.close()  # as `| head -1` does
    assert head.wait(30) == 0 and head.stderr.read() == b""  # before: exit 1, "error: BrokenPipeError"
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"ok": 1}\n[1, 2]\n')
    failed = cart.cli("import", "dbproxy", "bad", str(bad), check=False)
    assert failed.returncode == 1 and "line 2" in failed.stderr and "1 document before it was imported" in failed.stderr
    for args in (["docs", "dbproxy", "a/b"], ["export", "dbproxy", "nope"]):
        r = cart.cli(*args, check=False)
        assert r.returncode == 1 and r.stderr.startswith("error: "), args
    for args in (["docs", "explain", "dbproxy", "notes", "{not json"], ["docs", "dbproxy", "notes", "--query", "{not json"]):
        r = cart.cli(*args, check=False)
        assert r.returncode == 2 and r.stderr.startswith("error: the query is not valid JSON"), args  # usage errors


def test_unique_index_over_duplicates_refuses_the_deploy(host, tmp_path):
    cart, server = host
    chain(server, ("from", "people"), ("insert", [{"id": "p1", "email": "x@x"}, {"id": "p2", "email": "x@x"}]))
    app = tmp_path / "dbproxy"
    shutil.copytree(DBPROXY, app)
    manifest = json.loads((app / "fazt.json").read_text())
    manifest["indexes"]["people"] = [{"unique": "email"}]
    (app / "fazt.json").write_text(json.dumps(manifest))
    r = cart.cli("deploy", str(app), check=False)
    assert r.returncode == 1 and "p1, p2" in r.stderr and "live version keeps serving" in r.stderr
    assert len(chain(server, ("from", "people"), ("select",))["data"]) == 2
    versions = json.loads(cart.cli("apps", "dbproxy", "--json").stdout)
    assert len(versions) == 1


def test_import_killed_midway_keeps_whole_batches(cartridge, tmp_path):
    cart = cartridge  # the fixture stops the servers it started
    cart.deploy(DBPROXY)
    src = tmp_path / "big.ndjson"
    with open(src, "w") as f:
        for i in range(400_000):
            f.write(json.dumps({"owner": f"u{i % 50}", "n": i, "pad": "x" * 40}) + "\n")
    proc = subprocess.Popen([FAZT, "import", "dbproxy", "notes", str(src), "--batch", "5000"], env=cart.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in iter(proc.stderr.readline, ""):  # killed once a batch or more is committed
        if "progress:" in line:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    server = cart.serve(workers=1)  # a worker's start rebuilds the indexes the import had set aside
    count = chain(server, ("from", "notes"), ("select", "id", {"count": "exact", "head": True}))["count"]
    assert 0 < count < 400_000 and count % 5000 == 0
    plan = json.loads(cart.cli("docs", "explain", "dbproxy", "notes", '{"where": [["eq", "owner", "u1"]]}', "--json").stdout)
    assert "SCAN" not in " ".join(plan["plan"])
    integrity = cart.cli("docs", "dbproxy", "--json")
    assert json.loads(integrity.stdout)[0]["count"] == count


def test_text_of_every_utf8_length_reaches_the_host_and_back_intact(host):
    """Strings cross to the host UTF-8 encoded by the bindings (1 to 4 bytes a character, large ones too)."""
    _, server = host
    title = "a é € 😀 中文 " * 2_500  # ~52 KB of mixed widths (dbproxy allows 64 KiB a document)
    inserted = chain(server, ("from", "utf8"), ("insert", [{"title": title, "tag": "ñ"}]), ("select",))
    assert inserted["error"] is None, inserted["error"]
    [row] = inserted["data"]
    got = chain(server, ("from", "utf8"), ("select", "title"), ("eq", "tag", "ñ"), ("single",))
    assert got["data"]["title"] == title and row["title"] == title
