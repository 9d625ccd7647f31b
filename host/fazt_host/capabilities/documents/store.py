"""The document store: collections of JSON documents in the cartridge.

Each collection is one table `docs_<n>` (n from the catalog, never from the
app) holding JSONB bodies; `id`, `createdAt` and `updatedAt` live in the body
and `id` has a unique expression index. Collections appear on first write;
the indexes declared in fazt.json are kept in step by `sync_indexes` on every
deploy or rollback. Reads run outside transactions (WAL snapshots); every
write runs in one short BEGIN IMMEDIATE transaction, and a batch in one.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Iterable, Iterator
from itertools import chain, repeat
from contextlib import contextmanager
from typing import Any, BinaryIO

import apsw
import msgspec

from ...cartridge import app_exists, transaction
from ...config import Limits
from . import compile as sql
from .ids import as_timestamp, timestamp, ulid, ulids
from .spec import (
    DocError,
    Operation,
    check_collection,
    convert_operation,
    decode_operation,
    index_fields,
    json_type,
    parse_path,
)

MIGRATIONS = [
    """
    CREATE TABLE doc_collections(
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a stale cache cannot reach a new table
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        rows INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        UNIQUE(app, name)
    ) STRICT;
    -- Declared indexes; an index missing from sqlite_master (dropped for a bulk import) is rebuilt.
    CREATE TABLE doc_indexes(
        name TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        collection INTEGER NOT NULL REFERENCES doc_collections(id),
        fields TEXT NOT NULL,
        is_unique INTEGER NOT NULL
    ) STRICT;
    """
]

ESTIMATE_EXACT_UP_TO = 10_000
ESTIMATE_SAMPLE = 20_000
ESTIMATE_WINDOWS = 20

_encode = msgspec.json.encode
_decode_json = msgspec.json.decode


def table_name(cid: int) -> str:
    return f"docs_{cid}"


def id_index_name(cid: int) -> str:
    return f"docid_{cid}"


def index_name(cid: int, fields: tuple[str, ...], unique: bool) -> str:
    # A unique index's name also stands for its form: one made before unique indexes told a boolean,
    # array or object from a number or string (sql.unique_key) has another name, and is replaced on deploy.
    digest = hashlib.sha1(_encode([list(fields), unique] + ["typed"] * unique)).hexdigest()[:12]
    return f"docidx_{cid}_{digest}"


def depth_of(value: Any, limit: int) -> int:
    """Nesting depth of a decoded document, stopping once past `limit`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > deepest:
            deepest = d
            if deepest > limit:
                return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values() if isinstance(x, (dict, list)))
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return deepest


# JSON's escape of NUL, not preceded by a backslash that is itself escaped (`\\u0000` is text).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
NUL_REFUSED = "unsupported Unicode escape sequence: \\u0000 cannot be stored (as in PostgreSQL's jsonb)"


def check_document(doc: Any, limits: Limits, what: str = "a document") -> bytes:
    """Encodes a document after checking it is an object within the size and depth limits."""
    if not isinstance(doc, dict):
        raise DocError(f"{what} must be a JSON object, not {json_type(doc)}", "22P02")
    text = _encode(doc)
    if b"\\u0000" in text and _NUL_ESCAPE.search(text):
        raise DocError(NUL_REFUSED, "22P05")
    # A document with fewer brackets than the depth limit cannot be too deep: most skip the walk.
    if text.count(b"{") + text.count(b"[") > limits.document_depth and depth_of(doc, limits.document_depth) > limits.document_depth:
        raise DocError(f"{what} is nested deeper than limits.documentDepth ({limits.document_depth})", "54000")
    if len(text) > limits.document_kb * 1024:
        raise DocError(
            f"{what} is {len(text)} bytes, over limits.documentKb ({limits.document_kb} KiB)", "54000", 413
        )
    return text


