"""Buckets of objects: keys and metadata in the cartridge, bytes in the cartridge or on external S3.

An object's bytes are an upload (`blob_data`): with the internal backend,
chunks (`blob_chunks`, 512 KiB rows) written a few MiB per short transaction
so a large upload never holds the write lock for long; with the external one
(`external.py`), one object in the host's S3 bucket (`location`). Which one
new uploads use is the app's choice (`blob_apps`); reads follow each upload's
own location, so an app switching backends keeps every object readable. An
object completed from multipart parts in the cartridge is made of the parts'
uploads (`blob_pieces`), so completing it copies nothing. The object row
(`blob_objects`) is switched to the new upload in one transaction at the
end, so a half-written upload is never visible and concurrent writers
to one key replace it atomically (the last to finish wins). Replaced and
abandoned uploads become orphans and are swept once no reader can still be
on them; external bytes go through `blob_trash` and are deleted after the
transaction that let go of them commits.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import apsw
import msgspec

from ...cartridge import app_exists, transaction
from ...server import HEADER_NAME, BrokenBody
from . import external

MIGRATIONS = [
    """
    CREATE TABLE blob_buckets(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        public INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        UNIQUE(app, name)
    ) STRICT;
    -- One upload's bytes. state: writing (not visible), live (an object's), orphan (to sweep).
    CREATE TABLE blob_data(
        id INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        changed_at REAL NOT NULL
    ) STRICT;
    CREATE INDEX blob_data_by_state ON blob_data(state, changed_at);
    CREATE TABLE blob_chunks(
        id INTEGER PRIMARY KEY,
        data INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        UNIQUE(data, seq)
    ) STRICT;
    CREATE TABLE blob_objects(
        bucket INTEGER NOT NULL REFERENCES blob_buckets(id),
        key TEXT NOT NULL,
        data INTEGER NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        content_type TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY(bucket, key)
    ) STRICT;
    """,
    """
    -- Access keys of the S3 endpoint: each sees only its app's buckets.
    CREATE TABLE s3_keys(
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at REAL NOT NULL
    ) STRICT;
    CREATE TABLE s3_uploads(
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        bucket TEXT NOT NULL,
        key TEXT NOT NULL,
        content_type TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at REAL NOT NULL
    ) STRICT;
    CREATE TABLE s3_parts(
        upload TEXT NOT NULL REFERENCES s3_uploads(id),
        number INTEGER NOT NULL,
        data INTEGER NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        PRIMARY KEY(upload, number)
    ) STRICT;
    """,
    """
    -- NULL: chunks in the cartridge; else the key of the bytes in the external bucket,
    -- and `pending` the external multipart upload while they are being written.
    ALTER TABLE blob_data ADD COLUMN location TEXT;
    ALTER TABLE blob_data ADD COLUMN pending TEXT;
    -- External bytes let go of, deleted once the transaction that dropped them committed.
    CREATE TABLE blob_trash(
        location TEXT PRIMARY KEY,
        pending TEXT,
        since REAL NOT NULL
    ) STRICT;
    -- Where an app's new uploads go (no row: internal).
    CREATE TABLE blob_apps(
        app TEXT PRIMARY KEY,
        backend TEXT NOT NULL
    ) STRICT;
    """,
    """
    -- The bytes of an object completed from multipart parts: the parts' own
    -- uploads (state 'piece', owned by the whole) in order, not a copy of them.
    CREATE TABLE blob_pieces(
        data INTEGER NOT NULL,
        start INTEGER NOT NULL,
        piece INTEGER NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        PRIMARY KEY(data, start)
    ) STRICT;
    """,
    """
    -- What storage-js's createBucket/updateBucket set: NULL is no limit.
    ALTER TABLE blob_buckets ADD COLUMN updated_at REAL;
    UPDATE blob_buckets SET updated_at = created_at;
    ALTER TABLE blob_buckets ADD COLUMN file_size_limit INTEGER;
    ALTER TABLE blob_buckets ADD COLUMN allowed_mime_types TEXT; -- a JSON array
    """,
    """
    -- Each object version's own id (storage-js's id), a UUID v4; objects stored before get one here.
    ALTER TABLE blob_objects ADD COLUMN id TEXT;
    UPDATE blob_objects SET id = lower(
        hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
        || substr('89ab', 1 + abs(random() % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)));
    """,
    """
    -- The Cache-Control header an object is served with (NULL: none).
    ALTER TABLE blob_objects ADD COLUMN cache_control TEXT;
    ALTER TABLE s3_uploads ADD COLUMN cache_control TEXT;
    """,
    """
    -- ListMultipartUploads pages a bucket's uploads in this order.
    CREATE INDEX s3_uploads_by_key ON s3_uploads(app, bucket, key, created_at, id);
    """,
    """
    -- Representation headers an S3 client stored with an object (Content-Disposition, Content-Encoding,
    -- Content-Language, Expires), served with it: a JSON object, NULL for none.
    ALTER TABLE blob_objects ADD COLUMN headers TEXT;
    ALTER TABLE s3_uploads ADD COLUMN headers TEXT;
    """,
    """
    -- The bytes each app's quota counts (see usage()), kept by triggers in the transaction of every
    -- change: summing blob_data for each upload cost a scan of all the app's objects.
    CREATE TABLE blob_usage(app TEXT PRIMARY KEY, bytes INTEGER NOT NULL) STRICT;
    INSERT INTO blob_usage SELECT app, sum(size) FROM blob_data WHERE state IN ('live', 'writing', 'part') GROUP BY app;
    CREATE TRIGGER blob_usage_insert AFTER INSERT ON blob_data WHEN NEW.state IN ('live', 'writing', 'part') BEGIN
        INSERT INTO blob_usage VALUES (NEW.app, NEW.size) ON CONFLICT(app) DO UPDATE SET bytes = bytes + excluded.bytes;
    END;
    CREATE TRIGGER blob_usage_delete AFTER DELETE ON blob_data WHEN OLD.state IN ('live', 'writing', 'part') BEGIN
        UPDATE blob_usage SET bytes = bytes - OLD.size WHERE app = OLD.app;
    END;
    CREATE TRIGGER blob_usage_update AFTER UPDATE OF app, size, state ON blob_data BEGIN
        UPDATE blob_usage SET bytes = bytes - OLD.size WHERE app = OLD.app AND OLD.state IN ('live', 'writing', 'part');
        INSERT INTO blob_usage SELECT NEW.app, NEW.size WHERE NEW.state IN ('live', 'writing', 'part')
            ON CONFLICT(app) DO UPDATE SET bytes = bytes + excluded.bytes;
    END;
    """,
    """
    -- Uploads in progress no longer count: one a crash cut off stayed in the quota until swept (an
    -- hour). An upload is checked against the objects that have landed as it writes and as it lands.
    DROP TRIGGER blob_usage_insert;
    DROP TRIGGER blob_usage_delete;
    DROP TRIGGER blob_usage_update;
    DELETE FROM blob_usage;
    INSERT INTO blob_usage SELECT app, sum(size) FROM blob_data WHERE state IN ('live', 'part') GROUP BY app;
    CREATE TRIGGER blob_usage_insert AFTER INSERT ON blob_data WHEN NEW.state IN ('live', 'part') BEGIN
        INSERT INTO blob_usage VALUES (NEW.app, NEW.size) ON CONFLICT(app) DO UPDATE SET bytes = bytes + excluded.bytes;
    END;
    CREATE TRIGGER blob_usage_delete AFTER DELETE ON blob_data WHEN OLD.state IN ('live', 'part') BEGIN
        UPDATE blob_usage SET bytes = bytes - OLD.size WHERE app = OLD.app;
    END;
    -- An upload's bytes growing (state 'writing') fire nothing.
    CREATE TRIGGER blob_usage_update AFTER UPDATE OF app, size, state ON blob_data
    WHEN OLD.state IN ('live', 'part') OR NEW.state IN ('live', 'part') BEGIN
        UPDATE blob_usage SET bytes = bytes - OLD.size WHERE app = OLD.app AND OLD.state IN ('live', 'part');
        INSERT INTO blob_usage SELECT NEW.app, NEW.size WHERE NEW.state IN ('live', 'part')
            ON CONFLICT(app) DO UPDATE SET bytes = bytes + excluded.bytes;
    END;
    """,
]

BACKENDS = ("internal", "s3")

CHUNK = 512 * 1024
# Chunks written per transaction: few enough that other writers wait milliseconds, not seconds.
CHUNKS_PER_COMMIT = 8
# An orphan is swept this long after it stopped being an object's bytes: a
# download that started before the switch has this long to finish reading.
ORPHAN_GRACE_S = 600
# An upload still 'writing' after this long belonged to a process that died.
ABANDONED_S = 3600
# Parts of a multipart upload nobody completed or aborted.
ABANDONED_PARTS_S = 7 * 24 * 3600

BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
# What an object's content type and metadata must be to go out as HTTP headers (x-amz-meta-NAME: VALUE).
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
MAX_KEY_BYTES = 1024
# A bucket's fileSizeLimit as Supabase takes it in text: decimal units.
_SIZE_TEXT = re.compile(r"([0-9]+(?:\.[0-9]+)?)(gb|mb|kb|b)", re.I)
_SIZE_UNITS = {"gb": 10**9, "mb": 10**6, "kb": 10**3, "b": 1}
MAX_SIZE_LIMIT = 1 << 53
# allowedMimeTypes entries: type/subtype or type/* (RFC 6838 names).
_MIME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/(\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})")
MAX_MIME_TYPES = 100
MAX_CACHE_CONTROL = 256


class StorageError(Exception):
    """A refused request: `{"error": {"message", "statusCode", "status", "error"}}` for the app (storage-js
    shape: its StorageApiError has the HTTP status both as the string `statusCode` and the number `status`)."""

    def __init__(self, message: str, status: int = 400, error: str = "InvalidRequest"):
        super().__init__(message)
        self.status = status
        self.error = error

    def to_json(self) -> dict[str, Any]:
        return {"message": str(self), "statusCode": str(self.status), "status": self.status, "error": self.error}


def duplicate() -> StorageError:
    """The error storage-js gives a write onto an existing key without upsert."""
    return StorageError("The resource already exists", 409, "Duplicate")


def check_if_match(etag: str | None, if_match: str | None) -> None:
    """S3's If-Match on a write: the object it replaces (`etag`, None if there is none) must carry one of
    the listed ETags (`*`: any). Refused with PreconditionFailed, or NoSuchKey where there is no object."""
    if if_match is None:
        return
    if etag is None:
        raise StorageError("Object not found", 404, "not_found")
    if if_match.strip() != "*" and etag not in [t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")]:
        raise precondition_failed()


def precondition_failed() -> StorageError:
    """A condition of the request (If-Match, x-amz-copy-source-if-*...) does not hold: S3's 412."""
    return StorageError("At least one of the pre-conditions you specified did not hold", 412, "PreconditionFailed")


