"""The S3-compatible endpoint of each app: `/<app>/storage/v1/s3`, path-style.

Requests are authenticated with AWS Signature Version 4 (an Authorization
header or a presigned query) by per-app access keys (`fazt-host keys`); a key
sees only its app's buckets, which are the same buckets the app's JS and the
CLI see. Reads stream from the loop thread's connection; writes run on a
wasm thread, with its connection. Errors are S3's XML with S3's codes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import time
import zlib
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import apsw
import msgspec

from ...cartridge import transaction
from ...server import HttpError, has_body, request_host
from ...static import negotiate
from . import http, store
from .store import StorageError

S3_ROUTES = "/storage/v1/s3"
MAX_SKEW_S = 15 * 60
MIN_PART = 5 << 20
MAX_XML = 1 << 20
MAX_INT32 = (1 << 31) - 1
# S3's sub-resources that this endpoint does not implement: each is an operation of its own.
UNSUPPORTED = frozenset({
    "accelerate", "acl", "analytics", "attributes", "cors", "encryption", "intelligent-tiering", "inventory",
    "legal-hold", "lifecycle", "logging", "metrics", "notification", "object-lock", "ownershipControls", "policy",
    "policyStatus", "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select",
    "tagging", "torrent", "versioning", "versions", "website",
})
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# x-amz-content-sha256 besides a hex SHA-256 (SigV4a's ECDSA modes are not served).
PAYLOAD_MODES = frozenset({
    "UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
})
# x-amz-* headers a client may add around a signed request: they only describe its body, which is checked.
UNSIGNED_ALLOWED = frozenset({"x-amz-content-sha256", "x-amz-decoded-content-length", "x-amz-trailer"})
XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
SELF_COPY = (
    "This copy request is illegal because it is trying to copy an object to itself without changing the "
    "object's metadata, storage class, website redirect location or encryption attributes."
)


class S3Error(Exception):
    def __init__(self, code: str, message: str, status: int = 400, details: dict[str, str] | None = None):
        """`details`: more elements of the error XML, as S3 adds them (HeadersNotSigned...)."""
        super().__init__(message)
        self.code = code
        self.status = status
        self.details = details or {}


# StorageError codes of the store -> S3's.
_FROM_STORAGE = {
    "not_found": ("NoSuchKey", 404),
    "InvalidKey": ("InvalidArgument", 400),
    "InvalidArgument": ("InvalidArgument", 400),
    "KeyTooLongError": ("KeyTooLongError", 400),
    "InvalidBucketName": ("InvalidBucketName", 400),
    "QuotaExceeded": ("QuotaExceeded", 403),
    "EntityTooLarge": ("EntityTooLarge", 400),
    "IncompleteBody": ("IncompleteBody", 400),
    "Duplicate": ("PreconditionFailed", 412),
    "PreconditionFailed": ("PreconditionFailed", 412),
    "ServiceUnavailable": ("ServiceUnavailable", 503),
    "NoSuchBucket": ("NoSuchBucket", 404),
    "NoSuchUpload": ("NoSuchUpload", 404),
    "BucketAlreadyExists": ("BucketAlreadyOwnedByYou", 409),
    "ResourceNotEmpty": ("BucketNotEmpty", 409),
}


def from_storage(e: StorageError) -> S3Error:
    code, status = _FROM_STORAGE.get(e.error, ("InvalidRequest", e.status))
    return S3Error(code, str(e), status)


# ---- access keys -------------------------------------------------------------------------------


def create_key(conn: apsw.Connection, app: str) -> tuple[str, str]:
    key_id = "FZ" + base64.b32encode(secrets.token_bytes(10)).decode()[:18]
    secret = base64.b64encode(secrets.token_bytes(30)).decode()
    with transaction(conn):
        conn.execute("INSERT INTO s3_keys(id, app, secret, created_at) VALUES (?, ?, ?, ?)", (key_id, app, secret, time.time()))
    return key_id, secret


def list_keys(conn: apsw.Connection, app: str) -> list[dict[str, Any]]:
    return [
        {"accessKeyId": k, "createdAt": created}
        for k, created in conn.execute("SELECT id, created_at FROM s3_keys WHERE app = ? ORDER BY created_at", (app,))
    ]


def revoke_key(conn: apsw.Connection, app: str, key_id: str) -> bool:
    with transaction(conn):
        return conn.execute("DELETE FROM s3_keys WHERE app = ? AND id = ? RETURNING id", (app, key_id)).fetchone() is not None


# ---- SigV4 -----------------------------------------------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    return _hmac(_hmac(_hmac(k, region), service), "aws4_request")


def _uri_encode(text: str, slash: bool = True) -> str:
    return quote(text, safe="/-_.~" if slash else "-_.~")


class Auth:
    """Who signed the request, and what the signature says about its payload."""

    def __init__(self, key: bytes, scope: str, amz_date: str, signature: str, payload: str):
        self.key = key
        self.scope = scope
        self.amz_date = amz_date
        self.signature = signature
        self.payload = payload  # a hex SHA-256, UNSIGNED-PAYLOAD, or a STREAMING-... mode


def authenticate(conn: apsw.Connection, scope, app: str, now: float | None = None) -> Auth:
    now = time.time() if now is None else now
    headers = scope.headers
    query = parse_qsl(scope.query_string, keep_blank_values=True)
    params = dict(query)
    header = headers.get("authorization") or ""
    if header.startswith("AWS4-HMAC-SHA256 "):
        fields = dict(p.strip().split("=", 1) for p in header[len("AWS4-HMAC-SHA256 "):].split(",") if "=" in p)
        credential, signed, signature = fields.get("Credential", ""), fields.get("SignedHeaders", ""), fields.get("Signature", "")
        if not (credential and signed and signature):
            raise S3Error("AuthorizationHeaderMalformed", "The authorization header is malformed: it needs "
                          "Credential, SignedHeaders and Signature")
        amz_date = headers.get("x-amz-date") or ""
        payload = headers.get("x-amz-content-sha256") or ""
        if not payload:
            raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
        if payload not in PAYLOAD_MODES and not re.fullmatch("[0-9a-f]{64}", payload):
            raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                          "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER), "
                          "or a valid sha256 value.")
        presigned = False
    elif params.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256":
        credential, signed, signature = params.get("X-Amz-Credential", ""), params.get("X-Amz-SignedHeaders", ""), params.get("X-Amz-Signature", "")
        amz_date = params.get("X-Amz-Date", "")
        payload = "UNSIGNED-PAYLOAD"
        presigned = True
        query = [(k, v) for k, v in query if k != "X-Amz-Signature"]
    elif header or "X-Amz-Credential" in params or "AWSAccessKeyId" in params:
        raise S3Error("InvalidRequest", "Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported")
    else:
        raise S3Error("AccessDenied", "Access Denied: sign requests with an access key of this app (fazt-host keys create)", 403)
    parts = credential.split("/")
    if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
        raise S3Error("AuthorizationHeaderMalformed", "The credential is malformed: AKID/DATE/REGION/s3/aws4_request")
    key_id, date, region = parts[0], parts[1], parts[2]
    row = conn.execute("SELECT secret FROM s3_keys WHERE id = ? AND app = ?", (key_id, app)).fetchone()
    if row is None:
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.", 403)
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise S3Error("AccessDenied", "X-Amz-Date is missing or malformed", 403) from None
    if not amz_date.startswith(date):
        raise S3Error("SignatureDoesNotMatch", "The credential date does not match X-Amz-Date", 403)
    if presigned:
        expires = params.get("X-Amz-Expires", "")
        if not (expires.isascii() and expires.isdigit()) or not 1 <= int(expires) <= 604800:
            raise S3Error("AuthorizationQueryParametersError", "X-Amz-Expires must be between 1 and 604800 seconds")
        if now > when + int(expires):
            raise S3Error("AccessDenied", "Request has expired", 403)
        if when - now > MAX_SKEW_S:  # else a URL dated ahead would outlive the 7 days
            raise S3Error("AccessDenied", "Request is not valid yet", 403)
    elif abs(now - when) > MAX_SKEW_S:
        raise S3Error("RequestTimeTooSkewed", "The difference between the request time and the server's time is too large.", 403)
    names = signed.split(";")
    if "host" not in names:
        raise S3Error("AccessDenied", "The host header must be signed", 403)
    canonical_headers = "".join(
        f"{n}:{' '.join(((request_host(scope) if n == 'host' else headers.get(n)) or '').split())}\n" for n in names
    )
    canonical_query = "&".join(
        f"{_uri_encode(k, False)}={_uri_encode(v, False)}" for k, v in sorted(query)
    )
    canonical = "\n".join(
        (scope.method.upper(), _uri_encode(scope.path), canonical_query, canonical_headers, signed, payload)
    )
    credential_scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(("AWS4-HMAC-SHA256", amz_date, credential_scope, hashlib.sha256(canonical.encode()).hexdigest()))
    key = signing_key(row[0], date, region, "s3")
    if not hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature):
        raise S3Error("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.", 403)
    # A header outside the signature could change what a signed request does (x-amz-copy-source turns a
    # presigned upload into a copy of any object): refused, as S3 refuses it.
    unsigned = sorted({n.lower() for n in headers.keys() if n.lower().startswith("x-amz-")} - set(names) - UNSIGNED_ALLOWED)
    if unsigned:
        raise S3Error("AccessDenied", "There were headers present in the request which were not signed", 403,
                      {"HeadersNotSigned": ", ".join(unsigned)})
    return Auth(key, credential_scope, amz_date, signature, payload)


# ---- request bodies ------------------------------------------------------------------------------


class Body:
    """The request body as S3 sent it, decoded: plain, or aws-chunked (with or without chunk signatures).

    Checks what the request promised about it at the end: the SHA-256 it was
    signed with, Content-MD5, and x-amz-checksum-* (CRC32, SHA-1, SHA-256).
    """

    def __init__(self, raw, auth: Auth, headers, md5=None):
        """`md5`: a hash the caller feeds with the same bytes (an upload's, for its ETag), to check Content-MD5 against."""
        self.raw = raw
        self.auth = auth
        self.chunked = auth.payload.startswith("STREAMING-")
        if self.chunked and "aws-chunked" not in (headers.get("content-encoding") or ""):
            raise S3Error("InvalidRequest", "a STREAMING payload needs Content-Encoding: aws-chunked")
        decoded = headers.get("x-amz-decoded-content-length")
        if self.chunked:
            if decoded is None or not (decoded.isascii() and decoded.isdigit()):
                raise S3Error("MissingContentLength", "aws-chunked needs x-amz-decoded-content-length", 411)
            self.content_length = int(decoded)
        else:
            self.content_length = raw.content_length
        self.signed_chunks = auth.payload.startswith("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        self.previous = auth.signature
        self.pending = b""
        self.left = 0  # bytes left in the current chunk
        self.done = False
        self.sha256 = hashlib.sha256()
        self.content_md5 = headers.get("content-md5")
        if self.content_md5 is not None and len(_b64(self.content_md5)) != 16:
            raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
        self.md5 = md5 if md5 is not None else hashlib.md5()
        self.trailer = (headers.get("x-amz-trailer") or "").strip().lower()
        given = [n for n in headers.keys()
                 if n.lower().startswith("x-amz-checksum-") and n.lower() not in ("x-amz-checksum-type", "x-amz-checksum-algorithm")]
        if self.trailer:
            given.append(self.trailer)
        if len(given) > 1:
            raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
        self.checks: dict[str, Any] = {}
        for header in given:
            name = header.lower().removeprefix("x-amz-checksum-")
            if name not in CHECKSUMS:
                raise S3Error("InvalidRequest", f"{header} is not supported here: send x-amz-checksum-crc32, "
                              "-sha1 or -sha256 (or none)")
            self.checks[name] = CHECKSUMS[name]()
        self.expected = {n: headers.get(f"x-amz-checksum-{n}") for n in self.checks}
        # Each digest costs a pass over the bytes: only those something is checked against.
        self.hashes = list(self.checks.values())
        if len(auth.payload) == 64:
            self.hashes.append(self.sha256)
        if self.content_md5 is not None and md5 is None:
            self.hashes.append(self.md5)
        self.chunk_hash = hashlib.sha256()

    def _fill(self, n: int) -> bool:
        while len(self.pending) < n:
            more = self.raw.read_bytes(max(n - len(self.pending), 64 << 10))
            if not more:
                return False
            self.pending += more
        return True

    def _line(self) -> bytes:
        while b"\r\n" not in self.pending:
            if len(self.pending) > 8192 or not self._fill(len(self.pending) + 1):
                raise S3Error("IncompleteBody", "malformed aws-chunked body")
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def read_bytes(self, n: int) -> bytes:
        data = self._read(n)
        for h in self.hashes:
            h.update(data)
        return data

    def _read(self, n: int) -> bytes:
        if not self.chunked:
            return self.raw.read_bytes(n)
        if self.done:
            return b""
        if self.left == 0:
            header = self._line().decode("latin-1")
            size_text, _, ext = header.partition(";")
            try:
                size = int(size_text, 16)
            except ValueError:
                raise S3Error("IncompleteBody", "malformed aws-chunked body") from None
            self.chunk_signature = ext.partition("chunk-signature=")[2]
            self.chunk_hash = hashlib.sha256()
            self.left = size
            if size == 0:
                self._end_chunk(b"")
                self._trailer()
                self.done = True
                return b""
        take = min(n, self.left)
        if not self._fill(take):
            raise S3Error("IncompleteBody", "the body ended inside an aws-chunked chunk")
        data, self.pending = self.pending[:take], self.pending[take:]
        self.chunk_hash.update(data)
        self.left -= take
        if self.left == 0:
            self._end_chunk(data)
            if not self._fill(2) or self.pending[:2] != b"\r\n":
                raise S3Error("IncompleteBody", "malformed aws-chunked body")
            self.pending = self.pending[2:]
        return data

    def _end_chunk(self, _last: bytes) -> None:
        if not self.signed_chunks:
            return
        to_sign = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", self.auth.amz_date, self.auth.scope, self.previous,
                             EMPTY_SHA256, self.chunk_hash.hexdigest()))
        expected = hmac.new(self.auth.key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self.chunk_signature):
            raise S3Error("SignatureDoesNotMatch", "a chunk signature does not match", 403)
        self.previous = expected

    def _trailer(self) -> None:
        while True:
            line = self._line()
            if not line:
                return
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name.startswith("x-amz-checksum-"):
                if name != self.trailer:
                    raise S3Error("InvalidRequest", f"the trailer {name[:60]} is not the one x-amz-trailer declared")
                self.expected[name[len("x-amz-checksum-"):]] = value.strip()

    def verify(self) -> None:
        """After the whole body was read: raises if it is not what the request said."""
        p = self.auth.payload
        if len(p) == 64 and p != self.sha256.hexdigest():
            raise S3Error("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
        if self.content_md5 is not None and self.content_md5 != base64.b64encode(self.md5.digest()).decode():
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
        for name, h in self.checks.items():
            want = self.expected.get(name)
            if not want:
                where = " in the trailer x-amz-trailer declared" if self.trailer else ""
                raise S3Error("InvalidRequest", f"no value for x-amz-checksum-{name}{where}")
            if want != base64.b64encode(h.digest()).decode():
                raise S3Error("BadDigest", f"The {name.upper()} you specified did not match the calculated checksum.")


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


# The x-amz-checksum-* algorithms checked here; others are refused, never stored unchecked.
CHECKSUMS = {"crc32": _Crc32, "sha1": hashlib.sha1, "sha256": hashlib.sha256}


def _receive(raw, auth: Auth, headers, upload: store.Upload) -> None:
    """Streams the request body into an upload and checks it; any failure leaves nothing behind."""
    try:
        body = Body(raw, auth, headers, md5=upload.md5)
    except S3Error:
        upload.abort()
        raise
    store.pipe(body, upload, check=body.verify)


def _read_all(raw, auth: Auth, headers, limit: int = MAX_XML) -> bytes:
    body = Body(raw, auth, headers)
    out = bytearray()
    while chunk := body.read_bytes(64 << 10):
        out += chunk
        if len(out) > limit:
            raise S3Error("MalformedXML", "the XML body is too large")
    body.verify()
    return bytes(out)


def _xml_items(data: bytes, tag: str) -> list[ElementTree.Element]:
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.") from None
    return [e for e in root.iter() if e.tag.rpartition("}")[2] == tag]


def _text(e: ElementTree.Element, tag: str) -> str:
    for child in e:
        if child.tag.rpartition("}")[2] == tag:
            return child.text or ""
    return ""


# ---- responses -----------------------------------------------------------------------------------


# Characters XML 1.0 cannot carry, not even as character references (a key in a URL may hold them).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _b64(text: str) -> bytes:
    """Base64 as S3's digest headers carry it; b"" where it is not."""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""


def _escape(text: str) -> str:
    return _NOT_XML.sub("\ufffd", escape(text))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _xml(proto, status: int, root: str, inner: str, headers: list | None = None) -> None:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{XMLNS}">{inner}</{root}>'
    proto.response_bytes(status, [("content-type", "application/xml")] + (headers or []), body.encode())


def _error(proto, e: S3Error, resource: str, rid: str, scope, extra: list | None = None) -> None:
    headers = [("content-type", "application/xml"), ("x-amz-request-id", rid)] + (extra or [])
    if has_body(scope):
        # The body may be left unread (a client that sent Expect: 100-continue has not even sent
        # it): the next request on this connection would be taken for it.
        headers.append(("connection", "close"))
    if scope.method.upper() == "HEAD":
        proto.response_empty(e.status, headers)
        return
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{e.code}</Code><Message>{_escape(str(e))}</Message>'
        + "".join(_tag(name, value) for name, value in e.details.items())
        + f"<Resource>{_escape(resource)}</Resource><RequestId>{rid}</RequestId></Error>"
    )
    proto.response_bytes(e.status, headers, body.encode())


