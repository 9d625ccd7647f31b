"""A null S3 server: speaks enough S3 for boto3's upload_file/download_file, stores nothing.

What boto3 and HTTP on loopback can reach on this machine with no storage work
behind them: the most any S3 server could get from that client here. Granian
RSGI, 2 workers, uvloop, as `fazt-host up` runs.

- PUT object / UploadPart: the body is read chunk by chunk and dropped (an
  aws-chunked body is not decoded); 200 with an ETag.
- POST ?uploads: InitiateMultipartUploadResult. POST ?uploadId=: the body is
  read, CompleteMultipartUploadResult.
- HEAD/GET object: the object's size comes from its key: a key ending in
  `null-<bytes>` is that many zero bytes (any other key is empty). GET honours
  `Range: bytes=a-b` (206) and streams 1 MiB pieces of one preallocated buffer.
- Buckets (PUT/HEAD/GET), anything else: 200, empty. No auth.

    python -m granian --interface rsgi --workers 2 --loop uvloop --host 127.0.0.1 --port 8000 null_s3:app
"""

from __future__ import annotations

import re
import uuid
from email.utils import formatdate

PIECE = 1 << 20
ZEROS = bytes(PIECE)
ETAG = '"' + "0" * 32 + '"'
XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
SIZED_KEY = re.compile(r"null-(\d+)$")
RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
LAST_MODIFIED = formatdate(usegmt=True)


def _xml(root: str, fields: dict[str, str]) -> bytes:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{XMLNS}">{inner}</{root}>'.encode()


async def _drain(proto) -> None:
    async for _ in proto:  # one chunk at a time, never the whole body
        pass


OBJECT_HEADERS = [
    ("etag", ETAG),
    ("last-modified", LAST_MODIFIED),
    ("content-type", "binary/octet-stream"),
    ("accept-ranges", "bytes"),
]


async def _get(proto, headers, size: int, head: bool) -> None:
    status, start, end = 200, 0, size - 1
    extra = []
    spec = headers.get("range")
    if spec and size:
        m = RANGE.match(spec.strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start = max(size - int(m.group(2)), 0)
            if start > end:
                proto.response_empty(416, [("content-range", f"bytes */{size}")])
                return
            status = 206
            extra.append(("content-range", f"bytes {start}-{end}/{size}"))
    length = end - start + 1
    out = OBJECT_HEADERS + extra + [("content-length", str(length))]
    if head or length == 0:
        proto.response_empty(status, out)
        return
    if length <= PIECE:
        proto.response_bytes(status, out, ZEROS if length == PIECE else ZEROS[:length])
        return
    transport = proto.response_stream(status, out)
    full, rest = divmod(length, PIECE)
    for _ in range(full):
        await transport.send_bytes(ZEROS)
    if rest:
        await transport.send_bytes(ZEROS[:rest])


async def app(scope, proto) -> None:
    method = scope.method.upper()
    parts = scope.path.lstrip("/").split("/", 1)
    bucket, key = parts[0], parts[1] if len(parts) > 1 else ""
    query = scope.query_string or ""
    if not key:  # service or bucket: create, head, list, whatever: nothing to do
        if method in ("PUT", "POST"):
            await _drain(proto)
        proto.response_empty(200, [("content-length", "0")])
        return
    if method == "PUT":
        await _drain(proto)
        proto.response_empty(200, [("etag", ETAG), ("content-length", "0")])
        return
    if method == "POST":
        await _drain(proto)
        if "uploads" in query.split("&"):
            body = _xml("InitiateMultipartUploadResult", {"Bucket": bucket, "Key": key, "UploadId": uuid.uuid4().hex})
        else:
            body = _xml("CompleteMultipartUploadResult", {
                "Location": f"http://{scope.authority or 'localhost'}/{bucket}/{key}",
                "Bucket": bucket, "Key": key, "ETag": ETAG.replace('"', "&quot;"),
            })
        proto.response_bytes(200, [("content-type", "application/xml")], body)
        return
    if method in ("GET", "HEAD"):
        m = SIZED_KEY.search(key)
        await _get(proto, scope.headers, int(m.group(1)) if m else 0, method == "HEAD")
        return
    if method == "DELETE":
        proto.response_empty(204, [])
        return
    proto.response_empty(405, [("content-length", "0")])
