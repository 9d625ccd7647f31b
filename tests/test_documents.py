"""The document store in-process: operators, ordering, pages, writes, limits, plans, hostile input.

The same store serves guests through fazt:host/documents; test_documents_http.py
drives it through the SDK's query builder over HTTP.
"""

from __future__ import annotations

import json
import random

import apsw
import msgspec
import pytest

from conftest import register_apps
from fazt_host import apps, cartridge, cli
from fazt_host.capabilities.documents import store as docstore
from fazt_host.capabilities.documents.compile import encode_cursor
from fazt_host.capabilities.documents.spec import Order
from fazt_host.capabilities.documents.spec import convert_operation
from fazt_host.config import Limits, ManifestError, decode_manifest
from fazt_host.host import capabilities

LIMITS = Limits()


@pytest.fixture
def db(tmp_path):
    conn = cartridge.connect(tmp_path / "fazt.db")
    caps = capabilities(conn)
    register_apps(conn, "a", "b")
    return Docs(conn, caps)


class Docs:
    def __init__(self, conn, caps):
        self.conn = conn
        self.caps = caps
        self.store = docstore.Store(conn)

    def run(self, app="a", limits=LIMITS, **op):
        return json.loads(self.store.run(app, json.dumps(op), limits))

    def ok(self, app="a", **op):
        reply = self.run(app, **op)
        assert reply["error"] is None, reply["error"]
        return reply

    def insert(self, docs, collection="notes", app="a"):
        return self.ok(app, op="insert", collection=collection, values=docs, returning=True)["data"]

    def select(self, collection="notes", app="a", **op):
        return self.ok(app, collection=collection, **op)["data"]

    def declare(self, app, indexes):
        manifest = decode_manifest(json.dumps({"name": app, "indexes": indexes}).encode())
        with cartridge.transaction(self.conn):
            return docstore.sync_indexes(self.conn, app, manifest.indexes)

    def plan(self, app="a", collection="notes", **op):
        return " ".join(docstore.explain(self.conn, app, collection, convert_operation(op))["plan"])


PEOPLE = [
    {"name": "ada", "age": 36, "city": "London", "tags": ["math", "code"], "address": {"city": "London", "zip": "N1"}},
    {"name": "Bob", "age": 25, "city": "Paris", "tags": ["art"], "active": True},
    {"name": "cy", "age": 41, "city": "Oslo", "tags": [], "active": False},
    {"name": "dee", "city": "Paris", "tags": ["code"], "address": {"city": "Lyon"}},
    {"name": "Eve%_", "age": 25, "city": None},
]


def names(rows):
    return [r["name"] for r in rows]


def test_insert_assigns_sortable_ids_and_stamps(db):
    rows = db.insert(PEOPLE)
    assert len({r["id"] for r in rows}) == 5
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert all(len(r["id"]) == 26 and r["createdAt"] == r["updatedAt"] and r["createdAt"].endswith("Z") for r in rows)
    given = db.insert({"id": "custom-1", "name": "z"})
    assert given[0]["id"] == "custom-1"
    # Without .select(), writes return data null (as supabase-js does).
    reply = db.ok(op="insert", collection="notes", values={"name": "q"})
    assert reply["data"] is None and reply["status"] == 201
    for op in ("insert", "upsert"):  # an empty list writes nothing, as PostgREST
        assert db.ok(op=op, collection="notes", values=[], returning=True)["data"] == []
        assert db.ok(op=op, collection="notes", values=[])["status"] == 201
    one = db.ok(op="insert", collection="notes", values={"name": "r"}, returning=True, single="one")
    assert one["data"]["name"] == "r" and one["status"] == 201  # .insert().select().single()


@pytest.mark.parametrize(
    "where, expected",
    [
        ([["eq", "city", "Paris"]], ["Bob", "dee"]),
        ([["neq", "city", "Paris"]], ["ada", "cy"]),
        ([["gt", "age", 25]], ["ada", "cy"]),
        ([["gte", "age", 25]], ["ada", "Bob", "cy", "Eve%_"]),
        ([["lt", "age", 36]], ["Bob", "Eve%_"]),
        ([["lte", "age", 36], ["eq", "city", "London"]], ["ada"]),
        ([["in", "city", ["Oslo", "London"]]], ["ada", "cy"]),
        ([["in", "city", []]], []),
        ([["like", "name", "%e%"]], ["dee", "Eve%_"]),  # case-sensitive
        ([["like", "name", "b%"]], []),
        ([["ilike", "name", "b%"]], ["Bob"]),
        ([["like", "name", "Eve\\%\\_"]], ["Eve%_"]),  # \ escapes, as in ilike
        ([["like", "name", "Eve\\%%"]], ["Eve%_"]),
        ([["like", "name", "eve\\%\\_"]], []),
        ([["like", "name", "\\E%"]], ["Eve%_"]),  # an escaped ordinary character is itself
        ([["like", "name", "Ev\\%"]], []),
        ([["ilike", "name", "Eve\\%\\_"]], ["Eve%_"]),
        ([["is", "age", None]], ["dee"]),
        ([["is", "city", None]], ["Eve%_"]),
        ([["is", "active", True]], ["Bob"]),
        ([["is", "active", False]], ["cy"]),
        ([["not", ["is", "active", True]]], ["ada", "cy", "dee", "Eve%_"]),  # IS TRUE is never NULL
        ([["eq", "active", True]], ["Bob"]),
        ([["contains", "tags", ["code"]]], ["ada", "dee"]),
        ([["contains", "tags", ["code", "math"]]], ["ada"]),
        ([["contains", "address", {"city": "Lyon"}]], ["dee"]),
        ([["not", ["contains", "tags", ["code"]]]], ["Bob", "cy"]),  # Eve%_ has no tags: NULL, as in jsonb
        ([["not", ["contains", "address", {"city": "Lyon"}]]], ["ada"]),
        ([["not", ["overlaps", "tags", ["code"]]]], ["Bob", "cy"]),
        ([["or", [["contains", "tags", ["art"]], ["not", ["overlaps", "tags", ["art", "code"]]]]]], ["Bob", "cy"]),
        ([["eq", "address.city", "London"]], ["ada"]),
        ([["containedBy", "tags", ["code", "math", "x"]]], ["ada", "cy", "dee"]),
        ([["containedBy", "tags", ["code"]]], ["cy", "dee"]),
        ([["not", ["containedBy", "tags", ["code"]]]], ["ada", "Bob"]),  # a missing field matches neither
        ([["containedBy", "city", ["Paris", "Oslo"]]], ["Bob", "cy", "dee"]),  # a scalar, as in jsonb
        ([["containedBy", "address", {"city": "London", "zip": "N1", "x": 1}]], ["ada"]),
        ([["containedBy", "address", {"city": "Lyon"}]], ["dee"]),
        ([["overlaps", "tags", ["code", "art"]]], ["ada", "Bob", "dee"]),
        ([["overlaps", "tags", []]], []),
        ([["not", ["eq", "city", "Paris"]]], ["ada", "cy"]),
        ([["or", [["eq", "name", "cy"], ["gt", "age", 35]]]], ["ada", "cy"]),
        ([["or", [["eq", "name", "cy"], ["and", [["eq", "city", "Paris"], ["is", "age", None]]]]]], ["cy", "dee"]),
        ([["eq", "tags.0", "art"]], ["Bob"]),
    ],
)
def test_operators(db, where, expected):
    db.insert(PEOPLE)
    assert names(db.select(where=where)) == expected


TYPED = [
    {"name": "one", "k": 1},
    {"name": "true", "k": True},
    {"name": "zero", "k": 0},
    {"name": "false", "k": False},
    {"name": "text1", "k": "1"},
    {"name": "real1", "k": 1.5},
    {"name": "null", "k": None},
    {"name": "missing"},
    {"name": "list", "a": [1, True], "o": {"k": True}},
    {"name": "list2", "a": [True], "o": {"k": 1}},
]


@pytest.mark.parametrize(
    "where, expected",
    [
        ([["eq", "k", 1]], ["one"]),
        ([["eq", "k", True]], ["true"]),
        ([["eq", "k", 0]], ["zero"]),
        ([["eq", "k", False]], ["false"]),
        ([["eq", "k", "1"]], ["text1"]),
        ([["neq", "k", True]], ["one", "zero", "false", "text1", "real1"]),
        ([["neq", "k", 1]], ["true", "zero", "false", "text1", "real1"]),
        ([["in", "k", [0, 1]]], ["one", "zero"]),
        ([["in", "k", [True, False]]], ["true", "false"]),
        ([["in", "k", [True, 0]]], ["true", "zero"]),
        ([["in", "k", [True, 1]]], ["one", "true"]),
        ([["not", ["in", "k", [0, 1]]]], ["true", "false", "text1", "real1"]),
        ([["not", ["eq", "k", True]]], ["one", "zero", "false", "text1", "real1"]),
        ([["or", [["eq", "k", True], ["eq", "k", 0]]]], ["true", "zero"]),
        ([["is", "k", True]], ["true"]),
        ([["contains", "a", [1]]], ["list"]),
        ([["contains", "a", [True]]], ["list", "list2"]),
        ([["contains", "o", {"k": True}]], ["list"]),
        ([["contains", "o", {"k": 1}]], ["list2"]),
    ],
)
def test_booleans_and_numbers_keep_their_json_type(db, where, expected):
    db.declare("a", {"notes": ["k"]})
    db.insert(TYPED)
    assert sorted(names(db.select(where=where))) == sorted(expected)



