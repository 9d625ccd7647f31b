"""Apps and their versions in the cartridge: store, activate, roll back, list.

A deploy writes the whole version (component, sources, static files, the
source map of a component built from JS) and switches the app's active
version in one transaction, then bumps the cartridge's generation so every
worker picks it up on its next request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import apsw
import msgspec

from . import cartridge
from .artifacts import artifact_path, digest_path
from .cartridge import transaction
from .config import Manifest, decode_manifest

if TYPE_CHECKING:
    from .capabilities import Capability


@dataclass(frozen=True)
class Deployed:
    """The active version of an app, as a worker serves it."""

    name: str
    version: int
    manifest: Manifest
    component: str  # sha256 of the component, the key of its compiled artifact
    static: dict[str, tuple[str, int]]  # path (no leading '/') -> (object hash, size)


# The bundle's source map, a file of kind 'map' in a built version (guest-sdk/build.mjs).
SOURCE_MAP = "app.js.map"


@dataclass(frozen=True)
class FileEntry:
    path: str
    digest: str
    data: bytes


def store_version(
    conn: apsw.Connection,
    manifest: Manifest,
    source_hash: str,
    component_hash: str,
    component: FileEntry | None,
    sources: list[FileEntry],
    static: list[FileEntry],
    capabilities: Sequence[Capability] = (),
    notes: list[str] | None = None,
    source_map: FileEntry | None = None,
) -> int:
    """Stores a new version and makes it active; returns its number.

    Each capability configures the app inside the same transaction, so a
    refusal (ValueError) leaves the previous version live and untouched.
    """
    now = time.time()
    with transaction(conn):
        row = conn.execute("SELECT max(version) FROM versions WHERE app = ?", (manifest.name,)).fetchone()
        version = (row[0] or 0) + 1
        if component is not None:  # else the cartridge has it already (unchanged source)
            cartridge.put_object(conn, component.digest, component.data)
        conn.execute(
            "INSERT INTO versions(app, version, manifest, source_hash, component, created_at) VALUES (?,?,?,?,?,?)",
            (manifest.name, version, msgspec.json.encode(manifest).decode(), source_hash, component_hash, now),
        )
        for kind, entries in (("source", sources), ("static", static), ("map", [source_map] if source_map else [])):
            for entry in entries:
                cartridge.put_object(conn, entry.digest, entry.data)
                conn.execute(
                    "INSERT INTO files(app, version, kind, path, object, size) VALUES (?,?,?,?,?,?)",
                    (manifest.name, version, kind, entry.path, entry.digest, len(entry.data)),
                )
        conn.execute(
            "INSERT INTO apps(name, active, created_at, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET active = excluded.active, updated_at = excluded.updated_at",
            (manifest.name, version, now, now),
        )
        prune_versions(conn, manifest.name, manifest.keep_versions)
        configure(conn, manifest, capabilities, notes)
        cartridge.bump_generation(conn)
    return version


def configure(
    conn: apsw.Connection, manifest: Manifest, capabilities: Sequence[Capability], notes: list[str] | None = None
) -> None:
    for cap in capabilities:
        changed = cap.configure(conn, manifest)
        if notes is not None:
            notes.extend(changed)


def prune_versions(conn: apsw.Connection, app: str, keep: int) -> None:
    """Keeps the newest `keep` versions (and always the active one); drops unreferenced objects."""
    old = [
        v
        for (v,) in conn.execute(
            "SELECT version FROM versions WHERE app = ? AND version NOT IN (SELECT active FROM apps WHERE name = ?) "
            "ORDER BY version DESC LIMIT -1 OFFSET ?",
            (app, app, max(keep - 1, 0)),
        )
    ]
    if not old:
        return
    conn.executemany("DELETE FROM files WHERE app = ? AND version = ?", [(app, v) for v in old])
    conn.executemany("DELETE FROM versions WHERE app = ? AND version = ?", [(app, v) for v in old])
    conn.execute(
        "DELETE FROM objects WHERE hash NOT IN (SELECT object FROM files) "
        "AND hash NOT IN (SELECT component FROM versions)"
    )


def component_for_source(conn: apsw.Connection, source_hash: str) -> str | None:
    """The component already built from exactly this source, if the cartridge still has it."""
    row = conn.execute(
        "SELECT component FROM versions WHERE source_hash = ? ORDER BY created_at DESC LIMIT 1", (source_hash,)
    ).fetchone()
    return row[0] if row else None


def source_map_for(conn: apsw.Connection, component_hash: str) -> bytes | None:
    """The source map stored with a component built from JS (a prebuilt one has none)."""
    row = conn.execute(
        "SELECT f.object FROM versions v JOIN files f ON f.app = v.app AND f.version = v.version "
        "WHERE v.component = ? AND f.kind = 'map' ORDER BY v.created_at DESC LIMIT 1",
        (component_hash,),
    ).fetchone()
    return cartridge.get_object(conn, row[0]) if row else None


def source_map_of(conn: apsw.Connection, app: str, version: int) -> str | None:
    """The object hash of a version's source map, if it has one."""
    row = conn.execute(
        "SELECT object FROM files WHERE app = ? AND version = ? AND kind = 'map' AND path = ?",
        (app, version, SOURCE_MAP),
    ).fetchone()
    return row[0] if row else None