def _check_id(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DocError("id must be a string or an integer", "22P02")
    if isinstance(value, str) and not 0 < len(value) <= 256:
        raise DocError("id must be 1 to 256 characters", "22P02")
    if isinstance(value, int) and not sql.INT64[0] <= value <= sql.INT64[1]:
        raise DocError("id is out of range", "22003")


class Result:
    """The parts of a `{data, error, count, status, statusText, cursor}` reply."""

    __slots__ = ("data", "count", "status", "cursor")

    def __init__(self, data: str = "null", count: int | None = None, status: int = 200, cursor: str | None = None):
        self.data = data  # JSON text
        self.count = count
        self.status = status
        self.cursor = cursor

    def to_json(self) -> str:
        count = "null" if self.count is None else str(self.count)
        cursor = "null" if self.cursor is None else f'"{self.cursor}"'
        return (
            f'{{"data":{self.data},"error":null,"count":{count},"status":{self.status},'
            f'"statusText":"{STATUS_TEXT.get(self.status, "")}","cursor":{cursor}}}'
        )


STATUS_TEXT = {200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content", 400: "Bad Request",
               404: "Not Found", 406: "Not Acceptable", 409: "Conflict", 413: "Payload Too Large",
               416: "Range Not Satisfiable", 500: "Internal Server Error", 504: "Gateway Timeout"}


def error_json(e: DocError) -> str:
    return _encode(
        {"data": None, "error": e.to_json(), "count": None, "status": e.status,
         "statusText": STATUS_TEXT.get(e.status, ""), "cursor": None}
    ).decode()


def range_status(op: Operation, shown: int | None, total: int | None) -> int:
    """PostgREST's status for a counted read: 206 when the page holds part of the matches,
    416 (an error) when the offset is past them all; 200 when no count was asked."""
    if total is None or shown is None:
        return 200
    if op.offset > total:
        raise DocError(
            "Requested range not satisfiable", "PGRST103", 416,
            f"An offset of {op.offset} was requested, but there are only {total} rows.",
        )
    return 206 if shown < total else 200


class Store:
    """One per Host, on the connection of the wasm thread that runs its guests."""

    def __init__(self, conn: apsw.Connection):
        self.conn = conn
        self._tables: dict[tuple[str, str], int] = {}
        conn.create_scalar_function("fazt_ilike", sql.unicode_ilike, 2, deterministic=True)

    # ---- entry point -------------------------------------------------------------------------

    def run(self, app: str, request: str | bytes | Operation, limits: Limits) -> str:
        """Runs one operation for `app`; returns the JSON reply (errors included, never raised)."""
        try:
            op = request if isinstance(request, Operation) else decode_operation(request)
            for attempt in (0, 1):
                try:
                    with self._deadline(limits.query_ms):
                        return self.execute(app, op, limits).to_json()
                except apsw.SQLError as e:
                    # A collection dropped by another process (its app removed): look it up afresh.
                    if attempt == 0 and "no such table" in str(e):
                        self._tables.clear()
                        continue
                    raise
        except DocError as e:
            return error_json(e)
        except RecursionError:
            # Nested past Python's stack (in msgspec's decoder or the compiler): far past MAX_FILTER_TERMS too.
            return error_json(DocError("the query is nested too deeply", "54001"))
        except apsw.InterruptError:
            return error_json(DocError(f"the query ran past limits.queryMs ({limits.query_ms} ms)", "57014", 504))
        except apsw.TooBigError:
            return error_json(DocError("a value is too large for the store", "54000", 413))
        except apsw.Error as e:
            return error_json(DocError(f"the store failed: {e}", "XX000", 500))
        raise AssertionError("unreachable")

    def execute(self, app: str, op: Operation, limits: Limits) -> Result:
        if op.op == "batch":
            return self._batch(app, op, limits)
        if op.op == "select":
            return self._select(app, op, limits)
        with transaction(self.conn):
            return self._write(app, op, limits)

    @contextmanager
    def _deadline(self, ms: int) -> Iterator[None]:
        deadline = time.monotonic() + ms / 1000
        self.conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            yield
        finally:
            self.conn.set_progress_handler(None)

    # ---- collections ---------------------------------------------------------------------------

    def collection(self, app: str, name: str, create: bool = False) -> int | None:
        key = (app, name)
        cid = self._tables.get(key)
        if cid is not None:
            return cid
        check_collection(name)
        row = self.conn.execute("SELECT id FROM doc_collections WHERE app = ? AND name = ?", key).fetchone()
        if row is None:
            if not create:
                return None
            cid = create_collection(self.conn, app, name)
        else:
            cid = row[0]
        self._tables[key] = cid
        return cid

    # ---- reads ---------------------------------------------------------------------------------

    def _select(self, app: str, op: Operation, limits: Limits) -> Result:
        cid = self.collection(app, op.collection)
        if cid is None:
            sql.projection(op.columns)  # still refuse bad columns
            sql.Filter().all(op.where)
            if op.single:
                return self._single([], op)
            count = 0 if op.count else None
            return Result("null" if op.head else "[]", count, range_status(op, 0, count))
        table = table_name(cid)
        count = self._count(cid, table, op) if op.count else None
        if op.head:
            shown = None if count is None else max(0, min(count - op.offset, op.limit if op.limit is not None else count))
            return Result("null", count, range_status(op, shown, count))
        arms, nkeys = compile_select(self.conn, table, op)
        rows: list[str] = []
        size = 0
        last = None
        for row in chain.from_iterable(self.conn.execute(text, params) for text, params in arms):
            if op.limit is not None and len(rows) == op.limit:
                # The row past the page only says there is a next page: its cursor is the page's last row.
                cursor = sql.encode_cursor(list(last[2 : 2 + nkeys]), last[1], op.order) if last else None
                break
            rows.append(row[0])
            size += len(row[0])
            check_result_size(size, limits)
            last = row
        else:
            cursor = None
        if op.single:
            # The page stops at a second row: PostgREST's error counts them all, so count on that path only.
            matches = self._count(cid, table, msgspec.structs.replace(op, count="exact")) if len(rows) > 1 else None
            return self._single(rows, op, matches=matches)
        return Result("[" + ",".join(rows) + "]", count, range_status(op, len(rows), count), cursor)

    @staticmethod
    def _single(rows: list[str], op: Operation, status: int = 200, matches: int | None = None) -> Result:
        if len(rows) == 1:
            return Result(rows[0], None, status)
        if not rows and op.single == "maybe":
            return Result("null", None, status)
        raise DocError(
            "JSON object requested, multiple (or no) rows returned", "PGRST116", 406,
            f"The result contains {len(rows) if matches is None else matches} rows",
        )

    def _count(self, cid: int, table: str, op: Operation) -> int:
        f = sql.Filter()
        where = f.all(op.where)
        if op.count in ("estimated", "planned"):
            if not op.where:
                return self.conn.execute("SELECT rows FROM doc_collections WHERE id = ?", (cid,)).fetchone()[0]
            capped = self.conn.execute(
                f'SELECT count(*) FROM (SELECT 1 FROM "{table}" WHERE {where} LIMIT {ESTIMATE_EXACT_UP_TO + 1})',
                f.params,
            ).fetchone()[0]
            if capped <= ESTIMATE_EXACT_UP_TO:
                return capped
            return self._estimate(table, where, f.params, cid)
        return self.conn.execute(f'SELECT count(*) FROM "{table}" WHERE {where}', f.params).fetchone()[0]

    def _estimate(self, table: str, where: str, params: list[Any], cid: int) -> int:
        """Matches in windows of rows spread over the collection, scaled to it (like a planner's estimate).

        One window would follow the order rows were written in (documents written
        together match together); ESTIMATE_WINDOWS windows, one in each stretch of
        rowids at a random place within it, keep the estimate steady from call to call.
        """
        total = self.conn.execute("SELECT rows FROM doc_collections WHERE id = ?", (cid,)).fetchone()[0]
        if total <= ESTIMATE_SAMPLE:
            return self.conn.execute(f'SELECT count(*) FROM "{table}" WHERE {where}', params).fetchone()[0]
        low, high = self.conn.execute(f'SELECT min(rowid), max(rowid) FROM "{table}"').fetchone()
        window = ESTIMATE_SAMPLE // ESTIMATE_WINDOWS
        stretch = (high - low + 1) / ESTIMATE_WINDOWS
        sample = f'SELECT count(*), sum({where}) FROM (SELECT body FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT {window})'
        seen = hits = 0
        for k in range(ESTIMATE_WINDOWS):
            start = low + int(k * stretch) + random.randint(0, max(0, int(stretch) - window))
            n, h = self.conn.execute(sample, [*params, start]).fetchone()
            seen, hits = seen + n, hits + (h or 0)
        return max(ESTIMATE_EXACT_UP_TO + 1, round(total * hits / max(seen, 1)))

    # ---- writes --------------------------------------------------------------------------------

    def _batch(self, app: str, op: Operation, limits: Limits) -> Result:
        if len(op.ops) > 1000:
            raise DocError("a batch holds at most 1000 operations", "PGRST100")
        ops = [convert_operation(o) for o in op.ops]
        if any(o.op == "batch" for o in ops):
            raise DocError("a batch cannot hold another batch", "PGRST100")
        results = []
        with transaction(self.conn):
            for i, o in enumerate(ops):
                try:
                    results.append(self._select(app, o, limits) if o.op == "select" else self._write(app, o, limits))
                except DocError as e:
                    where = f"operation {i} ({o.op} on {o.collection[:80]!r}) failed, so none was committed"
                    e.details = f"{where}: {e.details}" if e.details else where
                    raise
        return Result("[" + ",".join(r.to_json() for r in results) + "]", None, 200)

    def _write(self, app: str, op: Operation, limits: Limits) -> Result:
        cid = self.collection(app, op.collection, create=op.op in ("insert", "upsert"))
        if op.op in ("update", "delete") and not op.where:
            raise DocError(f"{op.op.upper()} requires a filter (use a filter that matches every row to mean all)", "21000")
        if cid is None:  # update/delete on a collection that never had a row
            sql.Filter().all(op.where)
            return _written([], op, 200, 0)  # as on an existing collection: 204 without .select()
        table = table_name(cid)
        returning = f" RETURNING {sql.projection(op.columns)}" if op.returning else ""
        if op.op == "insert":
            result, added = self._insert(cid, table, op, limits, returning)
        elif op.op == "upsert":
            result, added = self._upsert(cid, table, op, limits, returning)
        elif op.op == "update":
            result, added = self._update(cid, table, op, limits, returning), 0
        else:
            result, added = self._delete(table, op, returning)
        if added:
            self.conn.execute("UPDATE doc_collections SET rows = rows + ? WHERE id = ?", (added, cid))
        check_result_size(len(result.data), limits)  # the rows .select() asked back
        return result

    def _values(self, op: Operation) -> list[Any]:
        # An empty list writes nothing, as PostgREST takes `[]`: an app's batch that happens to be empty.
        values = op.values if isinstance(op.values, list) else [op.values]
        if op.values is None:
            raise DocError(f"{op.op} needs an object or a list of objects", "22P02")
        if len(values) > 100_000:
            raise DocError("insert at most 100000 documents at once (use fazt-host import for more)", "54000")
        return values

    def _insert(self, cid: int, table: str, op: Operation, limits: Limits, returning: str) -> tuple[Result, int]:
        now = timestamp()
        rows: list[str] = []
        statement = f'INSERT INTO "{table}"(body) VALUES (jsonb(?)){returning}'
        values = self._values(op)
        for i, (doc, new_id) in enumerate(zip(values, ulids(len(values)))):
            self._run(cid, statement, (prepare_new(doc, limits, now, f"document {i}", new_id),), rows)
        return _written(rows, op, 201, len(values)), len(values)

    def _upsert(self, cid: int, table: str, op: Operation, limits: Limits, returning: str) -> tuple[Result, int]:
        keys = [k.strip() for k in op.on_conflict.split(",") if k.strip()]  # 'org,email': a compound key
        # As PostgreSQL infers its arbiter index: from the set of fields, in any order.
        if keys != ["id"] and not any(
            sorted(_decode_json(fields)) == sorted(keys)
            for (fields,) in self.conn.execute("SELECT fields FROM doc_indexes WHERE collection = ? AND is_unique", (cid,))
        ):
            shown = ", ".join(keys)[:80]
            raise DocError(
                f"upsert on ({shown}) needs a unique index on exactly those fields: declare "
                f'{{"unique": {_encode(keys).decode()[:80]}}} in fazt.json indexes.{op.collection}',
                "42P10",
            )
        paths = [parse_path(k) for k in keys]
        find = f'SELECT rowid, json(body) FROM "{table}" WHERE ' + " AND ".join(f"{x} = ?" for x in sql.unique_key(keys))
        insert = f'INSERT INTO "{table}"(body) VALUES (jsonb(?)){returning}'
        replace = f'UPDATE "{table}" SET body = jsonb(?) WHERE rowid = ?{returning}'
        now = timestamp()
        rows: list[str] = []
        added = touched = 0
        proposed: set[tuple] = set()  # the keys seen in this call, as SQLite compares them
        for i, doc in enumerate(self._values(op)):
            what = f"document {i}"
            if not isinstance(doc, dict):
                raise DocError(f"{what} must be a JSON object", "22P02")
            values = [_lookup(doc, p) for p in paths]
            if None in values and keys != ["id"]:
                missing = ", ".join(k for k, v in zip(keys, values) if v is None)
                raise DocError(f"{what} lacks {missing}, of the upsert's conflict key ({', '.join(keys)})", "23502")
            found = None
            if None not in values:
                key = sql.unique_params(keys, values)
                if key in proposed and not op.ignore_duplicates:
                    raise second_time(keys, values)
                proposed.add(key)
                found = self.conn.execute(find, key).fetchone()
            if found is None:
                self._run(cid, insert, (prepare_new(doc, limits, now, what, ulid()),), rows)
                added += 1
            elif not op.ignore_duplicates:
                merged = _decode_json(found[1])
                if "id" in doc and doc["id"] != merged.get("id"):
                    raise DocError(f"{what}: id cannot change (it is {merged.get('id')!r})", "428C9")
                merged.update({k: v for k, v in doc.items() if k not in ("id", "createdAt")})
                merged["updatedAt"] = now
                self._run(cid, replace, (check_document(merged, limits, what).decode(), found[0]), rows)
            else:
                continue
            touched += 1
        return _written(rows, op, 201, touched), added

    def _update(self, cid: int, table: str, op: Operation, limits: Limits, returning: str) -> Result:
        patch = op.values
        if not isinstance(patch, dict):
            raise DocError("update takes an object (a JSON merge patch)", "22P02")
        if "id" in patch:
            raise DocError("id cannot change: remove it from the update", "428C9")
        patch = {k: v for k, v in patch.items() if k not in ("createdAt", "updatedAt")}
        text = check_document(patch, limits, "the update")
        f = sql.Filter()
        where = limited(table, op, f.all(op.where))
        patched = "jsonb_set(jsonb_patch(body, jsonb(?)), '$.\"updatedAt\"', ?)"
        statement = (
            f'UPDATE "{table}" SET body = {patched} '
            f"WHERE {where} RETURNING length(body){returning.replace(' RETURNING ', ', ')}"
        )
        params = [text.decode(), timestamp(), *f.params]
        budget = limits.document_kb * 1024
        rows: list[str] = []
        n = 0
        try:
            for row in self.conn.execute(statement, params):
                n += 1
                if row[0] > budget:
                    raise DocError(f"the update makes a document larger than limits.documentKb ({limits.document_kb} KiB)", "54000", 413)
                if op.returning:
                    rows.append(row[1])
        except apsw.ConstraintError:
            # SQLite names the index, not the document: write the patched documents one at a
            # time, as upsert does, so the one that clashes is reported with its key.
            replace = f'UPDATE "{table}" SET body = jsonb(?) WHERE rowid = ?'
            for rowid, new in self.conn.execute(f'SELECT rowid, json({patched}) FROM "{table}" WHERE {where}', params).fetchall():
                self._run(cid, replace, (new, rowid), [])
            raise
        return _written(rows, op, 200, n)

    def _delete(self, table: str, op: Operation, returning: str) -> tuple[Result, int]:
        f = sql.Filter()
        where = limited(table, op, f.all(op.where))
        rows: list[str] = []
        for row in self.conn.execute(f'DELETE FROM "{table}" WHERE {where}{returning or " RETURNING 1"}', f.params):
            rows.append(row[0])
        return _written(rows if op.returning else [], op, 200, len(rows)), -len(rows)

    def _run(self, cid: int, statement: str, params: tuple, rows: list[str]) -> None:
        try:
            for row in self.conn.execute(statement, params):
                rows.append(row[0])
        except apsw.ConstraintError as e:
            raise unique_violation(self.conn, cid, str(e), params[0]) from None


def limited(table: str, op: Operation, where: str) -> str:
    """An update or delete with limit() or range() touches only that page of its matches, in its
    order (rowid breaking ties), as PostgREST's limited update/delete does."""
    if op.after is not None:
        raise DocError(f"after() pages selects only, not {op.op}", "PGRST100")
    if op.limit is None and not op.offset:
        return where
    order, _ = sql.order_by(op.order)
    limit = op.limit if op.limit is not None else -1
    return f'rowid IN (SELECT rowid FROM "{table}" WHERE {where} ORDER BY {order} LIMIT {int(limit)} OFFSET {int(op.offset)})'


def check_result_size(size: int, limits: Limits) -> None:
    if size > limits.result_mb << 20:
        raise DocError(
            f"the result is over limits.resultMb ({limits.result_mb} MiB): add a limit or select fewer columns",
            "54000",
            413,
        )


def _written(rows: list[str], op: Operation, status: int, n: int) -> Result:
    """A write's reply: data only when `.select()` asked for it, count when asked."""
    count = n if op.count else None
    if not op.returning:
        return Result("null", count, status if status != 200 else 204)
    if op.single:
        return Store._single(rows, op, status)  # an insert's row is still 201 Created
    return Result("[" + ",".join(rows) + "]", count, status)


def _lookup(doc: dict, parts: tuple) -> Any:
    value: Any = doc
    for p in parts:
        if isinstance(p, int) and isinstance(value, list) and p < len(value):
            value = value[p]
        elif isinstance(value, dict) and str(p) in value:
            value = value[str(p)]
        else:
            return None
    return value


def prepare_new(doc: Any, limits: Limits, now: str, what: str, new_id: str) -> str:
    """A new document's stored text: `new_id` unless it has an id; createdAt/updatedAt set."""
    if not isinstance(doc, dict):
        raise DocError(f"{what} must be a JSON object, not {json_type(doc)}", "22P02")
    if "id" in doc:
        _check_id(doc["id"])
    else:
        doc = {"id": new_id, **doc}
    doc["createdAt"] = now
    doc["updatedAt"] = now
    return check_document(doc, limits, what).decode()


def unique_violation(conn: apsw.Connection, cid: int, message: str, text: str) -> DocError:
    """A UNIQUE failure, naming the key and the value that clashed."""
    fields: list[str] = ["id"]
    for name, raw in conn.execute("SELECT name, fields FROM doc_indexes WHERE collection = ?", (cid,)):
        if name in message:
            fields = _decode_json(raw)
    doc = _decode_json(text)
    values = [_lookup(doc, parse_path(f)) for f in fields]
    return DocError(
        "duplicate key value violates unique constraint",
        "23505",
        409,
        f"Key ({', '.join(fields)})=({', '.join(map(_as_text, values))}) already exists.",
    )


def second_time(keys: list[str], values: list[Any]) -> DocError:
    """PostgreSQL's error for an upsert that proposes one conflict key twice (the whole call is undone):
    it would update the row it has just written. ON CONFLICT DO NOTHING just skips the second."""
    return DocError(
        "ON CONFLICT DO UPDATE command cannot affect row a second time",
        "21000",
        details=f"Key ({', '.join(keys)})=({', '.join(map(_as_text, values))}) is proposed more than once.",
        hint="Ensure that no rows proposed for insertion within the same command have duplicate constrained values.",
    )


def _as_text(value: Any) -> str:
    """A key's value as PostgreSQL shows text extracted from jsonb: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else _encode(value).decode()


def compile_select(conn: apsw.Connection, table: str, op: Operation) -> tuple[list[tuple[str, list[Any]]], int]:
    """The SELECTs to run in turn until the page is full (one, or two for a keyset page
    with a null arm), and how many order keys each row carries: (projection, rowid, keys...)."""
    f = sql.Filter()
    where = f.all(op.where)
    order, keys = sql.order_by(op.order)
    limit = 2 if op.single else (op.limit + 1 if op.limit is not None else -1)
    extra = "".join(", " + k for k in keys)
    # Without an order and without paging, any order will do: skip the sort key.
    paged = op.order or op.after is not None or op.limit is not None or op.offset or op.single

    def select(condition: str, params: list[Any], order: str = order) -> tuple[str, list[Any]]:
        text = (
            f'SELECT {sql.projection(op.columns)}, rowid{extra} FROM "{table}" WHERE {condition} '
            f"{'ORDER BY ' + order if paged else ''} LIMIT {int(limit)} OFFSET {int(op.offset)}"
        )
        return text, params

    if op.after is None:
        return [select(where, f.params)], len(keys)
    if isinstance(op.after, str):
        values, rowid = sql.decode_cursor(op.after, len(keys), op.order)
    else:
        if "id" not in op.after:
            raise DocError("after takes a cursor or a row with its id", "PGRST103")
        row = conn.execute(
            f'SELECT rowid{"".join(", " + k for k in keys)} FROM "{table}" WHERE {sql.value_of("id")} = ?',
            (sql._bindable(op.after["id"], "after", "id"),),
        ).fetchone()
        if row is None:
            raise DocError("after: no document has that id any more; pass the cursor instead", "PGRST103")
        rowid, values = row[0], list(row[1:])
    params = list(f.params)
    condition, null_arm = sql.after(op.order, values, rowid, params, split=not op.offset)
    arms = [select(f"{where} AND {condition}", params)]
    if null_arm:
        # Its rows share the key's value (NULL): only the tie-breaker orders them.
        arms.append(select(f"{where} AND {null_arm}", list(f.params), order.rpartition(", ")[2]))
    return arms, len(keys)


def explain(conn: apsw.Connection, app: str, collection: str, op: Operation) -> dict[str, Any]:
    """The SQL a select compiles to and SQLite's plan for it."""
    store = Store(conn)
    cid = store.collection(app, collection)
    if cid is None:
        raise DocError(f"{app} has no collection {collection!r}", "42P01", 404)
    arms, _ = compile_select(conn, table_name(cid), op)
    plan = [detail for text, params in arms for _, _, _, detail in conn.execute("EXPLAIN QUERY PLAN " + text, params)]
    return {"sql": ";\n".join(t for t, _ in arms), "params": [p for _, p in arms] if len(arms) > 1 else arms[0][1], "plan": plan}


# ---- catalog: collections and indexes ------------------------------------------------------------


def create_collection(conn: apsw.Connection, app: str, name: str) -> int:
    """Inside a write transaction."""
    if not app_exists(conn, app):
        raise DocError(f"no app named {app!r} (it was removed while this ran)", "42P01", 404)
    cid = conn.execute(
        "INSERT INTO doc_collections(app, name, created_at) VALUES (?, ?, ?) RETURNING id", (app, name, time.time())
    ).fetchone()[0]
    conn.execute(f'CREATE TABLE "{table_name(cid)}"(seq INTEGER PRIMARY KEY, body BLOB NOT NULL)')
    conn.execute(sql.index_ddl(id_index_name(cid), table_name(cid), ("id",), True))
    return cid


def collections(conn: apsw.Connection, app: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "count": rows, "indexes": [
            {"fields": _decode_json(f), "unique": bool(u)}
            for f, u in conn.execute("SELECT fields, is_unique FROM doc_indexes WHERE collection = ? ORDER BY name", (cid,))
        ]}
        for cid, name, rows in conn.execute(
            "SELECT id, name, rows FROM doc_collections WHERE app = ? ORDER BY name", (app,)
        ).fetchall()
    ]