MIXED = [
    {"name": "zero", "n": 0}, {"name": "three", "n": 3}, {"name": "five", "n": 5}, {"name": "text3", "n": "3"},
    {"name": "textz", "n": "z"}, {"name": "true", "n": True}, {"name": "false", "n": False},
    {"name": "bracket", "n": "[x"}, {"name": "list", "n": [9]}, {"name": "object", "n": {"a": 9}},
    {"name": "null", "n": None}, {"name": "missing"},
]


@pytest.mark.parametrize(
    "where, expected",
    [
        ([["gt", "n", 4]], ["five"]),  # not "3": SQLite ranks every text above every number
        ([["gte", "n", 0]], ["zero", "three", "five"]),  # not true or false, read as 1 and 0
        ([["lt", "n", 4]], ["zero", "three"]),
        ([["lte", "n", 1.5]], ["zero"]),
        ([["lt", "n", "4"]], ["text3"]),
        ([["gt", "n", "a"]], ["textz"]),  # not the object, whose JSON text starts with {
        ([["gte", "n", ""]], ["text3", "textz", "bracket"]),
        ([["gt", "n", "Z"]], ["textz", "bracket"]),  # a string starting with [ is still a string
        ([["gt", "n", False]], ["true"]),
        ([["lte", "n", True]], ["true", "false"]),
        ([["lt", "n", True]], ["false"]),
        # A field of another type is not greater, so not() keeps it; a null or missing one stays NULL.
        ([["not", ["gt", "n", 4]]], ["zero", "three", "text3", "textz", "bracket", "true", "false", "list", "object"]),
        ([["or", [["lt", "n", 1], ["gt", "n", "y"]]]], ["zero", "textz"]),
    ],
)
def test_ranges_compare_only_values_of_the_same_json_type(db, where, expected):
    db.declare("a", {"notes": ["n"]})
    db.insert(MIXED)
    assert sorted(names(db.select(where=where))) == sorted(expected)


@pytest.mark.parametrize(
    "where, expected",
    [
        ([["eq", "n", "[9]"]], []),  # before: the list, by its JSON text
        ([["eq", "n", '{"a":9}']], []),
        ([["eq", "n", "[x"]], ["bracket"]),
        ([["in", "n", ["[9]", "[x"]]], ["bracket"]),
        ([["neq", "n", "[9]"]], ["zero", "three", "five", "text3", "textz", "true", "false", "bracket", "list", "object"]),
        ([["like", "n", "%9%"]], []),
        ([["ilike", "n", "%X%"]], ["bracket"]),
        ([["not", ["like", "n", "[%"]]], ["zero", "three", "five", "text3", "textz", "true", "false", "list", "object"]),
        ([["eq", "n->>a", "9"]], ["object"]),  # ->> reads text, as PostgreSQL's does
        ([["like", "n->>0", "9"]], ["list"]),
    ],
)
def test_strings_never_equal_or_match_an_array_or_object(db, where, expected):
    db.declare("a", {"notes": ["n"]})
    db.insert(MIXED)
    assert sorted(names(db.select(where=where))) == sorted(expected)
    if where[0][0] == "eq" and "->>" not in where[0][1]:
        assert "SCAN" not in db.plan(where=where)


def test_typed_ranges_still_use_the_index(db):
    db.declare("a", {"notes": ["n"]})
    db.insert(MIXED)
    for op, value in (("gt", 4), ("lte", "4"), ("gte", False)):
        plan = db.plan(where=[[op, "n", value]])
        assert ("(<expr>>?)" in plan or "(<expr><?)" in plan) and "SCAN" not in plan, (op, value, plan)

@pytest.mark.parametrize(
    "op, pattern, expected",
    [
        ("containedBy", [1], [2, 8]),  # true is not 1; [] is in every array
        ("containedBy", [1, True], [1, 2, 8]),
        ("containedBy", [1, "x"], [2, 5, 8]),
        ("containedBy", [], [8]),
        ("containedBy", {"b": [1, 2, 3], "c": None}, [6, 9]),
        ("containedBy", {"b": [1]}, [9]),  # c is not in the pattern, and 2 is not in b's
        ("containedBy", {}, [9]),
        ("overlaps", [True], [1]),
        ("overlaps", [1], [1, 2]),
        ("overlaps", ["x"], []),  # a scalar is no array
    ],
)
def test_contained_by_and_overlaps_follow_jsonb(db, op, pattern, expected):
    db.insert([{"k": 1, "a": [1, True]}, {"k": 2, "a": [1]}, {"k": 3, "a": [None]}, {"k": 4, "a": [[1]]},
               {"k": 5, "a": "x"}, {"k": 6, "a": {"b": [1, 2], "c": None}}, {"k": 7}, {"k": 8, "a": []}, {"k": 9, "a": {}}])
    assert [r["k"] for r in db.select(where=[[op, "a", pattern]], order=[{"field": "k"}])] == expected


@pytest.mark.parametrize("term", [["containedBy", "a", [[1]]], ["containedBy", "a", [None]], ["containedBy", "a", 3],
                                  ["overlaps", "a", "x"], ["overlaps", "a", {"b": 1}], ["overlaps", "a", [{}]],
                                  ["overlaps", "a", list(range(10_001))], ["containedBy", "a", {"b'": 1}]])
def test_contained_by_and_overlaps_refuse_what_they_cannot_read(db, term):
    db.insert([{"a": [1]}])
    error = db.run(collection="notes", where=[term])["error"]
    assert error["code"] in ("22P02", "42703"), error


def test_integers_past_int64_compare_as_the_doubles_stored(db):
    # JSON.stringify(1e20) is 100000000000000000000: SQLite holds it (and anything past int64) as a REAL.
    db.insert([{"name": "big", "n": 10**20, "a": [10**20]}, {"name": "huge", "n": 10**400}, {"name": "small", "n": 5}])
    assert names(db.select(where=[["eq", "n", 10**20]])) == ["big"]
    assert names(db.select(where=[["gt", "n", 10**19]])) == ["big", "huge"]
    assert names(db.select(where=[["in", "n", [10**20, 5]]])) == ["big", "small"]
    assert names(db.select(where=[["contains", "a", [10**20]]])) == ["big"]
    assert names(db.select(where=[["eq", "n", 10**400]])) == ["huge"]  # past a double's range: infinity, as stored
    assert db.select(where=[["lt", "n", -(10**400)]]) == []


@pytest.mark.parametrize(
    "field, pattern, expected",
    [
        ("tags", ["x"], [1]),  # not the string 'x'
        ("tags", [], [1, 2]),  # any array, not a string, null or a missing field
        ("addr", {}, [5]),
        ("addr", {"city": "Oslo"}, [5]),
        ("o", {"f": [1]}, [8]),  # an array pattern needs an array, nested too
        ("o", {"f": {}}, []),
        ("tags", {}, []),
    ],
)
def test_contains_matches_only_the_patterns_json_type(db, field, pattern, expected):
    db.insert([{"k": 1, "tags": ["x", "y"]}, {"k": 2, "tags": []}, {"k": 3, "addr": None}, {"k": 4, "tags": "x"},
               {"k": 5, "addr": {"city": "Oslo"}}, {"k": 6}, {"k": 7, "o": {"f": 1}}, {"k": 8, "o": {"f": [1, 2]}}])
    assert [r["k"] for r in db.select(where=[["contains", field, pattern]], order=[{"field": "k"}])] == expected


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ([{"k": 1}], [1, 3]),  # an element that contains the object, other keys or not
        ([{"k": 1, "v": "a"}], [1]),
        ([{"k": 1}, {"k": 2}], [1]),
        ([{}], [1, 3, 5]),  # an array holding some object
        ([[1]], [2]),  # an element array containing [1]
        ([[]], [2]),
        ([None], [4]),
        ([{"k": "1"}], []),  # types hold inside elements too
        ([{"v": '{"x":1}'}], [5]),  # a string is not an object's JSON text
    ],
)
def test_contains_reads_objects_and_arrays_inside_an_array_pattern_as_jsonb(db, pattern, expected):
    db.insert([{"n": 1, "t": [{"k": 1, "v": "a"}, {"k": 2}]}, {"n": 2, "t": [[1, 2], 3]}, {"n": 3, "t": [{"k": 1, "v": "b"}]},
               {"n": 4, "t": [None, "s"]}, {"n": 5, "t": [{"v": '{"x":1}'}, {"v": {"x": 1}}]}, {"n": 6, "t": "{\"k\":1}"}])
    assert [r["n"] for r in db.select(where=[["contains", "t", pattern]], order=[{"field": "n"}])] == expected


