"""Static files of an app version, served from the cartridge (the VFS).

Content-Type from the name, a strong ETag from the content hash (304 on a
match), single byte ranges (206/416), and a cache policy that revalidates:
a redeploy changes the bytes behind a URL at once.
"""

from __future__ import annotations

import mimetypes
import re
import time
from email.utils import parsedate_to_datetime
from collections import OrderedDict

import apsw

from . import cartridge

CACHE_CONTROL = "public, max-age=0, must-revalidate"
TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml", "application/xml")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("image/webp", ".webp")


# A compressed file is served as it is stored, as the compressed file it is: `x.txt.gz` is not text
# (browsers would show its bytes), and `.svgz` without a Content-Encoding no image.
COMPRESSED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz",
                    "compress": "application/x-compress"}


def content_type(path: str) -> str:
    ctype, encoding = mimetypes.guess_type(path, strict=False)
    if encoding:
        return COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    ctype = ctype or "application/octet-stream"
    if ctype.startswith(TEXT_TYPES):
        ctype += "; charset=utf-8"
    return ctype


def lookup(static: dict[str, tuple[str, int]], path: str) -> tuple[str, tuple[str, int]] | None:
    """The file for a request path ('' or '.../' means its index.html)."""
    if path == "" or path.endswith("/"):
        path += "index.html"
    hit = static.get(path)
    return (path, hit) if hit else None


_BYTE_RANGE = re.compile(r"([0-9]*)-([0-9]*)")


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive) for one satisfiable range; None to ignore the header; 'unsatisfiable'."""
    if not header.startswith("bytes=") or "," in header:
        return None  # several ranges: RFC 9110 lets a server answer with the whole body
    m = _BYTE_RANGE.fullmatch(header[6:].strip())  # digits only: int() would also take "+5" and "1_0"
    if not m or m[1] == m[2] == "":
        return None
    first, last = m[1], m[2]
    if first == "":
        n = int(last)
        if n <= 0:
            return "unsatisfiable"
        return (max(size - n, 0), size - 1) if size else "unsatisfiable"
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size:
        return "unsatisfiable"
    if start < 0 or end < start:
        return None
    return start, min(end, size - 1)


class Blobs:
    """A small LRU of static file bytes in front of the cartridge."""

    def __init__(self, conn: apsw.Connection, budget: int = 32 << 20):
        self.conn = conn
        self.budget = budget
        self.used = 0
        self.items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, digest: str) -> bytes:
        data = self.items.get(digest)
        if data is not None:
            self.items.move_to_end(digest)
            return data
        data = cartridge.get_object(self.conn, digest)
        if data is None:
            raise LookupError(digest)
        if len(data) <= self.budget // 4:
            self.items[digest] = data
            self.used += len(data)
            while self.used > self.budget:
                _, old = self.items.popitem(last=False)
                self.used -= len(old)
        return data


def negotiate(etag: str, size: int, method: str, req_headers, modified: float | None = None) -> tuple[int, int, int, list[tuple[str, str]]]:
    """What to send of a representation: (status 200/206/304/412/416, first byte, last byte, headers to add).

    Honours, in RFC 9110's order, If-Match (or, without it, If-Unmodified-Since),
    If-None-Match (or, without it, If-Modified-Since), a single byte Range, and If-Range.
    """
    im = req_headers.get("if-match")
    if im and not (im.strip() == "*" or etag in [t.strip() for t in im.split(",")]):  # strong comparison
        return 412, 0, -1, []
    ius = req_headers.get("if-unmodified-since")
    if not im and ius and modified is not None:
        try:
            if int(modified) > parsedate_to_datetime(ius).timestamp():
                return 412, 0, -1, []
        except (TypeError, ValueError, IndexError):
            pass  # an unreadable date is ignored, as RFC 9110 says
    inm = req_headers.get("if-none-match")
    if inm and (inm.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in inm.split(",")]):
        return 304, 0, -1, []
    ims = req_headers.get("if-modified-since")
    if not inm and ims and modified is not None:
        try:
            since = parsedate_to_datetime(ims).timestamp()
            # A date later than now is invalid (RFC 9110 13.1.3): ignored.
            if int(modified) <= since <= time.time():
                return 304, 0, -1, []
        except (TypeError, ValueError, IndexError):
            pass  # an unreadable date is ignored, as RFC 9110 says
    rng = req_headers.get("range")
    if_range = req_headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        rng = None  # the client's partial copy is of other bytes: send the whole thing
    if rng and method in ("GET", "HEAD"):
        parsed = parse_range(rng, size)
        if parsed == "unsatisfiable":
            return 416, 0, -1, [("content-range", f"bytes */{size}")]
        if parsed is not None:
            start, end = parsed
            return 206, start, end, [("content-range", f"bytes {start}-{end}/{size}")]
    return 200, 0, size - 1, []


def respond(proto, blobs: Blobs, path: str, digest: str, size: int, method: str, req_headers) -> None:
    etag = f'"{digest[:32]}"'
    headers = [
        ("content-type", content_type(path)),
        ("etag", etag),
        ("cache-control", CACHE_CONTROL),
        ("accept-ranges", "bytes"),
    ]
    status, start, end, extra = negotiate(etag, size, method, req_headers)
    headers += extra
    if status in (304, 412, 416):
        proto.response_empty(status, headers)
        return
    if method == "HEAD":
        proto.response_empty(status, headers + [("content-length", str(end - start + 1))])
        return
    data = blobs.get(digest)
    proto.response_bytes(status, headers, data[start : end + 1] if status == 206 else data)
