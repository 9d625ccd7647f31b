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
                "the handler, `Response.json`, reading the body back). Building the request JSON and decoding the",
                "result in Python is a few µs; a small complete response comes back inline in the export's result,",
                "so the trivial handler makes no host call at all.",
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
        best = max(load["fazt-host"], key=lambda k: load["fazt-host"][k]["rps"])
        fz = load["fazt-host"][best]["rps"]
        lines += [
            "",
            f"At {best} connections fazt-host serves {_ratio(fz, load['wasmtime serve'][best]['rps'])} `wasmtime serve`'s "
            f"req/s and {_ratio(fz, load['workerd'][best]['rps'])} workerd's "
            f"(targets: ≥ 2× and ≥ 0.25×); bare Granian: {_ratio(fz, load['granian bare'][best]['rps'])}.",
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
    if "cron" in r:
        lines += cron_lines(r["cron"])
    README.write_text("\n".join(lines))


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
