"""Operation -> SQL. The one place that spells JSON paths into SQL.

SQLite uses an expression index only when a query writes the expression
exactly as the index does, so indexes (`index_ddl`) and queries (`value_of`)
both come from `value_of`. Paths are validated by `spec.parse_path` before
they get here; values are always bound parameters.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import operator
import re
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec

from .spec import MAX_FILTER_TERMS, MAX_IN_VALUES, DocError, Order, as_text, json_type, parse_path

MAX_CONTAINS_DEPTH = 32  # levels of a contains pattern (deeper than documents go by default)

Scalar = (str, int, float, bool)
INT64 = (-(1 << 63), (1 << 63) - 1)
# What SQLite can bind as an integer: a cursor holding more was not made by the store.
Int64 = Annotated[int, msgspec.Meta(ge=INT64[0], le=INT64[1])]


def json_path(parts: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f'."{p}"' for p in parts)


def value_of(field: str) -> str:
    """The SQL value of a field: what filters compare, orders sort and indexes hold (text after `->>`)."""
    parts = parse_path(field)
    if as_text(field):
        return text_at(parts)
    return f"(body ->> '{json_path(parts)}')"


def text_at(parts: tuple[str | int, ...]) -> str:
    """The value at a parsed path as PostgreSQL's ->> gives it: a string itself, a number,
    boolean, array or object its JSON text, null NULL (SQLite's ->> reads true as 1)."""
    path = json_path(parts)
    # `'' ||` leaves plain text, which a projection holds as a string, not as JSON.
    return f"(CASE WHEN json_type(body, '{path}') IN ('text', 'null') THEN body ->> '{path}' ELSE '' || (body -> '{path}') END)"


def json_of(field: str) -> str:
    """The field as JSON text (objects and arrays whole): what projections return, but after `->>`."""
    return f"(body -> '{json_path(parse_path(field))}')"


def type_at(parts) -> str:
    """The JSON type at a parsed path ('true', 'false', 'integer', 'real', 'text', 'null', ...)."""
    return f"json_type(body, '{json_path(parts)}')"


def type_of(field: str) -> str:
    return type_at(parse_path(field))


BOOLEAN_TYPES = "('true', 'false')"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def type_guards(values: list[Any], x: str, type_sql: str) -> list[str]:
    """Conditions that keep true/false and the numbers 1/0 apart in an equality test.

    `->>` reads JSON true and false back as 1 and 0, so `x = 1` alone also
    matches true. Only 0 and 1 are ambiguous, and only when the values ask for
    one kind (boolean or number) and not the other: then a row holding that
    SQL value must be of that kind. The guard leaves `x = ?` / `x IN (...)` as
    the term the index serves, and each guard is NULL when `x` is NULL, so
    negations keep SQL's NULL semantics (a missing field matches neither).
    """
    guards = []
    for k in (0, 1):
        as_bool = any(isinstance(v, bool) and int(v) == k for v in values)
        as_number = any(_is_number(v) and v == k for v in values)
        if as_bool != as_number:
            kind = "IN" if as_bool else "NOT IN"
            guards.append(f"({x} != {k} OR {type_sql} {kind} {BOOLEAN_TYPES})")
    return guards


def text_only(x: str, type_sql: str) -> str:
    """`x` is a JSON string, not an array's or object's JSON text (which `->>` gives, starting with [ or {);
    NULL where `x` is NULL, so negations keep SQL's NULL semantics. Told apart by `x` for most rows."""
    return f"(unicode({x}) NOT IN (91, 123) OR {type_sql} = 'text')"


def string_guards(values: list[Any], x: str, type_sql: str) -> list[str]:
    """For an equality test: only a string value that reads like JSON text can equal an array or object."""
    return [text_only(x, type_sql)] if any(isinstance(v, str) and v[:1] in ("[", "{") for v in values) else []


def same_type(op: str, value: Any, x: str, type_sql: str) -> list[str]:
    """Conditions that keep a range comparison within the value's JSON type, as jsonpath compares:
    a number only with numbers, a string with strings, a boolean with booleans.

    SQLite ranks every text above every number, and `->>` reads true and false
    as 1 and 0 and an array or object as its JSON text, so `x > 4` alone also
    matches "3" and `x > 'a'` an object. Most rows are told apart by `x`
    itself, which an index on the field holds, so a counted range reads only
    the documents that might be a boolean, an array or an object. `+x` keeps
    a check off the index's range, which stays `x > ?`. Each condition is
    NULL, never false, where `x` is NULL, so negations keep SQL's NULL semantics.
    """
    if isinstance(value, bool):
        return [f"{type_sql} IN ('true', 'false', 'null')"]
    upward = op in ("gt", "gte")  # texts rank above every number: only an upward range reaches them
    if isinstance(value, str):
        # An array's or object's JSON text starts with [ or {.
        return ([] if upward else [f"+{x} >= ''"]) + [text_only(x, type_sql)]
    # Of the numbers, only 0 and 1 may be false or true: told apart as in an equality test.
    booleans = type_guards([k for k in (0, 1) if RANGE[op](k, value)], x, type_sql)
    return ([f"+{x} < ''"] if upward else []) + booleans


def index_ddl(name: str, table: str, fields: tuple[str, ...], unique: bool) -> str:
    if not unique:
        return f'CREATE INDEX "{name}" ON "{table}"({", ".join(value_of(f) for f in fields)})'
    return f'CREATE UNIQUE INDEX "{name}" ON "{table}"({", ".join(unique_key(fields))})'


def unique_key(fields: tuple[str, ...]) -> list[str]:
    """What a unique index holds: the fields' values, then for each field not read as text
    (`->>`) whether its value is a boolean, an array or an object. SQLite's ->> reads true as 1 and
    an array as its JSON text, and without that mark `true` would clash with `1` and ["a"] with
    the string '["a"]', which PostgreSQL's jsonb tells apart. An id is a string or an integer: it needs no mark."""
    return [value_of(f) for f in fields] + [f"({type_at(parse_path(f))} IN ('true', 'false', 'array', 'object'))"
                                            for f in fields if _typed(f)]


def _typed(field: str) -> bool:
    return field != "id" and not as_text(field)


def unique_params(fields: list[str], values: list[Any]) -> tuple:
    """The parameters matching `unique_key(fields)` for these decoded values."""
    return tuple(_bindable(v, "upsert", f) for v, f in zip(values, fields)) + tuple(
        int(isinstance(v, (bool, list, dict))) for v, f in zip(values, fields) if _typed(f)
    )


def _bindable(value: Any, op: str, field: str) -> Any:
    if isinstance(value, bool):
        return int(value)  # JSON true/false read back through ->> as 1/0
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        # SQLite holds a JSON integer past int64 as a REAL (JS writes 1e20 as 100000000000000000000),
        # infinite past a double's range: compare with the same double.
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, (str, int, float)):
        return value
    raise DocError(
        f"{op} on {field!r} takes a string, number or boolean, not {json_type(value)}"
        + (" (use is() for null)" if value is None else ""),
        "22P02",
    )