def _tag(name: str, value: Any) -> str:
    return f"<{name}>{_escape(str(value))}</{name}>"


def _owner(app: str) -> str:
    """An app's objects and uploads are its own: S3's Owner element names it."""
    return f"<Owner>{_tag('ID', app)}{_tag('DisplayName', app)}</Owner>"


def _object_xml(o: dict[str, Any], owner: str = "", name=str) -> str:
    return (
        "<Contents>" + _tag("Key", name(o["key"])) + _tag("LastModified", _iso(o["updatedAt"])) + _tag("ETag", f'"{o["etag"]}"')
        + _tag("Size", o["size"]) + owner + "<StorageClass>STANDARD</StorageClass></Contents>"
    )


# ---- the endpoint ------------------------------------------------------------------------------


async def route(trigger, scope, proto, deployed, inner: str, base: str) -> None:
    app = deployed.name
    method = scope.method.upper()
    rid = secrets.token_hex(8)
    path = inner[len(S3_ROUTES):]
    bucket, _, key = path.lstrip("/").partition("/")
    try:
        if path and not path.startswith("/"):
            raise S3Error("InvalidURI", "Couldn't parse the specified URI.")
        if key:  # a key is a database key, never a file path: the storage rules judge it, as for JS
            store.check_key(key)
        auth = authenticate(trigger.reader, scope, app)
        params = dict(parse_qsl(scope.query_string, keep_blank_values=True))
        unsupported = UNSUPPORTED.intersection(params)
        if unsupported:  # taken for a plain GET, PUT or DELETE, ?tagging would replace or delete the object
            raise S3Error("NotImplemented", f"A header or query you provided implies functionality that is not "
                          f"implemented: ?{min(unsupported)}", 501)
        _check_version(params.get("versionId"))
        if not bucket:
            if method != "GET":
                raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)
            return _list_buckets(proto, trigger.reader, app)
        store.check_bucket(bucket)
        if not key:
            return await _bucket_op(trigger, scope, proto, deployed, auth, method, bucket, params)
        return await _object_op(trigger, scope, proto, deployed, auth, method, bucket, key, params, rid)
    except StorageError as e:
        _error(proto, from_storage(e), path, rid, scope)
    except S3Error as e:
        _error(proto, e, path, rid, scope)
    except HttpError as e:  # the request body over limits.bodyMb, a malformed Content-Length: S3's XML too
        code = "EntityTooLarge" if e.status == 413 else "InvalidRequest"
        _error(proto, S3Error(code, f"{e} (limits.bodyMb caps each request; S3 clients split large files into parts)"
                              if e.status == 413 else str(e)), path, rid, scope)


