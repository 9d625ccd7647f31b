"""Storage over HTTP: objects a handler returns, public objects, and signed URLs.

Routes under `/<app>/storage/v1/object/` (the paths Supabase uses):
`public/BUCKET/KEY` (GET/HEAD, public buckets only), `sign/BUCKET/KEY?token=`
(GET/HEAD until the token expires) and `upload/sign/BUCKET/KEY?token=`
(PUT/POST). Object bytes stream from the cartridge a chunk at a time, so memory
stays bounded whatever the size.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from email.utils import formatdate
from urllib.parse import parse_qs, quote

import apsw
import msgspec

from ... import cartridge, piped, static
from ...cartridge import transaction
from ...runtime import GuestError
from ...server import HttpError, ResponseHead, check_response_head
from . import store
from .store import StorageError

OBJECT_ROUTES = "/storage/v1/object/"
# Objects this large go out through a pipe, at the client's pace; smaller ones are sent in one go.
PIPED_FROM = 1 << 20
FORM_FIELD_MAX = 16 << 10  # a form field kept as a setting (cacheControl, metadata)


def signing_key(conn: apsw.Connection, create: bool = True) -> bytes | None:
    """The host's secret for signed URLs, made once per cartridge (apps never see it)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'storage-signing-key'").fetchone()
    if row is None:
        if not create:
            return None
        with transaction(conn):
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('storage-signing-key', ?)", (secrets.token_hex(32),))
        row = conn.execute("SELECT value FROM meta WHERE key = 'storage-signing-key'").fetchone()
    return bytes.fromhex(row[0])


def _mac(key: bytes, action: str, app: str, bucket: str, object_key: str, expires: int) -> str:
    message = "\n".join((action, app, bucket, object_key, str(expires))).encode()
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode().rstrip("=")


def signed_path(conn: apsw.Connection, base: str, action: str, app: str, bucket: str, key: str, seconds: int) -> str:
    """`action` is "download", "upload", or "upsert" (an upload that may replace the object, as
    storage-js's createSignedUploadUrl(path, { upsert: true })); the path is under the app's mount point `base`."""
    expires = int(time.time()) + seconds
    token = f"{expires}.{_mac(signing_key(conn), action, app, bucket, key, expires)}"
    route = "sign" if action == "download" else "upload/sign"
    return f"{base}{OBJECT_ROUTES}{route}/{bucket}/{quote(key)}?token={token}"


UPLOAD_ACTIONS = ("upload", "upsert")


def check_token(conn: apsw.Connection, token: str, actions: tuple[str, ...], app: str, bucket: str, key: str) -> str:
    """The one of `actions` the token was signed for; refused if none, or if it has expired."""
    expires_text, _, mac = token.partition(".")
    secret = signing_key(conn, create=False)  # a reader: nothing was ever signed without one
    signed = secret is not None and (expires_text.isascii() and expires_text.isdigit()) and next(
        (a for a in actions if hmac.compare_digest(mac, _mac(secret, a, app, bucket, key, int(expires_text)))), None
    )
    if not signed:
        raise StorageError("invalid signature", 400, "InvalidSignature")
    if int(expires_text) < time.time():
        raise StorageError("the signed URL has expired", 400, "ExpiredToken")
    return signed


def _error(proto, e: StorageError, rid: str = "") -> None:
    headers = [("content-type", "application/json")] + ([("x-fazt-request-id", rid)] if rid else [])
    if e.status == 413:  # the rest of the body is left unread
        headers.append(("connection", "close"))
    proto.response_bytes(e.status, headers, msgspec.json.encode(e.to_json()))


async def send_object(proto, conn: apsw.Connection, app: str, bucket: str, key: str, method: str, req_headers,
                      status: int = 200, headers: list[tuple[str, str]] | None = None, refuse=None,
                      overrides: list[tuple[str, str]] | None = None) -> None:
    """Streams an object to the client with ETag, Last-Modified, conditional GET and Range.

    `headers` go with it (a handler's cache-control wins over the object's); `overrides` replace the
    object's own content-type, cache-control and representation headers (S3's response-* parameters).
    `refuse(status, headers)`, if given, answers a failed precondition (412) or a Range past the end (416)
    instead of an empty reply."""
    meta, data = store.head(conn, app, bucket, key)
    etag = f'"{meta["etag"]}"'
    overridden = {name for name, _ in overrides or []}
    named = overridden | {name.lower() for name, _ in headers or []}
    stored = [] if "content-type" in overridden else [("content-type", meta["contentType"])]
    stored += [(name, value) for name, value in meta["headers"].items() if name not in named]
    if meta["cacheControl"] and "cache-control" not in named:
        stored.append(("cache-control", meta["cacheControl"]))
    out = stored + [
        ("etag", etag),
        ("last-modified", formatdate(meta["updatedAt"], usegmt=True)),
        ("accept-ranges", "bytes"),
    ] + [h for h in headers or [] if h[0].lower() not in ("content-type", "etag", "last-modified", "accept-ranges", "content-range")]
    out += overrides or []
    negotiated, start, end, extra = static.negotiate(etag, meta["size"], method, req_headers, meta["updatedAt"])
    out += extra
    if negotiated in (412, 416) and refuse is not None:
        refuse(negotiated, extra)
        return
    if negotiated in (304, 412, 416):
        proto.response_empty(negotiated, out)
        return
    status = negotiated if negotiated == 206 else status
    out.append(("content-length", str(end - start + 1)))
    if method == "HEAD" or end < start:
        proto.response_empty(status, out)
        return
    if end - start < PIPED_FROM:
        chunks = await store.stream(conn, data, start, end + 1)  # a bucket that fails does so before the status goes
        transport = proto.response_stream(status, out)
        async for chunk in chunks:
            await transport.send_bytes(chunk)
        return
    # Paced by its client (memory bounded, however slow it is), the download reads through a connection of
    # its own: the snapshot it keeps of the object's bytes, whatever is written or swept meanwhile, must
    # not freeze what the worker's shared connection sees.
    own = cartridge.connect(conn.filename)
    try:
        chunks = await store.stream(own, data, start, end + 1)
        body = await piped.response_piped(proto, status, out)
        try:
            async for chunk in chunks:
                await body.send_bytes(chunk)
        finally:
            body.close()
    finally:
        own.close()


