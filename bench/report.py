"""Renders bench/.work/results.json into bench/README.md."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def write_readme(r: dict) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Every figure below comes from `make bench` (`.venv/bin/python bench/run.py`; `--only STEP` reruns one",
        "section), peers side by side in the same run. The machine is shared and noisy: read the ratios.",
        "",
        f"Machine: {r.get('machine', '?')}. Date: {r.get('date', '?')}.",
        "",
    ]
    if "coldstart" in r:
        c = r["coldstart"]
        lines += [
            "## Cold start in-process",
            "",
            "Fresh instance + `fetch` of `apps/hello` through the SDK (Request in, `Response.json` out), no sockets.",
            "`pytest bench/test_coldstart.py` (pytest-benchmark, 2000 rounds).",
            "",
            "| p50 | mean | min |",
            "|---|---|---|",
            f"| {c['p50_ms']} ms | {c['mean_ms']} ms | {c['min_ms']} ms |",
            "",
        ]
        if "breakdown" in c:
            lines += [
                "Where the time goes (p50, `test_cold_start_breakdown`): "
                + ", ".join(f"{k} {v} ms" for k, v in c["breakdown"].items())
                + ". Nearly all of it is inside the guest call: the first touches of the snapshot's",
                "memory pages (copy-on-write faults) and the JS work (`JSON.parse` of the request head, `new Request`,",
                "the handler, `Response.json`, the response's head and body). What the engine creates lazily on first use",
                "(standard constructors, prototypes, shapes, in the app's realm and in the realm of the componentize-js",
                "bindings, and in componentize-js's export glue, through which the build serves one request) is created",
                "at build time and lives in the snapshot. Building the request JSON and decoding the",
                "result in Python is a few µs; a small complete response comes back inline in the export's result,",
                "so the trivial handler makes no host call at all.",
                "",
                "Inside the call (`perf` with wasmtime's perfmap and componentize-js's debug build of the engine, which",
                "names its functions; 2026-11-26): every promise records the JS stack it is created from",
                "(SpiderMonkey's async stacks, on by default, out of JS's reach), which was a quarter of the guest call.",
                "The SDK's usual path now creates no promise of its own: the handler's promise is followed with one",
                "`then`, and a response made from a string (or by `Response.json`) is sent without reading its body",
                "back through the engine's stream. With the build-time request through the export glue, that took the",
                "p50 from 0.902 to 0.823 ms (both builds in one run). What remains: the export glue is an async function",
                "(componentize-js wants a promise from every export), the handler's own promise, the JS work itself",
                "(an interpreter: no JIT in the sandbox), and the kernel: page faults are about 30% of the call (127 per",
                "request, most of them writes to snapshot pages first mapped read-only) and unmapping the instance",
                "about 9%. The pooling allocator (reachable",
                "through `wasmtime._ffi`) with 16 MiB of linear memory kept resident cut the faults to 15 per request but",
                "reset the memory by copying far more than the dirty pages (memmove 40% of the time) and was slower",
                "(p50 1.05 ms against 0.91); without keeping memory resident it changed nothing. Reaching 0.5 ms needs",
                "fewer snapshot pages touched per request or a cheaper reset, both inside the engine.",
                "",
                "Around the call (2026-11-26): wasmtime-py read a component function's type through the C API on",
                "every call, the export and each host import alike, and converted every value through Python type",
                "objects: about 0.1 ms a call. `host/fazt_host/runtime/abi.py` converts by the value's kind instead",
                "(the world passes only strings, u32, one enum and `list<u64>`). Old and new runtime alternating in one",
                "process on one cartridge (p50): a trivial handler 0.14 ms faster, a handler making one document query",
                "0.25 ms, one answering 3 KiB about 0.2 ms (complete bodies up to 8 KiB now also come back inline in",
                "the export's result, where two host calls sent those over 2 KiB).",
                "",
            ]
    if "load" in r:
        load = r["load"]
        names = list(load)
        lines += [
            "## HTTP load (wrk, loopback, same handler everywhere)",
            "",
            "`bench/peers/hello.js` served by fazt-host (2 workers, fresh instance per request), by `wasmtime serve`",
            "(wasmtime 49, built for `wasi:http/proxy`, fresh instance per request), by workerd (one reused V8",
            "isolate: the no-sandbox-per-request ceiling) and by a bare Granian RSGI hello (the Python ceiling).",
            "",
            "| connections | " + " | ".join(f"{n} req/s (p50 / p99 ms)" for n in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for conns in load[names[0]]:
            cells = [
                f"{load[n][conns]['rps']:,.0f} ({load[n][conns]['p50_ms']:.2f} / {load[n][conns]['p99_ms']:.2f})"
                for n in names
            ]
            lines.append(f"| {conns} | " + " | ".join(cells) + " |")
        fz = load["fazt-host"]

        def ratios(peer: str) -> str:
            return ", ".join(f"{_ratio(fz[c]['rps'], load[peer][c]['rps'])} at {c}" for c in fz)

        lines += [
            "",
            f"fazt-host's req/s against `wasmtime serve`'s: {ratios('wasmtime serve')} connections (target ≥ 2×); "
            f"against workerd's: {ratios('workerd')} (target ≥ 0.25×); against bare Granian's: {ratios('granian bare')}.",
            "Each fazt-host worker runs on uvloop and, with as many workers as cores, holds a core of its own (README,",
            "How it runs): measured in one server, pinned and unpinned in turn, that cut worker CPU per request by a",
            "quarter at 1 connection and by about 5% at 8 and 32.",
            "",
        ]
    if "body" in r:
        b = r["body"]
        lines += [
            "## 8 MiB bodies through a handler (`bench/apps/body.js`, HTTP, byte-exact)",
            "",
            f"- in, request to response: {b['in']} MB/s; the guest's own `arrayBuffer()` read: {b['in_guest_read']} MB/s",
            f"- out, request to last byte: {b['out']} MB/s",
            "",
        ]
    if "restart" in r:
        s = r["restart"]
        lines += [
            "## Restart with 20 deployed apps",
            "",
            f"- process start to first served request: {s['restart_to_first_request_s']} s (median of 3), "
            f"artifacts recompiled: {s['recompiled']}",
            f"- RSS per worker after every app served: {s['rss_per_worker_mib_after_all_20']} MiB",
            "",
        ]
    if "deploy" in r:
        lines += ["## Deploy `apps/hello` to first served request (server running)", ""]
        for label, d in r["deploy"].items():
            phases = ", ".join(f"{k} {v:.2f} s" for k, v in d["phases_s"].items())
            lines.append(f"- {label}: {d['to_first_request_s']} s ({phases})")
        lines.append("")
    if "docs" in r:
        lines += _docs(r["docs"])
    if "storage" in r:
        lines += _storage(r["storage"])
    if "cron" in r:
        lines += cron_lines(r["cron"])
    README.write_text("\n".join(lines))


def _storage(s: dict) -> list[str]:
    big, guest, small = s["large"], s["guest"], s["small"]
    tuned = s.get("largeTuned")
    lines = [
        "## Storage (`.venv/bin/python bench/run.py --only storage`; `bench/storage.py`)",
        "",
        "Internal backend, through the S3 endpoint with boto3, 2 workers. Default client: boto3's transfer "
        "settings (8 MiB parts and ranges, 10 at a time, 256 KiB reads); tuned: `TransferConfig("
        "multipart_chunksize=16 MiB, max_concurrency=4, io_chunksize=1 MiB)`. Each pair is measured against "
        "its own file copy, just before it.",
        "",
        f"| {big['bytes'] >> 20} MiB object | MB/s | vs a plain copy of the file on the same disk | vs the copy flushed to the disk (fsync) |",
        "|---|---|---|---|",
    ]
    for label, r in (("", big), (", tuned client", tuned)):
        if not r:
            continue
        durable = r.get("durableCopyMBps")
        lines += [
            f"| file copy{label and ', again'} (the physical limit) | {r['fileCopyMBps']} | 1 | |",
            *([f"| file copy + fsync | {durable} | | 1 |"] if durable else []),
            f"| PUT (upload_file){label} | {r['putMBps']} | {r['putVsCopy']} | {r.get('putVsDurableCopy', '')} |",
            f"| GET (download_file){label} | {r['getMBps']} | {r['getVsCopy']} | |",
        ]
    lines += [
        "",
        "A plain copy lands in the page cache; the fsync column also flushes it to the disk, as SQLite's "
        "checkpoints do with the cartridge. Reads come from the page cache: GET compares with the plain copy.",
    ]
    if "sqlite" in s:
        sq = s["sqlite"]
        lines += [
            "",
            f"SQLite alone, writing the same {sq['bytes'] >> 20} MiB as the internal backend lays it out "
            f"(512 KiB rows, 8 per transaction, one APSW connection, then a checkpoint into the file; no HTTP, "
            f"hashing or Python between): {sq['MBps']} MB/s. Every byte goes through 4 KiB pages twice "
            f"(the WAL, then the database file). PUT reaches {_ratio(big['putMBps'], sq['MBps'])} of it.",
        ]
    lines += _ceiling(s.get("ceiling"), big, tuned)
    exact, rss = str(big["byteExact"]), f"{big['anonRssGrowthMiB']} MiB"
    if tuned:
        exact += f" and {tuned['byteExact']}"
        rss += f" (after the tuned pair: {tuned['anonRssGrowthMiB']} MiB)"
    lines += [
        "",
        f"- byte-exact: {exact}; workers' anonymous RSS growth: {rss} "
        "(RSS proper also counts the cartridge pages the memory map touched, which are page cache)",
    ]
    if "pipeInMBps" in guest:
        lines.append(
            f"- 8 MiB through a handler (files app): `upload(key, request.body)` piped host-side {guest['pipeInMBps']} "
            f"MB/s in, `stream(key)` {guest['streamOutMBps']} MB/s out (byte-exact {guest['pipeByteExact']}); with the "
            f"bytes materialized in the guest (body read in the guest and uploaded; object downloaded into the guest "
            f"and returned): in {guest['inMBps']} MB/s, out {guest['outMBps']} MB/s (byte-exact {guest['byteExact']})"
        )
    else:
        lines.append(
            f"- 8 MiB through a handler (files app: bytes read in the guest and uploaded; an object downloaded into "
            f"the guest and returned): in {guest['inMBps']} MB/s, out {guest['outMBps']} MB/s, byte-exact {guest['byteExact']}"
        )
    lines += [
        "",
        f"| {small['fazt-host']['n']:,} × 4 KiB objects, one client | PUT/s | GET/s | client CPU per op |",
        "|---|---|---|---|",
    ]
    for name, v in small.items():
        cpu = f"{v['clientCpuMs']} ms" if "clientCpuMs" in v else ""
        lines.append(f"| {name} | {v['putPerS']:,} | {v['getPerS']:,} | {cpu} |")
    lines += ["", "moto_server is an S3 server written in Python (the floor); the null S3 server stores nothing "
              "(boto3's own ceiling, one request at a time: its CPU per request is most of each round trip); "
              "raw SQLite is the same bytes inserted by one APSW connection, one transaction each, no HTTP "
              "(the storage engine's ceiling).", ""]
    return lines


def _ceiling(c: dict | None, big: dict, tuned: dict | None) -> list[str]:
    """The null S3 server rows: what this client reaches with no storage work, and fazt-host's share of it."""
    if not c:
        return []
    rows = [("PUT", "put", big["putMBps"]), ("GET", "get", big["getMBps"])]
    if tuned and "putTuned" in c:
        rows += [("PUT, tuned client", "putTuned", tuned["putMBps"]), ("GET, tuned client", "getTuned", tuned["getMBps"])]
    lines = [
        "",
        "The same transfers against a null S3 server (`bench/peers/null_s3.py`: Granian RSGI, 2 workers, uvloop; "
        "it reads and drops request bodies and serves zeros) are boto3 and HTTP on loopback with no storage work: "
        "the most any S3 server could get from this client on this machine.",
        "",
        f"| {c.get('bytes', big['bytes']) >> 20} MiB object | null S3 server MB/s | fazt-host MB/s | "
        "fazt-host ÷ null S3 server |",
        "|---|---|---|---|",
    ]
    for label, key, fazt in rows:
        if key in c:
            lines.append(f"| {label} | {c[key]} | {fazt} | {_ratio(fazt, c[key])} |")
    return lines


