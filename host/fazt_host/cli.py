"""fazt-host: the command line. Commands mirror the concepts: up, deploy, apps, logs, backup.

Commands work on the cartridge directly (WAL lets them run beside a serving
host); a running server notices a deploy or rollback on its next request.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import __version__

EXIT_USAGE = 2
EXIT_FAILED = 1


def _settings(args, **extra):
    from .config import HostSettings

    return HostSettings.from_env(cartridge=getattr(args, "cartridge", None), **extra)


def _host(args):
    from .host import Host

    return Host(_settings(args))


def _existing_path(args) -> str:
    """The cartridge's path, refused unless the file is there (a command that uses one makes none)."""
    path = _settings(args).cartridge
    if not Path(path).exists():
        raise SystemExit(f"error: no cartridge at {path} (set --cartridge or FAZT_CARTRIDGE)")
    return path


def _existing_cartridge(args):
    """The cartridge of a command that only reads or changes what is there: never creates one."""
    from . import cartridge

    return cartridge.connect(_existing_path(args))


def _existing_app(conn, app: str) -> None:
    """Refuses a command on an app that is not deployed, in the words of apps, rollback, remove and cron."""
    if not conn.execute("SELECT 1 FROM apps WHERE name = ?", (app,)).fetchone():
        raise SystemExit(f"error: no app named {app!r}")


def _print_json(value) -> None:
    print(json.dumps(value, indent=2))