route.checks_path = True  # its paths name keys, which check_key judges, with S3's error XML


def _list_buckets(proto, conn, app: str) -> None:
    items = "".join(
        "<Bucket>" + _tag("Name", b["name"]) + _tag("CreationDate", _iso(b["createdAt"])) + "</Bucket>"
        for b in store.buckets(conn, app)
    )
    owner = _owner(app)
    _xml(proto, 200, "ListAllMyBucketsResult", f"{owner}<Buckets>{items}</Buckets>")


def _check_version(version: str | None) -> None:
    """Buckets keep no versions: an object's only version is `null`, as in a bucket without versioning,
    where S3 refuses any other id (taken for the current object, it would read or delete that)."""
    if version is not None and version != "null":
        raise S3Error("InvalidArgument", "Invalid version id specified")


def _need_bucket(conn, app: str, bucket: str) -> int:
    bid = store.bucket_id(conn, app, bucket)
    if bid is None:
        raise S3Error("NoSuchBucket", "The specified bucket does not exist", 404)
    return bid


async def _bucket_op(trigger, scope, proto, deployed, auth, method, bucket, params) -> None:
    app, reader = deployed.name, trigger.reader
    if method == "HEAD":
        _need_bucket(reader, app, bucket)
        proto.response_empty(200, [])
        return
    if method == "GET" and "uploads" in params:
        _need_bucket(reader, app, bucket)
        return _list_uploads(proto, reader, app, bucket, params)
    if method == "GET" and "location" in params:
        _need_bucket(reader, app, bucket)
        return _xml(proto, 200, "LocationConstraint", "")
    if method == "GET":
        _need_bucket(reader, app, bucket)
        return _list_objects(proto, reader, app, bucket, params)
    raw = trigger.body_reader(scope, proto, deployed)

    def write(conn):
        if method == "PUT":
            _read_all(raw, auth, scope.headers)  # a CreateBucketConfiguration says nothing we use
            store.create_bucket(conn, app, bucket)
            return ("empty", 200, [("location", f"/{bucket}")])
        if method == "DELETE":
            store.delete_bucket(conn, app, bucket)
            return ("empty", 204, [])
        if method == "POST" and "delete" in params:
            _need_bucket(conn, app, bucket)
            data = _read_all(raw, auth, scope.headers)
            items = _xml_items(data, "Object")
            if len(items) > 1000:
                raise S3Error("MalformedXML", "a DeleteObjects request names at most 1000 keys")
            quiet = any((q.text or "").strip() == "true" for q in _xml_items(data, "Quiet"))
            deleted, errors = [], []
            for item in items:
                k = _text(item, "Key")
                try:
                    store.check_key(k)
                    _check_version(_text(item, "VersionId") or None)
                    deleted.append(k)
                except (StorageError, S3Error) as e:
                    errors.append((k, str(e)))
            store.remove(conn, app, bucket, deleted)
            inner = "".join(f"<Deleted>{_tag('Key', k)}</Deleted>" for k in deleted if not quiet) + "".join(
                f"<Error>{_tag('Key', k)}<Code>InvalidArgument</Code>{_tag('Message', m)}</Error>" for k, m in errors
            )
            return ("xml", 200, "DeleteResult", inner)
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)

    result = await trigger.on_wasm_thread(write, app)
    _answer(proto, result)