def _like_tokens(pattern: str) -> Iterator[tuple[str, bool]]:
    """A LIKE pattern's characters, each with whether it is a wildcard (`%` any run, `_` one
    character); `\\` escapes the next, which is then itself."""
    escaped = False
    for ch in pattern:
        if ch == "\\" and not escaped:
            escaped = True
            continue
        yield ch, ch in "%_" and not escaped
        escaped = False


def _glob(pattern: str) -> str:
    """A LIKE pattern (case-sensitive) as a GLOB pattern."""
    return "".join(
        ("*" if ch == "%" else "?") if wild else f"[{ch}]" if ch in "*?[" else ch for ch, wild in _like_tokens(pattern)
    )


def unicode_ilike(value: Any, pattern: Any) -> int | None:
    """`ilike` for a pattern beyond ASCII (SQLite's LIKE folds ASCII letters only), as PostgreSQL's in a
    UTF-8 locale: both sides lowercased. Registered on each connection as `fazt_ilike(value, pattern)`.

    Segments between `%` are matched leftmost, one after the other: a regular expression per
    pattern (`.*` for `%`) would backtrack without bound on patterns like `%a%a%a%b`.
    """
    if value is None or pattern is None:
        return None
    if not isinstance(value, str):  # a number's text holds no character beyond ASCII
        return 0
    text = value.lower()
    segments = _ilike_segments(pattern)
    if len(segments) == 1:  # no %
        return int(segments[0][0].fullmatch(text) is not None)
    (first, _), *middle, (last, last_len) = segments
    found = first.match(text)
    if found is None:
        return 0
    at = found.end()
    for segment, _ in middle:
        found = segment.search(text, at)
        if found is None:
            return 0
        at = found.end()
    start = len(text) - last_len
    return int(start >= at and last.fullmatch(text, start) is not None)