def sync_indexes(conn: apsw.Connection, app: str, declared: dict[str, list[Any]]) -> list[str]:
    """Makes the app's indexes those declared (inside the deploy's transaction); returns what changed.

    A unique index over existing duplicates is refused with ValueError naming
    the duplicate ids, and the whole deploy rolls back.
    """
    wanted: dict[str, tuple[int, tuple[str, ...], bool, str]] = {}
    changes = []
    for collection, specs in declared.items():
        row = conn.execute("SELECT id FROM doc_collections WHERE app = ? AND name = ?", (app, collection)).fetchone()
        cid = row[0] if row else create_collection(conn, app, collection)
        shapes = [index_fields(spec) for spec in specs]
        for fields, unique in shapes:
            # An index on the leading fields of a longer one (or on a unique index's very fields)
            # adds nothing that one cannot serve.
            served = next((f for f, u in shapes if f[: len(fields)] == fields and (len(f) > len(fields) or u)), None)
            if served and not unique:
                changes.append(f"index {collection}({', '.join(fields)}) is served by ({', '.join(served)})")
                continue
            wanted[index_name(cid, fields, unique)] = (cid, fields, unique, collection)
    declared = conn.execute(
        "SELECT i.name, c.name, i.fields FROM doc_indexes i JOIN doc_collections c ON c.id = i.collection WHERE i.app = ?",
        (app,),
    ).fetchall()
    for name, collection, fields in declared:
        if name not in wanted:
            conn.execute(f'DROP INDEX IF EXISTS "{name}"')
            conn.execute("DELETE FROM doc_indexes WHERE name = ?", (name,))
            changes.append(f"dropped index {collection}({', '.join(msgspec.json.decode(fields))})")
    present = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    for name, (cid, fields, unique, collection) in wanted.items():
        if name in present:
            continue
        if unique:
            _refuse_duplicates(conn, cid, fields, collection)
        conn.execute(sql.index_ddl(name, table_name(cid), fields, unique))
        conn.execute(
            "INSERT OR REPLACE INTO doc_indexes(name, app, collection, fields, is_unique) VALUES (?, ?, ?, ?, ?)",
            (name, app, cid, _encode(list(fields)).decode(), int(unique)),
        )
        changes.append(f"{'unique ' if unique else ''}index {collection}({', '.join(fields)})")
    return changes