def no_bucket() -> StorageError:
    return StorageError("Bucket not found", 404, "NoSuchBucket")


def check_bucket(name: Any) -> str:
    if not isinstance(name, str) or not BUCKET.fullmatch(name):
        raise StorageError(
            f"invalid bucket name {str(name)[:80]!r}: 3 to 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
            400,
            "InvalidBucketName",
        )
    return name


def check_key(key: Any) -> str:
    """Object keys: UTF-8, at most 1024 bytes, no control characters, no `.`/`..` segments."""
    if not isinstance(key, str) or not key:
        raise StorageError("an object key must be a non-empty string", 400, "InvalidKey")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise StorageError(f"object key longer than {MAX_KEY_BYTES} bytes", 400, "KeyTooLongError")
    if _CONTROL.search(key):
        raise StorageError("object keys cannot hold control characters (NUL, newline...)", 400, "InvalidKey")
    if key.startswith("/") or any(part in (".", "..") for part in key.split("/")):
        raise StorageError(f"invalid object key {key[:80]!r}: no leading '/', no '.' or '..' segments", 400, "InvalidKey")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise StorageError("object keys must be valid UTF-8", 400, "InvalidKey") from None
    return key


def check_representation(headers: dict[str, str] | None) -> dict[str, str]:
    """Representation headers to store: only REPRESENTATION_HEADERS, each a value HTTP can carry."""
    headers = headers or {}
    for name, value in headers.items():
        if name not in REPRESENTATION_HEADERS:
            raise StorageError(f"header {name[:40]!r} cannot be stored with an object", 400, "InvalidArgument")
        check_header_value(name, value)
    return dict(headers)


def check_header_value(name: str, value: Any) -> str:
    """A header value the object can be served with: printable ASCII (no CR, LF or other controls)."""
    if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
        raise StorageError(f"{name[:40]} must be printable ASCII (no CR, LF or other control characters)", 400,
                           "InvalidArgument")
    return value


def check_headers(content_type: str, metadata: dict[str, str]) -> None:
    """Refuses what could not be served back as headers, rather than serve the object without it."""
    if not _HEADER_VALUE.fullmatch(content_type):
        raise StorageError("contentType must be printable ASCII (no CR, LF or other control characters)")
    for name, value in metadata.items():
        if not HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise StorageError(f"invalid metadata {name[:80]!r}: names are HTTP tokens (letters, digits, "
                               "'-', '_'...), values printable ASCII")


def check_cache_control(value: str | None) -> str | None:
    """A Cache-Control value to serve an object with (None or "": none)."""
    if not value:
        return None
    if len(value) > MAX_CACHE_CONTROL or not _HEADER_VALUE.fullmatch(value):
        raise StorageError(f"cacheControl must be a header value of printable ASCII, at most {MAX_CACHE_CONTROL} "
                           "characters")
    return value


def max_age(seconds: str) -> str:
    """storage-js's cacheControl (seconds, '3600' by default) as the header Supabase serves: max-age=N."""
    if not re.fullmatch(r"[0-9]{1,10}", seconds):
        raise StorageError(f"cacheControl must be a number of seconds, not {seconds[:40]!r}")
    return f"max-age={int(seconds)}"


def usage(conn: apsw.Connection, app: str) -> int:
    """Bytes the app's live objects and multipart parts take (pieces count in their whole; uploads in
    progress count once they land): the sum of their blob_data sizes, which blob_usage's triggers keep."""
    row = conn.execute("SELECT bytes FROM blob_usage WHERE app = ?", (app,)).fetchone()
    return row[0] if row else 0


