"""Documents at N rows: fazt-host's store and PostgreSQL 15 side by side, in one run.

    .venv/bin/python bench/run.py --only docs --docs-n 1000000   (make bench-docs N=...)

The same generated file (bench/docs/generate.py) goes into
- a cartridge, through `bench/apps/docsbench` deployed the real way (its fazt.json
  declares the indexes) and the host's bulk import (`store.import_documents`, as
  `fazt-host import` runs it);
- PostgreSQL: `docs(id bigserial, body jsonb)` with the same expression indexes,
  loaded with one COPY.
Then the same queries, p50/p99 with the reply decoded by msgspec: through the host
API (`Store.run` with the JSON the SDK sends), through PostgreSQL prepared
statements on loopback TCP, and through the bench app's handler over HTTP. The
host API and PostgreSQL alternate in rounds, so noise on the shared machine
falls on both.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec

from common import FAZT, ROOT, WORK, FaztServer, cli, env_for, fresh_cartridge, percentiles

from bench import peers

from . import generate
from .pg import SCHEMA, Postgres, copy_file

APP = "docsbench"
COLLECTION = "notes"
APP_DIR = ROOT / "bench" / "apps" / APP
FOLDER = WORK / "docs"
ROUNDS = 3  # host API and PostgreSQL take turns this many times per query
DEPTH = 1000  # the keyset page starts after this many rows (less on a small smoke-test N)
# The default limits.queryMs (5 s) stops the unindexed scan at 10M; the app's fazt.json raises it alike.
QUERY_MS = 600_000

# name -> (what it is, measured calls per system, warm-up calls); slow queries run fewer times.
QUERIES = {
    "eq": ("indexed equality: owner = X limit 20", 3000, 300),
    "id": ("indexed equality: by id (one row)", 3000, 300),
    "range": ("indexed range + order + limit 20: owner = X, createdAt in a window, newest first", 3000, 300),
    "page": ("keyset page 1000 deep: owner = X newest first, 20 after the 1000th", 3000, 300),
    "count": ("count with filter: status = 'draft' (~9%)", 45, 3),
    "scan": ("unindexed scan: address.zip = Z matching nothing, limit 20", 6, 1),
}

_decode = msgspec.json.decode
_encode = msgspec.json.encode


def log(msg: str) -> None:
    print(f"[bench docs] {msg}", file=sys.stderr, flush=True)


class Params:
    """Query arguments from the generator's distributions, the same for both systems."""

    def __init__(self, n: int, count: int, seed: int = 7):
        rng = random.Random(seed)
        span_ms = n * 3000  # createdAt steps 1-5 s

        def owner() -> str:
            heavy = rng.random() < generate.HEAVY_SHARE
            k = rng.randint(0, generate.HEAVY - 1) if heavy else rng.randint(generate.HEAVY, generate.USERS - 1)
            return generate.owner_name(k)

        def window() -> tuple[str, str]:
            start = generate.START_MS + rng.randint(0, span_ms)
            return generate.iso(start), generate.iso(start + span_ms // 4)

        self.owners = [owner() for _ in range(count)]
        self.windows = [window() for _ in range(count)]
        self.rowids = [rng.randint(1, n) for _ in range(count)]
        self.heavy = generate.heavy_owners()
        self.depth = min(DEPTH, int(n * generate.HEAVY_SHARE / generate.HEAVY / 2))
        self.zips = [f"{rng.randint(0, generate.ZIP_RANGE[0] - 1):05d}" for _ in range(count)]


def timed(call: Callable[[object], object], args: list) -> list[float]:
    out = []
    for a in args:
        t = time.perf_counter()
        call(a)
        out.append((time.perf_counter() - t) * 1000)
    return out


# ---- fazt-host -------------------------------------------------------------------------------


def load_fazt(path: Path, n: int) -> tuple[Path, dict]:
    from fazt_host import cartridge
    from fazt_host.capabilities.documents import store
    from fazt_host.config import Limits
    from fazt_host.host import capabilities

    db = fresh_cartridge(f"docs-{n}")
    cli(db, "deploy", str(APP_DIR))  # declares the collection and its indexes, as any deploy does
    conn = cartridge.connect(db)
    capabilities(conn)
    conn.pragma("cache_size", -262_144)  # what `fazt-host import` sets for the index rebuild
    marks = {}
    started = time.perf_counter()

    def progress(total: int) -> None:
        if total % 1_000_000 == 0:
            log(f"fazt import: {total:,} ({total / (time.perf_counter() - started):,.0f}/s)")
        if total == n:
            marks["rows"] = time.perf_counter()

    with open(path, "rb") as f:
        total = store.import_documents(conn, APP, COLLECTION, f, Limits(), 10_000, progress)
    done = time.perf_counter()
    assert total == n, total
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = os.path.getsize(db)
    return db, {
        "docs_per_s": round(n / (done - started)),
        "seconds": round(done - started, 1),
        "rows_s": round(marks["rows"] - started, 1),
        "index_rebuild_s": round(done - marks["rows"], 1),
        "bytes": size,
        "bytes_per_doc": round(size / n),
    }


def cli_import(path: Path, n: int) -> dict:
    """`fazt-host import` itself, into a second cartridge (process start and all)."""
    db = fresh_cartridge(f"docs-cli-{n}")
    cli(db, "deploy", str(APP_DIR))
    t = time.perf_counter()
    subprocess.run([FAZT, "import", APP, COLLECTION, str(path)], env=env_for(db), check=True, capture_output=True)
    seconds = time.perf_counter() - t
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return {"docs_per_s": round(n / seconds), "seconds": round(seconds, 1)}


class FaztQueries:
    """Operations as the SDK sends them, run by `Store.run`; the reply decoded."""

    def __init__(self, db: Path, params: Params):
        from fazt_host import cartridge
        from fazt_host.capabilities.documents.store import Store, table_name
        from fazt_host.config import Limits
        from fazt_host.host import capabilities

        self.conn = cartridge.connect(db)
        capabilities(self.conn)
        self.store, self.limits = Store(self.conn), Limits(query_ms=QUERY_MS)
        cid = self.store.collection(APP, COLLECTION)
        table = table_name(cid)
        self.ids = [self.conn.execute(f"SELECT body ->> '$.\"id\"' FROM \"{table}\" WHERE rowid = ?", (r,)).fetchone()[0]
                    for r in params.rowids]
        order = [{"field": "createdAt", "ascending": False}]
        self.cursors = {}
        for h in params.heavy:  # the cursor a client holds after paging 1000 rows in
            reply = self.run_op({"collection": COLLECTION, "columns": "id", "where": [["eq", "owner", h]],
                                 "order": order, "limit": params.depth})
            self.cursors[h] = reply["cursor"]
        eq = lambda f, v: ["eq", f, v]  # noqa: E731
        self.ops = {
            "eq": [{"collection": COLLECTION, "where": [eq("owner", o)], "limit": 20} for o in params.owners],
            "id": [{"collection": COLLECTION, "where": [eq("id", i)], "single": "maybe"} for i in self.ids],
            "range": [{"collection": COLLECTION, "where": [eq("owner", o), ["gte", "createdAt", a], ["lt", "createdAt", b]],
                       "order": order, "limit": 20} for o, (a, b) in zip(params.owners, params.windows)],
            "page": [{"collection": COLLECTION, "where": [eq("owner", h)], "order": order, "limit": 20,
                      "after": self.cursors[h]} for h in params.heavy],
            "count": [{"collection": COLLECTION, "where": [eq("status", "draft")], "count": "exact", "head": True}],
            "scan": [{"collection": COLLECTION, "where": [eq("address.zip", z)], "limit": 20} for z in params.zips],
        }
        self.encoded = {k: [_encode(op) for op in ops] for k, ops in self.ops.items()}

    def run_op(self, op: dict) -> dict:
        reply = _decode(self.store.run(APP, _encode(op), self.limits))
        if reply["error"]:
            raise RuntimeError(f"{op}: {reply['error']}")
        return reply

    def call(self, raw: bytes) -> object:
        reply = _decode(self.store.run(APP, raw, self.limits))
        if reply["error"]:  # a refused or stopped query must not pass for a fast one
            raise RuntimeError(reply["error"])
        return reply

    def plans(self) -> dict:
        from fazt_host.capabilities.documents.spec import convert_operation
        from fazt_host.capabilities.documents.store import explain

        return {k: explain(self.conn, APP, COLLECTION, convert_operation(ops[0]))["plan"] for k, ops in self.ops.items()
                if k != "count"}


# ---- PostgreSQL ------------------------------------------------------------------------------

PG_SQL = {
    "eq": "SELECT id, body FROM docs WHERE body->>'owner' = %s LIMIT 20",
    "id": "SELECT id, body FROM docs WHERE id = %s",
    # createdAt is unique here, so it alone orders the pages (no id tie-breaker needed).
    "range": "SELECT id, body FROM docs WHERE body->>'owner' = %s AND body->>'createdAt' >= %s "
             "AND body->>'createdAt' < %s ORDER BY body->>'createdAt' DESC LIMIT 20",
    "page": "SELECT id, body FROM docs WHERE body->>'owner' = %s AND body->>'createdAt' < %s "
            "ORDER BY body->>'createdAt' DESC LIMIT 20",
    "count": "SELECT count(*) FROM docs WHERE body->>'status' = %s",
    "scan": "SELECT id, body FROM docs WHERE body->'address'->>'zip' = %s LIMIT 20",
}


def load_pg(pg: Postgres, path: Path, n: int) -> dict:
    conn = pg.connect()
    conn.execute(SCHEMA)
    started = time.perf_counter()
    step = [1_000_000]

    def progress(sent: int) -> None:
        if sent >= step[0]:
            step[0] += 1_000_000
            log(f"postgres COPY: {sent:,} ({sent / (time.perf_counter() - started):,.0f}/s)")

    rows = copy_file(conn, path, progress)
    copied = time.perf_counter()
    assert rows == n, rows
    conn.execute("VACUUM ANALYZE docs")  # statistics and the visibility map, as autovacuum would leave them
    analyzed = time.perf_counter()
    size = conn.execute("SELECT pg_total_relation_size('docs')").fetchone()[0]
    conn.close()
    return {
        "docs_per_s": round(n / (copied - started)),
        "seconds": round(copied - started, 1),
        "vacuum_analyze_s": round(analyzed - copied, 1),
        "bytes": size,
        "bytes_per_doc": round(size / n),
    }


class PgQueries:
    def __init__(self, pg: Postgres, params: Params):
        self.conn = pg.connect()
        self.cur = self.conn.cursor()
        self.cursors = {}
        for h in params.heavy:
            self.cursors[h] = self.conn.execute(
                "SELECT body->>'createdAt' FROM docs WHERE body->>'owner' = %s ORDER BY body->>'createdAt' DESC "
                "OFFSET %s LIMIT 1", (h, params.depth - 1)).fetchone()[0]
        self.args = {
            "eq": [(o,) for o in params.owners],
            "id": [(r,) for r in params.rowids],
            "range": [(o, a, b) for o, (a, b) in zip(params.owners, params.windows)],
            "page": [(h, self.cursors[h]) for h in params.heavy],
            "count": [("draft",)],
            "scan": [(z,) for z in params.zips],
        }

    def caller(self, name: str) -> Callable[[tuple], object]:
        text, cur = PG_SQL[name], self.cur

        def call(args: tuple) -> object:
            cur.execute(text, args, prepare=True)
            return cur.fetchall()

        return call

    def plans(self) -> dict:
        return {k: [r[0] for r in self.conn.execute("EXPLAIN " + PG_SQL[k], self.args[k][0]).fetchall()] for k in PG_SQL}


# ---- HTTP ------------------------------------------------------------------------------------


def http_queries(db: Path, fz: FaztQueries, params: Params) -> dict:
    """The same queries through the bench app's handler, one sequential client."""
    server = FaztServer(db, workers=2)
    out = {}
    try:
        server.first_response(f"/{APP}/count?status=nothing", timeout=120)
        urls = {
            "eq": [("/eq", {"owner": o}) for o in params.owners],
            "id": [("/id", {"id": i}) for i in fz.ids],
            "range": [("/range", {"owner": o, "from": a, "to": b}) for o, (a, b) in zip(params.owners, params.windows)],
            "page": [("/page", {"owner": h, "after": fz.cursors[h]}) for h in params.heavy],
            "count": [("/count", {"status": "draft"})],
            "scan": [("/scan", {"zip": z}) for z in params.zips],
        }
        with httpx.Client(base_url=f"{server.url}/{APP}", timeout=600) as c:
            def call(a):
                r = c.get(a[0], params=a[1])
                r.raise_for_status()
                return _decode(r.content)

            first = call(urls["eq"][0])
            assert isinstance(first, list) and first, first
            for name, (_, calls, warm) in QUERIES.items():
                calls = max(3, calls // 3)  # a third of the API's calls: each costs a fresh instance
                pool = urls[name]
                timed(call, [pool[i % len(pool)] for i in range(warm)])
                ms = timed(call, [pool[(warm + i) % len(pool)] for i in range(calls)])
                out[name] = _summary(ms)
                log(f"http {name}: p50 {out[name]['p50']} ms")
    finally:
        server.stop()
    return out


def _summary(ms: list[float]) -> dict:
    p = percentiles(ms)
    return {"p50": round(p["p50"], 3), "p99": round(p["p99"], 3), "n": p["n"]}


# ---- the run -----------------------------------------------------------------------------------


def run(n: int, with_cli: bool | None = None) -> dict:
    path = generate.ensure_file(n, FOLDER, log)
    log(f"documents: {path} ({os.path.getsize(path) / n:.0f} B/doc)")
    result: dict = {"n": n, "doc_bytes": round(os.path.getsize(path) / n)}

    log("fazt-host: deploy + import")
    db, result["fazt_load"] = load_fazt(path, n)
    log(f"fazt-host load: {result['fazt_load']}")
    if with_cli if with_cli is not None else n <= 2_000_000:
        log("fazt-host import (CLI)")
        result["fazt_cli_load"] = cli_import(path, n)
        log(f"fazt-host import (CLI): {result['fazt_cli_load']}")

    pg = Postgres(FOLDER / "pg", peers.free_port())
    pg.start()
    try:
        log("postgres: COPY")
        result["pg_load"] = load_pg(pg, path, n)
        log(f"postgres load: {result['pg_load']}")

        params = Params(n, 4000)
        fz = FaztQueries(db, params)
        pq = PgQueries(pg, params)
        result["plans"] = {"fazt": fz.plans(), "postgres": pq.plans()}
        api: dict = {"fazt": {}, "postgres": {}}
        for name, (what, calls, warm) in QUERIES.items():
            f_args, p_args = fz.encoded[name], pq.args[name]
            f_call, p_call = fz.call, pq.caller(name)
            timed(f_call, [f_args[i % len(f_args)] for i in range(warm)])
            timed(p_call, [p_args[i % len(p_args)] for i in range(warm)])
            f_ms, p_ms = [], []
            per_round = max(1, calls // ROUNDS)
            for r in range(ROUNDS):
                picks = [warm + r * per_round + i for i in range(per_round)]
                f_ms += timed(f_call, [f_args[i % len(f_args)] for i in picks])
                p_ms += timed(p_call, [p_args[i % len(p_args)] for i in picks])
            api["fazt"][name], api["postgres"][name] = _summary(f_ms), _summary(p_ms)
            log(f"{name}: fazt p50 {api['fazt'][name]['p50']} ms, postgres p50 {api['postgres'][name]['p50']} ms")
        # The answers agree (a sanity check, not a measurement).
        f_count = fz.run_op(fz.ops["count"][0])["count"]
        p_count = pq.caller("count")(("draft",))[0][0]
        assert f_count == p_count, (f_count, p_count)
        page_f = [d["createdAt"] for d in fz.run_op(fz.ops["page"][0])["data"]]
        page_p = [d["createdAt"] for _, d in pq.caller("page")(pq.args["page"][0])]
        assert page_f == page_p, (page_f[:2], page_p[:2])
        result["api"] = api
        result["queries"] = {k: v[0] for k, v in QUERIES.items()}
        pq.conn.close()
    finally:
        pg.stop()
    log("http: fazt-host up")
    result["http"] = http_queries(db, fz, params)
    fz.conn.close()
    return result