def _refuse_duplicates(conn: apsw.Connection, cid: int, fields: tuple[str, ...], collection: str) -> None:
    keys = ", ".join(sql.unique_key(fields))
    dupes = conn.execute(
        f"SELECT json_group_array({sql.value_of('id')}) FROM \"{table_name(cid)}\" "
        f"WHERE ({keys}) IN (SELECT {keys} FROM \"{table_name(cid)}\" GROUP BY {keys} HAVING count(*) > 1 "
        f"AND {' AND '.join(f'{sql.value_of(f)} IS NOT NULL' for f in fields)} LIMIT 10)"
    ).fetchone()[0]
    ids = _decode_json(dupes)
    if ids:
        raise ValueError(
            f"unique index {collection}({', '.join(fields)}) refused: documents share a value; "
            f"ids {', '.join(map(str, ids[:20]))}"
        )


def drop_secondary_indexes(conn: apsw.Connection, cid: int) -> int:
    """Before a bulk load into an empty collection: indexes are rebuilt after it, sorted (much faster)."""
    names = [n for (n,) in conn.execute("SELECT name FROM doc_indexes WHERE collection = ? AND NOT is_unique", (cid,))]
    for name in names:
        conn.execute(f'DROP INDEX IF EXISTS "{name}"')
    return len(names)