def _ts(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


LIMIT_FLAGS = {
    "timeout_ms": "wall time per invocation in milliseconds (default 30000)",
    "memory_mb": "linear memory per instance in MiB (default 128, at least 12)",
    "body_mb": "request body size in MiB (default 100)",
    "response_mb": "response size in MiB (default 100)",
    "log_kb": "log volume per invocation in KiB (default 64)",
    "document_kb": "size of one JSON document in KiB (default 1024)",
    "document_depth": "nesting depth of one document (default 32)",
    "result_mb": "size of one query's result in MiB (default 16)",
    "query_ms": "time of one document query in milliseconds (default 5000)",
    "storage_mb": "bytes all of the app's stored objects may take, in MiB (default 1024)",
}

DOCUMENT_LIMITS = ("document_kb", "document_depth", "result_mb", "query_ms")


def at_least(least: int):
    """An argparse type for how many lines, documents or objects: fewer is a usage error, not a count
    (as a LIMIT, SQLite reads -1 as no limit at all)."""

    def count(text: str) -> int:  # argparse names it: "invalid count value: 'abc'"
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be {least} or more, not {value}")
        return value

    return count


count = at_least(0)


def _limits(args) -> dict:
    return {k: getattr(args, k) for k in LIMIT_FLAGS if getattr(args, k, None) is not None}


def cmd_deploy(args) -> int:
    from .deploy import DeployError, InvalidManifest, deploy

    host = _host(args)
    targets = [Path(p) for p in args.path]
    for target in targets:
        print(f"deploying {target}", file=sys.stderr)
        try:
            d = deploy(host, target, Path(args.manifest) if args.manifest else None, _limits(args))
        except DeployError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE if isinstance(e, InvalidManifest) else EXIT_FAILED
        if args.json:
            print(json.dumps({"app": d.app, "version": d.version, "component": d.component, "built": d.built,
                              "unchanged": d.unchanged, "staticFiles": d.static_files,
                              "seconds": round(d.seconds, 3), "phases": d.phases}))
        elif d.unchanged:
            print(f"{d.app} v{d.version} is already live with exactly this code and files")
        else:
            how = "prebuilt component" if d.prebuilt else "built" if d.built else "cached build"
            print(f"deployed {d.app} v{d.version} ({how}, "
                  f"{d.static_files} static file{'s' * (d.static_files != 1)}) in {d.seconds:.1f}s")
    return 0


def cmd_build(args) -> int:
    from .build import BuildError, build_component
    from .config import ManifestError
    from .deploy import DeployError, resolve
    from .triggers.cron.checks import cron_files

    folder = Path(args.path)
    manifest_path = folder / "fazt.json"
    try:
        src = resolve(folder)
        if src.prebuilt is not None:
            raise DeployError(f"{src.prebuilt} is a component already: build makes one from an app's JS")
    except (ManifestError, DeployError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    manifest = src.manifest
    out = Path(args.output or f"{manifest.name}.wasm")
    if not out.parent.is_dir():  # said before the build, not after it
        print(f"error: {out}: the folder {out.parent} does not exist", file=sys.stderr)
        return EXIT_FAILED
    if out.is_dir():
        print(f"error: {out} is a folder: -o names the .wasm file to write, e.g. {out / (manifest.name + '.wasm')}",
              file=sys.stderr)
        return EXIT_FAILED
    try:
        wasm, _ = build_component(folder, manifest.entry, cron=cron_files(manifest))  # a .wasm deploys without a map
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        out.write_bytes(wasm)
    except OSError as e:
        print(f"error: {out}: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED
    command = ["fazt-host", "deploy", str(out)]
    if (out.parent / "fazt.json").resolve() != manifest_path.resolve():  # deploy looks beside the .wasm
        command += ["--manifest", str(manifest_path)]
    print(f"wrote {out} ({len(wasm) / 1048576:.1f} MiB); deploy it with: {shlex.join(command)}", file=sys.stderr)
    return 0


def cmd_apps(args) -> int:
    from . import apps

    conn = _existing_cartridge(args)
    if args.app:
        try:
            rows = apps.versions(conn, args.app)
        except LookupError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        if args.json:
            _print_json(rows)
        else:
            for r in rows:
                print(f"{'*' if r['active'] else ' '} v{r['version']:<4} {_ts(r['createdAt'])}  {r['component'][:12]}")
        return 0
    rows = apps.listing(conn)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no apps deployed: fazt-host deploy ./myapp", file=sys.stderr)
    for r in rows:
        since = f", active since {_ts(r['activatedAt'])}" if r["activatedAt"] - r["deployedAt"] > 1 else ""
        print(f"{r['name']:<24} v{r['version']:<4} ({r['versions']} kept)  deployed {_ts(r['deployedAt'])}{since}")
    return 0


def _app_change(args, change) -> int:
    """Runs change(conn) for rollback/remove, turning an unknown app or version into a clear error."""
    conn = _existing_cartridge(args)
    try:
        print(change(conn))
    except (LookupError, ValueError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_rollback(args) -> int:
    from . import apps
    from .deploy import DeployError, compile_if_missing
    from .host import capabilities

    def rollback(conn):
        version, digest = apps.rollback_target(conn, args.app, args.to)
        try:  # before the switch: the version's first requests must not wait on the compiler
            compile_if_missing(_host(args), digest, f"{args.app} v{version}", sys.stderr)
        except DeployError as e:
            raise LookupError(f"{args.app} v{version} cannot be compiled: {e}") from None
        return f"{args.app} now serves v{apps.rollback(conn, args.app, version, capabilities(conn))}"

    return _app_change(args, rollback)


def cmd_remove(args) -> int:
    from . import apps
    from .host import capabilities
    from .triggers.cron import store as cron_store

    def remove(conn):
        cron_store.setup(conn)
        # The cron trigger's state goes in the same transaction as the capabilities' (a module with forget()).
        apps.remove(conn, args.app, [*capabilities(conn), cron_store])
        return f"removed {args.app}"

    return _app_change(args, remove)


def cmd_logs(args) -> int:
    from . import cartridge
    from .capabilities.log import Log, printable, tail

    conn = _existing_cartridge(args)
    cartridge.migrate(conn, Log.name, Log.migrations)
    _existing_app(conn, args.app)

    def show(rows):
        for r in rows:
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print(f"{_ts(r['ts'])} {r['level']:<5} [{r['requestId']}] {printable(r['message'])}", flush=True)

    rows = tail(conn, args.app, args.lines)
    show(rows)
    last = conn.execute("SELECT coalesce(max(id), 0) FROM logs WHERE app = ?", (args.app,)).fetchone()[0]
    while args.follow:
        time.sleep(0.25)
        rows = tail(conn, args.app, 1000, last)
        show(rows)
        if rows:
            last = rows[-1]["id"]
    return 0


def cmd_cron(args) -> int:
    from .triggers.cron import commands

    def host():
        _existing_path(args)  # a run needs a Host, which would make a cartridge where none is
        return _host(args)

    return commands.main(args, lambda: _existing_cartridge(args), host)


def cmd_backup(args) -> int:
    import apsw

    from . import cartridge

    settings = _settings(args)
    conn = _existing_cartridge(args)
    dest = Path(args.file)
    live = Path(settings.cartridge).resolve()
    # Its WAL and shared-memory files are the cartridge too: replacing one loses committed writes.
    if dest.resolve() in {live, *(live.with_name(live.name + s) for s in ("-wal", "-shm", "-journal"))}:
        print("error: the backup must not overwrite the cartridge itself", file=sys.stderr)
        return EXIT_USAGE
    if dest.is_dir():
        print(f"error: {dest} is a folder: give the backup's file name", file=sys.stderr)
        return EXIT_USAGE
    if not dest.parent.is_dir():
        print(f"error: {dest}: the folder {dest.parent} does not exist", file=sys.stderr)
        return EXIT_FAILED
    started = time.perf_counter()
    try:
        cartridge.backup(conn, dest)
    except (OSError, apsw.Error) as e:
        print(f"error: cannot write the backup to {dest}: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"backed up {settings.cartridge} to {dest} ({dest.stat().st_size / 1048576:.1f} MiB) "
          f"in {time.perf_counter() - started:.1f}s")
    return 0


def _documents(args):
    from .host import capabilities

    conn = _existing_cartridge(args)
    capabilities(conn)  # migrated, so an app that never wrote a document reads as empty
    return conn


def _query(text: str):
    """The query JSON given on the command line, or None (after saying why) when it cannot be read: a usage error."""
    from .capabilities.documents.spec import DocError, decode_operation

    try:
        return decode_operation(text)
    except DocError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def cmd_docs(args) -> int:
    from .capabilities.documents import store
    from .capabilities.documents.spec import DocError

    conn = _documents(args)
    words = args.args
    try:
        if words[0] == "explain":
            if len(words) != 4:
                print("usage: fazt-host docs explain APP COLLECTION QUERY_JSON", file=sys.stderr)
                return EXIT_USAGE
            _existing_app(conn, words[1])
            op = _query(words[3])
            if op is None:
                return EXIT_USAGE
            plan = store.explain(conn, words[1], words[2], op)
            if args.json:
                _print_json(plan)
            else:
                print(plan["sql"])
                print("params:", json.dumps(plan["params"]))
                for line in plan["plan"]:
                    print("plan:", line)
            return 0
        _existing_app(conn, words[0])
        if len(words) == 1:
            rows = store.collections(conn, words[0])
            if args.json:
                _print_json(rows)
            elif not rows:
                print(f"{words[0]} has no collections", file=sys.stderr)
            for r in [] if args.json else rows:
                indexes = ", ".join(("unique " if i["unique"] else "") + "(" + ", ".join(i["fields"]) + ")" for i in r["indexes"])
                print(f"{r['name']:<24} {r['count']:>10} document{'' if r['count'] == 1 else 's'}  {indexes}")
            return 0
        if len(words) != 2:
            print("usage: fazt-host docs APP [COLLECTION] | docs explain APP COLLECTION QUERY_JSON", file=sys.stderr)
            return EXIT_USAGE
        op = _query(args.query or "{}")
        if op is None:
            return EXIT_USAGE
        op.collection = words[1]
        if op.op != "select":
            raise DocError("docs only reads; change documents through the app", "PGRST100")
        if store.Store(conn).collection(words[0], words[1]) is None:  # as export and explain say it
            raise DocError(f"{words[0]} has no collection {words[1]!r} (fazt-host docs {words[0]} lists them)", "42P01")
        if op.limit is None and not op.head:
            op.limit = args.limit
        reply = json.loads(store.Store(conn).run(words[0], op, _limits_of(args, conn, words[0])))
        if reply["error"]:
            raise DocError(reply["error"]["message"], reply["error"]["code"])
        if args.json:
            _print_json(reply)
        else:
            for doc in reply["data"] or []:
                print(json.dumps(doc, ensure_ascii=False))
            if reply["count"] is not None:
                print(f"count: {reply['count']}", file=sys.stderr)
        return 0
    except DocError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED


def _limits_of(args, conn, app: str):
    """The app's limits as deployed (an import of its own export must fit them), flags winning."""
    from .apps import active_manifest
    from .config import Limits

    manifest = active_manifest(conn, app)
    try:
        return (manifest.limits if manifest else Limits()).merged(_limits(args))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def cmd_import(args) -> int:
    from .capabilities.documents import store
    from .capabilities.documents.spec import DocError

    conn = _documents(args)
    _existing_app(conn, args.app)  # documents of no app would pass to a later app of that name
    conn.pragma("cache_size", -262_144)  # 256 MiB for the index rebuild's sort
    started = time.perf_counter()
    tty = sys.stderr.isatty()
    shown = [0.0]

    def progress(n: int, final: bool = False) -> None:
        now = time.perf_counter()
        if final or now - shown[0] >= 1:
            shown[0] = now
            rate = n / max(now - started, 1e-9)
            start, end = ("\r", "" if not final else "\n") if tty else ("", "\n")
            print(f"{start}progress: {n:,} documents ({rate:,.0f}/s)", end=end, file=sys.stderr, flush=True)

    try:
        source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    except OSError as e:
        print(f"error: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return EXIT_FAILED
    try:
        total = store.import_documents(
            conn, args.app, args.collection, source, _limits_of(args, conn, args.app), args.batch, progress
        )
    except DocError as e:
        print(f"\nerror: {e}" if tty else f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        source.close()
    progress(total, final=True)
    print(f"imported {total:,} documents into {args.app}/{args.collection} in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_export(args) -> int:
    from .capabilities.documents import store
    from .capabilities.documents.spec import DocError

    conn = _documents(args)
    _existing_app(conn, args.app)
    try:
        out = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")
    except OSError as e:
        print(f"error: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        return EXIT_FAILED
    try:
        n = 0
        for text in store.export_documents(conn, args.app, args.collection):
            out.write(text + "\n")
            n += 1
    except DocError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {n:,} documents", file=sys.stderr)
    return 0


BACKEND_PLACES = {"internal": "in the cartridge (internal)", "s3": "in the external S3 bucket (s3)"}


def cmd_blobs(args) -> int:
    from .capabilities.storage import store
    from .host import capabilities

    conn = _existing_cartridge(args)
    capabilities(conn)
    # `blobs migrate` without --to lists an app named migrate, if there is one
    if args.to or (args.app == "migrate" and not conn.execute("SELECT 1 FROM apps WHERE name = 'migrate'").fetchone()):
        return _migrate_blobs(conn, args)
    _existing_app(conn, args.app)
    try:
        if args.bucket is None:
            rows = store.buckets(conn, args.app)
            where = store.backend(conn, args.app)
            if args.json:
                _print_json([{**r, "backend": where} for r in rows])
            else:  # where new uploads go: `blobs migrate` moves the bytes and switches it
                print(f"{args.app} stores its objects' bytes {BACKEND_PLACES[where]}", file=sys.stderr)
                if not rows:
                    print(f"{args.app} has no buckets", file=sys.stderr)
            for r in [] if args.json else rows:
                print(f"{r['name']:<32} {'public ' if r['public'] else 'private'} {r['objects']:>8} objects {r['bytes']:>14,} bytes")
            return 0
        if store.bucket_id(conn, args.app, args.bucket) is None:
            print(f"error: {args.app} has no bucket {args.bucket!r}", file=sys.stderr)
            return EXIT_FAILED
        objects, prefixes, more = store.listing(conn, args.app, args.bucket, args.prefix, args.limit, "", "")
    except store.StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print_json(objects)
    for o in [] if args.json else objects:
        print(f"{o['size']:>14,}  {_ts(o['updatedAt'])}  {o['etag']}  {o['key']}")
    if more and not args.json:
        print(f"(more: --limit {args.limit * 10})", file=sys.stderr)
    return 0


def _migrate_blobs(conn, args) -> int:
    from .capabilities.storage import migrate, store

    app = args.bucket if args.app == "migrate" else args.app
    if not app or not args.to:
        print("usage: fazt-host blobs migrate APP --to s3|internal", file=sys.stderr)
        return EXIT_USAGE
    _existing_app(conn, app)
    try:
        result = migrate.migrate(conn, app, args.to, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except store.StorageError as e:
        print(f"error: {e}; objects moved so far stay moved: run it again to go on", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print_json(result)
    else:
        print(f"moved {result['moved']} objects ({result['bytes']:,} bytes), each verified; "
              f"{app} now stores new objects {'on external S3' if args.to == 's3' else 'in the cartridge'}")
    return 0


def cmd_keys(args) -> int:
    from .capabilities.storage import s3
    from .host import capabilities

    conn = _existing_cartridge(args)
    capabilities(conn)
    _existing_app(conn, args.app)  # a key made for no app would pass to a later app of that name
    settings = _settings(args)
    if args.action == "create":
        key_id, secret = s3.create_key(conn, args.app)
        from .cartridge import served_address

        endpoint = f"{served_address(conn) or settings.url}/{args.app}{s3.S3_ROUTES}"
        if args.json:
            _print_json({"accessKeyId": key_id, "secretAccessKey": secret, "endpoint": endpoint})
        else:
            print(f"accessKeyId:     {key_id}\nsecretAccessKey: {secret}\nendpoint:        {endpoint}")
            print("the secret is shown once; path-style addressing, any region", file=sys.stderr)
        return 0
    if args.action == "list":
        rows = s3.list_keys(conn, args.app)
        if args.json:
            _print_json(rows)
        for r in [] if args.json else rows:
            print(f"{r['accessKeyId']}  created {_ts(r['createdAt'])}")
        return 0
    if not args.key:
        print("usage: fazt-host keys revoke APP ACCESS_KEY_ID", file=sys.stderr)
        return EXIT_USAGE
    if not s3.revoke_key(conn, args.app, args.key):
        print(f"error: {args.app} has no access key {args.key}", file=sys.stderr)
        return EXIT_FAILED
    print(f"revoked {args.key}")
    return 0


def cmd_up(args) -> int:
    from .serve import address_problem, serve

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers, domain=args.domain)
    try:
        ipaddress.ip_address(settings.host)  # Granian binds an address, not a name
    except ValueError:
        print(f"error: --host {settings.host!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0 or ::1)", file=sys.stderr)
        return EXIT_USAGE
    if settings.port == 0:
        print("error: --port 0 would bind a port nobody is told: pick one (1-65535)", file=sys.stderr)
        return EXIT_USAGE
    if _limits(args) and not args.deploy:
        # Limits are stored with each deployed version: with nothing to deploy they would change nothing.
        flags = ", ".join("--" + k.replace("_", "-") for k in _limits(args))
        print(f"error: {flags} set the limits of the apps --deploy deploys; "
              "to change a deployed app's, deploy it with the flag", file=sys.stderr)
        return EXIT_USAGE
    unusable = address_problem(settings.host, settings.port)
    if unusable:
        print(f"error: {unusable}", file=sys.stderr)
        return EXIT_FAILED
    if args.deploy:
        # Deploy in a child process: Granian forks its workers from this one, which
        # should not have started wasmtime's compiler threads first.
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in _limits(args).items()]
        env = {**os.environ, **settings.to_env()}
        proc = subprocess.run([sys.executable, "-m", "fazt_host", "deploy", *args.deploy, *flags], env=env)
        if proc.returncode != 0:
            return proc.returncode
    return serve(settings)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fazt-host", description="Deploy small JavaScript apps as WebAssembly components and serve them.")
    p.add_argument("--version", action="version", version=f"fazt-host {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help_, fn):
        c = sub.add_parser(name, help=help_, description=help_)
        c.add_argument("--cartridge", help="the cartridge file (env FAZT_CARTRIDGE, default ./fazt.db)")
        c.set_defaults(fn=fn)
        return c

    def limit_flags(c, about="each overrides the app's fazt.json `limits`", names=tuple(LIMIT_FLAGS)):
        group = c.add_argument_group("limits", f"{about}; without the flag, fazt.json's value or the default applies")
        for name in names:
            group.add_argument("--" + name.replace("_", "-"), dest=name, type=int, help=LIMIT_FLAGS[name])

    up = command("up", "serve the deployed apps over HTTP (Granian)", cmd_up)
    up.add_argument("--host", help="address to listen on (env FAZT_HOST, default 127.0.0.1)")
    up.add_argument("--port", type=int, help="port (env FAZT_PORT, default 8080)")
    up.add_argument("--workers", type=int, help="worker processes (env FAZT_WORKERS; 0 or unset: one per core)")
    up.add_argument("--domain", help="also route <app>.DOMAIN by Host header (env FAZT_DOMAIN)")
    up.add_argument("--deploy", nargs="*", metavar="DIR", help="deploy these app folders before serving")
    limit_flags(up, "with --deploy: each overrides the deployed apps' fazt.json `limits`")

    dp = command("deploy", "build (if JS) and deploy app folders or prebuilt .wasm components", cmd_deploy)
    dp.add_argument("path", nargs="+", help="an app folder (fazt.json + entry) or a component .wasm")
    dp.add_argument("--manifest", help="the fazt.json to use (default: beside the app)")
    dp.add_argument("--json", action="store_true", help="print the result as JSON")
    limit_flags(dp)

    bd = command("build", "build an app folder into a component .wasm without deploying it", cmd_build)
    bd.add_argument("path", help="an app folder with fazt.json")
    bd.add_argument("-o", "--output", help="where to write the .wasm (default NAME.wasm)")

    ap = command("apps", "list deployed apps, or the kept versions of one", cmd_apps)
    ap.add_argument("app", nargs="?", help="show this app's versions")
    ap.add_argument("--json", action="store_true", help="print JSON")

    lg = command("logs", "show an app's log (console.* and errors)", cmd_logs)
    lg.add_argument("app")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.add_argument("-n", "--lines", type=count, default=100, help="how many recent lines (default 100)")
    lg.add_argument("--json", action="store_true", help="one JSON object per line")

    rb = command("rollback", "serve the previous (or a given) version of an app", cmd_rollback)
    rb.add_argument("app")
    rb.add_argument("--to", type=int, help="version number to activate (default: the one before the active)")

    rm = command("remove", "remove an app and all its versions", cmd_remove)
    rm.add_argument("app")

    dc = command(
        "docs",
        "list an app's collections, show documents, or explain a query: "
        "docs APP | docs APP COLLECTION [--query JSON] | docs explain APP COLLECTION QUERY_JSON",
        cmd_docs,
    )
    dc.add_argument("args", nargs="+", metavar="ARG", help="APP [COLLECTION], or explain APP COLLECTION QUERY_JSON")
    dc.add_argument("--query", help='a select as JSON, e.g. \'{"where": [["eq", "owner", "u1"]], "count": "exact"}\'')
    dc.add_argument("--limit", type=count, default=20, help="documents to show (default 20)")
    dc.add_argument("--json", action="store_true", help="print JSON")
    limit_flags(dc, "the document limits of this query, each overriding the app's", DOCUMENT_LIMITS)

    im = command("import", "load newline-delimited JSON documents into a collection", cmd_import)
    im.add_argument("app")
    im.add_argument("collection")
    im.add_argument("file", help="an .ndjson file, or - for standard input")
    im.add_argument("--batch", type=at_least(1), default=10_000, help="documents per transaction (default 10000)")
    limit_flags(im, "the document limits of this import, each overriding the app's", DOCUMENT_LIMITS)

    ex = command("export", "write a collection as newline-delimited JSON", cmd_export)
    ex.add_argument("app")
    ex.add_argument("collection")
    ex.add_argument("-o", "--output", help="file to write (default standard output)")

    bl = command("blobs", "list an app's storage buckets or the objects in one; move its bytes between backends", cmd_blobs)
    bl.usage = "fazt-host blobs APP [BUCKET] [--prefix P] [--json] | blobs migrate APP --to s3|internal [--json]"
    bl.add_argument("app", help="the app (or `migrate`)")
    bl.add_argument("bucket", nargs="?", help="list this bucket's objects (with migrate: the app)")
    bl.add_argument("--to", choices=["s3", "internal"],
                    help="migrate: copy every object to this backend, verify it, then switch the app to it "
                         "(s3 needs FAZT_S3_BUCKET and friends in the environment; resumable)")
    bl.add_argument("--prefix", default="", help="only keys starting with this")
    bl.add_argument("--limit", type=at_least(1), default=1000, help="objects to list (default 1000)")
    bl.add_argument("--json", action="store_true", help="print JSON")

    ky = command("keys", "create, list or revoke an app's access keys for its S3 endpoint", cmd_keys)
    ky.add_argument("action", choices=["create", "list", "revoke"])
    ky.add_argument("app")
    ky.add_argument("key", nargs="?", help="the access key id to revoke")
    ky.add_argument("--json", action="store_true", help="print JSON")
    cr = command("cron", "cron entries of an app: list (next fire times, last outcome), run one now, history", cmd_cron)
    cr.usage = "fazt-host cron APP | cron run APP NAME | cron history APP [NAME] [-n N] [--json]"
    cr.formatter_class = argparse.RawDescriptionHelpFormatter
    cr.description = (
        "  cron APP                  the app's entries, their next 5 fire times and last outcome\n"
        "  cron run APP NAME         run one entry now in this process (one attempt; exit 1 if it fails)\n"
        "  cron history APP [NAME]   runs, newest first, with their log lines"
    )
    cr.add_argument("words", nargs="+", metavar="APP | run APP NAME | history APP [NAME]")
    cr.add_argument("-n", "--lines", type=count, default=20, help="history: how many runs, newest first (default 20)")
    cr.add_argument("--json", action="store_true", help="print JSON")

    bk = command("backup", "write a consistent copy of the cartridge while serving", cmd_backup)
    bk.add_argument("file")
    return p


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM ends a command as Ctrl-C does, through its cleanups (a build's work folder, an open
    # transaction); `up` hands the signal to Granian once it serves.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`export ... | head`): not a failure, and stdout cannot be flushed any more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - a clear message, not a traceback
        from .cartridge import CartridgeError
        from .config import ManifestError

        if isinstance(e, ManifestError):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(e, CartridgeError):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        if os.environ.get("FAZT_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {e} (set FAZT_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_FAILED
