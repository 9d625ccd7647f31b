"""What the guest may ask of the document store, checked before any SQL exists.

An operation arrives as JSON (see `Operation`). Collection names and field
paths are validated here against strict patterns, so the compiler can spell
them into SQL literally (an expression index is used only when the query
spells its expression exactly); every value is bound as a parameter.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

COLLECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
# A step into a field: `.`, or PostgREST's `->` and `->>` (the value as text, as PostgreSQL's ->> gives it).
STEP = re.compile(r"->>|->|\.")
# A path segment: anything but quotes, backslash, dots, brackets, `$`, `*` and
# control characters, so it can sit inside a quoted JSON path label as is.
SEGMENT = re.compile(r"^[^\x00-\x1f\x7f\"'\\.\[\]$*]{1,128}$")
MAX_PATH_SEGMENTS = 256  # as deep as limits.documentDepth lets a document nest
MAX_INDEX_FIELDS = 8
MAX_FILTER_TERMS = 256
MAX_IN_VALUES = 1_000


def json_type(value) -> str:
    """A decoded JSON value's type, in JSON's words (errors speak to JS apps, not Python)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


class DocError(Exception):
    """A request the store refuses: becomes `{"error": {"message", "code"}}` for the app."""

    def __init__(
        self, message: str, code: str = "22023", status: int = 400, details: str | None = None, hint: str | None = None
    ):
        super().__init__(message)
        self.code = code
        self.status = status
        self.details = details
        self.hint = hint

    def to_json(self) -> dict[str, Any]:
        return {"message": str(self), "code": self.code, "details": self.details, "hint": self.hint}


def check_collection(name: Any) -> str:
    if not isinstance(name, str) or not COLLECTION.fullmatch(name):
        raise DocError(
            f"invalid collection name {str(name)[:80]!r}: letters, digits, '_' and '-', "
            "starting with a letter or '_', at most 63 characters",
            "42602",
        )
    return name


def parse_path(path: Any) -> tuple[str | int, ...]:
    """`'address.city'` (or `'address->city'`, `'address->>city'`) -> ('address', 'city');
    a segment of digits is an array index."""
    if not isinstance(path, str) or not path:
        raise DocError(f"a field must be a non-empty string, not {_show(path)}", "42703")
    parts = STEP.split(path)
    if len(parts) > MAX_PATH_SEGMENTS:
        raise DocError(f"field {path[:80]!r} is nested deeper than {MAX_PATH_SEGMENTS} levels", "42703")
    if "->>" in STEP.findall(path)[:-1]:
        raise DocError(f"field {path[:80]!r}: ->> gives text, so it can only be the last step", "42703")
    out: list[str | int] = []
    for part in parts:
        if not SEGMENT.fullmatch(part):
            reason = "too long (at most 128 characters)" if len(part) > 128 else "not a valid field name"
            raise DocError(f"field {path[:80]!r}: segment {part[:40]!r} is {reason}", "42703")
        out.append(int(part) if (part.isascii() and part.isdigit()) and len(part) < 10 else part)
    return tuple(out)


def as_text(path: str) -> bool:
    """Whether a path that `parse_path` took ends in `->>`: its value is text."""
    return "->>" in path


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def index_fields(spec: Any) -> tuple[tuple[str, ...], bool]:
    """A fazt.json index spec -> (fields, unique)."""
    unique = False
    if isinstance(spec, str):
        fields: Any = [spec]
    elif isinstance(spec, list):
        fields = spec
    else:
        unique = True
        fields = [spec.unique] if isinstance(spec.unique, str) else spec.unique
    if not fields or len(fields) > MAX_INDEX_FIELDS:
        raise ValueError(f"an index has 1 to {MAX_INDEX_FIELDS} fields")
    if len(set(fields)) < len(fields):
        raise ValueError(f"an index names a field twice: {list(fields)}")
    for f in fields:
        try:
            parse_path(f)
        except DocError as e:
            raise ValueError(str(e)) from None
    return tuple(fields), unique


def check_indexes(indexes: dict[str, list[Any]]) -> None:
    """fazt.json `indexes`: valid collection names and fields (raises ValueError naming them)."""
    for collection, specs in indexes.items():
        if not COLLECTION.fullmatch(collection):
            raise ValueError(f"indexes: {collection[:80]!r} is not a valid collection name")
        for spec in specs:
            try:
                index_fields(spec)
            except ValueError as e:
                raise ValueError(f"indexes.{collection}: {e}") from None


class Order(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    field: str
    ascending: bool = True
    nulls_first: bool | None = None


class Operation(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """One request from the guest's query builder (or `fazt-host docs explain`).

    `where` is a list of terms combined with AND; a term is
    `[op, field, value]` for op in eq neq gt gte lt lte in like ilike is
    contains containedBy overlaps, `["not", term]`, `["or", [term, ...]]` or `["and", [term, ...]]`.
    """

    op: Literal["select", "insert", "update", "upsert", "delete", "batch"] = "select"
    collection: str = ""
    columns: str | list[str] = "*"
    where: list[Any] = []
    order: list[Order] = []
    limit: int | None = None
    offset: int = 0
    after: str | dict[str, Any] | None = None
    count: Literal["exact", "estimated", "planned"] | None = None  # planned: as estimated
    head: bool = False
    single: Literal["one", "maybe"] | None = None
    returning: bool = False
    values: Any = None  # insert/upsert: an object or a list; update: the merge-patch object
    on_conflict: str = "id"
    ignore_duplicates: bool = False
    ops: list[Any] = []  # batch: operations, committed together

    def __post_init__(self) -> None:
        if self.limit is not None and not 0 <= self.limit <= 1_000_000:
            raise ValueError("limit must be between 0 and 1000000")
        if not 0 <= self.offset <= 1_000_000_000:
            raise ValueError("offset must be between 0 and 1000000000")


_decode_operation = msgspec.json.Decoder(Operation).decode


def decode_operation(raw: str | bytes) -> Operation:
    try:
        return _decode_operation(raw)
    except msgspec.ValidationError as e:
        raise DocError(f"invalid query: {e}", "PGRST100") from None
    except msgspec.DecodeError as e:
        raise DocError(f"the query is not valid JSON: {e}", "PGRST100") from None


def convert_operation(value: Any) -> Operation:
    try:
        return msgspec.convert(value, Operation)
    except msgspec.ValidationError as e:
        raise DocError(f"invalid query: {e}", "PGRST100") from None