def test_contains_on_an_object_uses_the_index(db):
    db.declare("a", {"notes": ["address.city"]})
    db.insert(PEOPLE)
    plan = db.plan(where=[["contains", "address", {"city": "Lyon"}]])
    assert "(<expr>=?)" in plan and "SCAN" not in plan, plan


def test_typed_equality_still_uses_the_index(db):
    db.declare("a", {"notes": ["k"]})
    db.insert(TYPED)
    for value in (True, False, 0, 1, "x", 7):
        plan = db.plan(where=[["eq", "k", value]])
        assert "(<expr>=?)" in plan and "SCAN" not in plan, (value, plan)
    for values in ([True, 1], [0, 1], [True]):
        plan = db.plan(where=[["in", "k", values]])
        assert "(<expr>=?)" in plan and "SCAN" not in plan, (values, plan)


def test_projection_order_range_count_single(db):
    db.insert(PEOPLE)
    rows = db.select(columns="name,town:address.city", order=[{"field": "age", "ascending": False}, {"field": "name"}])
    assert rows == [
        {"name": "dee", "town": "Lyon"}, {"name": "cy", "town": None}, {"name": "ada", "town": "London"},
        {"name": "Bob", "town": None}, {"name": "Eve%_", "town": None},
    ]  # NULL sorts after every value, as in PostgreSQL: first descending, last ascending
    assert names(db.select(order=[{"field": "age"}])) == ["Bob", "Eve%_", "ada", "cy", "dee"]
    # `*` among other columns: the whole document, with those added (PostgREST's select=*,alias:field).
    whole = db.select(columns="*, town:address.city, gone:nope", order=[{"field": "age", "ascending": False}], limit=1)
    assert whole[0]["name"] == "dee" and whole[0]["town"] == "Lyon" and whole[0]["gone"] is None
    assert whole[0]["address"]["city"] == "Lyon"
    assert names(db.select(order=[{"field": "age", "nullsFirst": True}])) == ["dee", "Bob", "Eve%_", "ada", "cy"]
    assert names(db.select(order=[{"field": "name"}], offset=1, limit=2)) == ["Eve%_", "ada"]
    reply = db.ok(collection="notes", where=[["eq", "city", "Paris"]], count="exact", limit=1)
    assert reply["count"] == 2 and len(reply["data"]) == 1
    head = db.ok(collection="notes", count="exact", head=True)
    assert head["data"] is None and head["count"] == 5 and head["status"] == 200
    # A counted page that holds part of the matches is 206, an offset past them 416 (PostgREST's statuses).
    assert reply["status"] == 206 and reply["statusText"] == "Partial Content"
    assert db.ok(collection="notes", count="exact", offset=1)["status"] == 206
    assert db.ok(collection="notes", count="exact", limit=5)["status"] == 200
    assert db.ok(collection="notes", count="exact", head=True, limit=2)["status"] == 206
    assert db.ok(collection="notes", limit=1)["status"] == 200  # no count: the total is not known
    past = db.run(collection="notes", count="exact", offset=6)
    assert past["status"] == 416 and past["error"]["code"] == "PGRST103" and past["data"] is None
    assert "only 5 rows" in past["error"]["details"]
    assert db.ok(collection="notes", count="exact", offset=5)["data"] == []
    assert db.ok(collection="notes", count="estimated", head=True)["count"] == 5
    one = db.ok(collection="notes", where=[["eq", "name", "cy"]], single="one")
    assert one["data"]["name"] == "cy"
    many = db.run(collection="notes", single="one")
    assert many["error"]["code"] == "PGRST116" and many["status"] == 406
    assert many["error"]["details"] == "The result contains 5 rows"  # every match counted, as PostgREST does
    assert db.ok(collection="notes", where=[["eq", "name", "nobody"]], single="maybe")["data"] is None
    none = db.run(collection="notes", where=[["eq", "name", "nobody"]], single="one")["error"]
    assert none["code"] == "PGRST116" and none["details"] == "The result contains 0 rows"
    # Reading a collection that was never written is empty, not an error.
    assert db.ok(collection="never", count="exact") ["data"] == []
    assert db.ok(collection="never", count="exact", head=True)["data"] is None  # head: never rows



ARROWS = [
    {"name": "ada", "address": {"city": "London", "zip": 7, "no": 10, "geo": {"lat": 51.5}}, "tags": ["math"], "on": {"x": True}},
    {"name": "bob", "address": {"city": "Paris", "zip": "75", "no": 9}, "tags": ["art"], "on": {"x": "true"}},
    {"name": "cy", "address": {"city": None}, "tags": []},
]


def test_json_arrows_select_as_postgrest_names_them(db):
    db.insert(ARROWS)
    rows = db.select(columns="name,address->>city,tags->0,zip:address->>zip,address->geo,g:address->>geo,on->>x")
    # The key is the last key in the path (tags->0 is tags); ->> gives text, -> the JSON value.
    assert rows == [
        {"name": "ada", "city": "London", "tags": "math", "zip": "7", "geo": {"lat": 51.5}, "g": '{"lat":51.5}', "x": "true"},
        {"name": "bob", "city": "Paris", "tags": "art", "zip": "75", "geo": None, "g": None, "x": "true"},
        {"name": "cy", "city": None, "tags": None, "zip": None, "geo": None, "g": None, "x": None},
    ]
    assert db.select(columns="*,city:address->>city", limit=1)[0]["city"] == "London"
    assert db.select(columns="tags.0", limit=1) == [{"tags": "math"}]  # dots name a path the same way


@pytest.mark.parametrize(
    "where, expected",
    [
        ([["eq", "address->>city", "Paris"]], ["bob"]),
        ([["eq", "address->city", "Paris"]], ["bob"]),
        ([["eq", "address->>zip", "7"]], ["ada"]),  # ->> compares text: the number 7 reads "7"
        ([["eq", "address->>zip", 7]], ["ada"]),
        ([["eq", "address->zip", 7]], ["ada"]),  # -> keeps the JSON type
        ([["eq", "address->zip", "7"]], []),
        ([["lt", "address->>zip", "8"]], ["ada", "bob"]),  # "75" < "8" as text
        ([["lt", "address->zip", 8]], ["ada"]),
        ([["gt", "address->>no", 8]], ["bob"]),  # as text, "10" < "8"
        ([["in", "address->>zip", [7, "75"]]], ["ada", "bob"]),
        ([["eq", "on->>x", True]], ["ada", "bob"]),  # true and "true" read the same as text
        ([["eq", "on->x", True]], ["ada"]),
        ([["like", "address->>zip", "7%"]], ["ada", "bob"]),
        ([["is", "address->>city", None]], ["cy"]),
        ([["not", ["eq", "address->>city", "Paris"]]], ["ada"]),
        ([["contains", "tags->0", "math"]], None),  # a scalar pattern: an error, as without the arrow
        ([["overlaps", "address->>geo", ["x"]]], None),  # ->> gives text, not JSON
    ],
)
def test_json_arrows_filter_as_postgresql_reads_them(db, where, expected):
    db.insert(ARROWS)
    if expected is None:
        assert db.run(collection="notes", where=where)["error"]["code"] in ("22P02", "42883")
    else:
        assert names(db.select(where=where)) == expected


def test_select_casts_to_text_and_refuses_what_it_cannot_do(db):
    db.insert([{"name": "a", "n": 5, "address": {"city": "Rome"}}])
    assert db.select(columns="n::text,name,c:address::text") == [{"n": "5", "name": "a", "c": '{"city":"Rome"}'}]
    for columns in ("n::int", "count()", "other(*)", "a:b:id", "whole:address::json"):  # before: keys like "whole:address:"
        assert db.run(op="select", collection="notes", columns=columns)["error"]["code"] == "PGRST100", columns


def test_json_arrows_order_and_page_and_use_indexes(db):
    db.declare("a", {"notes": ["address.city"]})
    db.insert(ARROWS)
    assert names(db.select(order=[{"field": "address->>no"}])) == ["ada", "bob", "cy"]  # text: "10" < "9"
    assert names(db.select(order=[{"field": "address->no"}])) == ["bob", "ada", "cy"]
    first = db.ok(collection="notes", order=[{"field": "address->>no"}], limit=1)
    assert names(db.select(order=[{"field": "address->>no"}], after=first["cursor"])) == ["bob", "cy"]
    plan = db.plan(where=[["eq", "address->city", "Paris"]])  # the same path as address.city: its index serves it
    assert "(<expr>=?)" in plan and "SCAN" not in plan, plan
    for bad in ("address->>city->x", "address->>city.x", "->city", "address->", "a->>", "address->city\n"):
        reply = db.run(collection="notes", where=[["eq", bad, 1]])
        assert reply["error"]["code"] == "42703", bad