def _answer(proto, result) -> None:
    if result[0] == "empty":
        proto.response_empty(result[1], result[2])
    else:
        _xml(proto, result[1], result[2], result[3], result[4] if len(result) > 4 else None)


def _list_objects(proto, conn, app: str, bucket: str, params: dict[str, str]) -> None:
    v2 = params.get("list-type") == "2"
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
    encoding = _encoding_type(params)
    name = _url_encoded if encoding else str  # botocore asks for url and decodes what comes back so
    max_keys_text = params.get("max-keys", "1000")
    if not (max_keys_text.isascii() and max_keys_text.isdigit()):
        raise S3Error("InvalidArgument", "max-keys must be an integer")
    max_keys = min(int(max_keys_text), 1000)
    if v2:
        token = params.get("continuation-token")
        start = store.decode_cursor(token) if token else (params["start-after"] + "\x00" if params.get("start-after") else "")
    else:
        start = params["marker"] + "\x00" if params.get("marker") else ""
    objects, prefixes, more = store.listing(conn, app, bucket, prefix, max_keys, start, delimiter) if max_keys else ([], [], None)
    inner = (
        _tag("Name", bucket) + _tag("Prefix", name(prefix)) + (_tag("Delimiter", name(delimiter)) if delimiter else "")
        + _tag("MaxKeys", max_keys) + (_tag("EncodingType", encoding) if encoding else "")
        + _tag("IsTruncated", "true" if more else "false")
        + "".join(_object_xml(o, _owner(app) if not v2 or params.get("fetch-owner") == "true" else "", name) for o in objects)
        + "".join(f"<CommonPrefixes>{_tag('Prefix', name(p))}</CommonPrefixes>" for p in prefixes)
    )
    if v2:
        inner += _tag("KeyCount", len(objects) + len(prefixes))
        if params.get("start-after"):
            inner += _tag("StartAfter", name(params["start-after"]))
        if params.get("continuation-token"):
            inner += _tag("ContinuationToken", params["continuation-token"])
        if more:
            inner += _tag("NextContinuationToken", store.encode_cursor(more))
    else:
        inner += _tag("Marker", name(params.get("marker", "")))
        if more:
            last = (objects[-1]["key"] if objects else "") if not prefixes else max(prefixes[-1], objects[-1]["key"] if objects else "")
            inner += _tag("NextMarker", name(last))
    _xml(proto, 200, "ListBucketResult", inner)


