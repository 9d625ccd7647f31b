"""Schedules and the slots they produce.

A slot is a due instant in integer milliseconds since the epoch (UTC); it is
the idempotency key of a run. Three shapes:

- `every N s|m|h|d`: N apart, counted from when the entry was registered
  (the `anchor`, kept in the cartridge so restarts keep the rhythm);
- `every N s|m|h|d aligned`: on multiples of N counted from each local
  midnight of the entry's timezone (`every 15m aligned` is :00 :15 :30 :45);
- cron expressions through croniter: five fields (minute hour day month
  weekday), six with seconds first (`*/10 * * * * *`), or a macro (`@hourly`,
  `@daily`, `@weekly`, `@monthly`, `@yearly`), in the entry's IANA timezone.

Daylight saving time: a wall-clock time skipped by a spring-forward change
fires once, at the change (croniter's behaviour); a time that a fall-back
change repeats fires once, at its first occurrence, unless the hour field is
`*` (an every-hour job keeps firing every real hour through both).
"""

from __future__ import annotations

import re
import threading
import time
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

_INTERVAL = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*(s|m|h|d)(?:\s+(aligned))?$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$", re.IGNORECASE)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
DAY_MS = 86_400_000


class ScheduleError(ValueError):
    pass


def parse_duration_ms(text: str) -> int:
    """`500ms`, `30s`, `5m`, `1h` -> milliseconds."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise ScheduleError(f"invalid duration {text!r}: use a number and ms, s, m or h (e.g. 30s, 5m)")
    return round(float(m.group(1)) * _UNIT_MS[m.group(2).lower()])


def zone(name: str) -> ZoneInfo:
    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {name!r}: use an IANA name such as UTC or Europe/Berlin") from None


def to_ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def from_ms(ms: int, tz: timezone | ZoneInfo = timezone.utc) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz)


def iso(ms: int) -> str:
    """ISO 8601 UTC with milliseconds, as JavaScript's `toISOString` writes it."""
    return from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class Schedule:
    """The slots of one entry. `next_after(t)` is the first slot > t; `prev_before(t)` the last < t."""

    def next_after(self, t: int) -> int:
        raise NotImplementedError

    def prev_before(self, t: int) -> int | None:
        raise NotImplementedError

    def latest_at(self, t: int) -> int | None:
        """The newest slot at or before t."""
        return self.prev_before(t + 1)

    def upcoming(self, t: int, n: int) -> list[int]:
        out = []
        for _ in range(n):
            t = self.next_after(t)
            out.append(t)
        return out

    def gap_bound_ms(self) -> tuple[int, bool]:
        """A lower bound of the distance between consecutive slots, and whether it is exact."""
        raise NotImplementedError

    def shortest_gap_ms(self, t: int) -> int:
        """The smallest distance between consecutive slots (sampled when no exact bound is known)."""
        bound, exact = self.gap_bound_ms()
        if exact:
            return bound
        slots = self.upcoming(t, 2 + min(3000, max(60, DAY_MS // max(bound, 1))))
        return min(b - a for a, b in zip(slots, slots[1:]))


class Every(Schedule):
    def __init__(self, period_ms: int, anchor: int):
        self.period = period_ms
        self.anchor = anchor

    def next_after(self, t: int) -> int:
        k = max(0, (t - self.anchor) // self.period) + 1
        return self.anchor + k * self.period

    def prev_before(self, t: int) -> int | None:
        k = (t - 1 - self.anchor) // self.period
        return self.anchor + k * self.period if k >= 1 else None

    def gap_bound_ms(self) -> tuple[int, bool]:
        return self.period, True


class Aligned(Schedule):
    """Multiples of the period counted from each local midnight (a new count every day)."""

    def __init__(self, period_ms: int, tz: ZoneInfo):
        self.period = period_ms
        self.tz = tz

    def _midnight(self, day: date) -> int:
        return to_ms(datetime(day.year, day.month, day.day, tzinfo=self.tz))

    def next_after(self, t: int) -> int:
        day = from_ms(t, self.tz).date()
        start, end = self._midnight(day), self._midnight(day + timedelta(days=1))
        candidate = start + ((t - start) // self.period + 1) * self.period
        return candidate if candidate < end else end

    def prev_before(self, t: int) -> int | None:
        start = self._midnight(from_ms(t - 1, self.tz).date())
        return start + ((t - 1 - start) // self.period) * self.period

    def gap_bound_ms(self) -> tuple[int, bool]:
        # Days last a multiple of 30 minutes (DST included): a period dividing that divides every day;
        # any other leaves a shorter gap before some midnight, found by sampling a whole day.
        return (self.period, True) if 1_800_000 % self.period == 0 else (0, False)


class Cron(Schedule):
    """Stateless between calls (each sets the iterator's position), so entries share one per expression."""

    def __init__(self, expression: str, tz: ZoneInfo):
        fields = expression.split()
        if fields and fields[0].startswith("@"):
            if len(fields) != 1 or fields[0].lower() not in _MACROS:
                raise ScheduleError(f"unknown macro {expression!r}: use one of {', '.join(sorted(_MACROS))}")
            expression = fields[0].lower()
        elif len(fields) not in (5, 6):
            raise ScheduleError(
                f"invalid schedule {expression!r}: use 'every N s|m|h|d', five cron fields "
                "(minute hour day month weekday), six with seconds first, or a macro such as @daily"
            )
        self.tz = tz
        try:
            self._iter = croniter(expression, datetime.now(tz), second_at_beginning=len(fields) == 6)
        except (CroniterError, ValueError, KeyError) as e:
            raise ScheduleError(f"invalid cron expression {expression!r}: {e}") from None
        hours = self._iter.expanded[1]
        self._every_hour = hours == ["*"] or len(hours) == 24
        self._seconds = self._iter.expanded[5] if len(fields) == 6 else [0]
        self._lock = threading.Lock()

    def _repeated(self, dt: datetime) -> bool:
        """A wall-clock time's second occurrence on a fall-back day."""
        first = dt.replace(tzinfo=None).replace(tzinfo=self.tz, fold=0)
        return first.utcoffset() != dt.utcoffset()

    def _step(self, t: int, forward: bool) -> int:
        with self._lock:
            self._iter.set_current(from_ms(t, self.tz))
            while True:
                dt = self._iter.get_next(datetime) if forward else self._iter.get_prev(datetime)
                if self._every_hour or not self._repeated(dt):
                    return to_ms(dt)

    def gap_bound_ms(self) -> tuple[int, bool]:
        seconds = self._seconds
        if seconds == ["*"] or len(seconds) == 60:
            return 1000, True
        if len(seconds) > 1:  # several seconds of one minute fire; the wrap to the next minute may be closer
            s = sorted(seconds)
            return 1000 * min([b - a for a, b in zip(s, s[1:])] + [60 - s[-1] + s[0]]), True
        return 60_000, False

    def next_after(self, t: int) -> int:
        return self._step(t, True)

    def prev_before(self, t: int) -> int | None:
        return self._step(t, False)


MAX_PERIOD_MS = 3650 * DAY_MS


def parse(schedule: str, tz_name: str = "UTC", anchor: int = 0) -> Schedule:
    """The schedule of an entry; `anchor` is where unaligned intervals count from."""
    tz = zone(tz_name)
    text = schedule.strip()
    m = _INTERVAL.fullmatch(text)
    if m:
        period = round(float(m.group(1)) * _UNIT_MS[m.group(2).lower()])
        if period <= 0:
            raise ScheduleError(f"invalid interval {schedule!r}: it must be longer than zero")
        if period > MAX_PERIOD_MS:  # past that, slots soon leave the calendar (year 9999)
            raise ScheduleError(f"invalid interval {schedule!r}: an interval is at most {MAX_PERIOD_MS // DAY_MS}d")
        if m.group(3):
            if period > DAY_MS:
                raise ScheduleError(f"invalid interval {schedule!r}: an aligned interval is at most 1d")
            return Aligned(period, tz)
        return Every(period, anchor)
    if text.lower().startswith("every"):
        raise ScheduleError(f"invalid interval {schedule!r}: use 'every N s|m|h|d', optionally followed by 'aligned'")
    return _cron(text, tz_name)


@lru_cache(maxsize=4096)
def _cron(text: str, tz_name: str) -> Cron:
    # Building a croniter costs ~0.3 ms: manifests are decoded (and validated) by every worker
    # whenever apps change, and apps tend to share a handful of expressions.
    return Cron(text, zone(tz_name))


ENTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CATCH_UP = ("none", "one", "all")
OVERLAP = ("skip", "queue", "allow")
MAX_TIMEOUT_MS = 15 * 60_000
MAX_RETRIES = 100


def check_entry(entry) -> None:
    """Validates a fazt.json cron entry; every message names the entry."""
    if not ENTRY_NAME.fullmatch(entry.name):
        raise ValueError(
            f"cron entry {entry.name!r}: the name must be letters, digits, '_', '.' or '-' (at most 64)"
        )
    try:
        schedule = parse(entry.schedule, entry.timezone)
        try:
            schedule.next_after(int(time.time() * 1000))
        except Exception:  # noqa: BLE001 - croniter's "no such date" in its several forms
            raise ScheduleError(f"{entry.schedule!r} never fires (no such date)") from None
        if entry.catch_up not in CATCH_UP:
            raise ScheduleError(f"catchUp must be one of {', '.join(CATCH_UP)}, not {entry.catch_up!r}")
        if entry.overlap not in OVERLAP:
            raise ScheduleError(f"overlap must be one of {', '.join(OVERLAP)}, not {entry.overlap!r}")
        if entry.timeout is not None and not 1 <= parse_duration_ms(entry.timeout) <= MAX_TIMEOUT_MS:
            raise ScheduleError(f"timeout {entry.timeout!r} must be between 1ms and 15m")
        if not 0 <= entry.retries <= MAX_RETRIES:
            raise ScheduleError(f"retries must be between 0 and {MAX_RETRIES}")
        if entry.file is not None:
            parts = entry.file.replace("\\", "/").split("/")
            if not entry.file or entry.file.startswith("/") or ".." in parts or "\0" in entry.file:
                raise ScheduleError("file must be a relative path inside the app folder")
            if not entry.file.endswith((".js", ".mjs", ".ts", ".mts")):
                raise ScheduleError(f"file {entry.file!r} must be a .js or .mjs module")
    except ScheduleError as e:
        raise ValueError(f"cron entry {entry.name!r}: {e}") from None


def check_min_interval(entry, min_interval_s: float, now_ms: int) -> None:
    """Refuses a schedule that fires more often than the host allows (FAZT_CRON_MIN_INTERVAL)."""
    schedule = parse(entry.schedule, entry.timezone, now_ms)
    bound, exact = schedule.gap_bound_ms()
    if bound >= min_interval_s * 1000:
        return
    gap = bound if exact else schedule.shortest_gap_ms(now_ms)
    if gap < min_interval_s * 1000:
        raise ValueError(
            f"cron entry {entry.name!r}: {entry.schedule!r} fires every {gap / 1000:g}s, "
            f"below the minimum interval of {min_interval_s:g}s"
        )