def test_estimated_count_is_close_on_a_large_filtered_collection(db):
    db.ok(op="insert", collection="big", values=[{"k": i % 4} for i in range(24_000)])
    exact = db.ok(collection="big", where=[["eq", "k", 1]], count="exact", head=True)["count"]
    estimated = db.ok(collection="big", where=[["eq", "k", 1]], count="estimated", head=True)["count"]
    assert exact == 6000 and abs(estimated - exact) < 1500
    assert db.ok(collection="big", count="estimated", head=True)["count"] == 24_000


def test_estimated_count_is_steady_on_documents_written_in_the_order_they_match(db):
    db.ok(op="insert", collection="ordered", values=[{"i": i} for i in range(45_000)])
    first_half = [["lt", "i", 22_500]]
    estimates = [db.ok(collection="ordered", where=first_half, count="estimated", head=True)["count"] for _ in range(5)]
    # before: one window of consecutive rows, so 10001 or 45000 as often as near 22500
    assert all(abs(e - 22_500) < 22_500 * 0.15 for e in estimates), estimates


@pytest.mark.parametrize(
    "order",
    [
        [{"field": "g"}],
        [{"field": "g", "ascending": False}],
        [{"field": "g", "ascending": False, "nullsFirst": True}],
        [{"field": "g", "nullsFirst": False}, {"field": "v", "ascending": False}],
        [{"field": "g"}, {"field": "v"}],
        [],
    ],
)
def test_keyset_pages_visit_every_row_once_in_order(db, order):
    rnd = random.Random(7)
    docs = [{"g": rnd.choice([None, 1, 2, 3]), "v": rnd.choice([None, "a", "b"])} for _ in range(97)]
    db.declare("a", {"notes": ["g", ["g", "v"]]})
    db.insert(docs)
    everything = [r["id"] for r in db.select(order=order)]
    seen, cursor = [], None
    while True:
        reply = db.ok(collection="notes", order=order, limit=10, **({"after": cursor} if cursor else {}))
        seen += [r["id"] for r in reply["data"]]
        cursor = reply["cursor"]
        if cursor is None:
            break
    assert seen == everything and len(seen) == 97
    # A cursor is refused by a query with another order, even one with as many keys.
    first = db.ok(collection="notes", order=order, limit=10)["cursor"]
    other = [{**o, "ascending": not o.get("ascending", True)} for o in order] or [{"field": "g"}]
    refused = db.run(collection="notes", order=other, limit=10, after=first)
    assert refused["error"]["code"] == "PGRST103" and "another order" in refused["error"]["message"]
    # The previous page's last row works as a cursor too.
    page = db.select(order=order, limit=10)
    assert db.select(order=order, limit=10, after={"id": page[-1]["id"]}) == db.select(order=order, limit=10, offset=10)


def test_update_is_a_merge_patch_and_needs_a_filter(db):
    [row] = db.insert({"name": "a", "profile": {"x": 1, "y": 2}, "drop": 1})
    reply = db.ok(op="update", collection="notes", values={"profile": {"y": None, "z": 3}, "drop": None, "n": 4},
                  where=[["eq", "id", row["id"]]], returning=True)
    [doc] = reply["data"]
    assert doc["profile"] == {"x": 1, "z": 3} and "drop" not in doc and doc["n"] == 4
    assert doc["createdAt"] == row["createdAt"] and doc["updatedAt"] >= row["updatedAt"]
    assert db.run(op="update", collection="notes", values={"n": 1})["error"]["code"] == "21000"
    assert db.run(op="update", collection="notes", values={"id": "x"}, where=[["eq", "id", row["id"]]])["error"]["code"] == "428C9"
    assert db.ok(op="update", collection="notes", values={"n": 9}, where=[["eq", "n", 4]], count="exact")["count"] == 1
    # A write without .select() is 204 whether its collection exists or not (before: 200 on one never written)
    for collection in ("notes", "never-written"):
        for op in ("update", "delete"):
            reply = db.ok(op=op, collection=collection, values={"n": 1}, where=[["eq", "n", -1]])
            assert (reply["status"], reply["data"]) == (204, None), (collection, op)


def test_upsert_on_id_and_on_a_declared_unique_key(db):
    db.declare("a", {"users": [{"unique": "email"}]})
    [u] = db.insert({"email": "a@x", "name": "A", "plan": "free"}, collection="users")
    reply = db.ok(op="upsert", collection="users", onConflict="email", returning=True,
                  values=[{"email": "a@x", "plan": "pro"}, {"email": "b@x", "name": "B"}])
    a, b = reply["data"]
    assert a["id"] == u["id"] and a["name"] == "A" and a["plan"] == "pro" and a["createdAt"] == u["createdAt"]
    assert b["name"] == "B"
    again = db.ok(op="upsert", collection="users", values={"id": u["id"], "plan": "team"}, returning=True)
    assert again["data"][0]["plan"] == "team" and again["data"][0]["email"] == "a@x"
    skipped = db.ok(op="upsert", collection="users", onConflict="email", ignoreDuplicates=True,
                    values={"email": "a@x", "plan": "x"}, returning=True)
    assert skipped["data"] == []
    assert db.run(op="upsert", collection="users", onConflict="name", values={"name": "A"})["error"]["code"] == "42P10"
    assert len(db.select(collection="users")) == 2


def test_upsert_on_a_compound_unique_key(db):
    db.declare("a", {"members": [{"unique": ["org", "email"]}]})
    db.insert([{"org": "o1", "email": "a@x", "role": "user"}, {"org": "o2", "email": "a@x", "role": "user"}], collection="members")
    reply = db.ok(op="upsert", collection="members", onConflict="org, email", returning=True,
                  values=[{"org": "o2", "email": "a@x", "role": "admin"}, {"org": "o3", "email": "a@x", "role": "user"}])
    assert [(d["org"], d["role"]) for d in reply["data"]] == [("o2", "admin"), ("o3", "user")]
    assert len(db.select(collection="members")) == 3
    lacking = db.run(op="upsert", collection="members", onConflict="org,email", values={"org": "o1"})
    assert lacking["error"]["code"] == "23502" and "lacks email," in lacking["error"]["message"]  # not "org, email"
    # The index is inferred from the set of fields, in any order, as PostgreSQL does (before: 42P10).
    swapped = db.ok(op="upsert", collection="members", onConflict="email,org", returning=True,
                    values={"email": "a@x", "org": "o3", "role": "owner"})
    assert [(d["org"], d["role"]) for d in swapped["data"]] == [("o3", "owner")]
    assert db.run(op="upsert", collection="members", onConflict="email", values={"email": "a@x"})["error"]["code"] == "42P10"
    assert db.ok(collection="members", count="planned", head=True)["count"] == 3



def test_upsert_refuses_one_key_twice_as_postgresql_does(db):
    db.declare("a", {"users": [{"unique": "email"}]})
    db.insert({"id": "u1", "email": "a", "n": 0}, collection="users")
    for values, on_conflict in (
        ([{"email": "a", "n": 1}, {"email": "a", "n": 2}], "email"),  # twice an existing row
        ([{"email": "b", "n": 1}, {"email": "c"}, {"email": "b", "n": 2}], "email"),  # twice a new one
        ([{"id": "u2", "n": 1}, {"id": "u2", "n": 2}], "id"),
    ):
        reply = db.run(op="upsert", collection="users", onConflict=on_conflict, values=values, returning=True)
        assert reply["status"] == 400 and reply["error"]["code"] == "21000", reply
        assert reply["error"]["message"] == "ON CONFLICT DO UPDATE command cannot affect row a second time"
        assert reply["error"]["hint"].startswith("Ensure that no rows proposed for insertion")
    assert [(d["id"], d["email"], d["n"]) for d in db.select(collection="users")] == [("u1", "a", 0)]  # nothing written
    # ignoreDuplicates (ON CONFLICT DO NOTHING) is no error: the first proposed row wins.
    reply = db.ok(op="upsert", collection="users", onConflict="email", ignoreDuplicates=True, returning=True,
                  values=[{"email": "b", "n": 1}, {"email": "b", "n": 2}, {"email": "a", "n": 3}])
    assert [(d["email"], d["n"]) for d in reply["data"]] == [("b", 1)]
    # Values jsonb tells apart are two keys: the number 1 and the text "1"; 1 and true.
    db.ok(op="upsert", collection="users", values=[{"id": 1, "email": "n"}, {"id": "1", "email": "t"}])
    db.ok(op="upsert", collection="users", onConflict="email", values=[{"email": 1}, {"email": True}])
    assert len(db.select(collection="users")) == 6