INDEXED = ("eq", "id", "range", "page", "count")


def _ms(p: dict) -> str:
    return f"{p['p50']:.3f} / {p['p99']:.3f}"


def _docs(runs: dict) -> list[str]:
    from bench.docs.pg import SETTINGS

    lines = [
        "## Documents: fazt-host vs PostgreSQL 15, same data, same indexes, one run",
        "",
        "`make bench-docs N=...` (`.venv/bin/python bench/run.py --only docs --docs-n N`; `make bench` runs N=1M).",
        "`bench/docs/generate.py` streams ~515 B JSON documents from a fixed seed (owner among 10k users, 10% of",
        "the documents on 50 heavy users; increasing `createdAt`; skewed `status`; title, tags, numbers, nested",
        "address, body text) into one file both systems load. fazt-host: `bench/apps/docsbench` deployed (its",
        "fazt.json declares `notes: [\"owner\", [\"owner\", \"createdAt\"], \"status\"]`), then the host's bulk import",
        "(`store.import_documents`, batches of 10,000, as `fazt-host import` runs it: it drops the declared indexes of",
        "an empty collection and rebuilds them at the end, inside the measured time). PostgreSQL 15 (Debian's",
        "package, a private cluster on loopback): `docs(id bigserial primary key, body jsonb)` with the same three",
        "expression indexes created before one `COPY` (then `VACUUM ANALYZE`, not timed); settings "
        + ", ".join(f"`{k}={v}`" for k, v in SETTINGS.items() if k != "listen_addresses") + ".",
        "",
        "Queries (p50 / p99 ms, reply decoded by msgspec on both sides): host API = `Store(conn).run(app, op, limits)`",
        "with the operation JSON the SDK sends; PostgreSQL = prepared statements from psycopg 3 over loopback TCP;",
        "HTTP = the same query built by the SDK in the app's handler, `fazt-host up` (2 workers), one sequential",
        "httpx client. Host API and PostgreSQL take turns in 3 rounds per query; bytes/doc: the whole cartridge file",
        "(after a checkpoint) vs `pg_total_relation_size('docs')` (table, TOAST and the four indexes).",
        "The HTTP column adds a fresh instance per request (see the cold start above) and runs on a worker's own",
        "connection, whose page cache starts cold: the slow queries, called only a few times there, read from it.",
        "The bulk load of 10M takes a while: `make bench-docs N=10000000` (the file, ~5 GB, is generated once and",
        "kept in bench/.work/docs).",
        "",
    ]
    for n in sorted(runs, key=int):
        d = runs[n]
        fz, pg, http = d["api"]["fazt"], d["api"]["postgres"], d["http"]
        fl, pl = d["fazt_load"], d["pg_load"]
        lines += [
            f"### {int(n):,} documents",
            "",
            "| query | fazt-host API | PostgreSQL | PostgreSQL p50 ÷ fazt p50 | fazt-host over HTTP |",
            "|---|---|---|---|---|",
        ]
        for q, what in d["queries"].items():
            lines.append(f"| {what} | {_ms(fz[q])} | {_ms(pg[q])} | {_ratio(pg[q]['p50'], fz[q]['p50'])} | {_ms(http[q])} |")
        lines += [
            "",
            "| load | fazt-host | PostgreSQL | fazt ÷ PostgreSQL |",
            "|---|---|---|---|",
            f"| bulk load, docs/s (indexes declared before) | {fl['docs_per_s']:,} (rows {fl['rows_s']} s + index "
            f"rebuild {fl['index_rebuild_s']} s) | {pl['docs_per_s']:,} (COPY {pl['seconds']} s) | "
            f"{_ratio(fl['docs_per_s'], pl['docs_per_s'])} |",
            f"| bytes per document | {fl['bytes_per_doc']:,} | {pl['bytes_per_doc']:,} | "
            f"{_ratio(fl['bytes_per_doc'], pl['bytes_per_doc'])} |",
        ]
        if "fazt_cli_load" in d:
            c = d["fazt_cli_load"]
            lines.append(f"| `fazt-host import` CLI, docs/s (process start included) | {c['docs_per_s']:,} | | |")
        wins = [q for q in INDEXED if fz[q]["p50"] < pg[q]["p50"]]
        lines += [
            "",
            f"Targets: faster than PostgreSQL on every indexed query (p50): {len(wins)} of {len(INDEXED)}"
            + (f" (not: {', '.join(q for q in INDEXED if q not in wins)})" if len(wins) < len(INDEXED) else "")
            + f"; on bulk load: {'yes' if fl['docs_per_s'] > pl['docs_per_s'] else 'no'}"
            + f"; indexed equality p50 ≤ 0.1 ms: {fz['eq']['p50']:.3f} ms (owner, 20 rows), {fz['id']['p50']:.3f} ms (by id)"
            + f"; bytes/doc ≤ PostgreSQL's: {'yes' if fl['bytes_per_doc'] <= pl['bytes_per_doc'] else 'no'}.",
            "",
        ]
    return lines