async def answer(trigger, scope, proto, deployed, result: dict, rid: str) -> None:
    """A handler returned `storage.from(b).stream(key)`: the host sends the bytes, not the guest."""
    spec = result.get("object")
    try:
        if not isinstance(spec, dict) or not isinstance(spec.get("bucket"), str) or not isinstance(spec.get("key"), str):
            raise StorageError("malformed object response", 500, "InternalError")
        try:  # the rules of any handler response: Granian's worker dies on a status it cannot send
            head = msgspec.convert({"status": result.get("status", 200), "headers": result.get("headers") or []},
                                   ResponseHead)
            check_response_head(head)
        except (msgspec.MsgspecError, GuestError) as e:
            raise StorageError(f"the handler's response: {e}", 500, "InternalError") from None
        req_headers = dict(scope.headers.items())
        if "range" in spec:  # the handler chose the range (or none, with null)
            req_headers.pop("range", None)
            if isinstance(spec["range"], str) and spec["range"]:
                req_headers["range"] = spec["range"]
        await send_object(proto, trigger.reader, deployed.name, spec["bucket"], spec["key"], scope.method.upper(),
                          req_headers, head.status, head.headers + [("x-fazt-request-id", rid)])
    except StorageError as e:
        _error(proto, e, rid)


class FormFile:
    """The first file of a multipart/form-data body, read as it streams in.

    supabase-js's uploadToSignedUrl sends a Blob as a form (a cacheControl
    field, a metadata field, then the file): the object is the file part's
    bytes, with its type; the small fields before it are kept in `fields`.
    """

    def __init__(self, body, boundary: str):
        self.body = body
        self.content_length = None  # the file's size is known only at its end
        self.delimiter = b"\r\n--" + boundary.encode("latin-1")
        self.buffer = b"\r\n"  # the first boundary line has no line break before it
        self.done = False
        self.fields: dict[str, str] = {}
        self.content_type = self._to_file()

    def _more(self) -> None:
        data = self.body.read_bytes(1 << 20)
        if not data:
            raise StorageError("the multipart/form-data body ended before its file did", 400, "InvalidRequest")
        self.buffer += data

    def _to_file(self) -> str:
        """Skips to the first part with a filename, keeping the fields before it; returns its content type."""
        field, value = None, b""  # the field part being read, and its bytes so far
        while True:
            while (at := self.buffer.find(self.delimiter)) < 0:
                if field is not None:
                    value += self.buffer[:-len(self.delimiter)]
                    field = field if len(value) <= FORM_FIELD_MAX else None  # too long to be a setting
                self.buffer = self.buffer[-len(self.delimiter):]
                self._more()
            if field is not None and len(value) + at <= FORM_FIELD_MAX:
                self.fields[field] = (value + self.buffer[:at]).decode("utf-8", "replace")
            field, value = None, b""
            self.buffer = self.buffer[at + len(self.delimiter):]
            while len(self.buffer) < 2:
                self._more()
            if self.buffer.startswith(b"--"):  # the closing delimiter
                raise StorageError("the multipart/form-data body has no file part", 400, "InvalidRequest")
            while (end := self.buffer.find(b"\r\n\r\n")) < 0:
                if len(self.buffer) > 16 << 10:
                    raise StorageError("malformed multipart/form-data part headers", 400, "InvalidRequest")
                self._more()
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
            fields = {}
            for line in head.split("\r\n")[1:]:
                name, _, value_text = line.partition(":")
                fields[name.strip().lower()] = value_text.strip()
            disposition = fields.get("content-disposition", "")
            if "filename=" in disposition:
                return fields.get("content-type") or "application/octet-stream"
            named = re.search(r'\bname="([^"]*)"', disposition)
            field = named.group(1) if named else None

    def read_bytes(self, n: int) -> bytes:
        """The file's next bytes (b"" at its end): held back until no delimiter can start in them."""
        while not self.done:
            at = self.buffer.find(self.delimiter)
            if at >= 0:
                out, self.buffer, self.done = self.buffer[:at], b"", True
                return out
            safe = len(self.buffer) - len(self.delimiter) + 1
            if safe > 0:
                out, self.buffer = self.buffer[:min(safe, n)], self.buffer[min(safe, n):]
                return out
            self._more()
        return b""