def test_unique_keys_tell_types_apart_whatever_their_text(db):
    # SQLite's ->> reads true as 1 and an array or object as its JSON text: a unique index on that
    # alone made the string '["a"]' a duplicate of the array ["a"], and an upsert of one overwrote the other.
    db.insert([{"id": "arr", "email": ["a", "b"]}, {"id": "obj", "org": {"k": 1}, "tag": "x"},
               {"id": "yes", "email": True}], collection="users")
    db.declare("a", {"users": [{"unique": "email"}, {"unique": ["org", "tag"]}]})  # no duplicates among these
    db.ok(op="upsert", collection="users", onConflict="email", values=[{"email": '["a","b"]', "role": "guest"}])
    db.ok(op="insert", collection="users", values=[{"email": 1}, {"org": '{"k":1}', "tag": "x"}])
    stored = {d["id"]: d for d in db.select(collection="users")}
    assert stored["arr"] == {**stored["arr"], "email": ["a", "b"]} and "role" not in stored["arr"]
    assert len(stored) == 6
    reply = db.run(op="insert", collection="users", values=[{"email": ["a", "b"]}])
    assert reply["error"]["code"] == "23505", reply  # the same type and value still clash
    reply = db.run(op="upsert", collection="users", onConflict="email", values=[{"email": True, "n": 1}], returning=True)
    assert [d["id"] for d in reply["data"]] == ["yes"], reply

def test_unique_violations_name_the_key(db):
    db.declare("a", {"users": [{"unique": "email"}]})
    db.insert({"id": "u1", "email": "a@x"}, collection="users")
    dup_id = db.run(op="insert", collection="users", values={"id": "u1"})
    assert dup_id["error"]["code"] == "23505" and "(id)=(u1)" in dup_id["error"]["details"]
    dup = db.run(op="insert", collection="users", values=[{"email": "new@x"}, {"email": "a@x"}])
    assert dup["status"] == 409 and "(email)=(a@x)" in dup["error"]["details"]
    # One insert call is one transaction: the first document did not stay.
    assert db.select(collection="users", where=[["eq", "email", "new@x"]]) == []
    db.insert({"id": "u2", "email": "b@x"}, collection="users")
    update = {"op": "update", "collection": "users", "values": {"email": "a@x"}, "where": [["eq", "email", "b@x"]]}
    clash = db.run(**update)
    assert clash["status"] == 409 and clash["error"]["code"] == "23505"
    assert clash["error"]["details"] == "Key (email)=(a@x) already exists."
    in_batch = db.run(op="batch", ops=[{"op": "update", "collection": "users", "values": {"n": 1}, "where": [["eq", "id", "u1"]]}, update])
    assert in_batch["status"] == 409 and in_batch["error"]["details"].endswith(": Key (email)=(a@x) already exists.")
    assert sorted((d["email"], d.get("n")) for d in db.select(collection="users")) == [("a@x", None), ("b@x", None)]
    db.declare("a", {"flags": [{"unique": ["on", "n"]}]})
    db.insert({"on": True, "n": 1.5}, collection="flags")
    flag = db.run(op="insert", collection="flags", values={"on": True, "n": 1.5})
    assert flag["error"]["details"] == "Key (on, n)=(true, 1.5) already exists."  # JSON's spelling, not Python's


def test_delete_and_row_counts(db):
    db.insert(PEOPLE)
    gone = db.ok(op="delete", collection="notes", where=[["eq", "city", "Paris"]], returning=True, columns="name")
    assert names(gone["data"]) == ["Bob", "dee"]
    assert db.run(op="delete", collection="notes")["error"]["code"] == "21000"
    assert db.ok(collection="notes", count="estimated", head=True)["count"] == 3
    assert docstore.collections(db.conn, "a")[0]["count"] == 3


def test_limit_and_range_bound_an_update_or_delete_as_postgrest_does(db):
    db.insert([{"name": n, "g": 1, "n": i} for i, n in enumerate("abcde")])
    newest = db.ok(op="delete", collection="notes", where=[["eq", "g", 1]], order=[{"field": "n", "ascending": False}],
                   limit=1, returning=True, columns="name")
    assert names(newest["data"]) == ["e"]  # before: every match was deleted
    bumped = db.ok(op="update", collection="notes", values={"hit": True}, where=[["gt", "n", 0]],
                   order=[{"field": "n"}], offset=1, limit=2, returning=True, columns="name")
    assert sorted(names(bumped["data"])) == ["c", "d"]
    assert names(db.select(where=[["eq", "hit", True]], order=[{"field": "n"}])) == ["c", "d"]
    db.ok(op="delete", collection="notes", where=[["eq", "g", 1]], limit=2)  # no order: the first written go first
    assert names(db.select(order=[{"field": "n"}])) == ["c", "d"]
    refused = db.run(op="delete", collection="notes", where=[["eq", "g", 1]], after={"id": "x"})
    assert refused["error"]["code"] == "PGRST100"
    assert len(db.select()) == 2


def test_batch_commits_all_or_nothing(db):
    ok = db.ok(op="batch", ops=[
        {"op": "insert", "collection": "a", "values": {"id": "1"}},
        {"op": "insert", "collection": "b", "values": {"id": "2"}, "returning": True},
        {"op": "select", "collection": "a", "count": "exact"},
    ])
    assert [r["status"] for r in ok["data"]] == [201, 201, 200] and ok["data"][2]["count"] == 1
    failed = db.run(op="batch", ops=[
        {"op": "insert", "collection": "a", "values": {"id": "3"}},
        {"op": "update", "collection": "b", "values": {"x": 1}, "where": [["eq", "id", "2"]]},
        {"op": "insert", "collection": "b", "values": {"id": "2"}},
    ])
    assert failed["error"]["code"] == "23505" and "operation 2" in failed["error"]["details"]
    assert [r["id"] for r in db.select(collection="a")] == ["1"]
    assert "x" not in db.select(collection="b")[0]
    assert db.run(op="batch", ops=[{"op": "batch"}])["error"]["code"] == "PGRST100"
    assert db.ok(op="batch", ops=[])["data"] == []  # nothing to do, as insert([]) writes nothing
    assert "at most 1000" in db.run(op="batch", ops=[{"op": "select", "collection": "a"}] * 1001)["error"]["message"]


def test_limits_on_size_depth_result_and_time(db):
    small = Limits(document_kb=1, document_depth=4, result_mb=1, query_ms=50)
    big = db.run(limits=small, op="insert", collection="n", values={"x": "y" * 2000})
    assert big["status"] == 413 and "documentKb" in big["error"]["message"]
    deep = db.run(limits=small, op="insert", collection="n", values={"a": {"b": {"c": {"d": {"e": 1}}}}})
    assert deep["error"]["code"] == "54000" and "documentDepth" in deep["error"]["message"]
    db.ok(op="insert", collection="n", values={"a": {"b": 1}})
    grows = db.run(limits=small, op="update", collection="n", values={"x": "y" * 2000}, where=[["gte", "a.b", 0]])
    assert grows["status"] == 413 and db.select(collection="n")[0].get("x") is None
    db.ok(op="insert", collection="wide", values=[{"pad": "p" * 900} for _ in range(1500)])
    over = db.run(limits=small, collection="wide")
    assert over["status"] == 413 and "resultMb" in over["error"]["message"]
    assert len(db.run(limits=small, collection="wide", limit=10)["data"]) == 10
    # Rows a write returns are capped alike, and the write is not committed.
    for op in ({"op": "insert", "values": [{"pad": "p" * 900} for _ in range(1500)]},
               {"op": "update", "values": {"t": 1}, "where": [["neq", "pad", ""]]},
               {"op": "delete", "where": [["neq", "pad", ""]]}):
        over = db.run(limits=Limits(result_mb=1), collection="wide", returning=True, **op)  # no 50 ms cap on a big write
        assert over["status"] == 413 and over["error"]["code"] == "54000" and "resultMb" in over["error"]["message"], op
    assert db.ok(collection="wide", count="exact", head=True)["count"] == 1500
    assert db.select(collection="wide", where=[["eq", "t", 1]]) == []
    db.ok(op="insert", collection="slow", values=[{"s": "x" * 50, "i": i} for i in range(30_000)])
    slow = db.run(limits=Limits(query_ms=1), collection="slow", where=[["like", "s", "%y%"]],
                  order=[{"field": "s"}], count="exact")
    assert slow["status"] == 504 and slow["error"]["code"] == "57014"
    # An interrupted write rolls back whole, alone or in a batch.
    for op in ({"op": "update", "values": {"t": 1}, "where": [["like", "s", "%x%"]]},
               {"op": "delete", "where": [["like", "s", "%x%"]]}):
        for request in ({**op, "collection": "slow"},
                        {"op": "batch", "ops": [{"op": "insert", "collection": "slow", "values": {"t": 1}}, {**op, "collection": "slow"}]}):
            late = db.run(limits=Limits(query_ms=1), **request)
            assert late["status"] == 504 and late["error"]["code"] == "57014", late
    assert db.ok(collection="slow", count="exact", head=True)["count"] == 30_000
    assert db.select(collection="slow", where=[["eq", "t", 1]]) == []
    # The store is fine afterwards.
    assert db.ok(collection="slow", limit=1)["data"]