def missing_indexes(conn: apsw.Connection) -> bool:
    return bool(conn.execute(
        "SELECT 1 FROM doc_indexes WHERE name NOT IN (SELECT name FROM sqlite_master WHERE type = 'index') LIMIT 1"
    ).fetchone())


def restore_indexes(conn: apsw.Connection, app: str | None = None) -> list[str]:
    """Rebuilds declared indexes missing from the schema (a bulk load killed before it rebuilt them)."""
    present = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    rebuilt = []
    for name, cid, fields, unique in conn.execute(
        "SELECT name, collection, fields, is_unique FROM doc_indexes WHERE ?1 IS NULL OR app = ?1", (app,)
    ).fetchall():
        if name not in present:
            conn.execute(sql.index_ddl(name, table_name(cid), tuple(_decode_json(fields)), bool(unique)))
            rebuilt.append(name)
    return rebuilt


def forget(conn: apsw.Connection, app: str) -> None:
    """Drops every collection of a removed app (inside the removal's transaction)."""
    for (cid,) in conn.execute("SELECT id FROM doc_collections WHERE app = ?", (app,)).fetchall():
        conn.execute(f'DROP TABLE IF EXISTS "{table_name(cid)}"')
    conn.execute("DELETE FROM doc_indexes WHERE app = ?", (app,))
    conn.execute("DELETE FROM doc_collections WHERE app = ?", (app,))