def active_manifest(conn: apsw.Connection, app: str) -> Manifest | None:
    """The manifest of the app's active version (None for an app not deployed)."""
    row = conn.execute(
        "SELECT v.manifest FROM apps a JOIN versions v ON v.app = a.name AND v.version = a.active WHERE a.name = ?",
        (app,),
    ).fetchone()
    return decode_manifest(row[0].encode()) if row else None


def same_as_active(
    conn: apsw.Connection, manifest: Manifest, source_hash: str, component_hash: str, static: list[FileEntry]
) -> int | None:
    """The active version's number if it is exactly this deploy (manifest, code, static files)."""
    row = conn.execute(
        "SELECT v.version, v.manifest, v.source_hash, v.component FROM apps a "
        "JOIN versions v ON v.app = a.name AND v.version = a.active WHERE a.name = ?",
        (manifest.name,),
    ).fetchone()
    if row is None or (row[1], row[2], row[3]) != (
        msgspec.json.encode(manifest).decode(),
        source_hash,
        component_hash,
    ):
        return None
    files = conn.execute(
        "SELECT path, object FROM files WHERE app = ? AND version = ? AND kind = 'static' ORDER BY path",
        (manifest.name, row[0]),
    ).fetchall()
    return row[0] if files == sorted((e.path, e.digest) for e in static) else None


def rollback_target(conn: apsw.Connection, app: str, version: int | None = None) -> tuple[int, str]:
    """The version a rollback activates (`version`, or the newest one older than the active one)
    and its component's hash."""
    row = conn.execute("SELECT active FROM apps WHERE name = ?", (app,)).fetchone()
    if row is None:
        raise LookupError(f"no app named {app!r}")
    if version is None:
        version = conn.execute("SELECT max(version) FROM versions WHERE app = ? AND version < ?", (app, row[0])).fetchone()[0]
        if version is None:
            raise LookupError(f"{app} has no version older than {row[0]} to roll back to")
    found = conn.execute("SELECT component FROM versions WHERE app = ? AND version = ?", (app, version)).fetchone()
    if found is None:
        raise LookupError(f"{app} has no version {version}")
    return version, found[0]


def rollback(
    conn: apsw.Connection, app: str, version: int | None = None, capabilities: Sequence[Capability] = ()
) -> int:
    """Activates `version`, or the newest one older than the active one."""
    with transaction(conn):
        version, _ = rollback_target(conn, app, version)
        conn.execute("UPDATE apps SET active = ?, updated_at = ? WHERE name = ?", (version, time.time(), app))
        manifest = conn.execute("SELECT manifest FROM versions WHERE app = ? AND version = ?", (app, version)).fetchone()[0]
        configure(conn, decode_manifest(manifest.encode()), capabilities)
        cartridge.bump_generation(conn)
    return version