HOSTILE_FIELDS = ["x') OR 1=1 --", "a\"b", "a'b", "a\\b", "$.x", "a[0]", "", "a..b", "a\x00b", "x" * 129]


@pytest.mark.parametrize("field", HOSTILE_FIELDS)
def test_hostile_field_names_are_refused(db, field):
    db.insert(PEOPLE)
    for op in (
        {"where": [["eq", field, 1]]},
        {"order": [{"field": field}]},
        {"columns": [field]},
    ):
        reply = db.run(collection="notes", **op)
        assert reply["status"] == 400 and reply["error"]["code"] == "42703", reply
    assert len(db.select()) == 5


def test_hostile_values_are_bound_not_spliced(db):
    db.insert(PEOPLE)
    for value in ["x' OR '1'='1", "'; DROP TABLE docs_1; --", "\x00", "%' OR 1=1 --"]:
        assert db.select(where=[["eq", "name", value]]) == []
        if "\x00" not in value:
            assert db.select(where=[["like", "name", value]]) == []
    assert len(db.select()) == 5


def test_nul_is_refused_in_documents_and_patterns_as_jsonb_refuses_it(db):
    db.insert([{"name": "ann"}, {"name": "a\\u0000 is text"}])
    for doc in ({"name": "nul\x00byte"}, {"k\x00": 1}, {"deep": [{"x": "\x00"}]}):
        assert db.run(collection="notes", op="insert", values=[doc])["error"]["code"] == "22P05"
    assert db.run(collection="notes", op="update", values={"name": "\x00"}, where=[["eq", "name", "ann"]])["error"]["code"] == "22P05"
    for op in ("like", "ilike"):  # GLOB/LIKE would stop at the NUL: "ann\0zzz" matched "ann"
        assert db.run(collection="notes", where=[[op, "name", "ann\x00zzz"]])["error"]["code"] == "22P05"
    assert names(db.select(where=[["like", "name", "%\\\\u0000%"]])) == ["a\\u0000 is text"]


def test_ilike_ignores_case_beyond_ascii_as_postgresql_does(db):
    db.insert([{"name": n} for n in ["Émile", "émile", "ÉCOLE", "Café", "cafe", "Straße", "é%", "ÉÉx", 7]])
    def ilike(pattern):
        return set(names(db.select(where=[["ilike", "name", pattern]])))
    assert ilike("%É%") == {"Émile", "émile", "ÉCOLE", "Café", "é%", "ÉÉx"}
    assert ilike("éc_le") == {"ÉCOLE"}
    assert ilike("%FÉ") == {"Café"}
    assert ilike("straSSE") == set()  # lowercased, not case-folded: ß is not ss
    assert ilike("STRAßE") == {"Straße"}
    assert ilike("é\\%") == {"é%"}  # \ escapes, as in the ASCII path
    assert ilike("é%x") == {"ÉÉx"} and ilike("%é%é%x") == {"ÉÉx"} and ilike("é%é%é%x") == set()
    assert ilike("_é%") == {"ÉÉx"}
    assert names(db.select(where=[["not", ["ilike", "name", "%é%"]]])) == ["cafe", "Straße", 7]
    # Segments are matched one after another: no backtracking, however many % a pattern has.
    db.insert({"name": "a" * 5000})
    assert ilike("%a" * 40 + "%é") == set()


def test_unicode_and_long_field_names_work(db):
    doc = {"名前": "太郎", "emoji🙂": 1, "x" * 128: "long", "nested": {"ключ": "значение"}}
    db.insert(doc)
    assert db.select(where=[["eq", "名前", "太郎"]], columns="名前,ключ:nested.ключ") == [{"名前": "太郎", "ключ": "значение"}]
    assert db.select(where=[["eq", "x" * 128, "long"]], columns=["emoji🙂"]) == [{"emoji🙂": 1}]


@pytest.mark.parametrize(
    "op, code",
    [
        ({"collection": "notes", "where": [["regex", "name", "a"]]}, "PGRST100"),
        ({"collection": "notes", "where": [["eq", "name"]]}, "PGRST100"),
        ({"collection": "notes", "where": "name=1"}, "PGRST100"),
        ({"collection": "notes", "where": [["eq", "age", {"$gt": 1}]]}, "22P02"),
        ({"collection": "notes", "where": [["eq", "age", None]]}, "22P02"),
        ({"collection": "notes", "where": [["in", "age", 3]]}, "22P02"),
        ({"collection": "notes", "where": [["is", "age", 3]]}, "22P02"),
        ({"collection": "notes", "where": [["like", "name", "a\\"]]}, "22025"),  # a dangling escape, as PostgreSQL
        ({"collection": "notes", "where": [["ilike", "name", "a\\\\\\"]]}, "22025"),
        ({"collection": "notes", "limit": "ten"}, "PGRST100"),
        ({"collection": "notes", "limit": -1}, "PGRST100"),
        ({"collection": "notes", "sneaky": 1}, "PGRST100"),
        ({"collection": "notes", "order": [{"field": "age", "ascending": "no"}]}, "PGRST100"),
        ({"collection": "notes", "after": "garbage!!"}, "PGRST103"),
        ({"collection": "notes", "after": encode_cursor([], 1 << 63, [])}, "PGRST103"),  # past int64: never made by the store
        ({"collection": "notes", "order": [{"field": "age"}], "after": encode_cursor([1 << 70], 1, [Order("age")])}, "PGRST103"),
        ({"op": "insert", "collection": "notes", "values": [1, 2]}, "22P02"),
        ({"op": "insert", "collection": "notes", "values": "text"}, "22P02"),
        ({"op": "insert", "collection": "notes", "values": {"id": {"a": 1}}}, "22P02"),
        ({"op": "insert", "collection": "notes"}, "22P02"),
        ({"op": "update", "collection": "notes", "values": [1], "where": [["eq", "age", 1]]}, "22P02"),
        ({"op": "drop", "collection": "notes"}, "PGRST100"),
        ({"collection": "a/b"}, "42602"),
        ({"collection": ".."}, "42602"),
        ({"collection": "a\x00b"}, "42602"),
        ({"collection": "x" * 64}, "42602"),
        ({"collection": ""}, "42602"),
        ({"collection": "notes\n"}, "42602"),  # a regex's $ matches before a final newline
    ],
)
def test_bad_requests_get_clear_errors(db, op, code):
    db.insert(PEOPLE)
    reply = db.run(**op)
    assert reply["data"] is None and reply["error"]["code"] == code and reply["error"]["message"], reply
    assert len(db.select()) == 5


def test_filters_reach_as_deep_as_documents_nest(db):
    deep = 1
    for _ in range(40):
        deep = {"a": deep}
    assert db.run(op="insert", collection="deep", values=[{"d": deep}], limits=Limits(document_depth=64))["error"] is None
    # before: deeper than 16 levels was a 42703 naming a field the app never wrote
    pattern = deep["a"]["a"]["a"]["a"]["a"]["a"]["a"]["a"]["a"]["a"]  # 30 levels
    assert len(db.ok(collection="deep", where=[["contains", "d" + ".a" * 10, pattern]])["data"]) == 1
    assert len(db.ok(collection="deep", where=[["eq", "d" + ".a" * 40, 1]])["data"]) == 1
    assert db.run(collection="deep", where=[["eq", "d" + ".a" * 256, 1]])["error"]["code"] == "42703"
    # digits beyond ASCII are a key, not an index (before: '²' raised a ValueError out of the store)
    assert db.ok(collection="deep", where=[["eq", "d.²", 1]])["data"] == []


def test_type_errors_name_json_types(db):
    reply = db.run(collection="notes", where=[["eq", "age", None]])
    assert reply["error"]["message"] == "eq on 'age' takes a string, number or boolean, not null (use is() for null)"
    reply = db.run(op="insert", collection="notes", values=[[1]])
    assert "must be a JSON object, not array" in reply["error"]["message"], reply


def test_non_json_requests(db):
    for raw in ["", "not json", "[1,2]", '"select"', '{"op": "select", "collection": "notes"']:
        reply = json.loads(db.store.run("a", raw, LIMITS))
        assert reply["error"]["code"] == "PGRST100", raw