def bucket_id(conn: apsw.Connection, app: str, bucket: str, create: bool = False) -> int | None:
    check_bucket(bucket)
    row = conn.execute("SELECT id FROM blob_buckets WHERE app = ? AND name = ?", (app, bucket)).fetchone()
    if row:
        return row[0]
    if not create:
        return None
    if not app_exists(conn, app):
        raise StorageError(f"no app named {app!r} (it was removed while this ran)", 404, "NoSuchBucket")
    return conn.execute(
        "INSERT INTO blob_buckets(app, name, created_at, updated_at) VALUES (?, ?, ?3, ?3) RETURNING id",
        (app, bucket, time.time()),
    ).fetchone()[0]


def orphan(conn: apsw.Connection, data: int, now: float) -> None:
    """Bytes no object points at any more: swept once readers that started before are done."""
    conn.execute("UPDATE blob_data SET state = 'orphan', changed_at = ? WHERE id = ?", (now, data))


def forget_upload(conn: apsw.Connection, upload_id: str) -> None:
    """Drops an S3 multipart upload and the parts it still has (inside the caller's transaction)."""
    for (data,) in conn.execute("SELECT data FROM s3_parts WHERE upload = ?", (upload_id,)).fetchall():
        drop_data(conn, data)
    conn.execute("DELETE FROM s3_parts WHERE upload = ?", (upload_id,))
    conn.execute("DELETE FROM s3_uploads WHERE id = ?", (upload_id,))


def drop_data(conn: apsw.Connection, data: int) -> None:
    """Deletes an upload's bytes, with its pieces if it is made of parts."""
    conn.execute(
        "INSERT OR IGNORE INTO blob_trash(location, pending, since) "
        "SELECT location, pending, ? FROM blob_data WHERE id = ? AND location IS NOT NULL",
        (time.time(), data),
    )
    for (piece,) in conn.execute("SELECT piece FROM blob_pieces WHERE data = ?", (data,)).fetchall():
        drop_data(conn, piece)
    conn.execute("DELETE FROM blob_pieces WHERE data = ?", (data,))
    conn.execute("DELETE FROM blob_chunks WHERE data = ?", (data,))
    conn.execute("DELETE FROM blob_data WHERE id = ?", (data,))


def backend(conn: apsw.Connection, app: str) -> str:
    row = conn.execute("SELECT backend FROM blob_apps WHERE app = ?", (app,)).fetchone()
    return row[0] if row else "internal"


def set_backend(conn: apsw.Connection, app: str, name: str) -> bool:
    """Where the app's new uploads go; True if that changed."""
    if backend(conn, app) == name:
        return False
    conn.execute("INSERT OR REPLACE INTO blob_apps(app, backend) VALUES (?, ?)", (app, name))
    return True


def unavailable(doing: str, e: Exception) -> StorageError:
    """The external bucket failed: the details (endpoint, bucket, prefix) are the host's, for its log only."""
    print(f"storage: {doing} failed: {e!r}", file=sys.stderr)
    meta = getattr(e, "response", None) or {}
    if meta.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
        return StorageError(f"{doing} failed: the external S3 bucket refused the host's credentials "
                            "(FAZT_S3_ACCESS_KEY_ID, FAZT_S3_SECRET_ACCESS_KEY)", 503, "ServiceUnavailable")
    return StorageError(f"{doing} failed: the external S3 bucket is unavailable", 503, "ServiceUnavailable")


def external_bucket(needed_for: str = "this app stores objects on external S3") -> external.External:
    """The host's external bucket, or a StorageError that says how to set one up."""
    try:
        ext = external.current()
    except Exception as e:  # noqa: BLE001 - unreachable endpoint, bad credentials, bad settings
        raise unavailable("connecting to storage", e) from None
    if ext is None:
        raise StorageError(
            f"{needed_for}, but the host has no bucket: set FAZT_S3_BUCKET "
            "(and FAZT_S3_ENDPOINT, FAZT_S3_REGION, FAZT_S3_ACCESS_KEY_ID, FAZT_S3_SECRET_ACCESS_KEY)",
            503, "ServiceUnavailable",
        )
    return ext