# ---- bulk import and export ------------------------------------------------------------------


def import_documents(
    conn: apsw.Connection,
    app: str,
    collection: str,
    lines: Iterable[bytes] | BinaryIO,
    limits: Limits = Limits(),
    batch: int = 10_000,
    progress=None,
) -> int:
    """Loads newline-delimited JSON documents in transactions of `batch`; returns how many.

    Each batch commits on its own, so a crash loses at most the batch in
    flight. At a bad line the documents before it are committed and the
    import stops with an error naming the line. Loading into an empty
    collection drops its non-unique indexes first and rebuilds them at the
    end, in one sorted pass (much faster than keeping them up to date).
    A document keeps the `id`, `createdAt` and `updatedAt` it carries (an
    export imports back as it was); missing ones are filled in. A stamp must
    be an ISO 8601 date-time with a time zone, and is kept as the host
    writes stamps (UTC, to the millisecond). A file is read a bounded line at a time:
    a line longer than twice `limits.document_kb` is refused without being held whole.
    """
    check_collection(collection)
    with transaction(conn):
        restore_indexes(conn, app)
        row = conn.execute("SELECT id FROM doc_collections WHERE app = ? AND name = ?", (app, collection)).fetchone()
        cid = row[0] if row else create_collection(conn, app, collection)
        if not conn.execute(f'SELECT 1 FROM "{table_name(cid)}" LIMIT 1').fetchone():
            drop_secondary_indexes(conn, cid)
    # SQLite parses each line and adds what is missing: no decode and re-encode in Python.
    insert = (
        f'INSERT INTO "{table_name(cid)}"(body) VALUES '
        "(jsonb_insert(?1, '$.\"id\"', ?2, '$.\"createdAt\"', ?3, '$.\"updatedAt\"', ?3))"
    )
    count_rows = "UPDATE doc_collections SET rows = rows + ? WHERE id = ?"
    total = 0
    pending: list[str] = []  # document texts
    numbers: list[int] = []

    def stop(number: int, reason: str, code: str = "22P02") -> DocError:
        restore_indexes_now(conn, app)
        before = "the 1 document before it was" if total == 1 else f"the {total} documents before it were"
        return DocError(f"line {number}: {reason}; {before} imported", code)

    def flush() -> None:
        nonlocal total
        stamp = timestamp()
        try:
            with transaction(conn):
                conn.executemany(insert, zip(pending, ulids(len(pending)), repeat(stamp)))
                conn.execute(count_rows, (len(pending), cid))
        except apsw.Error:
            # Some line in the batch is bad (not JSON, or a clashing key): keep the ones before it.
            with transaction(conn):
                for k, text in enumerate(pending):
                    try:
                        conn.execute(insert, (text, ulid(), stamp))
                    except apsw.ConstraintError as e:
                        failure = (k, unique_violation(conn, cid, str(e), text))
                        break
                    except apsw.Error as e:
                        failure = (k, DocError(f"not JSON ({e})", "22P02"))
                        break
                conn.execute(count_rows, (failure[0], cid))
            total += failure[0]
            error = failure[1]
            raise stop(numbers[failure[0]], f"{error}{': ' + error.details if error.details else ''}", error.code) from None
        total += len(pending)
        pending.clear()
        numbers.clear()
        if progress:
            progress(total)

    max_bytes = limits.document_kb * 1024
    if hasattr(lines, "readline"):
        lines = bounded_lines(lines, 2 * max_bytes)  # room for whitespace around a document at the limit
    for number, raw in enumerate(lines, 1):
        if isinstance(raw, int):
            if pending:
                flush()
            raise stop(number, f"the line is over {raw - 1:,} bytes, more than a document of limits.documentKb "
                               f"({limits.document_kb} KiB) can take", "54000")
        line = raw.strip()
        if number == 1 and line[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise stop(number, "the file is UTF-16: NDJSON is UTF-8 text")
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:].strip()  # a UTF-8 byte order mark, as some editors write
        if not line:
            continue
        try:
            # Strict JSON, as the API takes: SQLite's parser, which stores the line, also reads JSON5
            # (NaN, Infinity, {a: 1}, comments, trailing commas), numbers past a double and lone surrogates.
            doc = msgspec.json.decode(line)
            if isinstance(doc, dict):
                restamp(doc)
            # Stored as encoded again, not as the line: a key written twice ({"n":4,"n":5}) or escaped
            # ("\\u0069d") would read one way in SQL and another in the document.
            line = check_document(doc, limits, "the document")
            if "id" in doc:
                _check_id(doc["id"])
        except (DocError, msgspec.DecodeError) as e:
            if pending:
                flush()
            if isinstance(e, msgspec.DecodeError):
                raise stop(number, f"not JSON ({e})") from None
            raise stop(number, str(e), e.code) from None
        try:
            pending.append(line.decode())
        except UnicodeDecodeError:
            if pending:
                flush()
            raise stop(number, "not UTF-8 text") from None
        numbers.append(number)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    restore_indexes_now(conn, app)
    return total