def _metadata(headers) -> dict[str, str]:
    return {k[len("x-amz-meta-"):]: v for k, v in headers.items() if k.lower().startswith("x-amz-meta-")}


def _representation(headers) -> dict[str, str]:
    """The representation headers a PutObject, CopyObject (REPLACE) or CreateMultipartUpload stores.

    `aws-chunked` in Content-Encoding says how the request body was framed, not what the object is:
    dropped, as S3 drops it."""
    found = {name: value for name in store.REPRESENTATION_HEADERS if (value := headers.get(name))}
    if "content-encoding" in found:
        codings = [c.strip() for c in found["content-encoding"].split(",")]
        found["content-encoding"] = ", ".join(c for c in codings if c and c.lower() != "aws-chunked")
        if not found["content-encoding"]:
            del found["content-encoding"]
    return found


# GetObject's response-* query parameters (a signed request's): the headers of this one response.
RESPONSE_OVERRIDES = ("content-type", "content-language", "expires", "cache-control", "content-disposition",
                      "content-encoding")


async def _object_op(trigger, scope, proto, deployed, auth, method, bucket, key, params, rid) -> None:
    app, reader = deployed.name, trigger.reader
    if method in ("GET", "HEAD") and "uploadId" not in params:
        _need_bucket(reader, app, bucket)
        meta, _ = store.head(reader, app, bucket, key)
        if "partNumber" in params:
            # A single-part object is its own part 1; the parts of a multipart one are not kept apart.
            if "-" in meta["etag"]:
                raise S3Error("NotImplemented", "GetObject by part number of a multipart object is not implemented", 501)
            if params["partNumber"] != "1":
                raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
        extra = [(f"x-amz-meta-{k}", v) for k, v in meta["metadata"].items()] + [("x-amz-request-id", rid)]
        overrides = [(name, store.check_header_value(f"response-{name}", params[f"response-{name}"]))
                     for name in RESPONSE_OVERRIDES if f"response-{name}" in params]

        def refuse(status, headers):  # S3 answers these with its error XML
            error = S3Error("InvalidRange", "The requested range is not satisfiable", 416) if status == 416 else \
                from_storage(store.precondition_failed())
            _error(proto, error, f"/{bucket}/{key}", rid, scope, headers)

        return await http.send_object(proto, reader, app, bucket, key, method, scope.headers, 200, extra, refuse,
                                      overrides)
    if method == "GET":
        return _list_parts(proto, reader, app, bucket, key, params["uploadId"], params)
    raw = trigger.body_reader(scope, proto, deployed)
    limits = deployed.manifest.limits
    headers = scope.headers
    upsert = (headers.get("if-none-match") or "").strip() != "*"  # If-None-Match: * writes only a new key
    if_match = headers.get("if-match")  # the object it replaces must carry one of these ETags

    def write(conn):
        if method == "PUT" and "partNumber" in params:
            return _upload_part(conn, app, bucket, key, raw, auth, headers, params, limits)
        if method == "PUT" and headers.get("x-amz-copy-source"):
            src_bucket, src_key = _copy_source(conn, app, headers)
            directive = (headers.get("x-amz-metadata-directive") or "COPY").upper()
            if directive not in ("COPY", "REPLACE"):
                raise S3Error("InvalidArgument", "Unknown metadata directive.")
            if directive == "COPY" and (src_bucket, src_key) == (bucket, key):
                raise S3Error("InvalidRequest", SELF_COPY)
            replace = {}
            if directive == "REPLACE":  # as AWS: the copy takes the request's content type and metadata
                replace = {"content_type": headers.get("content-type") or "binary/octet-stream",
                           "metadata": _metadata(headers), "cache_control": headers.get("cache-control"),
                           "headers": _representation(headers)}
            copied = store.copy(conn, app, src_bucket, src_key, key, bucket, limits.storage_mb << 20,
                                upsert=upsert, if_match=if_match, source_check=_copy_source_conditions(headers),
                                **replace)
            inner = _tag("ETag", f'"{copied["etag"]}"') + _tag("LastModified", _iso(copied["updatedAt"]))
            return ("xml", 200, "CopyObjectResult", inner)
        if method == "PUT":
            _need_bucket(conn, app, bucket)
            upload = store.Upload(conn, app, bucket, key, headers.get("content-type") or "binary/octet-stream",
                                  _metadata(headers), upsert, limits.storage_mb << 20,
                                  cache_control=headers.get("cache-control"), if_match=if_match,
                                  headers=_representation(headers))
            _receive(raw, auth, headers, upload)
            meta = upload.finish()
            return ("empty", 200, [("etag", f'"{meta["etag"]}"')])
        if method == "DELETE" and "uploadId" in params:
            _abort_upload(conn, app, bucket, key, params["uploadId"])
            return ("empty", 204, [])
        if method == "DELETE":
            if headers.get("x-amz-if-match-last-modified-time") or headers.get("x-amz-if-match-size"):
                # conditions of directory buckets: refused rather than ignored
                raise S3Error("NotImplemented", "A header you provided implies functionality that is not implemented", 501)
            _need_bucket(conn, app, bucket)
            store.remove(conn, app, bucket, [key], if_match)
            return ("empty", 204, [])
        if method == "POST" and "uploads" in params:
            upload_id = secrets.token_urlsafe(24)
            with transaction(conn):  # the bucket, checked where the upload is recorded: not removed in between
                _need_bucket(conn, app, bucket)
                store.check_content_type(conn, app, bucket, headers.get("content-type") or "binary/octet-stream")
                cache_control = store.check_cache_control(headers.get("cache-control"))
                representation = store.check_representation(_representation(headers))
                conn.execute(
                    "INSERT INTO s3_uploads(id, app, bucket, key, content_type, metadata, created_at, cache_control, "
                    "headers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (upload_id, app, bucket, key, headers.get("content-type") or "binary/octet-stream",
                     msgspec.json.encode(_metadata(headers)).decode(), time.time(), cache_control,
                     store.headers_json(representation)),
                )
            inner = _tag("Bucket", bucket) + _tag("Key", key) + _tag("UploadId", upload_id)
            return ("xml", 200, "InitiateMultipartUploadResult", inner)
        if method == "POST" and "uploadId" in params:
            return _complete(conn, app, bucket, key, params["uploadId"], _read_all(raw, auth, headers), limits, upsert,
                             if_match)
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)

    _answer(proto, await trigger.on_wasm_thread(write, app))


