"""JS app folder -> WebAssembly component, cached by source hash.

The build runs `guest-sdk/build.mjs` (esbuild bundle + componentize-js). The
source hash covers the app's own files and the toolchain (SDK, WIT, build
script, npm lock), so an unchanged app is never rebuilt and a changed SDK
always is.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .apps import FileEntry
from .config import Manifest

ROOT = Path(__file__).resolve().parents[2]
SDK = Path(os.environ.get("FAZT_SDK", ROOT / "guest-sdk"))
WIT = Path(os.environ.get("FAZT_WIT", ROOT / "wit"))

MAX_APP_BYTES = 64 << 20
SKIP_DIRS = {"node_modules", ".git"}
# The one dot folder of an app's static files that is served (RFC 8615: ACME challenges,
# security.txt, app links); other dot files, such as .env or .git, stay out.
STATIC_DOT_DIRS = frozenset({".well-known"})


class BuildError(Exception):
    pass


def _walk(folder: Path, skip: set[Path], dot_dirs: frozenset[str], links: list[Path] | None = None) -> list[Path]:
    """Files under `folder`, leaving out dot files and dot folders but the top-level `dot_dirs`, and
    symlinks (one could lead anywhere on the machine), which go to `links` if given."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        if links is not None:  # os.walk lists a linked folder but does not go in
            links.extend(here / d for d in dirnames if (here / d).is_symlink())
        dirnames[:] = sorted(
            d for d in dirnames
            if d not in SKIP_DIRS and here / d not in skip and (not d.startswith(".") or here == folder and d in dot_dirs)
        )
        for name in sorted(filenames):
            path = here / name
            if name.startswith("."):
                continue
            if path.is_symlink():
                if links is not None:
                    links.append(path)
                continue
            if not path.is_file():
                continue
            found.append(path)
    return found


def read_files(
    folder: Path, skip: set[Path] = frozenset(), suffixes: tuple[str, ...] | None = None, dot_dirs: frozenset[str] = frozenset(),
    links: list[Path] | None = None,
) -> list[FileEntry]:
    """The files under `folder` as entries with '/'-separated relative paths; bounded in total size.
    Symlinks are not followed: they go to `links` if given."""
    entries, total = [], 0
    for path in _walk(folder, set(skip), dot_dirs, links):
        if suffixes and not path.name.endswith(suffixes):
            continue
        data = path.read_bytes()
        total += len(data)
        if total > MAX_APP_BYTES:
            raise BuildError(f"{folder}: the app's files exceed {MAX_APP_BYTES >> 20} MiB: keep large files in "
                             "storage (fazt-host blobs, the S3 endpoint) rather than in the app folder")
        rel = path.relative_to(folder).as_posix()
        entries.append(FileEntry(rel, hashlib.sha256(data).hexdigest(), data))
    return entries


SOURCE_SUFFIXES = (".js", ".mjs", ".cjs", ".jsx", ".ts", ".mts", ".cts", ".tsx", ".json", ".txt", ".html", ".css", ".svg", ".md")


def app_sources(folder: Path, manifest: Manifest) -> list[FileEntry]:
    """The files a build reads. fazt.json is not one of them (what it tells the build goes in as
    `inputs`), so changing limits, indexes or schedules redeploys without rebuilding."""
    return [e for e in read_files(folder, {folder / manifest.static}, SOURCE_SUFFIXES) if e.path != "fazt.json"]


