"""Document ids and timestamps the host maintains.

Ids are ULIDs: 26 characters, sortable by creation time, monotonic within a
process (a second id in the same millisecond increments the random part).
"""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_last_ms = 0
_last_random = 0


def ulid(now: float | None = None) -> str:
    global _last_ms, _last_random
    ms = int((time.time() if now is None else now) * 1000)
    if ms <= _last_ms:
        ms = _last_ms
        _last_random = (_last_random + 1) & ((1 << 80) - 1)
    else:
        _last_ms = ms
        _last_random = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | _last_random
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


_stamp_second = -1
_stamp_prefix = ""


def timestamp(now: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-25T21:04:05.123Z."""
    global _stamp_second, _stamp_prefix
    now = time.time() if now is None else now
    second = int(now)
    if second != _stamp_second:
        _stamp_second = second
        _stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_stamp_prefix}.{int((now - second) * 1000):03d}Z"