def remove(conn: apsw.Connection, app: str, capabilities: Sequence[Capability] = ()) -> None:
    """Removes the app with everything it owned (its documents, logs...)."""
    with transaction(conn):
        if not conn.execute("SELECT 1 FROM apps WHERE name = ?", (app,)).fetchone():
            raise LookupError(f"no app named {app!r}")
        conn.execute("UPDATE apps SET active = 0 WHERE name = ?", (app,))
        prune_versions(conn, app, 0)
        conn.execute("DELETE FROM apps WHERE name = ?", (app,))
        for cap in capabilities:
            cap.forget(conn, app)
        cartridge.bump_generation(conn)


def listing(conn: apsw.Connection) -> list[dict]:
    rows = conn.execute(
        "SELECT a.name, a.active, v.created_at, a.updated_at, v.component, v.source_hash, "
        "(SELECT count(*) FROM versions WHERE app = a.name) "
        "FROM apps a JOIN versions v ON v.app = a.name AND v.version = a.active ORDER BY a.name"
    ).fetchall()
    return [
        {
            "name": name,
            "version": version,
            "versions": count,
            "deployedAt": created,  # the active version's deploy; a rollback activates an older one later
            "activatedAt": activated,
            "component": component,
            "sourceHash": source_hash,
        }
        for name, version, created, activated, component, source_hash, count in rows
    ]


def versions(conn: apsw.Connection, app: str) -> list[dict]:
    active = conn.execute("SELECT active FROM apps WHERE name = ?", (app,)).fetchone()
    if active is None:
        raise LookupError(f"no app named {app!r}")
    return [
        {"version": v, "createdAt": created, "component": comp, "active": v == active[0]}
        for v, created, comp in conn.execute(
            "SELECT version, created_at, component FROM versions WHERE app = ? ORDER BY version DESC", (app,)
        )
    ]


def load_active(conn: apsw.Connection) -> dict[str, Deployed]:
    deployed: dict[str, Deployed] = {}
    for name, version, manifest, component in conn.execute(
        "SELECT a.name, a.active, v.manifest, v.component FROM apps a "
        "JOIN versions v ON v.app = a.name AND v.version = a.active"
    ):
        static = {
            path: (obj, size)
            for path, obj, size in conn.execute(
                "SELECT path, object, size FROM files WHERE app = ? AND version = ? AND kind = 'static'",
                (name, version),
            )
        }
        deployed[name] = Deployed(name, version, decode_manifest(manifest.encode()), component, static)
    return deployed


def stale_artifacts(conn: apsw.Connection, cache_folder: Path) -> bool:
    """Whether an active app's compiled code is missing from the cache, or was written to after the
    digest beside it (damaged): `up` compiles those before it forks. Two stats an app; each worker
    checks a file against its digest anyway as it maps it, but would compile a damaged one itself."""
    for d in load_active(conn).values():
        path = artifact_path(cache_folder, d.component)
        try:
            if path.stat().st_mtime_ns > digest_path(path).stat().st_mtime_ns:
                return True
        except FileNotFoundError:
            return True
    return False


class Registry:
    """A worker's view of the active apps, refreshed when the cartridge's generation moves."""

    def __init__(self, conn: apsw.Connection):
        self.conn = conn
        self._data_version = -1
        self._generation = -1
        self.apps: dict[str, Deployed] = {}

    def refresh(self) -> dict[str, Deployed]:
        # data_version changes only when another connection committed: a cheap first check.
        data_version = self.conn.pragma("data_version")
        if data_version != self._data_version:
            self._data_version = data_version
            gen = cartridge.generation(self.conn)
            if gen != self._generation:
                self.apps = load_active(self.conn)
                self._generation = gen
        return self.apps