@pytest.mark.parametrize("depth", [500, 5000])
@pytest.mark.parametrize("opening, closing", [('["not",', "]"), ('["or",[', "]]")])
def test_deeply_nested_filters_are_refused(db, depth, opening, closing):
    db.insert(PEOPLE)
    where = opening * depth + '["eq","age",1]' + closing * depth  # deeper than Python's stack at 5000
    for raw in (f'{{"collection":"notes","where":[{where}]}}',
                f'{{"op":"batch","ops":[{{"op":"delete","collection":"notes","where":[{where}]}}]}}'):
        reply = json.loads(db.store.run("a", raw, LIMITS))
        assert reply["status"] == 400 and reply["error"]["code"] == "54001", reply["error"]
    assert len(db.select()) == 5


def test_apps_never_see_each_other(db):
    db.insert(PEOPLE, app="a")
    assert db.select(app="b") == []
    db.insert({"name": "mine"}, app="b")
    assert names(db.select(app="b")) == ["mine"] and len(db.select(app="a")) == 5
    assert db.run(app="b", op="delete", collection="notes", where=[["neq", "name", ""]], count="exact")["count"] == 1
    assert len(db.select(app="a")) == 5


def test_indexes_serve_filters_orders_and_pages(db):
    db.declare("a", {"notes": ["city", ["city", "age"], "age", {"unique": "name"}]})
    db.insert(PEOPLE)
    assert "USING INDEX docid_" in db.plan(where=[["eq", "id", "x"]])
    assert "(<expr>=?)" in db.plan(where=[["eq", "city", "Paris"]]) and "SCAN" not in db.plan(where=[["eq", "city", "Paris"]])
    ordered = db.plan(where=[["eq", "city", "Paris"]], order=[{"field": "age", "ascending": False}], limit=20)
    assert "(<expr>=?)" in ordered and "TEMP B-TREE" not in ordered
    ranged = db.plan(where=[["gte", "age", 30]], order=[{"field": "age"}], limit=20)
    assert "(<expr>>?)" in ranged and "TEMP B-TREE" not in ranged
    page = db.ok(collection="notes", where=[["eq", "city", "London"]], order=[{"field": "age"}], limit=0)
    assert page["cursor"] is None
    for order in ([{"field": "age"}], [{"field": "age", "ascending": False, "nullsFirst": False}]):
        page = db.ok(collection="notes", where=[["eq", "city", "Paris"]], order=order, limit=1)
        deep = db.plan(where=[["eq", "city", "Paris"]], order=order, limit=1, after=page["cursor"])
        assert ("(<expr>=? AND <expr>>?)" in deep or "(<expr>=? AND <expr><?)" in deep) and "TEMP B-TREE" not in deep
    assert "SCAN" in db.plan(where=[["eq", "unindexed", 1]])  # still works, by a scan
    assert db.select(where=[["eq", "unindexed", 1]]) == []


