"""Deploying: the CLI against a real cartridge, the bad inputs it must refuse, and crashes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import apsw
import httpx
import pytest
import wasmtime

from conftest import APPS, FAZT, TEST_APPS, Cartridge, copy_app


def integrity(path) -> str:
    conn = apsw.Connection(str(path))
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_deploy_lists_and_serves_and_redeploy_is_cached(cartridge):
    first = json.loads(cartridge.deploy(APPS / "hello", "--json").stdout)
    assert first["app"] == "hello" and first["version"] == 1 and first["staticFiles"] == 1
    again = json.loads(cartridge.deploy(APPS / "hello", "--json").stdout)
    assert again["unchanged"] and not again["built"] and again["version"] == 1
    assert again["seconds"] < 1.0
    listing = json.loads(cartridge.cli("apps", "--json").stdout)
    assert [a["name"] for a in listing] == ["hello"]
    server = cartridge.serve()
    assert server.get("/hello/hello").json()["hello"] == "world"


def test_a_manifest_only_change_is_a_new_version_without_a_build(cartridge, tmp_path):
    first = json.loads(cartridge.deploy(APPS / "hello", "--json").stdout)
    app = copy_app(APPS / "hello", tmp_path / "hello", limits={"timeoutMs": 1234}, indexes={"notes": ["owner"]})
    second = json.loads(cartridge.deploy(app, "--json").stdout)
    assert second["version"] == 2 and not second["built"] and second["component"] == first["component"]


def test_well_known_is_the_one_dot_folder_served(cartridge, tmp_path):
    app = copy_app(APPS / "hello", tmp_path / "hello")
    files = {".well-known/security.txt": "Contact: mailto:security@example.com\n",
             ".well-known/acme-challenge/token": "token.key\n", ".well-known/.hidden": "no", ".env": "SECRET=1",
             ".git/config": "no", "docs/.well-known/x": "no", ".other/x": "no"}
    for name, text in files.items():
        (app / "public" / name).parent.mkdir(parents=True, exist_ok=True)
        (app / "public" / name).write_text(text)
    assert json.loads(cartridge.deploy(app, "--json").stdout)["staticFiles"] == 3  # index.html and two
    server = cartridge.serve()
    for name in (".well-known/security.txt", ".well-known/acme-challenge/token"):
        r = server.get(f"/hello/{name}")
        assert r.status_code == 200 and r.text == files[name], name
    for name in (".well-known/.hidden", ".env", ".git/config", "docs/.well-known/x", ".other/x"):
        assert server.get(f"/hello/{name}").status_code == 404, name


def test_redeploy_while_serving_switches_without_restart(cartridge, tmp_path):
    cartridge.deploy(APPS / "hello")
    server = cartridge.serve()
    assert server.get("/hello/hello").json()["hello"] == "world"
    v2 = copy_app(APPS / "hello", tmp_path / "hello2")
    (v2 / "public" / "index.html").write_text("<h1>second</h1>")
    cartridge.deploy(v2)
    # static files changed, the component did not: the next request in every worker sees v2
    for _ in range(6):
        assert server.get("/hello/").text == "<h1>second</h1>"
    versions = json.loads(cartridge.cli("apps", "hello", "--json").stdout)
    assert [v["version"] for v in versions] == [2, 1] and versions[0]["active"]
    time.sleep(1.1)
    cartridge.cli("rollback", "hello")
    for _ in range(6):
        assert "<h1>hello</h1>" in server.get("/hello/").text
    listed = json.loads(cartridge.cli("apps", "--json").stdout)[0]
    # The active version's own deploy time (before: when the rollback activated it), and when that was.
    assert listed["version"] == 1 and listed["deployedAt"] == versions[1]["createdAt"]
    assert listed["activatedAt"] > listed["deployedAt"] + 1 and "active since" in cartridge.cli("apps").stdout
    assert "no version 9" in cartridge.cli("rollback", "hello", "--to", "9", check=False).stderr


def test_keep_versions_prunes_old_ones(cartridge, tmp_path):
    app = copy_app(APPS / "hello", tmp_path / "h", keepVersions=2)
    for i in range(4):
        (app / "public" / "index.html").write_text(f"v{i}")
        cartridge.deploy(app)
    versions = json.loads(cartridge.cli("apps", "hello", "--json").stdout)
    assert [v["version"] for v in versions] == [4, 3]


def test_syntax_error_names_file_and_line_and_live_version_keeps_serving(cartridge, tmp_path):
    cartridge.deploy(APPS / "hello")
    server = cartridge.serve()
    broken = copy_app(APPS / "hello", tmp_path / "broken")
    (broken / "index.js").write_text("export default {\n  async fetch(request) {\n    return new Response('x'\n  },\n};\n")
    proc = cartridge.cli("deploy", str(broken), check=False)
    assert proc.returncode == 1
    assert "index.js:4:" in proc.stderr, proc.stderr
    # A throw at top level, run when the build snapshots the module, names the app's file too.
    (broken / "index.js").write_text("import './boot.js';\nexport default { fetch() { return new Response('x'); } };\n")
    (broken / "boot.js").write_text("// reads its settings at startup\nthrow new Error('no settings');\n")
    proc = cartridge.cli("deploy", str(broken), check=False)
    assert proc.returncode == 1
    assert "boot.js:2:7" in proc.stderr and "no settings" in proc.stderr and "app.js" not in proc.stderr, proc.stderr
    # A random value made at top level would be the same in every request: refused the same way.
    (broken / "boot.js").write_text("// an id for this instance\nexport const ID = crypto.randomUUID();\n")
    proc = cartridge.cli("deploy", str(broken), check=False)
    assert proc.returncode == 1 and "boot.js:2:" in proc.stderr, proc.stderr  # before: a wasm backtrace from the build
    assert "crypto.randomUUID() at the top level" in proc.stderr and "inside the handler" in proc.stderr, proc.stderr
    error = proc.stderr.partition("error:")[2]  # the SDK's frame, wizer's line and the engine's rejection note go
    assert "runtime.js" not in error and "wizer" not in error and "never handled" not in error, error
    assert server.get("/hello/hello").json()["hello"] == "world"
    assert json.loads(cartridge.cli("apps", "--json").stdout)[0]["version"] == 1


@pytest.mark.parametrize(
    "manifest, fragment",
    [
        ({"name": "ok", "colour": "red"}, "unknown field `colour`"),
        ({"name": 42}, "`$.name`"),
        ({"name": "ok", "limits": {"timeoutMs": "fast"}}, "`$.limits.timeoutMs`"),
        ({"name": "ok", "limits": {"memoryMb": 4}}, "memoryMb"),
        ({"name": "_private"}, "safe identifier"),
        ({"name": "a/../b"}, "safe identifier"),
        ({"name": "ok\n"}, "safe identifier"),  # a regex's $ matches before a final newline
        ({"name": "ok", "entry": "../../etc/passwd.js"}, "entry"),
        ({"name": "ok", "entry": "public/app.js"}, "inside the static folder"),  # it would be served as a file
        ({"name": "ok", "cron": [{"name": "c", "schedule": "every 1h", "file": "public/c.js"}]}, "cron entry 'c'"),
        ({}, "missing required field `name`"),
        ({"name": "ok", "env": {"A": "x", "PORT": 8080}}, "env.PORT must be a string"),  # before: `$.env[...]`
    ],
)
def test_bad_manifest_is_refused_naming_the_field(cartridge, tmp_path, manifest, fragment):
    app = tmp_path / "app"
    app.mkdir()
    (app / "index.js").write_text("export default { fetch() { return new Response('x'); } };")
    (app / "fazt.json").write_text(json.dumps(manifest))
    for command in (["deploy", str(app)], ["build", str(app), "-o", str(tmp_path / "app.wasm")]):
        proc = cartridge.cli(*command, check=False)
        assert proc.returncode == 2, (command, proc.stderr)  # the README's exit code of a manifest error
        assert fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "app.wasm").exists()


def test_not_json_manifest_and_missing_folder(cartridge, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "fazt.json").write_text("{not json")
    for command in ("deploy", "build"):
        proc = cartridge.cli(command, str(app), check=False)
        assert proc.returncode == 2 and "fazt.json" in proc.stderr, proc.stderr
    (app / "fazt.json").write_text('{"name": "first", "limits": {"timeoutMs": 1000}, "name": "other"}')
    proc = cartridge.cli("deploy", str(app), check=False)  # before: deployed as "other"
    assert proc.returncode == 2 and "the key 'name' is given twice" in proc.stderr, proc.stderr
    proc = cartridge.cli("deploy", str(tmp_path / "nowhere"), check=False)
    assert proc.returncode == 1 and "not an app folder" in proc.stderr
    # An entry that is not there is the manifest's error too, for deploy and build alike.
    (app / "fazt.json").write_text('{"name": "first", "entry": "missing.js"}')
    for command in ("deploy", "build"):
        proc = cartridge.cli(command, str(app), check=False)
        assert proc.returncode == 2 and "entry 'missing.js'" in proc.stderr and "not found" in proc.stderr, proc.stderr


def test_a_static_folder_or_entry_linked_out_of_the_app_folder_is_refused(cartridge, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    (outside / "index.js").write_text("export default { fetch() { return new Response('x'); } };")
    app = tmp_path / "app"
    app.mkdir()
    (app / "fazt.json").write_text('{"name": "linked"}')
    (app / "public").symlink_to(outside)  # before: deployed, and /linked/secret.txt served the file
    (app / "index.js").write_text("export default { fetch() { return new Response('x'); } };")
    proc = cartridge.cli("deploy", str(app), check=False)
    assert proc.returncode == 2 and "static 'public' leads out of the app folder" in proc.stderr, proc.stderr
    (app / "public").unlink()
    (app / "index.js").unlink()
    (app / "index.js").symlink_to(outside / "index.js")
    proc = cartridge.cli("deploy", str(app), check=False)
    assert proc.returncode == 2 and "entry 'index.js' leads out of the app folder" in proc.stderr, proc.stderr
    assert json.loads(cartridge.cli("apps", "--json").stdout) == []
    # A symlink inside public/ is left out, and deploy says so (before: silently)
    (app / "index.js").unlink()
    (app / "index.js").write_text("export default { fetch() { return new Response('x'); } };")
    (app / "public").mkdir()
    (app / "public" / "page.html").write_text("<p>kept</p>")
    (app / "public" / "secret.txt").symlink_to(outside / "secret.txt")
    (app / "public" / "linked").symlink_to(outside)  # a folder: os.walk lists it without going in
    proc = cartridge.cli("deploy", str(app))
    assert "left out 2 symlinks in public/ (public/linked, public/secret.txt): links are not followed" in proc.stderr, proc.stderr
    assert "(built, 1 static file)" in proc.stdout, proc.stdout


def test_limit_flag_out_of_range_is_a_usage_error(cartridge):
    proc = cartridge.cli("deploy", str(APPS / "hello"), "--memory-mb", "4", check=False)
    assert proc.returncode == 2 and "limits.memoryMb must be between 12 and 4096" in proc.stderr, proc.stderr
    assert json.loads(cartridge.cli("apps", "--json").stdout) == []


@pytest.mark.parametrize(
    "wasm, fragment",
    [
        (b"this is not wasm at all", "does not start with WebAssembly's \\0asm header"),
        (b"(component)", "does not start with WebAssembly's \\0asm header"),  # before: deployed, read as text
        (os.urandom(64).replace(b"\0asm", b""), "does not start with WebAssembly's"),  # before: "not valid utf-8"
        (bytes(wasmtime.wat2wasm("(module)")), "a core WebAssembly module, not a component"),
        (bytes(wasmtime.wat2wasm("(component)")), "does not export fazt:host/handler"),
        (bytes(wasmtime.wat2wasm('(component (import "foo:bar/baz" (instance)))')), "imports foo:bar/baz"),
    ],
)
def test_bad_wasm_is_refused(cartridge, tmp_path, wasm, fragment):
    (tmp_path / "fazt.json").write_text(json.dumps({"name": "wasmapp", "entry": "app.wasm"}))
    (tmp_path / "app.wasm").write_bytes(wasm)
    proc = cartridge.cli("deploy", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert fragment in proc.stderr, proc.stderr
    assert json.loads(cartridge.cli("apps", "--json").stdout) == []


def test_build_then_deploy_prebuilt_component(cartridge, tmp_path):
    out = tmp_path / "probe.wasm"
    built = cartridge.cli("build", str(TEST_APPS / "probe"), "-o", str(out))
    assert out.read_bytes()[:8] == b"\0asm\r\0\x01\0"  # a component, not a core module
    # The command it suggests works: the manifest is not beside the .wasm, so it names it.
    alone = cartridge.cli("deploy", str(out), check=False)
    assert alone.returncode == 2 and "name one with --manifest" in alone.stderr, alone.stderr
    command = shlex.split(built.stderr.rpartition("deploy it with: ")[2])
    assert command == ["fazt-host", "deploy", str(out), "--manifest", str(TEST_APPS / "probe" / "fazt.json")]
    assert "(prebuilt component," in cartridge.cli(*command[1:]).stdout  # before: "(cached build, ..."
    server = cartridge.serve()
    assert server.get("/probe/global").json() == {"counter": 1}
    assert server.get("/probe/file.txt").text == "static probe file\n"
    # Without a source map (a .wasm deploy has none) the stack is logged as the engine gave it.
    assert "@app.js:" in thrown_stack(cartridge, server)
    cartridge.deploy(TEST_APPS / "probe")  # from the build cache, its map with it
    assert thrown_stack(cartridge, server).startswith("raise@fail.js:3:9\n")
    cartridge.deploy(TEST_APPS / "probe", "--timeout-ms", "3000")  # the cartridge's component, and its map
    assert thrown_stack(cartridge, server).startswith("raise@fail.js:3:9\n")


def thrown_stack(cartridge, server) -> str:
    """The stack logged for a request to /probe/throw."""
    rid = server.get("/probe/throw").json()["requestId"]
    logs = cartridge.cli("logs", "probe", "--json", "-n", "50").stdout
    return [json.loads(line)["message"] for line in logs.splitlines() if rid in line][-1].partition("\n")[2]


def test_limits_from_the_command_line(cartridge):
    cartridge.deploy(TEST_APPS / "probe", "--timeout-ms", "300")
    server = cartridge.serve()
    started = time.monotonic()
    r = server.get("/probe/loop")
    assert r.status_code == 504 and "300 ms" in r.json()["error"]
    assert time.monotonic() - started < 2
    assert "--timeout-ms" in cartridge.cli("deploy", "--help").stdout


def test_handler_out_of_memory_mid_response_gets_a_clean_500(cartridge):
    cartridge.deploy(TEST_APPS / "probe", "--memory-mb", "24")
    server = cartridge.serve()
    r = server.request("POST", "/probe/echo", content=b"x" * (8 << 20))
    assert r.status_code == 500 and r.json()["requestId"]
    assert server.request("POST", "/probe/echo", content=b"small").content == b"small"


def test_body_limit_from_manifest_applies_to_chunked_bodies(cartridge, tmp_path):
    app = copy_app(TEST_APPS / "probe", tmp_path / "probe", limits={"bodyMb": 1})
    cartridge.deploy(app)
    server = cartridge.serve()
    r = server.request("POST", "/probe/digest", content=iter([b"x" * 600_000, b"y" * 600_000]))
    assert r.status_code == 413 and "1 MiB" in r.json()["error"]
    r = server.request("POST", "/probe/digest", content=b"z" * 2_000_000)
    assert r.status_code == 413 and r.headers["connection"] == "close"  # its body is left unread
    assert server.request("POST", "/probe/digest", content=b"ok").json()["length"] == 2


def test_deploy_killed_half_way_leaves_previous_version_live(cartridge, tmp_path):
    cartridge.deploy(APPS / "hello")
    server = cartridge.serve()
    changed = copy_app(APPS / "hello", tmp_path / "changed")
    (changed / "index.js").write_text((changed / "index.js").read_text().replace("world", "changed"))
    for delay in (0.5, 3.0):
        proc = subprocess.Popen([FAZT, "deploy", str(changed)], env=cartridge.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert server.get("/hello/hello").json()["hello"] == "world"
        assert integrity(cartridge.path) == "ok"
        assert json.loads(cartridge.cli("apps", "--json").stdout)[0]["version"] == 1


def running_children(pid: int) -> list[int]:
    """Processes whose parent is `pid`, zombies left out."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_deploy_killed_during_its_build_stops_the_build(cartridge, tmp_path):
    app = copy_app(APPS / "hello", tmp_path / "orphan", name="orphan")
    (app / "index.js").write_text((app / "index.js").read_text().replace("world", "orphan"))
    proc = subprocess.Popen([FAZT, "deploy", str(app)], env=cartridge.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:
        if "componentizing" in line:
            break
    builds = running_children(proc.pid)
    assert builds
    proc.kill()  # the deploy alone, as the OOM killer or `kill -9 PID` would
    proc.wait()
    deadline = time.monotonic() + 5
    while any(map(running, builds)) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in builds if running(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans


def test_a_deploy_stopped_with_sigterm_removes_its_build_folder(cartridge, tmp_path):
    app = copy_app(APPS / "hello", tmp_path / "stopped", name="stopped")
    (app / "index.js").write_text((app / "index.js").read_text().replace("world", "stopped"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.Popen([FAZT, "deploy", str(app)], env={**cartridge.env, "TMPDIR": str(scratch)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:
        if "componentizing" in line:
            break
    builds = running_children(proc.pid)
    assert builds and list(scratch.glob("fazt-build-*"))
    proc.terminate()
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert not list(scratch.glob("fazt-build-*"))  # before: left behind, node's scratch files and all
    assert not any(map(running, builds))


def test_backup_while_serving_is_consistent(cartridge, tmp_path):
    cartridge.deploy(APPS / "hello")
    cartridge.deploy(TEST_APPS / "probe")
    server = cartridge.serve()
    stop = threading.Event()
    errors = []

    def load():
        with httpx.Client(base_url=server.base) as c:
            while not stop.is_set():
                if c.get("/probe/log").status_code != 200:
                    errors.append("request failed")

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        out = tmp_path / "copy.db"
        cartridge.cli("backup", str(out))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert integrity(out) == "ok"
    copy = Cartridge(out, cartridge.env["FAZT_CACHE"])
    assert sorted(a["name"] for a in json.loads(copy.cli("apps", "--json").stdout)) == ["hello", "probe"]
    served_copy = copy.serve()
    try:
        assert served_copy.get("/hello/hello").json()["hello"] == "world"
    finally:
        served_copy.stop()
    assert cartridge.cli("backup", str(cartridge.path), check=False).returncode == 2


def test_backup_refuses_a_folder_or_the_cartridge_files_and_leaves_nothing(cartridge, tmp_path):
    cartridge.deploy(APPS / "hello")
    folder = tmp_path / "backups"
    folder.mkdir()
    proc = cartridge.cli("backup", str(folder), check=False)
    assert proc.returncode == 2 and "is a folder" in proc.stderr
    assert not (tmp_path / "backups.partial").exists()  # no 1:1 sized copy left behind
    wal = cartridge.path.with_name(cartridge.path.name + "-wal")
    assert cartridge.cli("backup", str(wal), check=False).returncode == 2
    proc = cartridge.cli("backup", str(tmp_path / "nowhere" / "copy.db"), check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_domain_routing_by_host_header(cartridge):
    cartridge.deploy(APPS / "hello")
    server = cartridge.serve("--domain", "apps.test")
    r = server.get("/hello", headers={"host": "hello.apps.test"})
    assert r.status_code == 200 and r.json()["hello"] == "world"
    assert server.get("/", headers={"host": "hello.apps.test"}).text.startswith("<!doctype html>")
    assert server.get("/hello/hello").json()["hello"] == "world"  # the path prefix still works
    assert server.get("/x", headers={"host": "nope.apps.test"}).status_code == 404
    # A fully qualified name (trailing dot) names the same host.
    assert server.get("/hello", headers={"host": "hello.apps.test.:8080"}).json()["hello"] == "world"


def test_restart_maps_cached_artifacts_without_recompiling(cartridge):
    cartridge.deploy(APPS / "hello")
    cache = Path(cartridge.env["FAZT_CACHE"])
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.cwasm")}
    server = cartridge.serve()
    assert server.get("/hello/hello").status_code == 200
    server.stop()
    started = time.monotonic()
    server = cartridge.serve()
    assert server.get("/hello/hello").status_code == 200
    assert time.monotonic() - started < 5
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.cwasm")} == before


def test_cache_deleted_or_corrupted_while_serving(cartridge, tmp_path, cache_dir):
    private = tmp_path / "cache"
    shutil.copytree(cache_dir, private)
    cartridge.env["FAZT_CACHE"] = str(private)
    cartridge.deploy(APPS / "hello")
    server = cartridge.serve()
    assert server.get("/hello/hello").status_code == 200
    # corrupt every compiled artifact in place: the digest check refuses it and it is rebuilt
    for artifact in private.glob("*.cwasm"):
        artifact.write_bytes(artifact.read_bytes()[:1000] + b"garbage")
    assert server.get("/hello/hello").status_code == 200  # already mapped in this worker
    server.stop()
    server = cartridge.serve(ready_timeout=180)
    # `up` compiles it again before serving, not the first request (which held up its worker meanwhile).
    assert server.get("/hello/hello", timeout=5).json()["hello"] == "world"
    server.stop()
    assert "compiling hello v1: its compiled code is damaged" in server.proc.stderr.read().decode()
    # A missing artifact is compiled by `up` before it serves, not by the first request.
    shutil.rmtree(private)
    server = cartridge.serve(ready_timeout=180)
    assert list(private.glob("*.cwasm")), "the missing artifact was not compiled before serving"
    assert server.get("/hello/hello").json()["hello"] == "world"
    server.stop()
    assert "compiling hello v1: its compiled code is missing" in server.proc.stderr.read().decode()
    # So does a rollback, for the version it activates, before switching to it.
    cartridge.deploy(APPS / "hello", "--timeout-ms", "5000")  # v2, the same component
    shutil.rmtree(private)
    rolled = cartridge.cli("rollback", "hello")
    assert "compiling hello v1: its compiled code is missing" in rolled.stderr and rolled.stdout == "hello now serves v1\n"
    assert list(private.glob("*.cwasm"))


def test_compiled_code_deleted_while_serving_is_compiled_off_the_wasm_threads(cartridge, tmp_path, cache_dir):
    private = tmp_path / "cache"
    shutil.copytree(cache_dir, private)
    cartridge.env["FAZT_CACHE"] = str(private)
    cartridge.deploy(APPS / "hello")
    cartridge.deploy(TEST_APPS / "probe")
    server = cartridge.serve(workers=1)
    assert server.get("/probe/random").status_code == 200  # mapped; hello is not yet
    shutil.rmtree(private)
    waiting = [threading.Thread(target=server.get, args=("/hello/hello",), kwargs={"timeout": 180}) for _ in range(6)]
    for t in waiting:
        t.start()  # more requests than the worker has wasm threads, all waiting for hello's compile
    time.sleep(0.5)
    started = time.monotonic()
    assert server.get("/probe/random").status_code == 200
    assert time.monotonic() - started < 2  # before: every wasm thread waited on the compile with them
    for t in waiting:
        t.join()
    assert server.get("/hello/hello").json()["hello"] == "world" and list(private.glob("*.cwasm"))


def test_remove_app_and_its_log(cartridge):
    cartridge.deploy(APPS / "hello")
    cartridge.deploy(TEST_APPS / "probe")
    server = cartridge.serve()
    assert server.get("/probe/log").status_code == 200
    assert "a warning" in cartridge.cli("logs", "probe").stdout
    cartridge.cli("remove", "probe")
    conn = apsw.Connection(str(cartridge.path))
    assert conn.execute("SELECT count(*) FROM logs WHERE app = 'probe'").fetchone()[0] == 0
    gone = cartridge.cli("logs", "probe", check=False)
    assert gone.returncode == 1 and gone.stderr == "error: no app named 'probe'\n" and gone.stdout == ""
    cartridge.cli("remove", "hello")
    assert json.loads(cartridge.cli("apps", "--json").stdout) == []
    assert cartridge.cli("remove", "hello", check=False).returncode == 1


def test_a_request_still_running_when_its_app_is_removed_leaves_nothing_behind(cartridge, tmp_path):
    """Before: its documents, objects and log lines were written after the removal, and the next app
    of that name found them."""
    app = tmp_path / "late"
    app.mkdir()
    (app / "fazt.json").write_text('{"name": "late"}')
    (app / "index.js").write_text("""
import { db, storage } from 'fazt';
export default {
  async fetch(request) {
    if (new URL(request.url).pathname === '/seen') {
      const { data } = await db.from('late').select();
      const { data: objects } = await storage.from('late').list();
      return Response.json({ docs: data, objects: objects ?? [] });
    }
    await new Promise((resolve) => setTimeout(resolve, 1500));
    console.log('still running');
    const doc = await db.from('late').insert({ n: 1 });
    const object = await storage.from('late').upload('k', 'x');
    return Response.json({ doc: doc.error?.code ?? null, object: object.error?.statusCode ?? null });
  },
};
""")
    cartridge.deploy(app)
    server = cartridge.serve()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(server.get, "/late/write")
        time.sleep(0.7)
        cartridge.cli("remove", "late")
        answer = running.result(timeout=30).json()
    assert answer == {"doc": "42P01", "object": "404"}, answer
    cartridge.deploy(app)
    assert server.get("/late/seen").json() == {"docs": [], "objects": []}
    assert "still running" not in cartridge.cli("logs", "late").stdout


def test_logs_of_an_unknown_app_is_an_error(cartridge):
    cartridge.deploy(APPS / "hello")
    proc = cartridge.cli("logs", "nosuchapp", check=False)
    assert proc.returncode == 1 and proc.stderr == "error: no app named 'nosuchapp'\n" and proc.stdout == ""
    assert cartridge.cli("logs", "hello").returncode == 0


def test_negative_counts_are_usage_errors(tmp_path):
    for args in (["logs", "x", "-n", "-1"], ["cron", "history", "x", "-n", "-1"], ["docs", "x", "c", "--limit", "-1"],
                 ["blobs", "x", "--limit", "-1"], ["import", "x", "c", "-", "--batch", "-1"]):
        proc = subprocess.run([FAZT, *args, "--cartridge", str(tmp_path / "fazt.db")], capture_output=True, text=True)
        least = 1 if "--batch" in args or "blobs" in args else 0  # a batch holds a document; a listing an object
        assert proc.returncode == 2 and f"must be {least} or more, not -1" in proc.stderr and proc.stdout == "", (args, proc.stderr)
    assert not (tmp_path / "fazt.db").exists()


def test_build_into_a_missing_folder_fails_before_building(cartridge, tmp_path):
    out = tmp_path / "missing" / "dir" / "probe.wasm"
    proc = cartridge.cli("build", str(TEST_APPS / "probe"), "-o", str(out), check=False)
    assert proc.returncode == 1, proc.stderr
    # Said before the build (nothing else on stderr), not as a traceback after it.
    assert proc.stderr == f"error: {out}: the folder {out.parent} does not exist\n"
    assert not out.parent.exists()


def test_read_commands_do_not_create_a_cartridge(tmp_path):
    missing = tmp_path / "typo.db"
    for args in (["apps"], ["logs", "x"], ["rollback", "x"], ["remove", "x"]):
        proc = subprocess.run([FAZT, *args, "--cartridge", str(missing)], capture_output=True, text=True)
        assert proc.returncode == 1 and "no cartridge" in proc.stderr
    assert not missing.exists()


def test_help_lists_the_commands():
    out = subprocess.run([FAZT, "--help"], capture_output=True, text=True).stdout
    for command in ("up", "deploy", "build", "apps", "logs", "rollback", "backup"):
        assert command in out


def test_up_deploys_then_serves(cartridge):
    server = cartridge.serve("--deploy", str(APPS / "hello"), str(TEST_APPS / "probe"))
    assert server.get("/hello/hello").json()["hello"] == "world"
    assert server.get("/probe/global").json() == {"counter": 1}


def test_up_refuses_limit_flags_with_nothing_to_deploy(cartridge):
    # They apply to the apps of --deploy; without it they would silently change nothing.
    proc = cartridge.cli("up", "--port", "1", "--timeout-ms", "500", check=False, timeout=30)
    assert proc.returncode == 2 and "--timeout-ms" in proc.stderr


@pytest.mark.parametrize("flags, message", [
    (("--host", "256.1.1.1"), "is not an IP address"),  # before: "serving ..." printed, then a ValueError
    (("--host", "localhost"), "is not an IP address"),
    (("--port", "0"), "--port 0"),  # before: "serving on http://127.0.0.1:0", the real port untold
])
def test_up_refuses_an_address_it_cannot_serve_on(cartridge, flags, message):
    proc = cartridge.cli("up", *flags, check=False, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr and "serving" not in proc.stderr, proc.stderr


def test_deploy_with_a_relative_path(cartridge, tmp_path):
    app = copy_app(APPS / "hello", tmp_path / "rel", name="rel")
    (app / "index.js").write_text((app / "index.js").read_text().replace("world", "relative"))
    proc = subprocess.run([FAZT, "deploy", "rel"], cwd=tmp_path, env=cartridge.env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert cartridge.serve().get("/rel/hello").json()["hello"] == "relative"


def test_builds_killed_outright_leave_no_work_folders_behind(tmp_path, monkeypatch):
    from fazt_host import build

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale, fresh, other = tmp_path / "fazt-build-stale", tmp_path / "fazt-build-fresh", tmp_path / "unrelated"
    for folder in (stale, fresh, other):
        (folder / "inner").mkdir(parents=True)
    old = time.time() - build.STALE_WORK_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    build.sweep_stale_work()  # run by every build, before its own
    assert not stale.exists() and fresh.exists() and other.exists()


def test_npm_packages_and_modules_outside_the_source_walk_are_bundled_and_rebuild_when_changed(cartridge, tmp_path):
    app = copy_app(APPS / "hello", tmp_path / "deps" / "app")
    package = app / "node_modules" / "pad"
    package.mkdir(parents=True)
    # Only "main": wrangler's resolution reads it; esbuild's neutral platform alone did not.
    (package / "package.json").write_text('{"name": "pad", "main": "lib/entry.js"}')
    (package / "lib").mkdir()
    (package / "lib" / "entry.js").write_text('module.exports = (s) => "<" + s + ">";\n')
    (tmp_path / "deps" / "shared.js").write_text('export const shared = "one";\n')
    def importing(shared_module: str) -> None:
        (app / "index.js").write_text(
            f'import pad from "pad";\nimport {{ shared }} from "{shared_module}";\n'
            'export default { async fetch() { return Response.json({ padded: pad("a"), shared }); } };\n')

    importing("../shared.js")
    assert json.loads(cartridge.deploy(app, "--json").stdout)["built"]
    assert not json.loads(cartridge.deploy(app, "--json").stdout)["built"]  # unchanged: no build
    server = cartridge.serve()
    assert server.get("/hello/deps").json() == {"padded": "<a>", "shared": "one"}
    # before: both redeploys said the code was unchanged and the old bundle stayed live
    (package / "lib" / "entry.js").write_text('module.exports = (s) => "[" + s + "]";\n')
    assert json.loads(cartridge.deploy(app, "--json").stdout)["built"]
    assert server.get("/hello/deps").json() == {"padded": "[a]", "shared": "one"}
    (tmp_path / "deps" / "shared.js").write_text('export const shared = "two";\n')
    assert json.loads(cartridge.deploy(app, "--json").stdout)["built"]
    assert server.get("/hello/deps").json() == {"padded": "[a]", "shared": "two"}
    # files with no code of their own in the bundle: a package.json choosing the entry, a module that only
    # re-exports (before: "unchanged source", the old bundle live)
    (package / "lib" / "other.js").write_text('module.exports = (s) => "(" + s + ")";\n')
    (package / "package.json").write_text('{"name": "pad", "main": "lib/other.js"}')
    assert json.loads(cartridge.deploy(app, "--json").stdout)["built"]
    assert server.get("/hello/deps").json() == {"padded": "(a)", "shared": "two"}
    (tmp_path / "deps" / "reexport.js").write_text('export { shared } from "./shared.js";\n')
    (tmp_path / "deps" / "later.js").write_text('export const shared = "three";\n')
    importing("../reexport.js")
    assert json.loads(cartridge.deploy(app, "--json").stdout)["built"]
    (tmp_path / "deps" / "reexport.js").write_text('export { shared } from "./later.js";\n')
    assert json.loads(cartridge.deploy(app, "--json").stdout)["built"]
    assert server.get("/hello/deps").json() == {"padded": "(a)", "shared": "three"}
    (app / "index.js").write_text('import fs from "node:fs";\nexport default { fetch() { return new Response(fs); } };\n')
    refused = cartridge.cli("deploy", str(app), check=False)
    assert refused.returncode == 1 and "Node.js modules do not exist in the sandbox" in refused.stderr


def test_unusable_cartridges_addresses_and_outputs_are_named_before_any_work(cartridge, tmp_path):
    def fails(*args: str) -> str:
        proc = cartridge.cli(*args, check=False, timeout=60)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and "Error:" not in proc.stderr, proc.stderr
        return proc.stderr

    # before: "CantOpenError: unable to open database file", "NotADBError: file is not a database"
    assert "its folder does not exist" in fails("deploy", str(APPS / "hello"), "--cartridge", str(tmp_path / "nowhere" / "x.db"))
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    assert "is not a cartridge" in fails("apps", "--cartridge", str(tmp_path / "junk.db"))
    cartridge.deploy(APPS / "hello")
    newer = tmp_path / "newer.db"
    shutil.copy(cartridge.path, newer)
    conn = apsw.Connection(str(newer))
    conn.execute("UPDATE schema SET version = version + 5 WHERE owner = 'host'")
    conn.close()
    assert "written by a newer fazt-host" in fails("apps", "--cartridge", str(newer))  # before: served as if known
    # before: a Rust backtrace after "serving ..."
    assert "cannot serve on 10.255.255.1" in fails("up", "--host", "10.255.255.1", "--port", "18999")
    # before: refused only after a build of many seconds
    assert "is a folder" in fails("build", str(APPS / "hello"), "-o", str(tmp_path))
