"""Document ids and timestamps the host maintains.

Ids are ULIDs: 26 characters, sortable by creation time, monotonic within a
process (a second id in the same millisecond increments the random part).
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 digits per 10 bits: ids are made per document on bulk imports, so they must be cheap.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_RANDOM_SHIFTS = (70, 60, 50, 40, 30, 20, 10, 0)  # 80 random bits as 8 digit pairs
_last_ms = 0
_last_random = 0
_ms_prefix = ""
_lock = threading.Lock()  # a process runs guests on several threads (a worker's standby, cron's pool)


def ulid(now: float | None = None) -> str:
    return ulids(1, now)[0]  # one at a time is rare: inserts and imports take a block


def ulids(n: int, now: float | None = None) -> list[str]:
    """`n` consecutive ids (a bulk import takes a batch at a time: they share all but the last digits)."""
    global _last_ms, _last_random, _ms_prefix
    ms = int((time.time() if now is None else now) * 1000)
    with _lock:
        if ms <= _last_ms:
            first = _last_random + 1
        else:
            _last_ms = ms
            first = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up without wrapping
            # 48 bits of milliseconds as 10 digits (the first carries 3 bits).
            _ms_prefix = _CROCKFORD[ms >> 45] + "".join([_PAIRS[(ms >> s) & 1023] for s in (35, 25, 15, 5)]) + _CROCKFORD[ms & 31]
        last = _last_random = first + n - 1
        prefix = _ms_prefix
    out: list[str] = []
    r = first
    while r <= last:
        # Ids that share the random part above the last 20 bits share 22 of their 26 digits.
        high = r >> 20
        stem = prefix + "".join([_PAIRS[(r >> s) & 1023] for s in _RANDOM_SHIFTS[:6]])
        end = min(last, (high << 20) | 0xFFFFF)
        out += [stem + _PAIRS[x >> 10 & 1023] + _PAIRS[x & 1023] for x in range(r & 0xFFFFF, (end & 0xFFFFF) + 1)]
        r = end + 1
    return out


_stamp = (-1, "")  # (second, its ISO prefix), one tuple: threads replace it whole


def timestamp(now: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-25T21:04:05.123Z."""
    global _stamp
    now = time.time() if now is None else now
    second = int(now)
    stamp_second, prefix = _stamp
    if second != stamp_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamp = (second, prefix)
    return f"{prefix}.{int((now - second) * 1000):03d}Z"


# How `timestamp` writes one: an import of an export meets these by the million.
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def as_timestamp(value: Any) -> str | None:
    """An ISO 8601 date-time with a time zone, written as `timestamp` writes one
    (UTC, to the millisecond); None for anything else."""
    try:
        moment = datetime.fromisoformat(value)
        if _TIMESTAMP.fullmatch(value):
            return value
        if moment.tzinfo is None:
            return None
        utc = moment.astimezone(timezone.utc)
    except (TypeError, ValueError, OverflowError):
        return None
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