class Chunks:
    """Bytes of one upload going into the cartridge, a few chunks per short transaction."""

    def __init__(self, conn: apsw.Connection, data: int):
        self.conn, self.data = conn, data
        self.seq = 0
        self.buffer = bytearray()

    def write(self, data) -> None:
        self.buffer += data
        if len(self.buffer) >= CHUNK * CHUNKS_PER_COMMIT:
            self._put(len(self.buffer) // CHUNK * CHUNK)

    def _put(self, n: int) -> None:
        """Writes the first n buffered bytes as chunks, in one short transaction."""
        with memoryview(self.buffer) as view, transaction(self.conn):  # SQLite copies the bytes from the buffer itself
            self.conn.execute("UPDATE blob_data SET size = size + ?, changed_at = ? WHERE id = ?", (n, time.time(), self.data))
            if self.conn.changes() != 1:  # its app was removed meanwhile: chunks now would belong to no one
                raise StorageError("the upload was dropped: its app was removed", 404, "NoSuchUpload")
            for off in range(0, n, CHUNK):
                self.conn.execute("INSERT INTO blob_chunks(data, seq, bytes) VALUES (?, ?, ?)",
                                  (self.data, self.seq + off // CHUNK, view[off : min(off + CHUNK, n)]))
        self.seq += (n + CHUNK - 1) // CHUNK
        del self.buffer[:n]

    def close(self) -> None:
        if self.buffer:
            self._put(len(self.buffer))

    def abort(self) -> None:
        pass


def new_data(conn: apsw.Connection, app: str, where: str):
    """A new upload's row (state 'writing') and where its bytes go: (data id, sink)."""
    ext = external_bucket() if where == "s3" else None
    location = ext.new_location(app) if ext else None
    with transaction(conn):
        data = conn.execute(
            "INSERT INTO blob_data(app, state, changed_at, location) VALUES (?, 'writing', ?, ?) RETURNING id",
            (app, time.time(), location),
        ).fetchone()[0]
    return data, (external.Sink(ext, conn, data, location) if ext else Chunks(conn, data))


def _point(conn, bid: int, data: int, o: dict[str, Any]) -> None:
    """Makes the object `o` (a `describe`) the one of `data` at its key (replacing what it was)."""
    conn.execute(
        f"INSERT OR REPLACE INTO blob_objects(bucket, key, data, {OBJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (bid, o["key"], data, o["id"], o["size"], o["etag"], o["contentType"], msgspec.json.encode(o["metadata"]).decode(),
         o["createdAt"], o["updatedAt"], o["cacheControl"], headers_json(o["headers"])),
    )


class Upload:
    """Bytes going into a new object; visible only once `finish` commits."""

    def __init__(self, conn: apsw.Connection, app: str, bucket: str, key: str, content_type: str,
                 metadata: dict[str, str], upsert: bool, quota: int, *, part: bool = False,
                 cache_control: str | None = None, if_match: str | None = None,
                 headers: dict[str, str] | None = None):
        """`part`: the bytes of one multipart part, whose whole's type was checked when it began;
        `if_match`: S3's If-Match, checked now and again as the object lands."""
        self.conn = conn
        self.app, self.bucket, self.key = app, check_bucket(bucket), check_key(key)
        check_headers(content_type, metadata)
        self.cache_control = check_cache_control(cache_control)
        self.headers = check_representation(headers)
        self.content_type = content_type or "application/octet-stream"
        if not part:
            check_content_type(conn, app, self.bucket, self.content_type)
        self.size_limit = size_limit_of(conn, app, self.bucket)
        self.metadata = metadata
        self.upsert = upsert
        self.if_match = if_match
        self.quota = quota
        self.md5 = hashlib.md5()
        self.size = 0
        replaced, etag = _object_size_etag(conn, app, self.bucket, self.key)
        if not upsert and replaced is not None:
            raise duplicate()
        check_if_match(etag, if_match)
        self.data, self.sink = new_data(conn, app, backend(conn, app))
        self.room = quota - usage(conn, app) + (replaced or 0)  # the replaced bytes are freed when this lands

    def write(self, data: bytes | memoryview) -> None:
        if self.size + len(data) > self.room:
            self.abort()
            raise quota_exceeded(self.quota)
        if self.size_limit is not None and self.size + len(data) > self.size_limit:
            self.abort()
            raise too_large()
        self.md5.update(data)
        self.size += len(data)
        self._to_sink(self.sink.write, data)  # a full part goes to the external bucket

    def _flush(self) -> None:
        self._to_sink(self.sink.close)

    def _to_sink(self, op, *args) -> None:
        """Runs a sink operation; on failure the upload is aborted and nothing becomes visible."""
        try:
            op(*args)
        except StorageError:
            self.abort()
            raise
        except Exception as e:  # noqa: BLE001 - the external bucket failed
            self.abort()
            raise unavailable("storing the object", e) from None

    def finish_part(self, upload_id: str, number: int) -> str:
        """Lands the bytes as part `number` of an S3 multipart upload, in place of any part of that
        number uploaded before; returns their MD5 (hex)."""
        self._flush()
        now, md5 = time.time(), self.md5.hexdigest()
        with transaction(self.conn):
            old = self.conn.execute(
                "SELECT data, size FROM s3_parts WHERE upload = ? AND number = ?", (upload_id, number)).fetchone()
            try:
                if not self.conn.execute("SELECT 1 FROM s3_uploads WHERE id = ?", (upload_id,)).fetchone():
                    raise StorageError("The specified multipart upload does not exist.", 404, "NoSuchUpload")
                # Parts side by side each saw room for itself when it began: checked again as it lands.
                _check_room(self.conn, self.app, self.size - (old[1] if old else 0), self.quota)
            except StorageError as e:
                self._drop()
                refused = e
            else:
                refused = None
                if old:
                    orphan(self.conn, old[0], now)
                self.conn.execute(
                    "UPDATE blob_data SET state = 'part', size = ?, pending = NULL, changed_at = ? WHERE id = ?",
                    (self.size, now, self.data),
                )
                self.conn.execute(
                    "INSERT OR REPLACE INTO s3_parts(upload, number, data, size, etag) VALUES (?, ?, ?, ?, ?)",
                    (upload_id, number, self.data, self.size, md5),
                )
        if refused is not None:
            raise refused
        return md5

    def finish(self, etag: str | None = None) -> dict[str, Any]:
        """Makes the bytes the object's; `etag` overrides the MD5 (multipart uploads)."""
        self._flush()
        now = time.time()
        etag = etag or self.md5.hexdigest()
        with transaction(self.conn):
            bid = bucket_id(self.conn, self.app, self.bucket, create=True)
            old = self.conn.execute(
                "SELECT data, created_at, etag FROM blob_objects WHERE bucket = ? AND key = ?", (bid, self.key)
            ).fetchone()
            refused = self._refusal(old)
            if refused is not None:
                self._drop()  # committed with the check: the next upload to land counts without these bytes
            else:
                if old:
                    orphan(self.conn, old[0], now)
                self.conn.execute(
                    "UPDATE blob_data SET state = 'live', size = ?, pending = NULL, changed_at = ? WHERE id = ?",
                    (self.size, now, self.data),
                )
                made = describe(self.bucket, self.key, new_id(), self.size, etag, self.content_type, self.metadata,
                                old[1] if old else now, now, self.cache_control, self.headers)
                _point(self.conn, bid, self.data, made)
        if refused is not None:
            raise refused
        sweep(self.conn)
        return made

    def _refusal(self, old) -> StorageError | None:
        """Why the object may not land over `old` (its data, created, etag), checked as it lands."""
        try:
            if old and not self.upsert:
                raise duplicate()
            check_if_match(old and old[2], self.if_match)  # replaced since the upload began
            # Uploads side by side each saw room for itself when it began: checked again as it lands.
            replaced = old and self.conn.execute("SELECT size FROM blob_data WHERE id = ?", (old[0],)).fetchone()[0]
            _check_room(self.conn, self.app, self.size - (replaced or 0), self.quota)
        except StorageError as e:
            return e
        return None

    def abort(self) -> None:
        """Forgets the bytes written so far (no reader can see an upload in progress)."""
        self.sink.abort()
        with transaction(self.conn):
            self._drop()
        reap(self.conn)

    def _drop(self) -> None:
        drop_data(self.conn, self.data)


def pipe(body, upload: Upload, check=None, piece: int = 1 << 20) -> None:
    """Copies a request body (anything with `read_bytes` and `content_length`) into an upload.

    `check()` runs once the body is read (e.g. digests the request promised).
    Any failure aborts the upload, so nothing becomes visible: a body shorter
    than its Content-Length (the client went away) is IncompleteBody, one past
    the request body limit EntityTooLarge.
    """
    try:
        total = 0
        while chunk := body.read_bytes(piece):
            upload.write(chunk)
            total += len(chunk)
        if body.content_length is not None and total != body.content_length:
            raise StorageError(
                f"the request body ended after {total} of {body.content_length} bytes", 400, "IncompleteBody"
            )
        if check is not None:
            check()
    except BaseException as e:
        upload.abort()
        if isinstance(e, BrokenBody):
            raise StorageError(str(e), 400, "IncompleteBody") from None
        if not isinstance(e, StorageError) and getattr(e, "status", None) == 413:  # limits.bodyMb
            raise StorageError(str(e), 413, "EntityTooLarge") from None
        raise


def new_id() -> str:
    """A stored object version's id: unique, as Supabase's object ids are (the ETag is the content's)."""
    return str(uuid.uuid4())


def describe(bucket, key, object_id, size, etag, content_type, metadata, created, updated,
             cache_control=None, headers=None) -> dict[str, Any]:
    """`headers`: the representation headers it is served with (REPRESENTATION_HEADERS)."""
    return {
        "bucket": bucket, "key": key, "id": object_id, "size": size, "etag": etag, "contentType": content_type,
        "metadata": metadata, "createdAt": created, "updatedAt": updated, "cacheControl": cache_control,
        "headers": headers or {},
    }


# An object row's columns in the order `described` reads them.
OBJECT_COLUMNS = "id, size, etag, content_type, metadata, created_at, updated_at, cache_control, headers"
# What an S3 client may store with an object beside its type and Cache-Control, served back with it.
REPRESENTATION_HEADERS = ("content-disposition", "content-encoding", "content-language", "expires")


def headers_json(headers: dict[str, str]) -> str | None:
    return msgspec.json.encode(headers).decode() if headers else None


def described(bucket: str, key: str, row) -> dict[str, Any]:
    """`describe` of a row of OBJECT_COLUMNS."""
    object_id, size, etag, content_type, metadata, created, updated, cache_control, headers = row
    return describe(bucket, key, object_id, size, etag, content_type, msgspec.json.decode(metadata), created, updated,
                    cache_control, msgspec.json.decode(headers) if headers else None)


def head(conn: apsw.Connection, app: str, bucket: str, key: str) -> tuple[dict[str, Any], int]:
    """The object's description and its data id, or StorageError 404."""
    row = conn.execute(
        f"SELECT o.data, {', '.join('o.' + c for c in OBJECT_COLUMNS.split(', '))} "
        "FROM blob_objects o JOIN blob_buckets b ON b.id = o.bucket WHERE b.app = ? AND b.name = ? AND o.key = ?",
        (app, check_bucket(bucket), check_key(key)),
    ).fetchone()
    if row is None:
        raise StorageError("Object not found", 404, "not_found")
    return described(bucket, key, row[1:]), row[0]


def _location(conn: apsw.Connection, data: int) -> str | None:
    row = conn.execute("SELECT location FROM blob_data WHERE id = ?", (data,)).fetchone()
    return row[0] if row else None


def read(conn: apsw.Connection, data: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """The bytes [start, end) of an upload, a piece at a time (memory stays bounded).

    External bytes are opened before this returns: an unreachable bucket is a StorageError here."""
    location = _location(conn, data)
    if location is None:
        return _read_internal(conn, data, start, end)
    ext = external_bucket()
    try:
        return ext.read(location, start, end)
    except Exception as e:  # noqa: BLE001
        raise unavailable("reading the object", e) from None


async def stream(conn: apsw.Connection, data: int, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
    """`read` for an event loop: external bytes are awaited, not waited for (and opened by awaiting this)."""
    location = _location(conn, data)
    if location is None:
        return _aiter(_read_internal(conn, data, start, end))
    ext = external_bucket()
    try:
        return await ext.aread(location, start, end)
    except Exception as e:  # noqa: BLE001
        raise unavailable("reading the object", e) from None


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _read_internal(conn: apsw.Connection, data: int, start: int, end: int | None) -> Iterator[bytes]:
    pieces = conn.execute(
        "SELECT start, piece, size FROM blob_pieces WHERE data = ? AND start + size > ? AND (?3 IS NULL OR start < ?3) "
        "ORDER BY start",
        (data, start, end),
    ).fetchall()
    if not pieces:
        yield from _read_chunks(conn, data, start, end)
        return
    for at, piece, size in pieces:
        yield from _read_chunks(conn, piece, max(start - at, 0), size if end is None else min(end - at, size))


def _read_chunks(conn: apsw.Connection, data: int, start: int, end: int | None) -> Iterator[bytes]:
    first = start // CHUNK
    last = None if end is None else (end - 1) // CHUNK
    for seq, chunk in conn.execute(
        "SELECT seq, bytes FROM blob_chunks WHERE data = ? AND seq >= ? AND (?3 IS NULL OR seq <= ?3) ORDER BY seq",
        (data, first, last),
    ):
        lo = start - seq * CHUNK if seq == first else 0
        hi = len(chunk) if end is None or seq != last else end - seq * CHUNK
        yield chunk[lo:hi] if (lo or hi != len(chunk)) else chunk


def encode_cursor(start: str) -> str:
    """Where a listing goes on, as an opaque token (it may hold a NUL)."""
    return base64.urlsafe_b64encode(start.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise StorageError("invalid cursor: pass the cursor of the previous page", 400, "InvalidArgument") from None


def _after(text: str) -> str:
    """The smallest key greater than `text` (keys hold no NUL)."""
    return text + "\x00"


def past_prefix(prefix: str) -> str:
    """The smallest key greater than every key that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def listing(conn: apsw.Connection, app: str, bucket: str, prefix: str = "", limit: int = 100,
            start: str = "", delimiter: str = "") -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Objects under `prefix` in key order from `start` on, as S3 lists them; with a delimiter,
    folders as common prefixes, in the same order.

    Returns (objects, common prefixes, where the next page starts or None).
    """
    bid = bucket_id(conn, app, bucket)
    if bid is None:
        return [], [], None
    upper = past_prefix(prefix) if prefix else None
    lower = max(start, prefix)
    items: list[tuple[str, Any]] = []
    query = (
        f"SELECT key, {OBJECT_COLUMNS} FROM blob_objects "
        "WHERE bucket = ? AND key >= ? AND (?3 IS NULL OR key < ?3) ORDER BY key LIMIT ?"
    )
    while len(items) <= limit:
        want = limit + 1 - len(items)
        rows = conn.execute(query, (bid, lower, upper, want)).fetchall()
        for row in rows:
            key = row[0]
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                items.append((common, None))
                lower = past_prefix(common)
                break  # the rest of this "folder" is skipped by the next query
            items.append((key, row))
            lower = _after(key)
        else:
            if len(rows) < want:
                break
    more = len(items) > limit
    items = items[:limit]
    objects = [
        described(bucket, r[0], r[1:]) for _, r in items if r is not None
    ]
    prefixes = [name for name, r in items if r is None]
    if not more:
        return objects, prefixes, None
    name, row = items[-1]
    return objects, prefixes, _after(name) if row is not None else past_prefix(name)


# The keys under a folder (?1 bucket, ?2 from, ?3 past the prefix or NULL); ?4 is where an entry's name
# starts in its key (a subfolder's name holds a '/'). The folder's own marker object, the key that is
# the prefix itself (S3 clients make them), is no entry of it.
IN_FOLDER = "bucket = ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3) AND length(key) >= ?4"


def folder_listing(conn: apsw.Connection, app: str, bucket: str, prefix: str, limit: int, cursor: str = "",
                   offset: int = 0) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """One folder as storage-js's list() pages it, as Supabase's storage.search does: its subfolders
    by name, then its objects by key, `offset` and `limit` counting both together. `cursor` is where
    the previous page stopped ("f:KEY" among the folders, "o:KEY" among the objects).

    Returns (objects, folders, the next page's cursor or None).
    """
    bid = bucket_id(conn, app, bucket)
    if bid is None:
        return [], [], None
    phase, _, lower = cursor.partition(":") if cursor else ("f", ":", prefix)
    if phase not in ("f", "o"):
        raise StorageError("invalid cursor: pass the cursor of the previous page", 400, "InvalidArgument")
    where = f"{IN_FOLDER} AND instr(substr(key, ?4), '/')"
    params = [bid, max(lower, prefix), past_prefix(prefix) if prefix else None, len(prefix) + 1]
    folders: list[str] = []
    if phase == "f":
        while len(folders) <= limit:  # one folder per query: the objects inside it are skipped
            row = conn.execute(f"SELECT key FROM blob_objects WHERE {where} > 0 ORDER BY key LIMIT 1", params).fetchone()
            if row is None:
                break
            folder = row[0][: row[0].index("/", len(prefix)) + 1]
            params[1] = past_prefix(folder)
            if offset:
                offset -= 1
            else:
                folders.append(folder)
        if len(folders) > limit:
            return [], folders[:limit], "f:" + folders[limit]
        params[1] = prefix
    room = limit - len(folders)
    rows = conn.execute(
        f"SELECT key, {OBJECT_COLUMNS} FROM blob_objects WHERE {where} = 0 ORDER BY key LIMIT ?5 OFFSET ?6",
        (*params, room + 1, offset),
    ).fetchall()
    objects = [described(bucket, r[0], r[1:]) for r in rows[:room]]
    if len(rows) <= room:
        return objects, folders, None
    return objects, folders, "o:" + (_after(objects[-1]["key"]) if objects else prefix)


# storage-js's sortBy columns; last_accessed_at is not kept (always null), so it sorts as name.
SORT_COLUMNS = {"name": "key", "created_at": "created_at", "updated_at": "updated_at", "last_accessed_at": "key"}


def _like_prefix(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching what starts with `text`."""
    return re.sub(r"([\\%_])", r"\\\1", text) + "%"


def sorted_listing(conn: apsw.Connection, app: str, bucket: str, prefix: str, limit: int, offset: int,
                   search: str = "", column: str = "name", order: str = "asc") -> tuple[list[dict[str, Any]], list[str]]:
    """One folder as Supabase lists it with `search` and `sortBy`: its subfolders first (by name), then its
    objects by `column`; `search` keeps the entries whose name (after the folder) starts with it, ignoring
    ASCII case. Reads the whole folder: the listing by name ascending without search is the one that pages by keys.

    Returns (objects, common prefixes)."""
    if column not in SORT_COLUMNS:
        raise StorageError(f"sortBy.column must be one of {', '.join(SORT_COLUMNS)}, not {column[:40]!r}")
    if order.lower() not in ("asc", "desc"):
        raise StorageError(f"sortBy.order must be 'asc' or 'desc', not {order[:40]!r}")
    bid = bucket_id(conn, app, bucket)
    if bid is None:
        return [], []
    direction = order.upper()
    where = f"{IN_FOLDER} AND substr(key, ?4) LIKE ?5 ESCAPE '\\' AND instr(substr(key, ?4), '/')"
    params = (bid, prefix, past_prefix(prefix) if prefix else None, len(prefix) + 1, _like_prefix(search))
    folders = [f for (f,) in conn.execute(
        f"SELECT DISTINCT substr(key, 1, ?4 - 1 + instr(substr(key, ?4), '/')) AS f FROM blob_objects "
        f"WHERE {where} > 0 ORDER BY f {direction}", params)]
    shown = folders[offset : offset + limit]
    rows = conn.execute(
        f"SELECT key, {OBJECT_COLUMNS} FROM blob_objects WHERE {where} = 0 "
        f"ORDER BY {SORT_COLUMNS[column]} {direction}, key {direction} LIMIT ?6 OFFSET ?7",
        (*params, limit - len(shown), max(offset - len(folders), 0)),
    ).fetchall()
    return [described(bucket, r[0], r[1:]) for r in rows], shown


def remove(conn: apsw.Connection, app: str, bucket: str, keys: list[str], if_match: str | None = None) -> list[dict[str, Any]]:
    """Removes the objects that exist; returns their descriptions. `if_match` (S3's If-Match, one key):
    an object there must carry that ETag (one that is not there is no error, as S3 has it)."""
    removed = []
    bid = bucket_id(conn, app, bucket)
    if bid is None:
        return removed
    now = time.time()
    with transaction(conn):
        for key in keys:
            try:
                check_key(key)
            except StorageError:
                continue  # no object has such a key: as on Supabase, a name not found is no error
            row = conn.execute(
                "DELETE FROM blob_objects WHERE bucket = ? AND key = ? "
                f"RETURNING data, {OBJECT_COLUMNS}",
                (bid, key),
            ).fetchone()
            if row:
                removed.append(described(bucket, key, row[1:]))
                check_if_match(removed[-1]["etag"], if_match)  # a refusal rolls the deletion back
                orphan(conn, row[0], now)
    return removed


def copy(conn: apsw.Connection, app: str, bucket: str, source: str, dest: str, dest_bucket: str | None = None,
         quota: int | None = None, move: bool = False, upsert: bool = False,
         content_type: str | None = None, metadata: dict[str, str] | None = None,
         cache_control: Any = msgspec.UNSET, if_match: str | None = None,
         source_check: Callable[[dict[str, Any]], None] | None = None,
         headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Copies (inside SQLite or the external bucket: no bytes through Python) or renames an object.

    An existing destination is refused with Duplicate (409) unless `upsert`,
    as uploads are; `if_match` is S3's If-Match on the destination. `source_check` sees the
    source's description before its very bytes are copied (S3's x-amz-copy-source-if-*).
    `content_type`/`metadata`, when given, replace the
    source's on the copy (and `cache_control`, unless UNSET); a copy of an object onto itself changes only those
    (in place, the bytes stay)."""
    dest_bucket = check_bucket(dest_bucket or bucket)
    meta, data = head(conn, app, bucket, source)
    if source_check is not None:
        source_check(meta)
    check_key(dest)
    if content_type is not None:
        meta["contentType"] = content_type
    if metadata is not None:
        meta["metadata"] = metadata
    if cache_control is not msgspec.UNSET:
        meta["cacheControl"] = check_cache_control(cache_control)
    if headers is not None:
        meta["headers"] = check_representation(headers)
    check_content_type(conn, app, dest_bucket, meta["contentType"])  # the destination's rules, as for an upload
    check_size(conn, app, dest_bucket, meta["size"])
    now = time.time()
    if dest_bucket == bucket and dest == source:
        if not upsert:
            raise duplicate()
        check_if_match(meta["etag"], if_match)
        if move:
            return meta
        with transaction(conn):
            conn.execute(
                "UPDATE blob_objects SET content_type = ?, metadata = ?, cache_control = ?, headers = ?, updated_at = ? "
                "WHERE bucket = ? AND key = ? AND data = ?",
                (meta["contentType"], msgspec.json.encode(meta["metadata"]).decode(), meta["cacheControl"],
                 headers_json(meta["headers"]), now,
                 bucket_id(conn, app, bucket), source, data),
            )
        return {**meta, "updatedAt": now}
    size, etag = _object_size_etag(conn, app, dest_bucket, dest)
    if not upsert and size is not None:
        raise duplicate()
    check_if_match(etag, if_match)
    location = None if move else _location(conn, data)
    copied = None
    if location is not None:  # the copy stays where its source is, copied by the external bucket itself
        _check_room(conn, app, meta["size"], quota)
        ext = external_bucket()
        copied = ext.new_location(app)
        try:
            ext.copy(location, copied, meta["size"])
        except Exception as e:  # noqa: BLE001
            raise unavailable("copying the object", e) from None
    try:
        return _copy_rows(conn, app, bucket, source, dest, dest_bucket, meta, data, copied, quota, move, upsert,
                          if_match, now)
    except BaseException:
        if copied is not None:
            with transaction(conn):
                conn.execute("INSERT OR IGNORE INTO blob_trash(location, since) VALUES (?, ?)", (copied, now))
            reap(conn)
        raise


def _check_room(conn: apsw.Connection, app: str, size: int, quota: int | None) -> None:
    if quota is not None and usage(conn, app) + size > quota:
        raise quota_exceeded(quota)


def quota_exceeded(quota: int) -> StorageError:
    return StorageError(f"the app's storage quota ({quota >> 20} MiB) is used up", 413, "QuotaExceeded")


def _object_size_etag(conn: apsw.Connection, app: str, bucket: str, key: str) -> tuple[int | None, str | None]:
    bid = bucket_id(conn, app, bucket)
    row = bid is not None and conn.execute(
        "SELECT size, etag FROM blob_objects WHERE bucket = ? AND key = ?", (bid, key)).fetchone()
    return (row[0], row[1]) if row else (None, None)


def _copy_rows(conn, app, bucket, source, dest, dest_bucket, meta, data, copied, quota, move, upsert, if_match,
               now) -> dict[str, Any]:
    with transaction(conn):
        size, etag = _object_size_etag(conn, app, dest_bucket, dest)  # made or replaced while the external copy ran
        if not upsert and size is not None:
            raise duplicate()
        check_if_match(etag, if_match)
        if not move:
            _check_room(conn, app, meta["size"], quota)
            new = conn.execute(
                "INSERT INTO blob_data(app, size, state, changed_at, location) VALUES (?, ?, 'live', ?, ?) RETURNING id",
                (app, meta["size"], now, copied),
            ).fetchone()[0]
            _copy_chunks(conn, data, new)
            for start, piece, size in conn.execute(
                "SELECT start, piece, size FROM blob_pieces WHERE data = ? ORDER BY start", (data,)
            ).fetchall():
                copied_piece = conn.execute(
                    "INSERT INTO blob_data(app, size, state, changed_at) VALUES (?, ?, 'piece', ?) RETURNING id",
                    (app, size, now),
                ).fetchone()[0]
                _copy_chunks(conn, piece, copied_piece)
                conn.execute("INSERT INTO blob_pieces(data, start, piece, size) VALUES (?, ?, ?, ?)",
                             (new, start, copied_piece, size))
        else:
            new = data
            src = bucket_id(conn, app, bucket)
            conn.execute("DELETE FROM blob_objects WHERE bucket = ? AND key = ?", (src, source))
        bid = bucket_id(conn, app, dest_bucket, create=True)
        old = conn.execute("SELECT data FROM blob_objects WHERE bucket = ? AND key = ?", (bid, dest)).fetchone()
        if old and old[0] != new:
            orphan(conn, old[0], now)
        # A copy is a new object; a moved one keeps its id, as in Supabase.
        made = {**meta, "bucket": dest_bucket, "key": dest, "id": meta["id"] if move else new_id(),
                "createdAt": now, "updatedAt": now}
        _point(conn, bid, new, made)
    return made


def _copy_chunks(conn: apsw.Connection, source: int, dest: int) -> None:
    conn.execute(
        "INSERT INTO blob_chunks(data, seq, bytes) SELECT ?, seq, bytes FROM blob_chunks WHERE data = ? ORDER BY seq",
        (dest, source),
    )


def assemble(conn: apsw.Connection, app: str, bucket: str, key: str, parts: list[tuple[int, int]], etag: str,
             content_type: str, metadata: dict[str, str], upsert: bool = True,
             cache_control: str | None = None, if_match: str | None = None,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Makes `key` the object made of these part uploads ((data id, size), in order, in the cartridge),
    inside the caller's transaction: the parts' chunks become the object's without being copied.
    An existing object is refused with Duplicate unless `upsert`, as uploads are."""
    now = time.time()
    bid = bucket_id(conn, app, bucket, create=True)
    old = conn.execute("SELECT data, created_at, etag FROM blob_objects WHERE bucket = ? AND key = ?", (bid, key)).fetchone()
    if old and not upsert:
        raise duplicate()
    check_if_match(old and old[2], if_match)
    size = sum(n for _, n in parts)
    check_size(conn, app, bucket, size)
    whole = conn.execute(
        "INSERT INTO blob_data(app, size, state, changed_at) VALUES (?, ?, 'live', ?) RETURNING id", (app, size, now)
    ).fetchone()[0]
    start = 0
    for piece, n in parts:
        if not n:  # holds nothing, and would share its start with the next piece
            drop_data(conn, piece)
            continue
        conn.execute("UPDATE blob_data SET state = 'piece', changed_at = ? WHERE id = ?", (now, piece))
        conn.execute("INSERT INTO blob_pieces(data, start, piece, size) VALUES (?, ?, ?, ?)", (whole, start, piece, n))
        start += n
    if old:
        orphan(conn, old[0], now)
    created = old[1] if old else now
    made = describe(bucket, key, new_id(), size, etag, content_type, metadata, created, now, cache_control, headers)
    _point(conn, bid, whole, made)
    return made


_BUCKET_COLUMNS = "b.name, b.public, b.created_at, b.updated_at, b.file_size_limit, b.allowed_mime_types"


def _bucket_of(row) -> dict[str, Any]:
    name, public, created, updated, size_limit, mime_types = row[:6]
    return {"name": name, "public": bool(public), "createdAt": created, "updatedAt": updated,
            "fileSizeLimit": size_limit, "allowedMimeTypes": msgspec.json.decode(mime_types) if mime_types else None}


def buckets(conn: apsw.Connection, app: str) -> list[dict[str, Any]]:
    """The app's buckets: their settings and what they hold (`objects`, `bytes`)."""
    return [
        {**_bucket_of(row), "objects": row[6], "bytes": row[7]}
        for row in conn.execute(
            f"SELECT {_BUCKET_COLUMNS}, count(o.key), coalesce(sum(o.size), 0) FROM blob_buckets b "
            "LEFT JOIN blob_objects o ON o.bucket = b.id WHERE b.app = ? GROUP BY b.id ORDER BY b.name",
            (app,),
        )
    ]


def bucket(conn: apsw.Connection, app: str, name: str) -> dict[str, Any]:
    row = conn.execute(f"SELECT {_BUCKET_COLUMNS} FROM blob_buckets b WHERE b.app = ? AND b.name = ?",
                       (app, check_bucket(name))).fetchone()
    if row is None:
        raise no_bucket()
    return _bucket_of(row)


def size_limit(value: Any) -> int | None:
    """A bucket's fileSizeLimit: bytes, Supabase's text form ('20MB', '1.5GB', '30KB', '3B'), or None (no limit)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = _SIZE_TEXT.fullmatch(value.strip())
        if text is None:
            raise StorageError("Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B")
        amount = float(text[1]) * _SIZE_UNITS[text[2].lower()]
        value = round(amount) if amount <= MAX_SIZE_LIMIT else MAX_SIZE_LIMIT + 1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SIZE_LIMIT:
        raise StorageError(f"fileSizeLimit must be a positive whole number of bytes, at most {MAX_SIZE_LIMIT}, "
                           "or a size like '20MB'")
    return value


def mime_types(value: Any) -> list[str] | None:
    """A bucket's allowedMimeTypes: types like 'image/png' or 'image/*'; None or [] allows every type."""
    if value is None or value == []:
        return None
    if (not isinstance(value, list) or len(value) > MAX_MIME_TYPES
            or not all(isinstance(t, str) and _MIME_PATTERN.fullmatch(t) for t in value)):
        raise StorageError(f"allowedMimeTypes must be a list of at most {MAX_MIME_TYPES} types like 'image/png' "
                           "or 'image/*'")
    return [t.lower() for t in value]


def _types_json(types: list[str] | None) -> str | None:
    return None if types is None else msgspec.json.encode(types).decode()


def check_content_type(conn: apsw.Connection, app: str, bucket: str, content_type: str) -> None:
    """Refuses a type the bucket's allowedMimeTypes leave out (parameters such as charset aside)."""
    row = conn.execute("SELECT allowed_mime_types FROM blob_buckets WHERE app = ? AND name = ?", (app, bucket)).fetchone()
    if not row or not row[0]:
        return
    essence = content_type.partition(";")[0].strip().lower()
    if not any(essence == t or (t.endswith("/*") and essence.startswith(t[:-1])) for t in msgspec.json.decode(row[0])):
        raise StorageError(f"mime type {content_type[:100]} is not supported", 415, "InvalidMimeType")


def size_limit_of(conn: apsw.Connection, app: str, bucket: str) -> int | None:
    row = conn.execute("SELECT file_size_limit FROM blob_buckets WHERE app = ? AND name = ?", (app, bucket)).fetchone()
    return row[0] if row else None


def too_large() -> StorageError:
    return StorageError("The object exceeded the maximum allowed size", 413, "EntityTooLarge")


def check_size(conn: apsw.Connection, app: str, bucket: str, size: int) -> None:
    limit = size_limit_of(conn, app, bucket)
    if limit is not None and size > limit:
        raise too_large()


def create_bucket(conn: apsw.Connection, app: str, name: str, public: bool = False, file_size_limit: Any = None,
                  allowed_mime_types: Any = None) -> None:
    """A new bucket; an existing one is refused (409), as Supabase and S3 do."""
    check_bucket(name)
    limit, types = size_limit(file_size_limit), mime_types(allowed_mime_types)
    with transaction(conn):
        if bucket_id(conn, app, name) is not None:
            raise StorageError("The resource already exists", 409, "BucketAlreadyExists")
        conn.execute(
            "INSERT INTO blob_buckets(app, name, public, created_at, updated_at, file_size_limit, allowed_mime_types) "
            "VALUES (?, ?, ?, ?4, ?4, ?, ?)",
            (app, name, int(public), time.time(), limit, _types_json(types)),
        )


def update_bucket(conn: apsw.Connection, app: str, name: str, public: Any = msgspec.UNSET,
                  file_size_limit: Any = msgspec.UNSET, allowed_mime_types: Any = msgspec.UNSET) -> None:
    """Changes the settings given (UNSET leaves one as it is; None clears a limit)."""
    changes: dict[str, Any] = {"updated_at": time.time()}
    if public is not msgspec.UNSET:
        changes["public"] = int(public)
    if file_size_limit is not msgspec.UNSET:
        changes["file_size_limit"] = size_limit(file_size_limit)
    if allowed_mime_types is not msgspec.UNSET:
        changes["allowed_mime_types"] = _types_json(mime_types(allowed_mime_types))
    assignments = ", ".join(f"{column} = ?" for column in changes)
    with transaction(conn):
        updated = conn.execute(f"UPDATE blob_buckets SET {assignments} WHERE app = ? AND name = ? RETURNING id",
                               (*changes.values(), app, check_bucket(name))).fetchone()
    if updated is None:
        raise no_bucket()


def delete_bucket(conn: apsw.Connection, app: str, name: str) -> None:
    """Deletes an empty bucket, aborting its multipart uploads in progress (a bucket made again
    under the name starts with none); one holding objects is refused (409), as Supabase and S3 do."""
    with transaction(conn):
        bid = bucket_id(conn, app, name)
        if bid is None:
            raise no_bucket()
        if conn.execute("SELECT 1 FROM blob_objects WHERE bucket = ? LIMIT 1", (bid,)).fetchone():
            raise StorageError("The bucket you tried to delete is not empty", 409, "ResourceNotEmpty")
        for (upload,) in conn.execute("SELECT id FROM s3_uploads WHERE app = ? AND bucket = ?", (app, name)).fetchall():
            forget_upload(conn, upload)
        conn.execute("DELETE FROM blob_buckets WHERE id = ?", (bid,))


# Objects emptyBucket removes per transaction: other writers wait milliseconds, not the whole bucket.
EMPTY_BATCH = 1000


def empty_bucket(conn: apsw.Connection, app: str, name: str) -> None:
    """Removes every object of the bucket (their bytes are swept as any removed object's)."""
    bid = bucket_id(conn, app, name)
    if bid is None:
        raise no_bucket()
    while True:
        now = time.time()
        with transaction(conn):
            removed = conn.execute(
                "DELETE FROM blob_objects WHERE rowid IN (SELECT rowid FROM blob_objects WHERE bucket = ? LIMIT ?) "
                "RETURNING data",
                (bid, EMPTY_BATCH),
            ).fetchall()
            for (data,) in removed:
                orphan(conn, data, now)
        if len(removed) < EMPTY_BATCH:
            return


def configure_buckets(conn: apsw.Connection, app: str, declared: dict[str, Any]) -> list[str]:
    """Creates the buckets fazt.json declares and sets their public flag (inside the deploy's transaction)."""
    notes = []
    for name, spec in declared.items():
        bid = bucket_id(conn, app, name, create=True)
        changed = conn.execute(
            "UPDATE blob_buckets SET public = ? WHERE id = ? AND public != ? RETURNING name",
            (int(spec.public), bid, int(spec.public)),
        ).fetchone()
        if changed:
            notes.append(f"bucket {name} is {'public' if spec.public else 'private'}")
    return notes


def sweep(conn: apsw.Connection, now: float | None = None, limit: int = 64, external: bool = True) -> int:
    """Deletes orphans past their grace time and uploads abandoned by dead processes
    (their external bytes too, unless `external` is False: then a later sweep deletes them)."""
    now = time.time() if now is None else now
    ids = [i for (i,) in conn.execute(
        "SELECT id FROM blob_data WHERE (state = 'orphan' AND changed_at < ?) OR (state = 'writing' AND changed_at < ?) "
        "OR (state = 'part' AND changed_at < ?) LIMIT ?",
        (now - ORPHAN_GRACE_S, now - ABANDONED_S, now - ABANDONED_PARTS_S, limit),
    )]
    if ids:
        with transaction(conn):
            for i in ids:
                drop_data(conn, i)
    if external:
        reap(conn)
    return len(ids)


def reap(conn: apsw.Connection, limit: int = 1000) -> int:
    """Deletes external bytes let go of; kept for a later pass while the external bucket fails."""
    items = conn.execute("SELECT location, pending FROM blob_trash ORDER BY since LIMIT ?", (limit,)).fetchall()
    if not items:
        return 0
    try:
        external_bucket().delete(items)
    except Exception as e:  # noqa: BLE001 - a later sweep tries again
        print(f"storage: deleting {len(items)} external objects failed, will retry: {e}", file=sys.stderr)
        return 0
    with transaction(conn):
        conn.executemany("DELETE FROM blob_trash WHERE location = ?", [(location,) for location, _ in items])
    return len(items)


def forget(conn: apsw.Connection, app: str) -> None:
    """Drops every bucket, object, upload and access key of a removed app (inside the removal's transaction)."""
    conn.execute("DELETE FROM s3_parts WHERE upload IN (SELECT id FROM s3_uploads WHERE app = ?)", (app,))
    conn.execute("DELETE FROM s3_uploads WHERE app = ?", (app,))
    conn.execute("DELETE FROM s3_keys WHERE app = ?", (app,))
    conn.execute("DELETE FROM blob_objects WHERE bucket IN (SELECT id FROM blob_buckets WHERE app = ?)", (app,))
    conn.execute("DELETE FROM blob_buckets WHERE app = ?", (app,))
    conn.execute(
        "INSERT OR IGNORE INTO blob_trash(location, pending, since) "
        "SELECT location, pending, ? FROM blob_data WHERE app = ? AND location IS NOT NULL",
        (time.time(), app),
    )
    conn.execute("DELETE FROM blob_pieces WHERE data IN (SELECT id FROM blob_data WHERE app = ?)", (app,))
    conn.execute("DELETE FROM blob_chunks WHERE data IN (SELECT id FROM blob_data WHERE app = ?)", (app,))
    conn.execute("DELETE FROM blob_data WHERE app = ?", (app,))
    conn.execute("DELETE FROM blob_apps WHERE app = ?", (app,))