def _upload_row(conn, app: str, bucket: str, key: str, upload_id: str):
    row = conn.execute(
        "SELECT content_type, metadata, cache_control, headers FROM s3_uploads "
        "WHERE id = ? AND app = ? AND bucket = ? AND key = ?",
        (upload_id, app, bucket, key),
    ).fetchone()
    if row is None:
        raise S3Error("NoSuchUpload", "The specified multipart upload does not exist.", 404)
    return row


COPY_CONDITIONS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


def _copy_source_conditions(headers):
    """CopyObject's x-amz-copy-source-if-* as a check of the source, in RFC 9110's order as a GET's
    conditions: any that does not hold is PreconditionFailed (412), as S3 answers."""
    given = {name: headers.get(f"x-amz-copy-source-{name}") for name in COPY_CONDITIONS}
    if not any(given.values()):
        return None

    def check(meta: dict) -> None:
        wanted = {k: v for k, v in given.items() if v}
        status = negotiate(f'"{meta["etag"]}"', meta["size"], "GET", wanted, meta["updatedAt"])[0]
        if status in (304, 412):
            raise store.precondition_failed()

    return check


def _copy_source(conn, app: str, headers) -> tuple[str, str]:
    """The (bucket, key) x-amz-copy-source names, in one of the app's buckets."""
    source, _, query = headers["x-amz-copy-source"].partition("?")
    _check_version(dict(parse_qsl(query)).get("versionId"))
    source = unquote(source).lstrip("/")
    src_bucket, _, src_key = source.partition("/")
    _need_bucket(conn, app, src_bucket)
    return src_bucket, src_key


def _copy_range(headers, size: int) -> tuple[int, int]:
    """The bytes [start, end) of the source x-amz-copy-source-range names (the whole object without it)."""
    text = headers.get("x-amz-copy-source-range")
    if text is None:
        return 0, size
    first, dash, last = text.removeprefix("bytes=").partition("-")
    if not (text.startswith("bytes=") and dash and (first.isascii() and first.isdigit()) and (last.isascii() and last.isdigit()) and int(first) <= int(last) < size):
        raise S3Error("InvalidArgument", f"Range specified is not valid for source object of size: {size}")
    return int(first), int(last) + 1