def test_declared_indexes_follow_deploys_and_refuse_duplicates(db):
    assert db.declare("a", {"users": ["email"]}) == ["index users(email)"]
    db.insert([{"id": "u1", "email": "same"}, {"id": "u2", "email": "same"}, {"id": "u3"}, {"id": "u4"}], collection="users")
    with pytest.raises(ValueError, match="u1, u2"):
        db.declare("a", {"users": [{"unique": "email"}]})
    assert db.declare("a", {"users": [["email", "id"]]}) == ["dropped index users(email)", "index users(email, id)"]
    assert db.declare("a", {}) == ["dropped index users(email, id)"]
    names_ = {n for (n,) in db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'docidx_%'")}
    assert names_ == set()


def test_an_index_on_the_leading_fields_of_another_is_not_built_twice(db):
    notes = db.declare("a", {"notes": ["owner", ["owner", "createdAt"], {"unique": "owner"}]})
    assert "index notes(owner) is served by (owner, createdAt)" in notes
    indexes = docstore.collections(db.conn, "a")[0]["indexes"]
    assert sorted((i["fields"], i["unique"]) for i in indexes) == [(["owner"], True), (["owner", "createdAt"], False)]
    db.insert({"owner": "x"})
    assert "USING INDEX" in db.plan(where=[["eq", "owner", "x"]])
    pair = db.declare("a", {"pairs": [["x", "y"], {"unique": ["x", "y"]}]})  # before: both built
    assert "index pairs(x, y) is served by (x, y)" in pair
    with pytest.raises(ManifestError, match="names a field twice"):
        decode_manifest(json.dumps({"name": "a", "indexes": {"pairs": [["x", "x"]]}}).encode())


def test_deploy_refusal_keeps_the_live_version(db, tmp_path):
    manifest = decode_manifest(b'{"name": "a", "indexes": {"users": ["email"]}}')
    apps.store_version(db.conn, manifest, "src1", "c1", apps.FileEntry("c", "c1", b"x"), [], [], db.caps)
    db.insert([{"email": "same"}, {"email": "same"}], collection="users")
    refused = decode_manifest(b'{"name": "a", "indexes": {"users": [{"unique": "email"}]}}')
    with pytest.raises(ValueError, match="refused"):
        apps.store_version(db.conn, refused, "src2", "c1", None, [], [], db.caps)
    assert apps.listing(db.conn)[0]["version"] == 1
    assert docstore.collections(db.conn, "a")[0]["indexes"] == [{"fields": ["email"], "unique": False}]
    apps.remove(db.conn, "a", db.caps)
    assert docstore.collections(db.conn, "a") == []
    assert db.select(app="a", collection="users") == []


def test_rollback_brings_back_that_versions_indexes(db):
    def indexes():
        return [i["fields"] for c in docstore.collections(db.conn, "a") for i in c["indexes"]]

    for n, fields in enumerate((["owner"], ["status"]), 1):
        manifest = decode_manifest(json.dumps({"name": "a", "indexes": {"notes": fields}}).encode())
        apps.store_version(db.conn, manifest, f"src{n}", "c1", apps.FileEntry("c", "c1", b"x"), [], [], db.caps)
    assert indexes() == [["status"]]
    apps.rollback(db.conn, "a", None, db.caps)
    assert indexes() == [["owner"]]
    assert "(<expr>=?)" in db.plan(where=[["eq", "owner", "x"]])


@pytest.mark.parametrize(
    "indexes, message",
    [
        ({"a/b": ["x"]}, "not a valid collection name"),
        ({"notes": ["x') --"]}, "not a valid field name"),
        ({"notes": [[]]}, "1 to 8 fields"),
        ({"notes": [{"unique": 3}]}, "Expected"),
        ({"notes": [{"uniq": "x"}]}, "unknown field"),
    ],
)
def test_bad_index_declarations_are_refused(indexes, message):
    with pytest.raises(ManifestError, match=message):
        decode_manifest(json.dumps({"name": "a", "indexes": indexes}).encode())


def test_import_export_round_trip_and_bad_lines(db, tmp_path):
    db.declare("a", {"notes": ["k"]})
    lines = [msgspec.json.encode({"k": i % 7, "i": i}) + b"\n" for i in range(2500)]
    assert docstore.import_documents(db.conn, "a", "notes", lines, batch=1000) == 2500
    assert not docstore.missing_indexes(db.conn)  # rebuilt after the load into an empty collection
    assert "(<expr>=?)" in db.plan(where=[["eq", "k", 3]])
    exported = list(docstore.export_documents(db.conn, "a", "notes"))
    assert len(exported) == 2500
    # An export imports back with its ids and stamps.
    assert docstore.import_documents(db.conn, "b", "copy", [e.encode() for e in exported]) == 2500
    assert list(docstore.export_documents(db.conn, "b", "copy")) == exported
    bad = lines[:1500] + [b'{"broken"\n'] + lines[1500:]
    with pytest.raises(docstore.DocError, match="line 1501: not JSON.*1500 documents before it"):
        docstore.import_documents(db.conn, "a", "more", bad, batch=1000)
    assert db.ok(collection="more", count="exact", head=True)["count"] == 1500
    with pytest.raises(docstore.DocError, match="line 2: the document must be a JSON object"):
        docstore.import_documents(db.conn, "a", "more2", [b"{}\n", b"[1]\n"])
    # What SQLite's own parser would store but the API refuses: JSON5, NaN, 1e400, a lone surrogate.
    for line in (b"{a:1}", b"{'a':'x'}", b'{"a":0x10}', b'{"a":1,}', b'{"a":+1}', b'{"a":1} // c',
                 b'{"a":NaN}', b'{"b":Infinity}', b'{"a":1e400}', b'{"a":"\\ud800"}'):
        with pytest.raises(docstore.DocError, match="line 2: not JSON"):
            docstore.import_documents(db.conn, "a", "strict", [b'{"ok":1}\n', line + b"\n"])
    assert db.ok(collection="strict", count="exact", head=True)["count"] == 10  # the line before each
    # Stored as the document reads, not as the line was written: a key twice, or escaped
    with pytest.raises(docstore.DocError, match="line 1: id must be a string or an integer"):
        docstore.import_documents(db.conn, "a", "keys", [b'{"\\u0069d": true}\n'])
    docstore.import_documents(db.conn, "a", "keys", [b'{"n": 4, "n": 5, "id": {"o": 1}, "id": "x1"}\n'])
    assert [d["n"] for d in db.select(collection="keys", where=[["eq", "n", 5], ["eq", "id", "x1"]])] == [5]



def test_import_reads_a_file_a_bounded_line_at_a_time(db, tmp_path):
    src = tmp_path / "in.ndjson"
    huge = b'{"s": "' + b"y" * (3 << 20) + b'"}\n'  # past twice documentKb (1 MiB): refused unread
    src.write_bytes(b'\xef\xbb\xbf{"n": 1}\r\n\n{"n": 2}\n' + huge + b'{"n": 3}\n')
    with open(src, "rb") as f, pytest.raises(docstore.DocError, match="line 4: the line is over 2,097,152 bytes") as e:
        docstore.import_documents(db.conn, "a", "bounded", f)
    assert e.value.code == "54000" and "the 2 documents before it" in str(e.value)
    assert [r["n"] for r in db.select(collection="bounded", order=[{"field": "n"}])] == [1, 2]
    lines = list(docstore.bounded_lines(open(src, "rb"), 64))
    assert lines[3] == 65 and lines[4] == b'{"n": 3}\n'  # the rest of the long line was skipped
    src.write_bytes('{"n": 1}\n'.encode("utf-16"))
    with open(src, "rb") as f, pytest.raises(docstore.DocError, match="line 1: the file is UTF-16"):
        docstore.import_documents(db.conn, "a", "utf16", f)
    with pytest.raises(docstore.DocError, match="line 2: unsupported Unicode escape sequence") as e:
        docstore.import_documents(db.conn, "a", "nul", [b'{"n": "\\\\u0000"}', b'{"n": "\\u0000"}'])
    assert e.value.code == "22P05"


def test_import_checks_stamps_and_writes_them_as_the_host_does(db, tmp_path, capsys):
    lines = [
        b'{"n": 1, "createdAt": "2020-01-01T02:00:00+02:00", "updatedAt": "2020-01-01T00:00:00.123456Z"}\n',
        b'{"n": 2, "createdAt": "2021-05-06T07:08:09.010Z"}\n',  # as the host writes it: kept as it is
        b'{"n": 3, "id": "x", "updatedAt": "2020-06-30T23:30-01:00", "meta": {"createdAt": 5}}\n',
        b'{"n": 4}\n',
    ]
    assert docstore.import_documents(db.conn, "a", "stamps", lines) == 4
    rows = db.select(collection="stamps", order=[{"field": "n"}])
    assert [(r["createdAt"], r["updatedAt"]) for r in rows[:1]] == [("2020-01-01T00:00:00.000Z", "2020-01-01T00:00:00.123Z")]
    assert rows[1]["createdAt"] == "2021-05-06T07:08:09.010Z" and rows[2]["updatedAt"] == "2020-07-01T00:30:00.000Z"
    assert rows[2]["meta"] == {"createdAt": 5}  # only the document's own stamps are the host's
    assert rows[3]["createdAt"] == rows[3]["updatedAt"] and rows[3]["createdAt"].endswith("Z")  # missing: filled in
    # one stamp alone stands for both (before: the other was the import's time, updated before created)
    assert rows[1]["updatedAt"] == rows[1]["createdAt"] and rows[2]["createdAt"] == rows[2]["updatedAt"]
    for bad in (12345, "garbage", None, True, "2020-01-01T02:00:00", "2020-01-01", "2020-13-01T00:00:00Z", "0001-01-01T00:00+01:00"):
        doc = msgspec.json.encode({"n": 5, "updatedAt": bad})
        with pytest.raises(docstore.DocError, match="^line 2: updatedAt must be an ISO 8601 date-time with a time zone") as e:
            docstore.import_documents(db.conn, "a", "bad", [b'{"n": 1}', doc])
        assert e.value.code == "22007" and "1 document before it was imported" in str(e.value), bad
    # From the command line: exit 1 and the line, as for other bad lines.
    manifest = decode_manifest(b'{"name": "a"}')
    apps.store_version(db.conn, manifest, "source", "c0", apps.FileEntry("component.wasm", "c0", b"\0asm"), [], [])
    src = tmp_path / "in.ndjson"
    src.write_text('{"n": 1}\n{"createdAt": 12345}\n')
    assert cli.main(["import", "a", "cli", str(src), "--cartridge", str(tmp_path / "fazt.db")]) == 1
    assert "error: line 2: createdAt must be an ISO 8601 date-time with a time zone" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # before: a batch of 0 was taken
        cli.main(["import", "a", "cli", str(src), "--batch", "0", "--cartridge", str(tmp_path / "fazt.db")])
    assert usage.value.code == 2 and "must be 1 or more" in capsys.readouterr().err

def test_cli_refuses_the_documents_of_an_app_that_does_not_exist(db, tmp_path):
    src = tmp_path / "in.ndjson"
    src.write_text('{"n": 1}\n')
    for args in (["import", "ghost", "notes", str(src)], ["docs", "ghost"], ["docs", "ghost", "notes"],
                 ["docs", "explain", "ghost", "notes", "{}"], ["export", "ghost", "notes"]):
        with pytest.raises(SystemExit) as refused:
            cli.main([*args, "--cartridge", str(tmp_path / "fazt.db")])
        assert refused.value.code == "error: no app named 'ghost'", args  # printed to stderr, exit status 1
    assert docstore.collections(db.conn, "ghost") == []  # nothing a later app of that name would inherit


def test_cli_import_keeps_to_the_apps_own_limits(db, tmp_path, capsys):
    # An app allowed 2 MiB documents gets its own export back in; a flag still wins.
    manifest = decode_manifest(json.dumps({"name": "big", "limits": {"documentKb": 2048}}).encode())
    apps.store_version(db.conn, manifest, "source", "c0", apps.FileEntry("component.wasm", "c0", b"\0asm"), [], [])
    src = tmp_path / "in.ndjson"
    src.write_text(json.dumps({"pad": "x" * 1_500_000}) + "\n")
    cartridge_flag = ["--cartridge", str(tmp_path / "fazt.db")]
    assert cli.main(["import", "big", "notes", str(src), *cartridge_flag]) == 0
    assert cli.main(["import", "big", "notes", str(src), "--document-kb", "1024", *cartridge_flag]) == 1
    assert "over limits.documentKb (1024 KiB)" in capsys.readouterr().err
    assert cli.main(["import", "big", "notes", str(tmp_path / "missing.ndjson"), *cartridge_flag]) == 1
    assert "error: cannot read" in capsys.readouterr().err  # a message, not a FileNotFoundError



def test_cli_a_query_it_cannot_read_is_a_usage_error(db, tmp_path, capsys):
    manifest = decode_manifest(b'{"name": "a"}')
    apps.store_version(db.conn, manifest, "source", "c0", apps.FileEntry("component.wasm", "c0", b"\0asm"), [], [])
    db.insert({"n": 1})
    cartridge_flag = ["--cartridge", str(tmp_path / "fazt.db")]
    for args, message in ((["docs", "a", "notes", "--query", "{broken"], "the query is not valid JSON"),
                          (["docs", "a", "notes", "--query", '{"limit": "ten"}'], "invalid query"),
                          (["docs", "explain", "a", "notes", "{broken"], "the query is not valid JSON")):
        assert cli.main([*args, *cartridge_flag]) == 2, args  # usage errors exit 2
        assert capsys.readouterr().err.startswith(f"error: {message}"), args
    assert cli.main(["docs", "a", "notes", "--query", '{"where": [["eq", "n", 1]]}', *cartridge_flag]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 1
    # a collection never written is named, as export names it (before: nothing printed, exit 0)
    assert cli.main(["docs", "a", "nosuch", *cartridge_flag]) == 1
    assert "a has no collection 'nosuch'" in capsys.readouterr().err

def test_a_dropped_table_is_looked_up_again(db):
    db.insert({"name": "x"})
    other = docstore.Store(db.conn)
    assert len(other.run("a", '{"collection": "notes"}', LIMITS)) > 0
    with cartridge.transaction(db.conn):
        docstore.forget(db.conn, "a")
    db.insert({"name": "y"})  # a new table under a new id
    reply = json.loads(other.run("a", '{"collection": "notes"}', LIMITS))
    assert [d["name"] for d in reply["data"]] == ["y"]


def test_sqlite_has_jsonb(db):
    assert db.conn.execute("SELECT json(jsonb('{\"a\":1}'))").fetchone()[0] == '{"a":1}'
    assert apsw.sqlite_lib_version() >= "3.45"