def upload_settings(headers, fields: dict[str, str] | None) -> tuple[str | None, dict[str, str]]:
    """The Cache-Control and metadata of a signed upload, as storage-js sends them: a form's
    cacheControl (seconds) and metadata (JSON) fields, else the cache-control and x-metadata
    (base64 of the JSON) headers."""
    cache_control = headers.get("cache-control")
    metadata_text = headers.get("x-metadata")
    if fields is not None:
        cache_control = store.max_age(fields["cacheControl"]) if "cacheControl" in fields else cache_control
        metadata_text = fields.get("metadata")
    elif metadata_text:
        try:
            metadata_text = base64.b64decode(metadata_text, validate=True).decode()
        except ValueError:
            raise StorageError("x-metadata must be the base64 of a JSON object", 400, "InvalidRequest") from None
    if not metadata_text:
        return cache_control, {}
    try:
        metadata = msgspec.json.decode(metadata_text, type=dict[str, str])
    except msgspec.DecodeError:
        raise StorageError("metadata must be a JSON object of strings", 400, "InvalidRequest") from None
    return cache_control, metadata


async def pipe_upload(trigger, scope, proto, deployed, bucket: str, key: str, upsert: bool) -> dict:
    """Streams the request body (or the file of a form) into a new object on a wasm thread;
    it may replace one only if `upsert` (the URL's signature says so: Supabase's storage ignores the request's
    `x-upsert` here, as a client must not widen what the app signed)."""
    exchange = trigger.body_reader(scope, proto, deployed)
    limits = deployed.manifest.limits
    content_type = scope.headers.get("content-type") or "application/octet-stream"
    form = re.match(r"multipart/form-data\s*;.*?boundary=\"?([^\";]+)", content_type, re.I)

    def run(conn) -> dict:
        body = FormFile(exchange, form.group(1)) if form else exchange
        cache_control, metadata = upload_settings(scope.headers, body.fields if form else None)
        upload = store.Upload(conn, deployed.name, bucket, key,
                              body.content_type if form else content_type, metadata, upsert, limits.storage_mb << 20,
                              cache_control=cache_control)
        store.pipe(body, upload)
        return upload.finish()

    return await trigger.on_wasm_thread(run, deployed.name)


def disposition(query: dict[str, list[str]]) -> list[tuple[str, str]]:
    """`?download` (storage-js's `download` option) makes the browser save the object, under the given name if any."""
    if "download" not in query:
        return []
    name = query["download"][0]
    return [("content-disposition", f"attachment; filename*=UTF-8''{quote(name, safe='')}" if name else "attachment")]


async def route(trigger, scope, proto, deployed, inner: str, base: str) -> None:
    """Serves `inner` (a path under OBJECT_ROUTES) for the app."""
    app = deployed.name
    method = scope.method.upper()
    kind, _, tail = inner[len(OBJECT_ROUTES):].partition("/")
    signed_upload = kind == "upload" and tail.startswith("sign/")
    if signed_upload:
        tail = tail[len("sign/"):]
    bucket, _, key = tail.partition("/")  # Granian has percent-decoded the path
    query = parse_qs(scope.query_string, keep_blank_values=True)
    token = (query.get("token") or [""])[0]
    conn = trigger.reader
    try:
        if kind == "public" and method in ("GET", "HEAD"):
            row = conn.execute(
                "SELECT public FROM blob_buckets WHERE app = ? AND name = ?", (app, store.check_bucket(bucket))
            ).fetchone()
            if not row or not row[0]:
                raise store.no_bucket()  # private buckets are not revealed
            return await send_object(proto, conn, app, bucket, key, method, scope.headers, headers=disposition(query))
        if kind == "sign" and method in ("GET", "HEAD"):
            check_token(conn, token, ("download",), app, bucket, key)
            return await send_object(proto, conn, app, bucket, key, method, scope.headers, headers=disposition(query))
        if signed_upload and method in ("PUT", "POST"):
            signed = check_token(conn, token, UPLOAD_ACTIONS, app, bucket, key)
            meta = await pipe_upload(trigger, scope, proto, deployed, bucket, key, upsert=signed == "upsert")
            body = {"Key": f"{bucket}/{key}", "Id": meta["id"], "data": meta}
            proto.response_bytes(200, [("content-type", "application/json")], msgspec.json.encode(body))
            return
        raise StorageError(f"no storage route {method} {inner[:120]}", 404, "not_found")
    except StorageError as e:
        _error(proto, e)
    except HttpError as e:  # the request body over limits.bodyMb, a malformed Content-Length
        _error(proto, StorageError(str(e), e.status, "EntityTooLarge" if e.status == 413 else "InvalidRequest"))


route.checks_path = True  # its paths name keys (a backslash is a key's character), which check_key judges