def cron_lines(c: dict) -> list[str]:
    s, e = c["scale"], c["exactly_once"]
    idle, calm, loaded = s["idle"], s["calm"], s["loaded"]
    return [
        "## Cron: 10,000 schedules across 100 apps (`bench/cron.py`)",
        "",
        "`.venv/bin/python bench/run.py --only cron` (about 6 minutes).",
        "",
        f"{s['schedules']:,} entries ({s['apps']} apps sharing one component), each hourly at its own moment",
        "(`S M * * * *`, spread over the hour: ~3 due every second), `fazt-host up` with 2 workers; lateness is",
        "`startedAt - scheduledTime` of every run in the window (the guest starts right after).",
        "",
        f"- deploy of the 100 apps: {s['deploy_s']} s; the scheduler registers all entries in {s['scheduler_sync_s']} s",
        f"- idle, all {s['schedules']:,} waiting ({idle['seconds']} s): scheduler process {idle['scheduler_cpu_pct']}% of a core, "
        f"whole host (with both workers) {idle['host_cpu_pct']}%",
        "",
        "| | runs | lateness p50 | p99 | max |",
        "|---|---|---|---|---|",
        f"| no other load | {calm['runs']} | {calm['p50_ms']} ms | {calm['p99_ms']} ms | {calm['max_ms']} ms |",
        f"| HTTP load (wrk, 8 connections, {loaded['http_rps']:,} req/s, p99 {loaded['http_p99_ms']} ms) | "
        f"{loaded['runs']} | {loaded['p50_ms']} ms | {loaded['p99_ms']} ms | {loaded['max_ms']} ms |",
        "",
        f"Exactly-once over a simulated day: two schedulers on one cartridge, a fake clock moved through 24 h in",
        f"1-minute steps, {e['entries']} entries (`*/15 * * * *` and `every 20m`): {e['slots']:,} slots of "
        f"{e['expected_slots']:,} expected, {e['runs']:,} runs ({e['runs_not_ok']} not ok), "
        f"{e['slots_with_more_than_one_run']} slots run twice, {e['handler_executions']:,} handler executions "
        f"({e['distinct_executions']:,} distinct); runs per scheduler {e['runs_per_scheduler']}; "
        f"{e['wall_s']} s of wall time.",
        "",
    ]