def toolchain_hash() -> str:
    digest = hashlib.sha256()
    files = [SDK / "build.mjs", SDK / "bindings-hook.mjs", SDK / "package-lock.json", *sorted((SDK / "src").rglob("*.js")), *sorted(WIT.glob("*.wit"))]
    for path in files:
        digest.update(path.relative_to(path.parents[1]).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def source_hash(sources: list[FileEntry], inputs: str = "") -> str:
    """`inputs`: what the manifest tells the build (entry, cron files), which may come from --manifest."""
    digest = hashlib.sha256(toolchain_hash().encode() + inputs.encode())
    for entry in sources:
        digest.update(b"\0" + entry.path.encode() + b"\0" + entry.digest.encode())
    return digest.hexdigest()


def bundled_outside(sources: list[FileEntry], source_map: bytes | None) -> list[str]:
    """The app's files a bundle was made of that `app_sources` leaves out (an npm package in
    node_modules, a dot folder, a module outside the app folder), from the bundle's source map:
    its list of every input (code or not: a module that only re-exports, a package.json), or for a
    bundle built before that list, its sources."""
    if source_map is None:
        return []
    found = json.loads(source_map)
    inputs = found.get("x_fazt_inputs")
    if inputs is None:
        ignored = set(found.get("ignoreList", []))  # the SDK's and the generated entry
        inputs = [s for i, s in enumerate(found.get("sources", [])) if i not in ignored]
    walked = {entry.path for entry in sources}
    return sorted({s for s in inputs if s not in walked})


def with_outside(base: str, folder: Path, outside: list[str]) -> str:
    """The source hash over `base` and the current contents of the files outside the walk."""
    if not outside:
        return base
    digest = hashlib.sha256(base.encode())
    for rel in outside:
        path = folder / rel
        digest.update(b"\0" + rel.encode() + b"\0" + (hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"-"))
    return digest.hexdigest()


def node_ready() -> None:
    if shutil.which("node") is None:
        raise BuildError("node is not installed: run `make up` (or install Node.js 20) to build JS apps")
    if not (SDK / "node_modules" / "@bytecodealliance" / "componentize-js").exists():
        raise BuildError(f"the guest SDK's npm packages are missing: run `npm ci` in {SDK} (or `make up`)")


PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """What the build's child runs before node: a deploy killed outright (SIGKILL, the OOM
    killer) takes its build with it, rather than leaving ~800 MB of node running on orphaned."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the deploy died before the line above
            os._exit(1)

    return arm


WORK_PREFIX = "fazt-build-"
STALE_WORK_S = 3600  # a build takes a minute or two: a work folder untouched for an hour is a killed one's


def sweep_stale_work() -> None:
    """Removes the work folders of builds that were killed (kill -9 leaves no chance to clean up)."""
    cutoff = time.time() - STALE_WORK_S
    for work in Path(tempfile.gettempdir()).glob(WORK_PREFIX + "*"):
        try:
            if work.is_dir() and work.stat().st_mtime < cutoff:
                shutil.rmtree(work, ignore_errors=True)
        except OSError:
            pass


def build_component(
    folder: Path, entry: str, progress=sys.stderr, cron: dict[str, str] | None = None
) -> tuple[bytes, bytes | None]:
    """Runs the JS build: (the component's bytes, its bundle's source map). Errors name file:line.

    `cron` maps cron entry names to their files: built into the same component.
    """
    node_ready()
    folder = folder.resolve()  # node runs inside the app folder
    entry_path = folder / entry  # present: deploy.resolve(), which every caller runs first, checks it
    sweep_stale_work()
    with tempfile.TemporaryDirectory(prefix=WORK_PREFIX) as tmp:
        out = Path(tmp) / "app.wasm"
        proc = subprocess.Popen(
            ["node", str(SDK / "build.mjs"), str(entry_path), str(out), "--wit", str(WIT),
             *(arg for name, file in (cron or {}).items() for arg in ("--cron", f"{name}={folder / file}"))],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # node's own scratch folder goes inside ours, which is removed however node ends
            env={**os.environ, "TMPDIR": tmp},
            preexec_fn=_die_with_parent(),
        )
        errors = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if line.startswith("progress: "):
                    progress.write("  " + line[len("progress: ") :])
                    progress.flush()
                else:
                    errors.append(line.rstrip("\n").removeprefix("error: "))
        except BaseException:  # interrupted (SIGTERM, Ctrl-C): node stops before its folder goes
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0 or not out.exists():
            raise BuildError("\n".join(errors) or f"the build of {entry_path} failed")
        source_map = out.with_name(out.name + ".map")
        return out.read_bytes(), source_map.read_bytes() if source_map.is_file() else None
