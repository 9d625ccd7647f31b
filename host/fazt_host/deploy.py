"""`fazt-host deploy`: app folder or prebuilt component -> active version.

Nothing is written to the cartridge until the component is built, checked
against the fazt:host world and compiled; then one transaction stores and
activates it. A deploy killed at any point leaves the previous version live.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from wasmtime import WasmtimeError
from wasmtime.component import Component

import msgspec

from . import apps, build, cartridge
from .apps import FileEntry
from .build import BuildError
from .config import Manifest, ManifestError, load_manifest
from .host import Host
from .runtime import ValidationError
from .runtime.engine import sha256
from .triggers.cron import checks as cron


class DeployError(Exception):
    pass


class InvalidManifest(DeployError):
    """The fazt.json (or a limit given on the command line) is invalid: a usage error, not a failed deploy."""


@dataclass
class Deployment:
    app: str
    version: int
    component: str
    built: bool
    static_files: int
    seconds: float
    unchanged: bool = False
    phases: dict[str, float] = field(default_factory=dict)  # seconds: build, compile, store
    prebuilt: bool = False  # a component .wasm, not built from JS


@dataclass
class AppSource:
    folder: Path
    manifest: Manifest
    prebuilt: Path | None  # a component .wasm, when not building from JS


def resolve(path: Path, manifest_path: Path | None = None) -> AppSource:
    """An app folder (fazt.json + JS entry or a .wasm entry), or a .wasm file with its fazt.json."""
    path = Path(path)
    if path.is_file() and path.suffix == ".wasm":
        if manifest_path is None and not (path.parent / "fazt.json").is_file():
            raise ManifestError(f"{path.parent / 'fazt.json'}: not found: a .wasm deploys with its fazt.json "
                                "beside it, or name one with --manifest")
        manifest_path = manifest_path or path.parent / "fazt.json"
        src = AppSource(manifest_path.parent, load_manifest(manifest_path), path)
    elif path.is_dir():
        manifest = load_manifest(manifest_path or path / "fazt.json")
        if not (path / manifest.entry).is_file():
            raise ManifestError(f"entry {manifest.entry!r}: {path / manifest.entry} not found (set \"entry\" in fazt.json)")
        prebuilt = path / manifest.entry if manifest.entry.endswith(".wasm") else None
        src = AppSource(path, manifest, prebuilt)
    else:
        raise DeployError(f"{path}: not an app folder or a .wasm component")
    # The manifest's paths are relative and free of "..", but a symlink among them could still
    # lead out of the folder (a "public" linked to /etc would be served to anyone).
    m = src.manifest
    for field, rel in [("entry", m.entry), ("static", m.static)] + [(f"cron {e.name!r} file", e.file) for e in m.cron if e.file]:
        if not (src.folder / rel).resolve().is_relative_to(src.folder.resolve()):
            raise ManifestError(f"{field} {rel!r} leads out of the app folder through a symlink")
    return src


@dataclass
class Built:
    wasm: bytes | None  # None: the cartridge has it
    digest: str
    source_hash: str
    sources: list[FileEntry]
    fresh: bool  # built by this deploy, not found in a cache
    source_map: FileEntry | None = None  # a prebuilt component has none


def component_bytes(host: Host, src: AppSource, progress) -> Built:
    if src.prebuilt is not None:
        wasm = src.prebuilt.read_bytes()
        digest = sha256(wasm)
        return Built(wasm, digest, digest, [], False)
    sources = build.app_sources(src.folder, src.manifest)
    base = build.source_hash(sources, msgspec.json.encode([src.manifest.entry, cron.cron_files(src.manifest)]).decode())
    builds = host.settings.cache_dir / "builds"
    # The files the last build of this source also bundled (its node_modules, say) count too: a
    # changed dependency rebuilds. Their list is kept beside the builds, by `base`.
    outside_list = builds / f"{base}.outside"
    outside = msgspec.json.decode(outside_list.read_bytes()) if outside_list.is_file() else []
    source_hash = build.with_outside(base, src.folder, outside)
    known = apps.component_for_source(host.conn, source_hash)
    if known is not None:
        progress.write(f"  unchanged source: reusing component {known[:12]}\n")
        return Built(None, known, source_hash, sources, False, map_entry(apps.source_map_for(host.conn, known)))
    cached = builds / f"{source_hash}.wasm"
    if cached.is_file():
        progress.write(f"  unchanged source: reusing the build in {cached.parent}\n")
        wasm = cached.read_bytes()
        return Built(wasm, sha256(wasm), source_hash, sources, False, map_entry(read_if_there(cached.with_suffix(".map"))))
    progress.write(f"  building {src.manifest.name} from {src.manifest.entry}\n")
    wasm, source_map = build.build_component(src.folder, src.manifest.entry, progress, cron.cron_files(src.manifest))
    outside = build.bundled_outside(sources, source_map)
    write_atomically(outside_list, msgspec.json.encode(outside))
    source_hash = build.with_outside(base, src.folder, outside)  # this build's own list
    cached = builds / f"{source_hash}.wasm"
    if source_map is not None:  # before the component: a cached component finds its map beside it
        write_atomically(cached.with_suffix(".map"), source_map)
    write_atomically(cached, wasm)
    return Built(wasm, sha256(wasm), source_hash, sources, True, map_entry(source_map))


def map_entry(data: bytes | None) -> FileEntry | None:
    return FileEntry(apps.SOURCE_MAP, sha256(data), data) if data is not None else None


def read_if_there(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


WASM_MAGIC = b"\0asm"
CORE_MODULE_VERSION = b"\x01\x00\x00\x00"  # a component's header has layer 1 after its version


def not_a_component(wasm: bytes | None) -> str:
    """Why bytes wasmtime refused are no component of our world, as far as their header tells."""
    if wasm is not None and not wasm.startswith(WASM_MAGIC):
        return "not a WebAssembly component: the file does not start with WebAssembly's \\0asm header"
    if wasm is not None and wasm[4:8] == CORE_MODULE_VERSION:
        return "a core WebAssembly module, not a component: build the app with `fazt-host build`"
    return "not a WebAssembly component of the fazt:host world"


def compile_checked(host: Host, digest: str, wasm: bytes | None, progress) -> None:
    """Compiles into the cache (unless there already) after checking the component fits our world."""
    host.start_ticker()
    try:
        component = host.cache.map(digest)
        if component is None:
            if wasm is None:
                wasm = cartridge.get_object(host.conn, digest)
                if wasm is None:
                    raise DeployError(f"component {digest[:12]} vanished from the cartridge; deploy again")
            if not wasm.startswith(WASM_MAGIC):  # wasmtime would read it as WebAssembly text
                raise DeployError(not_a_component(wasm))
            progress.write("  compiling to native code\n")
            component = Component(host.engine, wasm)
            host.runtime.validate(component)
            host.cache.store(digest, component)
        else:
            host.runtime.validate(component)
    except WasmtimeError as e:
        first = (str(e).strip().splitlines() or ["invalid"])[0]
        raise DeployError(f"{not_a_component(wasm)}: {first}") from None
    except ValidationError as e:
        raise DeployError(str(e)) from None


def compile_if_missing(host: Host, digest: str, label: str, progress) -> bool:
    """Compiles a stored component whose artifact is not in the cache (a deleted cache folder) or
    does not match its digest, so that no request waits on the compiler."""
    state = host.cache.state(digest)
    if state == "intact":
        return False
    progress.write(f"compiling {label}: its compiled code is {state} in {host.cache.folder}\n")
    compile_checked(host, digest, None, progress)
    return True


def compile_missing(host: Host, progress=sys.stderr) -> int:
    """Compiles every active app's missing artifact; the number that could not be compiled
    (each said on `progress`: those apps answer with an error until deployed again)."""
    failed = 0
    for name, d in apps.load_active(host.conn).items():
        try:
            compile_if_missing(host, d.component, f"{name} v{d.version}", progress)
        except DeployError as e:
            progress.write(f"error: {name} v{d.version}: {e}\n")
            failed += 1
    return failed


def deploy(host: Host, path: Path, manifest_path: Path | None = None, limits: dict | None = None, progress=sys.stderr) -> Deployment:
    started = time.perf_counter()
    try:
        src = resolve(path, manifest_path)
    except ManifestError as e:
        raise InvalidManifest(str(e)) from None
    manifest = src.manifest
    if limits:
        try:
            manifest = msgspec.structs.replace(manifest, limits=manifest.limits.merged(limits))
        except ValueError as e:
            raise InvalidManifest(f"limits: {e}") from None
    try:
        cron.check_deploy(src.folder, manifest, src.prebuilt is not None, host.settings.cron_min_interval)
    except ValueError as e:  # ManifestError too: either way fazt.json must change
        raise InvalidManifest(str(e)) from None
    static_dir = src.folder / manifest.static
    phases = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 4)
        mark = now

    try:
        built = component_bytes(host, src, progress)
        links: list[Path] = []
        static = build.read_files(static_dir, dot_dirs=build.STATIC_DOT_DIRS, links=links) if static_dir.is_dir() else []
    except BuildError as e:
        raise DeployError(str(e)) from None
    if links:
        shown = ", ".join(str(p.relative_to(src.folder)) for p in links[:5]) + (", ..." if len(links) > 5 else "")
        progress.write(f"  left out {len(links)} symlink{'s' * (len(links) != 1)} in {manifest.static}/ ({shown}): "
                       "links are not followed; copy the files in\n")
    phase("build")
    compile_checked(host, built.digest, built.wasm, progress)
    if manifest.cron:
        if not cron.exports_scheduled(host.guest(built.digest)):
            raise DeployError("the component does not export handler#scheduled, which its cron entries need")
        missing = cron.missing_handlers(host, built.digest, [e.name for e in manifest.cron])
        if missing:
            entry = next(e for e in manifest.cron if e.name == missing[0])
            if entry.file:  # the code is wrong, not fazt.json
                raise DeployError(f"cron entry {entry.name!r}: {entry.file} must export default a function "
                                  "(event, ctx), or an object with one as its scheduled")
            raise InvalidManifest(
                f"cron entry {missing[0]!r} has no handler: give it a \"file\" or export default "
                "{ async scheduled(event, ctx) { ... } } from the entry module"
            )
    phase("compile")
    version = apps.same_as_active(host.conn, manifest, built.source_hash, built.digest, static)
    unchanged = version is not None
    notes: list[str] = []
    if not unchanged:
        component = FileEntry("component.wasm", built.digest, built.wasm) if built.wasm is not None else None
        try:
            version = apps.store_version(
                host.conn, manifest, built.source_hash, built.digest, component, built.sources, static,
                host.capabilities, notes, built.source_map,
            )
        except ValueError as e:
            raise DeployError(f"{manifest.name}: {e}; the live version keeps serving") from None
    else:
        # No new version, but fazt.json's declarations apply again: a declared bucket
        # made private or deleted since is as declared once more.
        with cartridge.transaction(host.conn):
            apps.configure(host.conn, manifest, host.capabilities, notes)
    for note in notes:
        progress.write(f"  {note}\n")
    phase("store")
    return Deployment(
        manifest.name, version, built.digest, built.fresh, len(static), time.perf_counter() - started, unchanged, phases,
        src.prebuilt is not None,
    )
