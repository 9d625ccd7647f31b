"""The HTTP trigger: Granian (RSGI) in front, a worker's wasm threads behind.

Each worker process runs its event loop for I/O and hands every guest call to
its wasm thread (fresh instances on two threads of one process are slower than
on one; a standby takes over while that thread is held by a long call: see
lanes.py). The guest pulls the request body through `read-body`
only when it reads it (once it has, the host reads one piece ahead), and
pushes its response through `send-head` and
`send-body`: a response that completes quickly goes out in one piece, one
that takes longer streams chunk by chunk with bounded buffering.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import re
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, unquote

import msgspec

from . import cartridge, piped, static
from .apps import Deployed, Registry
from .config import MIB, Limits
from .lanes import Lanes
from .runtime import GuestError, GuestTimeout, Invocation, ResponseUnwanted, pieces, remaining_ms

HTTP_INTERFACE = "fazt:host/http@0.1.0"
HANDLER_INTERFACE = "fazt:host/handler@0.1.0"
# A response not finished by then starts streaming; until then it is sent whole.
STREAM_AFTER_S = 0.01
HOUSEKEEP_S = 60  # capabilities keep house at most this often, after a request (an idle worker does nothing)
STREAM_CREDIT = 8  # chunks in flight between the wasm thread and the socket
# A refused request body is read and dropped, up to this much for this long, before
# the answer goes out: closing a socket with unread bytes resets the connection, and
# the client loses the answer with it.
DRAIN_MAX = 64 * MIB
DRAIN_S = 2.0


# Request headers the host writes itself: the cookies joined into one, and two a client's
# own copy of would pass for the host's (the invocation's id is the handler's ctx.requestId).
HOST_SET_HEADERS = frozenset({"cookie", "x-forwarded-prefix", "x-fazt-request-id"})

GONE, UNWANTED = "gone", "unwanted"  # why a streamed response's body goes no further

# An HTTP/2 stream reset is known to Granian by the time its body ends; this long to hear of it.
RESET_WAIT_S = 0.002
BROKEN_BODY = "the request body ended before it was complete (the client went away, or its chunked framing is malformed)"


class HttpError(Exception):
    def __init__(self, status: int, message: str, unread: bool = False, rid: str = ""):
        super().__init__(message)
        self.status = status
        self.unread = unread  # the request body is still to be drained
        self.rid = rid  # the invocation's id, when one was given


class BrokenBody(HttpError):
    def __init__(self):
        super().__init__(400, BROKEN_BODY)


# The exchanges of the request being handled: their unread bodies are drained at its end.
_exchanges: contextvars.ContextVar[list] = contextvars.ContextVar("exchanges")


async def drain(chunks) -> None:
    """Reads and drops what is left of a refused request body, within DRAIN_MAX and DRAIN_S."""
    deadline = time.monotonic() + DRAIN_S
    dropped = 0
    try:
        while dropped < DRAIN_MAX:
            dropped += len(await asyncio.wait_for(chunks.__anext__(), max(0.001, deadline - time.monotonic())))
    except Exception:  # noqa: BLE001 - its end, the time limit, a client gone: the answer goes out anyway
        pass


class ResponseHead(msgspec.Struct):
    status: int
    headers: list[tuple[str, str]] = []
    body: str | None = None  # base64, when the whole response came back inline
    length: int | None = None  # the body's size, when the guest knows it up front


_decode_head = msgspec.json.Decoder(ResponseHead).decode
_END = object()


def request_id() -> str:
    return f"{time.time_ns() // 1_000_000:x}-{secrets.token_hex(6)}"


def json_error(proto, status: int, message: str, rid: str = "") -> None:
    body = {"error": message}
    if rid:
        body["requestId"] = rid
    headers = [("content-type", "application/json")]
    if rid:
        headers.append(("x-fazt-request-id", rid))
    if status == 413:  # the rest of the body is left unread: the client must not reuse the connection
        headers.append(("connection", "close"))
    proto.response_bytes(status, headers, msgspec.json.encode(body))


def has_body(scope) -> bool:
    """Whether a body follows the request's head: a positive Content-Length, chunked, or over HTTP/2
    no Content-Length at all (DATA frames need none, RFC 9113 8.1.1)."""
    length = scope.headers.get("content-length")
    return scope.method.upper() not in ("GET", "HEAD") and (
        (length is not None and (length.isascii() and length.isdigit()) and int(length) > 0)
        or "transfer-encoding" in scope.headers
        or (length is None and scope.http_version == "2")
    )


def body_length(scope, limits: Limits, rid: str = "") -> int | None:
    """The request's Content-Length, refused when malformed or over the app's body limit."""
    length = scope.headers.get("content-length")
    if length is None:
        return None
    if not (length.isascii() and length.isdigit()):
        raise HttpError(400, "invalid content-length", rid=rid)
    if int(length) > limits.body_mb * MIB:
        raise HttpError(413, f"the request body exceeds the limit of {limits.body_mb} MiB", unread=True, rid=rid)
    return int(length)


def unread_body(scope) -> bool:
    """Whether a body nothing read is on its way: a client that sent Expect: 100-continue
    waits for the answer instead, and must not be asked for the body by draining it."""
    return has_body(scope) and "100-continue" not in scope.headers.get("expect", "").lower()


def _to_folder(proto, scope, path: str) -> None:
    """Redirects a folder named without its trailing slash (its relative links resolve inside it)."""
    qs = f"?{scope.query_string}" if scope.query_string else ""
    proto.response_empty(308, [("location", f"{path}/{qs}")])


def request_host(scope) -> str:
    """The request's Host: its header, or HTTP/2's :authority. RFC 9112 3.2: an HTTP/1.1 request
    without one, or with several, is a 400 (with --domain, Host picks the app: a proxy in front
    reading another of several could send the request to an app it did not mean)."""
    hosts = scope.headers.get_all("host")
    if len(hosts) > 1:
        raise HttpError(400, "several Host headers")
    if hosts:
        return hosts[0]
    if scope.authority:
        return scope.authority
    if scope.http_version == "1.1":
        raise HttpError(400, "missing Host header")
    return ""


def unsafe_path(path: str) -> bool:
    """A path with '.' or '..' segments, backslashes or NUL, also once more percent-decoded."""
    decoded = unquote(path)
    return "\0" in decoded or "\\" in decoded or any(seg in ("..", ".") for seg in decoded.split("/"))


# Characters a URL path keeps as they are: RFC 3986's pchar and "/", and those a browser sends
# unescaped in a path (the WHATWG URL parser leaves | ^ [ ] as they are).
PATH_SAFE = "/!$&'()*+,;=:@-._~|^[]"
# Patterns matched whole (fullmatch): "$" would also match before a final "\n".
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token
# A Host header: a name or an IPv4/IPv6 address, and maybe a port.
_AUTHORITY = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# The server frames the response itself; a guest's say on these would clash with it.
_HOST_OWNED = {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "x-fazt-request-id"}


def check_response_head(head: ResponseHead) -> None:
    """A guest's status and headers as the server may send them, or GuestError.

    Granian panics (its worker dies) on a status it cannot send, and a 1xx
    would hand the connection over: a final response is 200-599.
    """
    if not 200 <= head.status <= 599:
        raise GuestError(f"invalid response status {head.status}: a response's status is 200 to 599")
    head.headers = _response_headers(head.headers)


def _response_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    for name, value in headers:
        if not HEADER_NAME.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise GuestError(f"invalid response header {name[:64]!r}")
    return [(n, v) for n, v in headers if n.lower() not in _HOST_OWNED]


class Exchange:
    """One request/response, shared by the event loop and the wasm thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        proto,
        body_limit: int,
        response_limit: int,
        deadline: float,
        content_length: int | None = None,
        http2: bool = False,
    ):
        self.loop = loop
        self.proto = proto
        self.http2 = http2  # Granian ends its bodies otherwise (see _collect)
        self.content_length = content_length
        self.body_limit = body_limit
        self.response_limit = response_limit
        self.deadline = deadline
        self.body_read = 0
        self._body = None
        self._pending = b""
        self.ended = content_length == 0  # the whole body has been read
        self._empties = 0  # empty chunks in a row from Granian's body iterator (see _collect)
        exchanges = _exchanges.get(None)
        if exchanges is not None:
            exchanges.append(self)
        self._ahead: asyncio.Future | None = None  # the next piece, read while the last one is handled
        # read-body pieces: the next is read from the socket and encoded while the guest decodes one
        self._pieces = pieces.ReadAhead(lambda n: self._submit(self._read(n)), self._wait)
        self.head: ResponseHead | None = None
        self.chunks: list[bytes] = []
        self.sent = 0
        self.lock = threading.Lock()
        self.queue: asyncio.Queue | None = None
        self.credit = threading.Semaphore(STREAM_CREDIT)
        self.closed = False
        self.aborted = ""  # GONE or UNWANTED once the rest of a streamed body can go nowhere
        self.started: float | None = None  # when the guest began running (the wasm thread may be busy)
        self.abandoned = False  # answered 504 while still queued: the guest must not start
        self.answer = None  # (capability's handler, result) when a capability answers instead
        self.finished = False  # http.finish: the response is complete before the invocation ends
        self.response_done = loop.create_future()

    # -- wasm thread ---------------------------------------------------------
    def begin(self) -> bool:
        """Marks the guest as starting; False if its deadline passed while it queued (the client has or
        will get its 504, and the guest must not run)."""
        with self.lock:
            now = time.monotonic()
            if self.abandoned or now >= self.deadline:
                return False
            self.started = now
            return True

    def read_body(self, max_bytes: int) -> str:
        """The next piece of the request body as base64 ("" at its end)."""
        return self._pieces.next(max_bytes)

    def read_bytes(self, max_bytes: int) -> bytes:
        """The next piece of the request body (b"" at its end), waiting on the event loop."""
        ahead = self._pieces.take_raw()  # a piece read ahead for read-body comes first
        if ahead is not None:
            return ahead
        return self._wait(self._submit(self._read(max(1, min(max_bytes, 32 * MIB)))))

    def _submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _wait(self, future):
        try:
            # Waiting here the epoch deadline cannot interrupt: bound the wait by it instead.
            return future.result(timeout=max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            future.cancel()
            raise GuestTimeout("the request body did not arrive before the time limit") from None

    def send_head(self, raw: str) -> None:
        try:
            head = _decode_head(raw)
        except msgspec.MsgspecError as e:
            raise GuestError(f"malformed response head: {e}") from None
        self._check_head(head)
        if head.length is not None and head.length > self.response_limit:
            raise HttpError(500, f"the response exceeds the limit of {self.response_limit >> 20} MiB")
        self._emit("head", head)

    def finish(self) -> None:
        """The response is complete: it goes out now, while the invocation goes on."""
        if self.head is None:
            raise GuestError("finish before send-head")
        with self.lock:
            if self.finished:
                return
            self.finished = True
            if self.queue is not None:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, _END)
            else:
                self.loop.call_soon_threadsafe(_settle, self.response_done)

    def finish_inline(self, result: dict) -> None:
        """The handler returned its whole response in the export's result."""
        try:
            head = msgspec.convert(result, ResponseHead)
            body = base64.b64decode(head.body or "", validate=True)
        except (msgspec.MsgspecError, ValueError) as e:
            raise GuestError(f"malformed response: {e}") from None
        self._check_head(head)
        head.length = len(body)
        self._emit("head", head)
        self.send_body(body, len(body))

    def _check_head(self, head: ResponseHead) -> None:
        if self.head is not None:
            raise GuestError("the response head was sent twice")
        check_response_head(head)

    def send_body(self, words: bytes, length: int) -> None:
        if length > len(words):
            raise GuestError("send-body: length exceeds the words sent")
        if self.head is None:
            raise GuestError("send-body before send-head")
        self.sent += length
        if self.sent > self.response_limit:
            raise HttpError(500, f"the response exceeds the limit of {self.response_limit >> 20} MiB")
        if length:
            self._emit("body", words[:length])

    def _emit(self, kind: str, value) -> None:
        if self.aborted == UNWANTED:
            raise ResponseUnwanted("the response to a HEAD request needs no body")
        if self.aborted:
            raise GuestError("the client went away")
        with self.lock:
            if self.finished:
                raise GuestError("the response was finished: nothing can be sent after http.finish")
            if kind == "head":
                self.head = value
            if self.queue is None:
                if kind == "body":
                    self.chunks.append(value)
                return
            queue = self.queue
        if kind == "body" and not self.credit.acquire(timeout=max(0.0, self.deadline - time.monotonic())):
            raise GuestTimeout("the client did not take the response before the time limit")
        self.loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def close(self) -> None:
        self._pieces.cancel()
        with self.lock:
            self.closed = True
            if self.queue is not None and not self.finished:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, _END)

    # -- event loop ------------------------------------------------------------
    def abandon(self) -> bool:
        """Gives up a request still queued at its deadline (True if it had not begun)."""
        with self.lock:
            if self.started is None and time.monotonic() >= self.deadline:
                self.abandoned = True
            return self.abandoned

    async def _read(self, n: int) -> bytes:
        ahead, self._ahead = self._ahead, None
        data = await ahead if ahead is not None else await self._collect(n)
        if len(data) > n:
            data, self._pending = data[:n], data[n:] + self._pending
        elif len(data) < n and not self.ended:
            data += await self._collect(n - len(data))
        if not self.ended:
            # Read on while the wasm thread handles this piece: the client keeps sending
            # instead of waiting for the next request (memory: one piece more).
            self._ahead = asyncio.ensure_future(self._collect(n))
            self._ahead.add_done_callback(_retrieved)
        return data

    async def _cut_short(self) -> bool:
        """Whether a body Granian has ended was not whole: shorter than its Content-Length, or an HTTP/2
        stream the client reset (its end looks like any other; the disconnect tells it apart)."""
        if self.content_length is not None:
            return self.body_read < self.content_length
        if not self.http2 or not self.body_read:  # no bytes: nothing that could be taken for a whole body
            return False
        try:  # on timeout wait_for cancels Granian's future (shielded, it would wait on with the connection)
            await asyncio.wait_for(self.proto.client_disconnect(), RESET_WAIT_S)
        except asyncio.TimeoutError:
            return False
        return True

    async def _collect(self, n: int) -> bytes:
        if self._body is None and self.content_length is not None and self.content_length <= n:
            # The whole body, collected by Granian in one call (its length is within the limit).
            self._body = _exhausted()
            self.ended = True
            try:
                return await self.proto()
            except Exception as e:  # Granian's, for a body shorter than its Content-Length (the client went away)
                raise BrokenBody() from e
        if self._body is None:
            self._body = self.proto.__aiter__()
        parts, size = [self._pending], len(self._pending)
        self._pending = b""
        while size < n and not self.ended:
            try:
                chunk = await self._body.__anext__()
            except StopAsyncIteration:
                self.ended = True
                if await self._cut_short():
                    raise BrokenBody() from None
                break
            except Exception as e:  # as above
                self.ended = True
                raise BrokenBody() from e
            if not chunk:
                # Granian's body iterator gives b"" at the end, then stops; a body that broke
                # (a chunked body cut short or malformed) gives b"" and b"" again before stopping.
                # Over HTTP/2 the end is one b"" or two (an empty last DATA frame), and b"" on and on
                # a connection gone.
                self._empties += 1
                if self._empties > 1 + self.http2:
                    self.ended = True
                    raise BrokenBody()
                continue
            self._empties = 0
            self.body_read += len(chunk)
            if self.body_read > self.body_limit:
                self.ended = True
                await drain(self._body)
                raise HttpError(413, f"the request body exceeds the limit of {self.body_limit >> 20} MiB")
            if size + len(chunk) > n:
                self._pending = chunk[n - size :]
                chunk = chunk[: n - size]
            parts.append(chunk)
            size += len(chunk)
        return parts[-1] if len(parts) == 1 else b"".join(parts)

    async def prefetch(self) -> None:
        """Waits for the body's first piece (or its end) before the guest runs.

        A guest reading a body that has not arrived holds a wasm thread of the
        worker, and the requests behind it wait at least until a standby takes
        over: a client that sends headers and stalls should cost only itself. The piece is the first one
        the guest (or the host, piping it to storage) reads.
        """
        ahead = self._ahead = asyncio.ensure_future(self._collect(pieces.PIECE))
        ahead.add_done_callback(_retrieved)
        try:
            await asyncio.wait_for(asyncio.shield(ahead), max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            ahead.cancel()
            self.ended = True  # the client stopped sending: nothing to drain
            raise HttpError(504, "the request body did not arrive before the time limit") from None

    async def drain_rest(self) -> None:
        """Reads and drops the body the request handling left unread."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:  # the piece being read ahead comes first: one reader at a time
            await asyncio.wait([ahead])
        if not self.ended:
            self.ended = True
            await drain(self._body if self._body is not None else self.proto.__aiter__())

    def start_streaming(self) -> tuple[ResponseHead | None, list[bytes]] | None:
        """Switches to streaming; None if the call finished meanwhile."""
        with self.lock:
            if self.closed:
                return None
            self.queue = asyncio.Queue()
            buffered, self.chunks = self.chunks, []
            return self.head, buffered


async def _exhausted():
    return
    yield


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _retrieved(future: asyncio.Future) -> None:
    """A future nobody awaits (a piece read ahead, an invocation running on after its
    response): its error is not news (the client went away, or the app log has it)."""
    if not future.cancelled():
        future.exception()


def http_functions() -> dict:
    """The host functions of fazt:host/http; they act on the invocation's Exchange."""

    def exchange(inv: Invocation) -> Exchange:
        ex = inv.state.get("http")
        if ex is None:
            raise GuestError("no HTTP request is in progress in this invocation")
        return ex

    def finish(inv: Invocation) -> None:
        exchange(inv).finish()
        inv.responded = True

    return {
        "read-body": lambda inv, max_bytes: exchange(inv).read_body(max_bytes),
        "send-head": lambda inv, head: exchange(inv).send_head(head),
        "send-body": lambda inv, words, length: exchange(inv).send_body(words, length),
        "finish": finish,
    }


class Tagged:
    """A request's RSGI protocol that puts x-fazt-request-id on whichever response goes out.

    Handler responses carry the id of their invocation (and its log lines);
    static files, redirects, host errors and storage URLs get one of their own.
    A whole body answering HEAD goes as its length only: over HTTP/2, Granian would send it
    (a protocol error the client drops the response for).
    """

    __slots__ = ("_proto", "_head")

    def __init__(self, proto, head: bool = False):
        self._proto = proto
        self._head = head

    def __getattr__(self, name):
        return getattr(self._proto, name)

    def __call__(self):
        return self._proto()

    def __aiter__(self):
        return self._proto.__aiter__()

    @staticmethod
    def _tagged(headers) -> list:
        if any(name.lower() == "x-fazt-request-id" for name, _ in headers):
            return headers
        return [*headers, ("x-fazt-request-id", request_id())]

    def response_empty(self, status, headers):
        return self._proto.response_empty(status, self._tagged(headers))

    def response_str(self, status, headers, body):
        if self._head:
            return self.response_bytes(status, headers, body.encode())
        return self._proto.response_str(status, self._tagged(headers), body)

    def response_bytes(self, status, headers, body):
        if self._head:
            if not any(name.lower() == "content-length" for name, _ in headers):
                headers = [*headers, ("content-length", str(len(body)))]
            return self._proto.response_empty(status, self._tagged(headers))
        return self._proto.response_bytes(status, self._tagged(headers), body)

    def response_file(self, status, headers, *args):
        return self._proto.response_file(status, self._tagged(headers), *args)

    def response_stream(self, status, headers):
        return self._proto.response_stream(status, self._tagged(headers))


# How long waitUntil work may run on once the worker is asked to stop, within the time Granian gives
# a worker to stop (serve.WORKER_STOP_S).
SETTLE_S = 4


class HttpTrigger:
    """The RSGI application of one worker process."""

    def __init__(self, host, make_host, threads: int, domain: str = ""):
        """`host` serves the first wasm thread; `make_host()` makes a standby thread's."""
        self.host = host  # its routes and result handlers are every host's
        self.domain = domain.lower().strip(".")
        self.wasm = Lanes(host, make_host, threads)
        # Compiled code that left the cache folder while serving is compiled here, off the wasm threads.
        self._compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fazt-compile")
        self._compiling: dict[str, asyncio.Future] = {}
        self.reader = cartridge.connect(host.settings.cartridge)  # the loop thread's own connection
        self.registry = Registry(self.reader)
        self._after_response: dict[asyncio.Future, Invocation] = {}  # invocations running on after their response
        self._apps_seen: dict | None = None
        self.blobs = static.Blobs(self.reader)
        self._housekept = time.monotonic()

    def route(self, scope, host: str) -> tuple[str, str, str]:
        """(app, path inside the app, base path) from the Host (request_host) or the first path segment."""
        path = scope.path
        if self.domain:
            name = host.split(":")[0].lower().rstrip(".")
            if name.endswith("." + self.domain):
                return name[: -len(self.domain) - 1], path, ""
        _, _, rest = path.partition("/")
        app, slash, inner = rest.partition("/")
        return app, "/" + inner if slash else "", "/" + app

    async def __call__(self, scope, proto):
        if scope.proto != "http":
            return
        proto = Tagged(proto, head=scope.method.upper() == "HEAD")
        token = _exchanges.set([])
        drained = False
        try:
            await self.handle(scope, proto)
        except HttpError as e:
            if e.unread:
                drained = True  # now or never: a client waiting on 100-continue is not asked for the body
                if unread_body(scope):
                    await drain(proto.__aiter__())
            json_error(proto, e.status, str(e), e.rid)
        except Exception as e:  # noqa: BLE001 - a JSON error, never a bare traceback to the client
            json_error(proto, 500, f"internal error: {type(e).__name__}")
        finally:
            exchanges = _exchanges.get()
            for exchange in exchanges:
                await exchange.drain_rest()
            if not exchanges and not drained and unread_body(scope):
                await drain(proto.__aiter__())  # answered before reading it (a refused token, a wrong path)
            _exchanges.reset(token)
            if time.monotonic() - self._housekept > HOUSEKEEP_S:
                self._housekept = time.monotonic()
                self.wasm.submit(lambda host: host.housekeep()).add_done_callback(_retrieved)

    async def handle(self, scope, proto) -> None:
        coding = scope.headers.get("transfer-encoding")
        if coding is not None and coding.replace(" ", "").lower() != "chunked":
            # RFC 9112 6.1: a coding the server does not apply (gzip) would reach the app still encoded.
            raise HttpError(501, f"Transfer-Encoding {coding[:40]!r} is not supported: send the body "
                            "chunked or with a Content-Length", unread=True)
        host = request_host(scope)
        app_name, inner, base = self.route(scope, host)
        if unsafe_path(scope.path):
            # A host route whose paths are no file paths checks them itself (S3: keys, in S3's error XML).
            own = self.host_route(inner) if app_name not in ("", "_") else None
            if not getattr(own, "checks_path", False):
                raise HttpError(400, "invalid path: '.', '..', backslashes and NUL are not allowed")
        if app_name == "_":
            return self.host_endpoint(inner, proto)
        if not app_name:
            raise HttpError(404, "no app in the path: use /<app>/...")
        apps = self.registry.refresh()
        if apps is not self._apps_seen:
            self._apps_seen = apps
            self.host.retain({d.component for d in apps.values()})  # the worker's hosts share what they mapped
        deployed = apps.get(app_name)
        if deployed is None:
            raise HttpError(404, f"no app named {app_name!r} is deployed")
        if inner == "":
            return _to_folder(proto, scope, base)
        serve = self.host_route(inner)
        if serve is not None:
            return await serve(self, scope, proto, deployed, inner, base)
        method = scope.method.upper()
        if method in ("GET", "HEAD"):
            hit = static.lookup(deployed.static, inner[1:])  # Granian has percent-decoded the path
            if hit:
                path, (digest, size) = hit
                static.respond(proto, self.blobs, path, digest, size, method, scope.headers)
                return
            if not inner.endswith("/") and f"{inner[1:]}/index.html" in deployed.static:
                return _to_folder(proto, scope, base + quote(inner, safe=PATH_SAFE))
        await self.invoke(scope, proto, deployed, inner, base, method, host)

    def __rsgi_del__(self, loop) -> None:
        """The worker stops (SIGTERM, SIGINT). Granian has let the requests in flight finish; work still
        running after its response (ctx.waitUntil's) gets as long. What is still running then ends with
        the process (a guest asleep on a timer cannot be interrupted), its log saying so: before, nothing
        said so, and what it had logged was lost with it."""
        if self._after_response:
            loop.run_until_complete(asyncio.wait(list(self._after_response), timeout=SETTLE_S))
        for invocation in list(self._after_response.values()):
            self.host.log.record(invocation, "error", "stopped, the host shutting down: its ctx.waitUntil "
                                 "promises had not settled", host=True)
            self.host.log.flush(self.reader, invocation)

    def host_route(self, inner: str):
        """The capability route serving this path inside an app, if any."""
        for prefix, serve in self.host.routes.items():
            root = prefix.rstrip("/")
            if inner == root or inner.startswith(root + "/"):
                return serve
        return None

    async def compiled(self, deployed: Deployed) -> None:
        """Waits, on the event loop, while the component's compiled code is compiled again (it left
        the cache folder while serving): requests for it would each hold a wasm thread meanwhile,
        and with them every other app's requests. A failure is left for the request to meet."""
        component = deployed.component
        if self.host.mapped(component) or self.host.cache.path_for(component).exists():
            return
        future = self._compiling.get(component)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(self._compiler, self._compile, component)
            self._compiling[component] = future
            future.add_done_callback(lambda _: self._compiling.pop(component, None))
        try:
            await asyncio.shield(future)
        except Exception:  # noqa: BLE001 - the wasm thread meets it again and says what it is
            pass

    def _compile(self, component: str) -> None:
        conn = cartridge.connect(self.host.settings.cartridge)
        try:
            self.host.cache.load(component, lambda: cartridge.get_object(conn, component))
        finally:
            conn.close()

    async def on_wasm_thread(self, fn, app: str):
        """Runs fn(conn) for `app` where guests run, with that thread's writer connection to the cartridge."""
        return await asyncio.wrap_future(self.wasm.submit(lambda host: fn(host.conn), app))

    def body_reader(self, scope, proto, deployed: Deployed) -> Exchange:
        """The request body of a host route, read from the wasm thread with the app's limits."""
        limits = deployed.manifest.limits
        length = body_length(scope, limits)
        deadline = time.monotonic() + limits.timeout_ms / 1000
        return Exchange(asyncio.get_running_loop(), proto, limits.body_mb * MIB, 0, deadline, length,
                        scope.http_version == "2")

    def host_endpoint(self, inner: str, proto) -> None:
        if inner == "/health":
            apps = self.registry.refresh()
            body = {"ok": True, "apps": len(apps), "pid": os.getpid()}
            proto.response_bytes(200, [("content-type", "application/json")], msgspec.json.encode(body))
            return
        raise HttpError(404, f"no host endpoint {inner!r}")

    async def invoke(self, scope, proto, deployed: Deployed, inner: str, base: str, method: str, host: str) -> None:
        limits = deployed.manifest.limits
        rid = request_id()
        headers = scope.headers
        body_limit = limits.body_mb * MIB
        try:
            length = body_length(scope, limits, rid)
        except HttpError as e:
            self.note_refusal(deployed, rid, str(e))
            raise
        with_body = has_body(scope)
        authority = host or "localhost"  # HTTP/1.0 may send none
        if not _AUTHORITY.fullmatch(authority):  # the guest's URL parser would throw on it
            return json_error(proto, 400, "invalid Host header", rid)
        query = f"?{scope.query_string}" if scope.query_string else ""
        # Several cookie fields (HTTP/2 may send one per cookie) are one list joined with "; "
        # (RFC 6265 5.4), not with the ", " the guest's Headers would join them with.
        cookies = headers.get_all("cookie")
        request = {
            "method": method,
            # Granian hands over the path percent-decoded: encoded again, `%41` stays `%41` for the app.
            "url": f"{scope.scheme}://{authority}{quote(inner, safe=PATH_SAFE)}{query}",
            "headers": [[k, v] for k, v in headers.items() if k not in HOST_SET_HEADERS]
            + [["host", host]] * bool(host and "host" not in headers)  # HTTP/2 sends :authority instead
            + [["cookie", "; ".join(cookies)]] * bool(cookies)
            + [["x-forwarded-prefix", base]],  # "" on the app's own host name (--domain)
            "requestId": rid,
            "hasBody": with_body,
            "app": deployed.name,
        }
        if deployed.manifest.env:
            request["env"] = deployed.manifest.env
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + limits.timeout_ms / 1000
        exchange = Exchange(loop, proto, body_limit, limits.response_mb * MIB, deadline, length, scope.http_version == "2")
        exchange.ended = not with_body
        invocation = Invocation(deployed.name, rid, limits, {"http": exchange, "base": base}, deadline=deadline)
        if with_body:
            try:
                await exchange.prefetch()
            except HttpError as e:  # over the limit, cut short (Granian's errors are BrokenBody), or too slow
                self.note_refusal(deployed, rid, str(e))
                return json_error(proto, e.status, str(e), rid)

        def run(host) -> None:
            try:
                if not exchange.begin():
                    host.note(invocation, queued_too_long)
                    raise GuestTimeout(queued_too_long)
                request["timeoutMs"] = remaining_ms(limits, deadline)  # the SDK stops timers at it
                payload = msgspec.json.encode(request).decode()
                result = host.invoke(deployed, HANDLER_INTERFACE, "fetch", payload, invocation)
                kind = next((k for k in host.results if k in result), None)
                if kind is not None:
                    exchange.answer = (host.results[kind], result)  # answered by a capability
                elif "status" in result:
                    try:
                        exchange.finish_inline(result)
                    except (HttpError, GuestError) as e:  # over responseMb, say: in the log as any failure
                        host.note(invocation, str(e))
                        raise
            finally:
                exchange.close()
                invocation.spent = None  # while the event loop sends the response

        queued_too_long = f"the request waited past its time limit of {limits.timeout_ms} ms (other requests held the worker)"
        await self.compiled(deployed)
        future = asyncio.wrap_future(self.wasm.submit(run, deployed.name))
        # Stream only a response the guest has been producing for a while, not
        # one merely queued behind other requests for the wasm thread.
        waits = (future, exchange.response_done)
        done, _ = await asyncio.wait(waits, timeout=STREAM_AFTER_S, return_when=asyncio.FIRST_COMPLETED)
        while not done and (exchange.started is None or time.monotonic() - exchange.started < STREAM_AFTER_S):
            if exchange.started is None and exchange.abandon():
                # Still queued at its deadline (behind a runaway handler, say): answered now, not
                # when the wasm thread frees up; the guest will not start.
                future.add_done_callback(_retrieved)
                return json_error(proto, 504, queued_too_long, rid)
            done, _ = await asyncio.wait(waits, timeout=STREAM_AFTER_S, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            switched = exchange.start_streaming()
            if switched is not None:
                return await self.stream(scope, proto, deployed, exchange, future, switched, rid)
        if exchange.response_done.done():
            # http.finish: the response goes now, however the invocation (waitUntil) ends: it runs
            # on, or has ended already (a promise that can never settle ends it at once), and
            # Host.invoke logs how.
            future.add_done_callback(_retrieved)
            if not future.done():
                self._after_response[future] = invocation
                future.add_done_callback(lambda f: self._after_response.pop(f, None))
            return await self.complete(scope, proto, deployed, exchange, rid)
        try:
            await future
        except Exception as e:  # noqa: BLE001 - every failure becomes a JSON error
            return self.fail(proto, e, rid)
        await self.complete(scope, proto, deployed, exchange, rid)

    def note_refusal(self, deployed: Deployed, rid: str, message: str) -> None:
        """Puts a request refused before its handler ran in the app's log, from a wasm thread (where writes go)."""
        invocation = Invocation(deployed.name, rid, deployed.manifest.limits)
        self.wasm.submit(lambda host: host.note(invocation, message)).add_done_callback(_retrieved)

    async def complete(self, scope, proto, deployed: Deployed, exchange: Exchange, rid: str) -> None:
        if exchange.answer is not None:
            answer, result = exchange.answer
            return await answer(self, scope, proto, deployed, result, rid)
        head = exchange.head
        if head is None:
            return json_error(proto, 500, "the handler returned without a response", rid)
        headers = head.headers + [("x-fazt-request-id", rid)]
        body = b"".join(exchange.chunks)
        if body:
            proto.response_bytes(head.status, headers, body)
        else:
            proto.response_empty(head.status, headers)

    def fail(self, proto, error: Exception, rid: str) -> None:
        if isinstance(error, (HttpError, GuestError)):
            return json_error(proto, error.status, str(error), rid)
        return json_error(proto, 500, f"internal error: {type(error).__name__}", rid)

    async def stream(self, scope, proto, deployed: Deployed, exchange: Exchange, future, switched, rid: str) -> None:
        head, buffered = switched
        queue = exchange.queue
        assert queue is not None
        # Start the response only with its first bytes in hand: a handler that
        # fails before producing any still gets a proper error status. A body whose
        # length the guest gave is complete in the guest: it goes out whole, with
        # its content-length, as when it came before the switch to streaming.
        while head is None or not buffered or head.length is not None:
            item = await queue.get()
            if item is _END:
                if exchange.finished:
                    future.add_done_callback(_retrieved)
                else:
                    try:
                        await future
                    except Exception as e:  # noqa: BLE001
                        return self.fail(proto, e, rid)
                exchange.chunks = buffered
                return await self.complete(scope, proto, deployed, exchange, rid)
            kind, value = item
            if kind == "head":
                head = value
            else:
                buffered.append(value)
                exchange.credit.release()
        headers = head.headers + [("x-fazt-request-id", rid)]
        if scope.method.upper() == "HEAD":
            proto.response_empty(head.status, headers)
            exchange.aborted = UNWANTED  # the head is all the client asked for
        else:
            body = None
            try:
                body = await piped.response_piped(proto, head.status, headers)
                for chunk in buffered:
                    await body.send_bytes(chunk)
                while (item := await queue.get()) is not _END:
                    kind, value = item
                    if kind == "body":
                        await body.send_bytes(value)
                        exchange.credit.release()
            except Exception:  # noqa: BLE001 - the client went away (or stalled); let the guest stop
                exchange.aborted = GONE
            finally:
                if body is not None:
                    body.close()
        if exchange.aborted:
            while (item := await queue.get()) is not _END:
                exchange.credit.release()
        future.add_done_callback(_retrieved)  # failures are in the app log; the stream just ends early