def bounded_lines(source: BinaryIO, limit: int) -> Iterator[bytes | int]:
    """The lines of a binary file; one longer than `limit` comes as an int (more than `limit`)
    and is skipped, never held whole."""
    while line := source.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = source.readline(1 << 20)
        yield limit + 1


def restamp(doc: dict[str, Any]) -> None:
    """Checks the stamps an imported document carries and writes them as the host does
    (an offset or microseconds become UTC to the millisecond)."""
    for name in ("createdAt", "updatedAt"):
        if name in doc:
            stamp = as_timestamp(doc[name])
            if stamp is None:
                shown = _encode(doc[name]).decode()[:60]
                raise DocError(f"{name} must be an ISO 8601 date-time with a time zone, e.g. 2026-01-02T03:04:05.678Z, not {shown}", "22007")
            doc[name] = stamp
    # One stamp alone stands for both, as when the host creates a document: "now" for the missing one
    # would make a document updated before it was created, or created after its last update.
    for name, other in (("createdAt", "updatedAt"), ("updatedAt", "createdAt")):
        if name not in doc and other in doc:
            doc[name] = doc[other]


def restore_indexes_now(conn: apsw.Connection, app: str) -> None:
    # The rebuild sorts every key: with room for the sort in memory it does not spill to disk.
    size = conn.pragma("cache_size")
    conn.pragma("cache_size", -(1 << 20))  # 1 GiB, for this rebuild only
    try:
        with transaction(conn):
            restore_indexes(conn, app)
    finally:
        conn.pragma("cache_size", size)


def export_documents(conn: apsw.Connection, app: str, collection: str) -> Iterator[str]:
    row = conn.execute("SELECT id FROM doc_collections WHERE app = ? AND name = ?", (app, check_collection(collection) and collection)).fetchone()
    if row is None:
        raise DocError(f"{app} has no collection {collection!r}", "42P01", 404)
    for (text,) in conn.execute(f'SELECT json(body) FROM "{table_name(row[0])}" ORDER BY rowid'):
        yield text
