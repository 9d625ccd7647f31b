"""`fazt-host blobs migrate APP --to s3|internal`: move an app's bytes between backends.

Each object is copied on its own, its copy read back and compared (SHA-256)
with what was read from the source, and only then pointed at its new bytes,
in a transaction that checks the object was not replaced meanwhile. So the
app keeps serving throughout, an interrupted run loses nothing (finished
objects stay moved, a half-copied one is an abandoned upload the sweep
deletes) and running it again resumes. Once nothing is left behind, the app
is switched (new uploads go to the target), and a last pass takes what was
uploaded to the old backend while the copies ran.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import apsw
from botocore.exceptions import BotoCoreError, ClientError

from ... import cartridge
from ...cartridge import transaction
from . import store
from .store import StorageError

BATCH = 100


def _left(conn: apsw.Connection, app: str, to: str, failed: set[int]) -> list[tuple[str, str, int, int]]:
    """Objects whose bytes are not in `to` yet, but those that failed in this run: (bucket, key, data id, size)."""
    rows = conn.execute(
        "SELECT b.name, o.key, o.data, o.size FROM blob_objects o JOIN blob_buckets b ON b.id = o.bucket "
        "JOIN blob_data d ON d.id = o.data WHERE b.app = ? AND (d.location IS NULL) = ? ORDER BY b.name, o.key LIMIT ?",
        (app, to == "s3", BATCH + len(failed)),
    ).fetchall()
    return [row for row in rows if row[2] not in failed][:BATCH]


def count_left(conn: apsw.Connection, app: str, to: str) -> tuple[int, int]:
    return conn.execute(
        "SELECT count(*), coalesce(sum(o.size), 0) FROM blob_objects o JOIN blob_buckets b ON b.id = o.bucket "
        "JOIN blob_data d ON d.id = o.data WHERE b.app = ? AND (d.location IS NULL) = ?",
        (app, to == "s3"),
    ).fetchone()


def move_object(conn: apsw.Connection, app: str, bucket: str, key: str, data: int, to: str,
                reader: apsw.Connection | None = None) -> bool:
    """Copies one object's bytes to `to`, verifies them, repoints it; False if it changed meanwhile.
    The source is read through `reader`: a read left open on `conn` while the copy records its progress
    there could not become a write once another process had written (BusyError at once)."""
    new, sink = store.new_data(conn, app, to)
    source = hashlib.sha256()
    size = 0
    try:
        for piece in store.read(reader or conn, data):
            source.update(piece)
            size += len(piece)
            sink.write(piece)
        sink.close()
        copy = hashlib.sha256()
        for piece in store.read(conn, new):
            copy.update(piece)
        if copy.digest() != source.digest():
            raise StorageError(f"{bucket}/{key}: the copy's SHA-256 differs from the source's; nothing was switched",
                               500, "ChecksumMismatch")
    except BaseException as e:
        sink.abort()
        with transaction(conn):
            store.drop_data(conn, new)
        store.reap(conn)
        if isinstance(e, (BotoCoreError, ClientError)):  # the external bucket failed
            raise store.unavailable(f"moving {bucket}/{key}", e) from None
        raise
    now = time.time()
    with transaction(conn):
        row = conn.execute(
            "SELECT o.bucket, o.data FROM blob_objects o JOIN blob_buckets b ON b.id = o.bucket "
            "WHERE b.app = ? AND b.name = ? AND o.key = ?",
            (app, bucket, key),
        ).fetchone()
        if row is None or row[1] != data:  # replaced or removed while copying: the next pass sees the new one
            store.drop_data(conn, new)
            return False
        conn.execute(
            "UPDATE blob_data SET state = 'live', size = ?, pending = NULL, changed_at = ? WHERE id = ?", (size, now, new)
        )
        conn.execute("UPDATE blob_objects SET data = ? WHERE bucket = ? AND key = ?", (new, row[0], key))
        store.orphan(conn, data, now)
    return True


def migrate(conn: apsw.Connection, app: str, to: str, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Moves every object of `app` to backend `to`, then makes it the app's backend."""
    if to not in store.BACKENDS:
        raise StorageError(f"unknown backend {to!r}: use one of {', '.join(store.BACKENDS)}")
    if to == "s3":
        store.external_bucket("moving objects to external S3")  # fails now, with what to set, not per object
    total, total_bytes = count_left(conn, app, to)
    progress(f"{app}: {total} objects ({total_bytes:,} bytes) to move to {to}")
    failed: dict[int, str] = {}  # data id -> what went wrong: the others still move
    reader = cartridge.connect(conn.filename)
    try:
        moved, moved_bytes = _move_all(conn, reader, app, to, total, failed, progress)
    finally:
        reader.close()
    store.sweep(conn)
    if failed:
        shown = "; ".join(list(failed.values())[:5])
        raise StorageError(
            f"{len(failed)} objects could not be moved ({shown}); {moved} were, and the app still stores new "
            f"objects where it did. Run it again to retry; an object whose bytes are gone can be removed "
            "by the app or through its S3 endpoint.", 503, "ServiceUnavailable")
    return {"app": app, "backend": to, "moved": moved, "bytes": moved_bytes}


def _move_all(conn, reader, app: str, to: str, total: int, failed: dict[int, str], progress) -> tuple[int, int]:
    """Moves every object left, switches the app to `to`, then moves what came in meanwhile."""
    moved = moved_bytes = 0
    switched = False
    while True:
        batch = _left(conn, app, to, set(failed))
        if not batch:
            if switched or failed:
                break
            with transaction(conn):
                store.set_backend(conn, app, to)
            switched = True  # one more pass: uploads that went to the old backend meanwhile
            continue
        for bucket, key, data, size in batch:
            try:
                done = move_object(conn, app, bucket, key, data, to, reader)
            except StorageError as e:
                failed[data] = f"{bucket}/{key}: {e}"
                progress(f"could not move {bucket}/{key}: {e}")
                continue
            if done:
                moved += 1
                moved_bytes += size
                progress(f"[{moved}/{max(total, moved)}] {bucket}/{key} ({size:,} bytes) verified")
    return moved, moved_bytes