@functools.lru_cache(maxsize=256)
def _ilike_segments(pattern: str) -> list[tuple[re.Pattern, int]]:
    """The lowercased pattern's `%`-separated segments: each a regex (`.` for `_`) and its length."""
    segments: list[tuple[re.Pattern, int]] = []
    current: list[str] = []
    for ch, wild in _like_tokens(pattern.lower()):
        if wild and ch == "%":
            segments.append((re.compile("".join(current), re.DOTALL), len(current)))
            current = []
        else:
            current.append("." if wild else re.escape(ch))
    segments.append((re.compile("".join(current), re.DOTALL), len(current)))
    return segments


def _text_of(value: Any, op: str, field: str) -> Any:
    """A value compared with a `->>` field, as PostgreSQL compares text: a number or boolean as its JSON text."""
    if op in ("contains", "containedBy", "overlaps"):
        raise DocError(f"{op} on {field!r}: ->> gives text, not JSON; use ->", "42883")
    if isinstance(value, list):
        return [_text_of(v, op, field) for v in value]
    if isinstance(value, (int, float)):  # booleans too
        return msgspec.json.encode(value).decode()
    return value


COMPARE = {"eq": "=", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
RANGE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


class Filter:
    """Compiles a `where` list into one SQL condition and its parameters."""

    def __init__(self) -> None:
        self.params: list[Any] = []
        self.terms = 0

    def all(self, terms: list[Any]) -> str:
        if not isinstance(terms, list):
            raise DocError("where must be a list of terms", "PGRST100")
        return " AND ".join(self.term(t, top=True) for t in terms) if terms else "1"

    def term(self, term: Any, top: bool = False) -> str:
        """`top`: a conjunct of the whole condition, where NULL and false both drop the row."""
        self.terms += 1
        if self.terms > MAX_FILTER_TERMS:
            raise DocError(f"a filter may have at most {MAX_FILTER_TERMS} terms", "54001")
        if not isinstance(term, list) or not term or not isinstance(term[0], str):
            raise DocError(f"a filter term is [op, field, value], not {str(term)[:60]}", "PGRST100")
        op = term[0]
        if op in ("and", "or"):
            if len(term) != 2 or not isinstance(term[1], list) or not term[1]:
                raise DocError(f"{op} takes a non-empty list of terms", "PGRST100")
            return "(" + f" {op.upper()} ".join(self.term(t, top and op == "and") for t in term[1]) + ")"
        if op == "not":
            if len(term) != 2:
                raise DocError("not takes one term", "PGRST100")
            return f"NOT ({self.term(term[1])})"
        if len(term) != 3:
            raise DocError(f"{op} takes a field and a value", "PGRST100")
        field, value = term[1], term[2]
        x = value_of(field)
        typed = not as_text(field)  # `->>` reads every value as text, as PostgreSQL's does
        if not typed and op != "is":
            value = _text_of(value, op, field)
        if op in ("eq", "neq"):
            self.params.append(_bindable(value, op, field))
            guards = typed and [*type_guards([value], x, type_of(field)), *string_guards([value], x, type_of(field))]
            if not guards:
                return f"{x} {COMPARE[op]} ?"
            equal = " AND ".join([f"{x} = ?", *guards])
            return f"({equal})" if op == "eq" else f"NOT ({equal})"
        if op in COMPARE:
            self.params.append(_bindable(value, op, field))
            compare = f"{x} {COMPARE[op]} ?"
            if not typed:
                return compare
            return "(" + " AND ".join([compare, *same_type(op, value, x, type_of(field))]) + ")"
        if op == "in":
            if not isinstance(value, list) or len(value) > MAX_IN_VALUES:
                raise DocError(f"in on {field!r} takes a list of at most {MAX_IN_VALUES} values", "22P02")
            if not value:
                return "0"
            self.params.extend(_bindable(v, op, field) for v in value)
            among = f"{x} IN ({', '.join('?' * len(value))})"
            guards = typed and [*type_guards(value, x, type_of(field)), *string_guards(value, x, type_of(field))]
            return f"({' AND '.join([among, *guards])})" if guards else among
        if op in ("like", "ilike"):
            if not isinstance(value, str):
                raise DocError(f"{op} on {field!r} takes a string pattern", "22P02")
            if "\x00" in value:  # SQLite's GLOB and LIKE would end the pattern there
                raise DocError(f"{op} on {field!r}: a pattern cannot hold NUL (\\u0000)", "22P05")
            if (len(value) - len(value.rstrip("\\"))) % 2:
                raise DocError(f"{op} on {field!r}: the pattern must not end with the escape character \\", "22025")
            self.params.append(_glob(value) if op == "like" else value)
            if op == "like":
                match = f"{x} GLOB ?"
            elif value.isascii():  # SQLite's own LIKE, in C, is right for ASCII
                match = f"{x} LIKE ? ESCAPE '\\'"
            else:
                match = f"fazt_ilike({x}, ?)"
            return f"({match} AND {text_only(x, type_of(field))})" if typed else match
        if op == "is":
            if value is None:
                return f"{x} IS NULL"
            if isinstance(value, bool):
                # IS TRUE/FALSE is false, never NULL, on a missing field, so not.is.true keeps it.
                return f"IFNULL({json_of(field)} = '{'true' if value else 'false'}', 0)"
            raise DocError(f"is on {field!r} takes null, true or false", "22P02")
        if op in ("contains", "containedBy", "overlaps"):
            parts = parse_path(field)
            method = {"contains": self.contains, "containedBy": self.contained_by, "overlaps": self.overlaps}[op]
            match = method(parts, value, field)
            if top:  # left bare, so an index on a field inside can serve it
                return match
            # A missing or null field is SQL NULL, as a NULL column is to jsonb's operators:
            # it matches neither the term nor its negation.
            return f"(CASE WHEN IFNULL({type_at(parts)}, 'null') = 'null' THEN NULL ELSE {match} END)"
        raise DocError(f"unknown operator {op[:40]!r}", "PGRST100")

    def contains(self, parts: tuple, value: Any, field: str, src: str = "body", depth: int = 0) -> str:
        """Array containment (every element present) or object containment (every key matches), at
        `parts` in the JSON `src` (the document, or an array element being matched).

        As jsonb's @>, an array pattern matches only an array and an object
        pattern only an object, at every level (json_each would walk a scalar
        as a one-element array); an object or array in an array pattern is
        contained in some element of the array.
        """
        if depth > MAX_CONTAINS_DEPTH:
            raise DocError(f"contains on {field!r}: the pattern is nested too deeply", "54001")
        path = json_path(parts)
        type_sql = f"json_type({src}, '{path}')"
        if isinstance(value, list):
            conds = [f"{type_sql} = 'array'"]
            e = f"e{depth}"  # json_each's alias: nested patterns each get their own
            for v in value:
                if isinstance(v, (list, dict)):
                    kind = "array" if isinstance(v, list) else "object"
                    # CASE: a scalar element's value is no JSON text to look into.
                    inner = self.contains((), v, field, f"{e}.value", depth + 1)
                    cond = f"CASE WHEN {e}.type = '{kind}' THEN {inner} ELSE 0 END"
                elif v is None:
                    cond = f"{e}.type = 'null'"
                else:
                    self.params.append(_bindable(v, "contains", field))
                    x = f"{e}.value"
                    cond = " AND ".join([f"{x} = ?", *type_guards([v], x, f"{e}.type"), *string_guards([v], x, f"{e}.type")])
                conds.append(f"EXISTS (SELECT 1 FROM json_each({src}, '{path}') AS {e} WHERE {cond})")
            return "(" + " AND ".join(conds) + ")"
        if isinstance(value, dict):
            conds = [f"{type_sql} = 'object'"]
            for key, v in value.items():
                sub = ".".join([*(str(p) for p in parts), key])
                sub_parts = parse_path(sub)
                sub_path = json_path(sub_parts)
                if isinstance(v, (list, dict)):
                    conds.append(self.contains(sub_parts, v, sub, src, depth + 1))
                elif v is None:
                    conds.append(f"({src} -> '{sub_path}') = 'null'")
                else:
                    self.params.append(_bindable(v, "contains", sub))
                    x = f"({src} ->> '{sub_path}')"  # for the document, as an index on the field spells it
                    sub_type = f"json_type({src}, '{sub_path}')"
                    conds.append(" AND ".join([f"{x} = ?", *type_guards([v], x, sub_type), *string_guards([v], x, sub_type)]))
            return "(" + " AND ".join(conds) + ")"
        raise DocError(f"contains on {field!r} takes an array or an object", "22P02")

    def scalar_match(self, values: list[Any], op: str, field: str, x: str = "value", type_sql: str = "type") -> str:
        """`x` is one of these scalars, of its JSON type (true is not 1); `x`/`type_sql` default to json_each's."""
        matches = []
        for v in values:
            if isinstance(v, (list, dict)) or v is None:
                raise DocError(f"{op} on {field!r}: array elements must be strings, numbers or booleans", "22P02")
            self.params.append(_bindable(v, op, field))
            matches.append(" AND ".join([f"{x} = ?", *type_guards([v], x, type_sql)]))
        return "(" + " OR ".join(matches) + ")" if matches else "0"

    def overlaps(self, parts: tuple, value: Any, field: str) -> str:
        """An array field holding at least one of the values (as jsonb's ?| does for strings)."""
        if not isinstance(value, list) or len(value) > MAX_IN_VALUES:
            raise DocError(f"overlaps on {field!r} takes an array of at most {MAX_IN_VALUES} values", "22P02")
        match = self.scalar_match(value, "overlaps", field)
        return f"({type_at(parts)} = 'array' AND EXISTS (SELECT 1 FROM json_each(body, '{json_path(parts)}') WHERE {match}))"

    def contained_by(self, parts: tuple, value: Any, field: str) -> str:
        """jsonb's <@: every element of an array field is in the array pattern (a scalar field counts as
        one element, as in jsonb), or every key of an object field matches the object pattern."""
        path = json_path(parts)
        if isinstance(value, list):
            if len(value) > MAX_IN_VALUES:
                raise DocError(f"containedBy on {field!r} takes an array of at most {MAX_IN_VALUES} values", "22P02")
            # IFNULL: a null element is contained by no array of scalars.
            each = self.scalar_match(value, "containedBy", field)
            itself = self.scalar_match(value, "containedBy", field, f"(body ->> '{path}')", type_at(parts))
            return (f"(({type_at(parts)} = 'array' AND NOT EXISTS (SELECT 1 FROM json_each(body, '{path}') "
                    f"WHERE NOT IFNULL({each}, 0))) OR ({type_at(parts)} NOT IN ('array', 'object') AND {itself}))")
        if isinstance(value, dict):
            keys = []
            for key, v in value.items():
                sub = ".".join(str(p) for p in parts) + "." + key
                sub_parts = parse_path(sub)
                self.params.append(str(sub_parts[-1]))
                if isinstance(v, (list, dict)):
                    cond = self.contained_by(sub_parts, v, sub)
                elif v is None:
                    cond = "type = 'null'"
                else:
                    cond = self.scalar_match([v], "containedBy", sub)
                keys.append(f"(key = ? AND {cond})")
            matched = " OR ".join(keys) or "0"
            return (f"({type_at(parts)} = 'object' AND NOT EXISTS (SELECT 1 FROM json_each(body, '{path}') "
                    f"WHERE NOT IFNULL({matched}, 0)))")
        raise DocError(f"containedBy on {field!r} takes an array or an object", "22P02")


def column_name(parts: tuple[str | int, ...]) -> str:
    """A selected path's key, as PostgREST names it: the last key in the path (`address->>city` is
    city, `tags->0` is tags)."""
    return next((p for p in reversed(parts) if isinstance(p, str)), str(parts[0]))


def projection(columns: str | list[str]) -> str:
    """`*` -> the whole document; `'id,title,a:address.city'` -> an object of those (alias:field;
    `address->>city` gives the value as text); `'*,a:address.city'` -> the whole document with those
    added, as PostgREST's `*` among columns."""
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    fields = [c for c in columns if c != "*"]
    if not fields:
        return "json(body)"
    whole = len(fields) < len(columns)
    pairs = []
    for col in fields:
        col, cast, to = col.partition("::")
        if cast and to.strip().lower() != "text":
            raise DocError(f"cannot cast {col[:40]!r} to {to[:20]!r}: select casts only to ::text", "PGRST100")
        if re.fullmatch(r"[\w.>-]*\(.*\)", col.strip()):  # count(), other(*): anything else is a field name
            raise DocError(f"{col[:40]!r}: select has no aggregates or embedded collections", "PGRST100")
        alias, _, field = col.partition(":") if ":" in col else ("", "", col)
        if ":" in field:
            raise DocError(f"{col[:40]!r}: a column takes one alias (alias:field)", "PGRST100")
        key = alias or column_name(parse_path(field))
        if not key or "'" in key or len(key) > 128 or (whole and '"' in key):  # '"' would end the path label
            raise DocError(f"invalid column alias {key[:40]!r}", "42703")
        text = as_text(field) or bool(cast)  # `->>` and ::text read the value as PostgreSQL's text
        pairs.append((key, text_at(parse_path(field)) if text else json_of(field)))
    if whole:
        sets = ", ".join(f"'$.\"{key}\"', {value}" for key, value in pairs)
        return f"json_set(json(body), {sets})"
    return "json_object(" + ", ".join(f"'{key}', {value}" for key, value in pairs) + ")"


def nulls_first(o: Order) -> bool:
    """Where NULL (or a missing field) sorts: as PostgreSQL does by default, after every value."""
    return o.nulls_first if o.nulls_first is not None else not o.ascending


def order_by(order: list[Order]) -> tuple[str, list[str]]:
    """ORDER BY text and the value expressions of its keys (rowid breaks ties last, so pages are stable)."""
    terms, keys = [], []
    for o in order:
        x = value_of(o.field)
        # SQLite's own order puts NULL first ascending; it serves the other from the index too.
        nulls = "" if nulls_first(o) == o.ascending else (" NULLS FIRST" if nulls_first(o) else " NULLS LAST")
        terms.append(f"{x} {'ASC' if o.ascending else 'DESC'}{nulls}")
        keys.append(x)
    # The tie-breaker runs the same way as the last key, so an index on the
    # keys (which holds rowid last) serves the whole ORDER BY.
    terms.append("rowid " + ("ASC" if not order or order[-1].ascending else "DESC"))
    return ", ".join(terms), keys


def after(order: list[Order], values: list[Any], rowid: int, params: list[Any], split: bool = True) -> tuple[str, str | None]:
    """The keyset condition for rows strictly after (values, rowid) in this order.

    Returns (condition, null arm). With one order key whose NULLs sort after
    the cursor's value, the condition covers the values only (a seek on the
    index) and the null arm the NULL rows, to read when the values run out:
    one OR of the two would make SQLite walk the index from its start.
    """
    keys = [(value_of(o.field), o.ascending, nulls_first(o)) for o in order]
    keys.append(("rowid", not order or order[-1].ascending, True))
    values = list(values) + [rowid]
    x, asc, first_nulls_first = keys[0]
    arm = None
    if split and len(keys) == 2 and values[0] is not None and not first_nulls_first:
        arm = f"{x} IS NULL"
        keys[0] = (x, asc, True)  # the condition proper sees no NULL rows
    # When NULLs sort before the cursor, every later row is on the far side of
    # the first key: saying so lets SQLite seek the index to the page.
    bound = ""
    if values[0] is not None and keys[0][2] and x != "rowid":
        params.append(values[0])
        bound = f"{x} {'>=' if asc else '<='} ? AND "
    directions = {a for _, a, _ in keys}
    if len(directions) == 1 and None not in values:
        # One row-value comparison lets SQLite seek the index instead of scanning to the page.
        params.extend(values)
        cond = f"({', '.join(k for k, _, _ in keys)}) {'>' if directions.pop() else '<'} ({', '.join('?' * len(keys))})"
        ors = [cond] + [_then_null(keys, values, i, params) for i, k in enumerate(keys) if not k[2]]
        return "(" + bound + "(" + " OR ".join(ors) + "))", arm
    ors = []
    for i, (k, a, nf) in enumerate(keys):
        v = values[i]
        if v is None:
            ors.append(_prefix_equal(keys, values, i, params, f"{k} IS NOT NULL" if nf else "0"))
            continue
        beyond = f"{k} {'>' if a else '<'} ?"
        if not nf:
            beyond = f"({beyond} OR {k} IS NULL)"
        ors.append(_prefix_equal(keys, values, i, params, beyond))
        params.append(v)  # after the prefix's parameters, as in the text
    return "(" + bound + "(" + " OR ".join(ors) + "))", arm


def _prefix_equal(keys, values, i: int, params: list[Any], last: str) -> str:
    eqs = []
    for (x, _, _), v in zip(keys[:i], values[:i]):
        eqs.append(f"{x} IS ?")
        params.append(v)
    return "(" + " AND ".join(eqs + [last]) + ")"


def _then_null(keys, values, i: int, params: list[Any]) -> str:
    """Rows equal on the keys before i and NULL at key i: they sort after every value there."""
    return _prefix_equal(keys, values, i, params, f"{keys[i][0]} IS NULL")


def order_tag(order: list[Any]) -> str:
    """A short digest of a query's order, carried in its cursors: another order's cursor is refused."""
    return hashlib.sha256(msgspec.json.encode(order)).hexdigest()[:8]


def encode_cursor(values: list[Any], rowid: int, order: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([values, rowid, order_tag(order)])).decode().rstrip("=")


def decode_cursor(cursor: str, keys: int, order: list[Any]) -> tuple[list[Any], int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values, rowid, tag = msgspec.json.decode(raw, type=tuple[list[str | Int64 | float | None], Int64, str])
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise DocError("invalid cursor: pass the cursor of the previous page", "PGRST103") from None
    if len(values) != keys or tag != order_tag(order):
        raise DocError("the cursor belongs to a query with another order", "PGRST103")
    return values, rowid
