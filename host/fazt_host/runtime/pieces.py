"""Bytes host->guest in base64 pieces, the next one encoded while the guest decodes this one.

A guest reads a request body or a stored object through calls that return
base64 strings (the fast host->guest path). One call's work is split between
the host (read, encode) and the guest (lift the string, decode it); handing
out pieces of PIECE bytes and encoding the next on another thread while the
guest, which runs without the GIL, decodes the current one overlaps the two.
Pieces of 128 KiB read an 8 MiB body faster than 512 KiB ones: the larger
strings are fresh memory on both sides every call (four times the page faults).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

PIECE = 128 * 1024
ENCODE_INLINE = 64 * 1024  # smaller pieces are encoded where they arrive: a thread hop costs more
_encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fazt-base64")


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class ReadAhead:
    """Base64 pieces of what `fetch(n)` returns (a Future of bytes, b"" at the end)."""

    def __init__(self, fetch: Callable[[int], Future], wait: Callable[[Future], object]):
        self.fetch = fetch
        self.wait = wait  # waits for a future (the caller bounds it by its deadline)
        self.ahead: Future | None = None

    def next(self, max_bytes: int) -> str:
        n = max(1, min(max_bytes, PIECE))
        future, self.ahead = self.ahead or self._encoded(n), None
        text = self.wait(future)
        if text:
            self.ahead = self._encoded(n)
        return text

    def take_raw(self) -> bytes | None:
        """The piece read ahead, as bytes, for a caller switching to raw reads (None if none)."""
        if self.ahead is None:
            return None
        future, self.ahead = self.ahead, None
        return base64.b64decode(self.wait(future))

    def cancel(self) -> None:
        if self.ahead is not None:
            self.ahead.cancel()

    def _encoded(self, n: int) -> Future:
        raw = self.fetch(n)
        out: Future = Future()
        out.add_done_callback(lambda f: f.cancelled() and raw.cancel())

        def fetched(raw: Future) -> None:
            if not out.set_running_or_notify_cancel():
                return
            try:
                data = raw.result()
            except BaseException as e:  # noqa: BLE001 - the reader's error (or cancellation) is the piece's
                out.set_exception(e)
                return
            if len(data) <= ENCODE_INLINE:
                out.set_result(encode(data))
            else:
                _encoder.submit(_settle, out, data)

        raw.add_done_callback(fetched)
        return out


def _settle(out: Future, data: bytes) -> None:
    try:
        out.set_result(encode(data))
    except BaseException as e:  # noqa: BLE001
        out.set_exception(e)