def _copy_into(conn, upload: store.Upload, data: int, start: int = 0, end: int | None = None) -> None:
    """Writes bytes of an upload into another, a chunk at a time (memory stays bounded)."""
    try:
        for chunk in store.read(conn, data, start, end):
            upload.write(chunk)
    except BaseException:
        upload.abort()
        raise


def _upload_part(conn, app, bucket, key, raw, auth, headers, params, limits):
    """UploadPart, or UploadPartCopy with x-amz-copy-source: the part's bytes are (a range of) an object's."""
    number_text, upload_id = params.get("partNumber", ""), params.get("uploadId", "")
    if not (number_text.isascii() and number_text.isdigit()) or not 1 <= int(number_text) <= 10000:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
    number = int(number_text)
    _upload_row(conn, app, bucket, key, upload_id)
    source = None
    if headers.get("x-amz-copy-source"):
        meta, source = store.head(conn, app, *_copy_source(conn, app, headers))
        span = _copy_range(headers, meta["size"])
    part = store.Upload(conn, app, bucket, key, "", {}, True, limits.storage_mb << 20, part=True)
    if source is None:
        _receive(raw, auth, headers, part)
    else:
        _copy_into(conn, part, source, *span)
    md5 = part.finish_part(upload_id, number)
    if source is not None:
        return ("xml", 200, "CopyPartResult", _tag("ETag", f'"{md5}"') + _tag("LastModified", _iso(time.time())))
    return ("empty", 200, [("etag", f'"{md5}"')])


def _complete(conn, app, bucket, key, upload_id, xml: bytes, limits, upsert: bool, if_match: str | None):
    wanted = []
    for item in _xml_items(xml, "Part"):
        number = _text(item, "PartNumber")
        if not (number.isascii() and number.isdigit()):
            raise S3Error("MalformedXML", "a Part has no PartNumber")
        wanted.append((int(number), _text(item, "ETag").strip().strip('"')))
    if not wanted:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.")
    if [n for n, _ in wanted] != sorted({n for n, _ in wanted}):
        raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. Parts must be ordered by part number.")
    # Under the write lock: a part re-uploaded or an abort meanwhile cannot slip between the check and the switch.
    with transaction(conn):
        content_type, metadata, cache_control, representation = _upload_row(conn, app, bucket, key, upload_id)
        metadata = msgspec.json.decode(metadata)
        representation = msgspec.json.decode(representation) if representation else None
        chosen = _chosen_parts(conn, upload_id, wanted)
        digest = hashlib.md5(b"".join(bytes.fromhex(etag) for _, _, etag, _ in chosen))
        etag = f"{digest.hexdigest()}-{len(wanted)}"
        internal = all(location is None for _, _, _, location in chosen)
        if internal:  # the object is made of the parts' chunks as they are: nothing is copied
            store.assemble(conn, app, bucket, key, [(data, size) for data, size, _, _ in chosen], etag,
                           content_type, metadata, upsert, cache_control, if_match, representation)
            conn.executemany("DELETE FROM s3_parts WHERE upload = ? AND data = ?",
                             [(upload_id, data) for data, _, _, _ in chosen])
            store.forget_upload(conn, upload_id)
    if internal:
        store.sweep(conn)
    else:  # external parts are separate objects there: their bytes are copied into one
        upload = store.Upload(conn, app, bucket, key, content_type, metadata, upsert,
                              (limits.storage_mb << 20) + sum(size for _, size, _, _ in chosen), cache_control=cache_control,
                              if_match=if_match, headers=representation)
        for data, _, _, _ in chosen:
            _copy_into(conn, upload, data)
        upload.finish(etag)
        _drop_upload(conn, upload_id)
    inner = _tag("Location", f"/{bucket}/{key}") + _tag("Bucket", bucket) + _tag("Key", key) + _tag("ETag", f'"{etag}"')
    return ("xml", 200, "CompleteMultipartUploadResult", inner)


def _chosen_parts(conn, upload_id: str, wanted: list[tuple[int, str]]) -> list[tuple[int, int, str, str | None]]:
    """The parts a CompleteMultipartUpload names, checked: (data id, size, MD5 hex, external location)."""
    parts = {n: rest for n, *rest in conn.execute(
        "SELECT p.number, p.data, p.size, p.etag, d.location FROM s3_parts p JOIN blob_data d ON d.id = p.data "
        "WHERE p.upload = ?", (upload_id,))}
    for i, (n, etag) in enumerate(wanted):
        if n not in parts or parts[n][2] != etag:
            raise S3Error("InvalidPart", "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.")
        if i < len(wanted) - 1 and parts[n][1] < MIN_PART:
            raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.")
    return [tuple(parts[n]) for n, _ in wanted]


def _drop_upload(conn, upload_id: str) -> None:
    with transaction(conn):
        store.forget_upload(conn, upload_id)
    store.reap(conn)


def _abort_upload(conn, app, bucket, key, upload_id) -> None:
    _upload_row(conn, app, bucket, key, upload_id)
    _drop_upload(conn, upload_id)


