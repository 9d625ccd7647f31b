"""Storage: buckets of objects per app (the SDK's `storage`, shaped like supabase-js).

Metadata operations travel as JSON through `fazt:host/storage.call`. Bytes
go in through an upload handle (`upload-write` takes `list<u64>` words, the
fast guest->host direction) or, for the request's own body, straight from the
socket into the cartridge (`upload-request`: they never enter the sandbox);
they come out through a download handle as base64 (the fast host->guest
direction, in pieces: the next is encoded while the guest decodes one).
Buckets and objects live in `store.py`, external bytes in `external.py`.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import Future
from typing import Any

import apsw
import msgspec

from ...config import MIB, Manifest
from ...runtime import GuestError, Invocation, pieces
from .. import Capability
from . import http, s3, store
from .store import StorageError


class Call(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    bucket: str = ""
    op: str = ""
    key: str = ""
    keys: list[str] = []
    to: str = ""
    to_bucket: str = ""
    prefix: str = ""
    delimiter: str = ""  # sent by components built before list() paged folders first; ignored
    limit: int = 100
    offset: int = 0
    start: str = ""
    content_type: str = ""
    metadata: dict[str, str] = {}
    upsert: bool = False
    token: str = ""  # uploadToSignedUrl: a token from createSignedUploadUrl, which alone decides upsert
    expires_in: int = 3600
    upload: bool = False
    search: str = ""
    cache_control: str = ""  # seconds, as storage-js's option: served as max-age
    sort_column: str = "name"
    sort_order: str = "asc"
    # Bucket settings (createBucket, updateBucket): UNSET leaves one as it is.
    public: bool | msgspec.UnsetType = msgspec.UNSET
    file_size_limit: int | str | None | msgspec.UnsetType = msgspec.UNSET
    allowed_mime_types: list[str] | None | msgspec.UnsetType = msgspec.UNSET


_decode_call = msgspec.json.Decoder(Call).decode
MAX_SIGNED_S = 10 * 365 * 24 * 3600
BUCKET_OPS = ("listBuckets", "getBucket", "createBucket", "updateBucket", "deleteBucket", "emptyBucket")


def _given(value: Any) -> Any:
    return None if value is msgspec.UNSET else value


class Handles:
    """The uploads and downloads one invocation has open."""

    def __init__(self) -> None:
        self.open: dict[int, Any] = {}
        self.next = 1

    def add(self, thing: Any) -> int:
        handle = self.next
        self.next += 1
        self.open[handle] = thing
        return handle

    def get(self, handle: int, kind: type) -> Any:
        thing = self.open.get(handle)
        if not isinstance(thing, kind):
            raise GuestError(f"storage: no open {kind.__name__.lower()} with handle {handle}")
        return thing


class Download:
    def __init__(self, conn: apsw.Connection, data: int):
        self.chunks = store.read(conn, data)
        self.rest = b""
        self.pieces = pieces.ReadAhead(self._fetch, Future.result)

    def _fetch(self, n: int) -> Future:
        done: Future = Future()
        done.set_result(self.read(n))
        return done

    def read(self, n: int) -> bytes:
        out = bytearray(self.rest)
        for chunk in self.chunks:
            out += chunk
            if len(out) >= n:
                break
        self.rest = bytes(out[n:])
        return bytes(out[:n])


def reply(data: Any = None, error: StorageError | None = None) -> str:
    return msgspec.json.encode({"data": data, "error": error.to_json() if error else None}).decode()


class Storage(Capability):
    name = "storage"
    interface = "fazt:host/storage@0.1.0"
    migrations = store.MIGRATIONS

    def setup(self, conn: apsw.Connection) -> None:
        super().setup(conn)
        store.sweep(conn, external=False)  # an unreachable external bucket must not hold up startup

    def functions(self):
        return {
            "call": self.call,
            "upload-begin": self.upload_begin,
            "upload-write": self.upload_write,
            "upload-finish": self.upload_finish,
            "upload-request": self.upload_request,
            "download-begin": self.download_begin,
            "download-read": self.download_read,
        }

    def configure(self, conn: apsw.Connection, manifest: Manifest) -> list[str]:
        notes = store.configure_buckets(conn, manifest.name, manifest.storage.buckets)
        wanted = manifest.storage.backend
        if wanted and store.set_backend(conn, manifest.name, wanted):
            notes.append(f"new objects go to {'the external S3 bucket' if wanted == 's3' else 'the cartridge'}"
                         f" (existing ones stay where they are: fazt-host blobs migrate {manifest.name} --to {wanted})")
        if wanted == "s3" and not os.environ.get("FAZT_S3_BUCKET"):
            notes.append("FAZT_S3_BUCKET is not set here: the serving host needs it (and FAZT_S3_ENDPOINT...)")
        return notes

    def forget(self, conn: apsw.Connection, app: str) -> None:
        store.forget(conn, app)

    def routes(self):
        return {http.OBJECT_ROUTES: http.route, s3.S3_ROUTES: s3.route}

    def results(self):
        return {"object": http.answer}

    def housekeep(self) -> None:
        # Writes sweep too, but bytes let go of (by a migration, say) would wait for the next write.
        store.sweep(self.conn)

    def finish(self, invocation: Invocation) -> None:
        handles: Handles | None = invocation.state.pop("storage", None)
        for thing in handles.open.values() if handles else ():
            if isinstance(thing, store.Upload):
                thing.abort()  # never finished: nothing of it becomes visible

    @staticmethod
    def _handles(invocation: Invocation) -> Handles:
        return invocation.state.setdefault("storage", Handles())

    @staticmethod
    def _decode(raw: str) -> Call:
        try:
            return _decode_call(raw)
        except msgspec.MsgspecError as e:
            # msgspec says "Expected `str`, got `int` - at `$.metadata.n`": name the option first.
            m = re.fullmatch(r"(.*) - at `\$\.?(.*)`", str(e))
            raise StorageError(f"{m[2]}: {m[1]}" if m else f"invalid storage request: {e}") from None

    def call(self, invocation: Invocation, raw: str) -> str:
        try:
            c = self._decode(raw)
            app, conn = invocation.app, self.conn
            if c.op == "head":
                return reply(store.head(conn, app, c.bucket, c.key)[0])
            if c.op == "list":
                if c.limit < 1 or c.offset < 0:
                    raise StorageError("limit must be a positive integer, offset a non-negative one")
                if c.search or (c.sort_column, c.sort_order) != ("name", "asc"):
                    if c.start:
                        raise StorageError("a cursor continues a listing by name without search: page with offset")
                    objects, prefixes = store.sorted_listing(conn, app, c.bucket, c.prefix, min(c.limit, 1000),
                                                             c.offset, c.search, c.sort_column, c.sort_order)
                    return reply({"objects": objects, "prefixes": prefixes, "next": None})
                objects, prefixes, more = store.folder_listing(
                    conn, app, c.bucket, c.prefix, min(c.limit, 1000), store.decode_cursor(c.start), c.offset
                )
                return reply({"objects": objects, "prefixes": prefixes, "next": more and store.encode_cursor(more)})
            if c.op == "remove":
                return reply(store.remove(conn, app, c.bucket, c.keys))
            if c.op in ("copy", "move"):
                quota = invocation.limits.storage_mb * MIB
                return reply(store.copy(conn, app, c.bucket, c.key, c.to, c.to_bucket or None, quota, c.op == "move",
                                        c.upsert))
            if c.op in BUCKET_OPS:
                return reply(self._bucket_op(c, app))
            if c.op == "sign":
                if not 1 <= c.expires_in <= MAX_SIGNED_S:
                    raise StorageError(f"expiresIn must be between 1 and {MAX_SIGNED_S} seconds (ten years)")
                store.check_bucket(c.bucket)
                store.check_key(c.key)
                if not c.upload:
                    store.head(conn, app, c.bucket, c.key)  # only existing objects get download URLs
                base = invocation.state.get("base", f"/{app}")
                action = ("upsert" if c.upsert else "upload") if c.upload else "download"
                path = http.signed_path(conn, base, action, app, c.bucket, c.key, c.expires_in)
                return reply({"signedUrl": path, "path": c.key, "token": path.rpartition("token=")[2]})
            raise StorageError(f"unknown storage operation {c.op[:40]!r}")
        except StorageError as e:
            return reply(error=e)

    def _bucket_op(self, c: Call, app: str) -> Any:
        """storage-js's bucket API, on the buckets the S3 endpoint and fazt.json also see."""
        conn = self.conn
        if c.op == "listBuckets":
            return [{k: v for k, v in b.items() if k not in ("objects", "bytes")} for b in store.buckets(conn, app)]
        if c.op == "getBucket":
            return store.bucket(conn, app, c.bucket)
        if c.op == "createBucket":
            store.create_bucket(conn, app, c.bucket, c.public is True, _given(c.file_size_limit),
                                _given(c.allowed_mime_types))
        elif c.op == "updateBucket":
            store.update_bucket(conn, app, c.bucket, c.public, c.file_size_limit, c.allowed_mime_types)
        elif c.op == "deleteBucket":
            store.delete_bucket(conn, app, c.bucket)
        else:
            store.empty_bucket(conn, app, c.bucket)
        return {"name": c.bucket}

    def _begin(self, invocation: Invocation, c: Call) -> store.Upload:
        upsert = c.upsert
        if c.token:
            signed = http.check_token(self.conn, c.token, http.UPLOAD_ACTIONS, invocation.app, c.bucket, c.key)
            upsert = signed == "upsert"
        return store.Upload(
            self.conn, invocation.app, c.bucket, c.key, c.content_type, c.metadata, upsert,
            invocation.limits.storage_mb * MIB, cache_control=store.max_age(c.cache_control) if c.cache_control else None,
        )

    def upload_begin(self, invocation: Invocation, raw: str) -> str:
        try:
            upload = self._begin(invocation, self._decode(raw))
        except StorageError as e:
            return reply(error=e)
        return reply({"handle": self._handles(invocation).add(upload)})

    def upload_write(self, invocation: Invocation, handle: int, words: bytes, length: int) -> str:
        handles = self._handles(invocation)
        upload = handles.get(handle, store.Upload)
        if length > len(words):
            raise GuestError("upload-write: length exceeds the words sent")
        try:
            upload.write(memoryview(words)[:length])
        except StorageError as e:
            handles.open.pop(handle, None)
            return reply(error=e)
        return ""

    def upload_finish(self, invocation: Invocation, handle: int) -> str:
        upload = self._handles(invocation).open.pop(handle, None)
        if not isinstance(upload, store.Upload):
            raise GuestError(f"storage: no open upload with handle {handle}")
        try:
            return reply(upload.finish())
        except StorageError as e:
            return reply(error=e)

    def upload_request(self, invocation: Invocation, raw: str) -> str:
        """Pipes the request body from the socket into a new object."""
        exchange = invocation.state.get("http")
        if exchange is None:
            raise GuestError("upload-request: no HTTP request is in progress in this invocation")
        try:
            upload = self._begin(invocation, self._decode(raw))
        except StorageError as e:
            return reply(error=e)
        try:
            store.pipe(exchange, upload)
            return reply(upload.finish())
        except StorageError as e:
            return reply(error=e)

    def download_begin(self, invocation: Invocation, raw: str) -> str:
        try:
            c = self._decode(raw)
            meta, data = store.head(self.conn, invocation.app, c.bucket, c.key)
            download = Download(self.conn, data)  # opens external bytes: a failing bucket is an error reply
        except StorageError as e:
            return reply(error=e)
        meta["handle"] = self._handles(invocation).add(download)
        return reply(meta)

    def download_read(self, invocation: Invocation, handle: int, max_bytes: int) -> str:
        return self._handles(invocation).get(handle, Download).pieces.next(max_bytes)