def _list_parts(proto, conn, app, bucket, key, upload_id, params: dict[str, str]) -> None:
    """One page of the upload's parts: those after part-number-marker, at most max-parts (1000)."""
    _upload_row(conn, app, bucket, key, upload_id)
    marker_text, max_text = params.get("part-number-marker", "0") or "0", params.get("max-parts", "1000")
    if not ((marker_text.isascii() and marker_text.isdigit()) and (max_text.isascii() and max_text.isdigit())):
        raise S3Error("InvalidArgument", "part-number-marker and max-parts must be integers")
    marker, max_parts = int(marker_text), min(int(max_text), 1000)
    rows = conn.execute(
        "SELECT number, size, etag FROM s3_parts WHERE upload = ? AND number > ? ORDER BY number LIMIT ?",
        (upload_id, marker, max_parts + 1),
    ).fetchall()
    more, rows = len(rows) > max_parts, rows[:max_parts]
    parts = "".join(
        "<Part>" + _tag("PartNumber", n) + _tag("ETag", f'"{etag}"') + _tag("Size", size) + "</Part>" for n, size, etag in rows
    )
    inner = (_tag("Bucket", bucket) + _tag("Key", key) + _tag("UploadId", upload_id) + _tag("PartNumberMarker", marker)
             + (_tag("NextPartNumberMarker", rows[-1][0]) if rows else "") + _tag("MaxParts", max_parts)
             + _tag("IsTruncated", "true" if more else "false") + parts)
    _xml(proto, 200, "ListPartsResult", inner)


def _encoding_type(params: dict[str, str]) -> str | None:
    encoding = params.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    return encoding


def _url_encoded(text: str) -> str:
    """encoding-type=url as S3 answers it: Java's URLEncoder (a space is +) with / kept."""
    return quote_plus(text, safe="/*").replace("~", "%7E")


def _max_uploads(params: dict[str, str]) -> int:
    """max-uploads, refused with S3's messages when it is not a 32-bit count; served at most 1000."""
    match = re.fullmatch(r"(-?)0*([0-9]{1,10})", params.get("max-uploads") or "1000")
    if match and match[1]:
        raise S3Error("InvalidArgument", f"Argument max-uploads must be an integer between 0 and {MAX_INT32}")
    if not match or int(match[2]) > MAX_INT32:
        raise S3Error("InvalidArgument", "Provided max-uploads not an integer or within integer range")
    return min(int(match[2]), 1000)


def _uploads(conn, app: str, bucket: str, prefix: str, delimiter: str, lower: tuple, limit: int) -> list[tuple]:
    """Up to `limit` + 1 of the bucket's uploads past `lower` (key, initiated, id) in that order:
    (key, id, initiated), or (common prefix, None, 0) for a folder when there is a delimiter."""
    query = (
        "SELECT key, id, created_at FROM s3_uploads WHERE app = ? AND bucket = ? AND (key, created_at, id) > (?, ?, ?) "
        "AND (?6 IS NULL OR key < ?6) ORDER BY key, created_at, id LIMIT ?"
    )
    upper = store.past_prefix(prefix) if prefix else None
    items: list[tuple] = []
    while len(items) <= limit:
        for key, upload_id, created in conn.execute(query, (app, bucket, *lower, upper, limit + 1 - len(items))).fetchall():
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                items.append((key[: cut + len(delimiter)], None, 0.0))
                lower = (store.past_prefix(items[-1][0]), -1.0, "")
                break  # the rest of this folder is skipped by the next query
            items.append((key, upload_id, created))
            lower = (key, created, upload_id)
        else:
            break
    return items


def _list_uploads(proto, conn, app: str, bucket: str, params: dict[str, str]) -> None:
    """One page of the bucket's uploads in progress, by key then initiation (as S3 orders them):
    those after key-marker (and, of that key, after upload-id-marker), at most max-uploads."""
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
    key_marker, id_marker = params.get("key-marker", ""), params.get("upload-id-marker", "")
    encoding = _encoding_type(params)
    max_uploads = _max_uploads(params)
    marked = conn.execute(
        "SELECT created_at FROM s3_uploads WHERE id = ? AND app = ? AND bucket = ? AND key = ?",
        (id_marker, app, bucket, key_marker),
    ).fetchone() if key_marker and id_marker else None
    lower = (prefix, -1.0, "")  # (key, initiated, id) the page starts after
    if marked:
        lower = max(lower, (key_marker, marked[0], id_marker))
    elif key_marker:  # past the key's uploads; from its first if the upload-id-marker has completed or aborted since
        lower = max(lower, (key_marker, -1.0 if id_marker else math.inf, ""))
    cut = key_marker.find(delimiter, len(prefix)) if delimiter and key_marker.startswith(prefix) else -1
    if cut >= 0:  # the folder key-marker is in was listed already (a page ending on a folder names it as NextKeyMarker)
        lower = max(lower, (store.past_prefix(key_marker[: cut + len(delimiter)]), -1.0, ""))
    items = _uploads(conn, app, bucket, prefix, delimiter, lower, max_uploads) if max_uploads else []
    more, items = len(items) > max_uploads, items[:max_uploads]
    name = _url_encoded if encoding else str
    owner = _tag("ID", app) + _tag("DisplayName", app)
    uploads = "".join(
        "<Upload>" + _tag("Key", name(key)) + _tag("UploadId", upload_id) + f"<Initiator>{owner}</Initiator>"
        + f"<Owner>{owner}</Owner><StorageClass>STANDARD</StorageClass>" + _tag("Initiated", _iso(created)) + "</Upload>"
        for key, upload_id, created in items if upload_id
    )
    prefixes = "".join(f"<CommonPrefixes>{_tag('Prefix', name(p))}</CommonPrefixes>" for p, upload_id, _ in items if not upload_id)
    next_key, next_id = (items[-1][0], items[-1][1] or "") if more else ("", "")
    inner = (
        _tag("Bucket", bucket) + _tag("KeyMarker", name(key_marker)) + _tag("UploadIdMarker", id_marker)
        + _tag("NextKeyMarker", name(next_key)) + _tag("NextUploadIdMarker", next_id)
        + (_tag("Delimiter", name(delimiter)) if delimiter else "") + (_tag("Prefix", name(prefix)) if prefix else "")
        + _tag("MaxUploads", max_uploads) + (_tag("EncodingType", encoding) if encoding else "")
        + _tag("IsTruncated", "true" if more else "false") + uploads + prefixes
    )
    _xml(proto, 200, "ListMultipartUploadsResult", inner)
