"""The shapes of configuration: an app's `fazt.json` and the host's settings.

Both are msgspec structs, so a bad manifest is refused with an error that names
the offending field, and unknown fields are errors rather than silent typos.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import msgspec

MIB = 1 << 20
APP_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")


class Limits(msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True, frozen=True):
    """Per-invocation limits. Every one can be set in fazt.json or on the command line."""

    timeout_ms: int = 30_000
    memory_mb: int = 128
    body_mb: int = 100
    response_mb: int = 100
    log_kb: int = 64
    # Documents: one document's JSON size and nesting, one result's size, one query's time.
    document_kb: int = 1024
    document_depth: int = 32
    result_mb: int = 16
    query_ms: int = 5_000
    # Storage: the bytes all of the app's objects may take.
    storage_mb: int = 1024

    def __post_init__(self) -> None:
        if self.timeout_ms < 1 or self.timeout_ms > 15 * 60_000:
            raise ValueError("limits.timeoutMs must be between 1 and 900000")
        # The JS engine's snapshot alone needs ~9 MiB of linear memory.
        if self.memory_mb < 12 or self.memory_mb > 4096:
            raise ValueError("limits.memoryMb must be between 12 and 4096")
        for field in ("body_mb", "response_mb"):
            if getattr(self, field) < 0 or getattr(self, field) > 16384:
                raise ValueError(f"limits.{_camel(field)} must be between 0 and 16384")
        if self.log_kb < 0 or self.log_kb > 65536:
            raise ValueError("limits.logKb must be between 0 and 65536")
        for field, low, high in (
            ("document_kb", 1, 64 * 1024),
            ("document_depth", 1, 256),
            ("result_mb", 1, 1024),
            ("query_ms", 1, 15 * 60_000),
            ("storage_mb", 0, 1 << 24),
        ):
            if not low <= getattr(self, field) <= high:
                raise ValueError(f"limits.{_camel(field)} must be between {low} and {high}")

    def merged(self, overrides: dict[str, int]) -> Limits:
        return msgspec.structs.replace(self, **{k: v for k, v in overrides.items() if v is not None})


class UniqueIndex(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`{"unique": "email"}` or `{"unique": ["org", "email"]}` in fazt.json's indexes."""

    unique: str | list[str]


# A collection's index: one field, several fields (compound), or a unique one.
IndexSpec = str | list[str] | UniqueIndex


class BucketConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    public: bool = False  # public objects are readable by anyone at /<app>/storage/v1/object/public/...


class StorageConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """fazt.json `storage`: where new objects go and the buckets the app declares."""

    # "internal" (the cartridge) or "s3" (the host's external bucket); unset keeps what the app has
    # (internal at first, or where `fazt-host blobs migrate` moved it).
    backend: str | None = None
    buckets: dict[str, BucketConfig] = {}

    def __post_init__(self) -> None:
        if self.backend not in (None, "internal", "s3"):
            raise ValueError('storage.backend must be "internal" or "s3"')
        if not self.buckets:
            return
        from .capabilities.storage.store import BUCKET  # the storage capability owns the rule

        for name in self.buckets:
            if not BUCKET.fullmatch(name):
                raise ValueError(f"storage.buckets: {name[:80]!r} is not a valid bucket name")


class CronEntry(msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True, frozen=True):
    """One entry of fazt.json's `cron` list; semantics in triggers/cron/."""

    name: str
    schedule: str
    file: str | None = None  # default: the `scheduled` handler of the app's default export
    timezone: str = "UTC"
    catch_up: str = "one"  # none | one | all
    overlap: str = "skip"  # skip | queue | allow
    timeout: str | None = None  # e.g. "5m"; default: limits.timeoutMs
    retries: int = 0

    def __post_init__(self) -> None:
        from .triggers.cron.schedule import check_entry

        check_entry(self)


class Manifest(msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True, frozen=True):
    """An app's fazt.json."""

    name: str
    entry: str = "index.js"
    static: str = "public"
    env: dict[str, str] = {}
    limits: Limits = Limits()
    keep_versions: int = 5
    indexes: dict[str, list[IndexSpec]] = {}
    storage: StorageConfig = StorageConfig()
    cron: list[CronEntry] = []

    def __post_init__(self) -> None:
        if not APP_NAME.fullmatch(self.name):
            raise ValueError(
                "name must be a safe identifier: lowercase letters, digits and '-', "
                "starting with a letter, at most 63 characters"
            )
        for field in ("entry", "static"):
            value = getattr(self, field)
            parts = Path(value).parts
            if not value or Path(value).is_absolute() or ".." in parts or "\0" in value:
                raise ValueError(f"{field} must be a relative path inside the app folder")
        if not (self.entry.endswith((".js", ".mjs", ".wasm"))):
            raise ValueError("entry must be a .js/.mjs file or a prebuilt component .wasm")
        static = Path(self.static)
        for what, file in [("entry", self.entry)] + [(f"cron entry {e.name!r}: file", e.file) for e in self.cron if e.file]:
            if static in Path(file).parents:  # it would be served to anyone as a static file
                raise ValueError(f"{what} {file!r} is inside the static folder {self.static!r}: move the code out of it")
        if not 1 <= self.keep_versions <= 100:
            raise ValueError("keepVersions must be between 1 and 100")
        from .capabilities.documents.spec import check_indexes  # the documents capability owns the rules

        check_indexes(self.indexes)
        names = [e.name for e in self.cron]
        if len(set(names)) != len(names):
            raise ValueError(f"cron entry names must be unique: {sorted({n for n in names if names.count(n) > 1})}")


class ManifestError(ValueError):
    pass


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def decode_manifest(raw: bytes, source: str = "fazt.json") -> Manifest:
    try:
        return msgspec.json.decode(raw, type=Manifest)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        message = str(e)
        if "$.env[...]" in message:  # msgspec does not name the key: named here
            env = msgspec.json.decode(raw).get("env")
            bad = next(k for k, v in env.items() if not isinstance(v, str))
            message = f"env.{bad} must be a string, not {type(env[bad]).__name__} (env holds strings, as Workers' vars)"
        raise ManifestError(f"{source}: {message}") from None


def load_manifest(path: Path) -> Manifest:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found (an app folder needs a fazt.json)") from None
    _refuse_duplicate_keys(raw, str(path))
    return decode_manifest(raw, str(path))


def _refuse_duplicate_keys(raw: bytes, source: str) -> None:
    """A key given twice would silently take its last value (`"name"` twice deploys under the second)."""

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen = set()
        for key, _ in items:
            if key in seen:
                raise ManifestError(f"{source}: the key {key!r} is given twice")
            seen.add(key)
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except json.JSONDecodeError:
        pass  # decode_manifest says what is wrong with it


class HostSettings(msgspec.Struct, frozen=True):
    """Where the host keeps its cartridge and how it serves; from flags or FAZT_* variables."""

    cartridge: str = "./fazt.db"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 0  # 0: one per core
    domain: str = ""
    cache: str = ""  # default: beside the cartridge
    cron_min_interval: float = 1.0  # seconds: shorter schedules are refused at deploy
    cron_threads: int = 4  # wasm threads of the scheduler: a hung job cannot hold up every app
    wasm_threads: int = 4  # per worker: one serves, the others stand by for when it is held (lanes.py)

    def __post_init__(self) -> None:
        # Refused here, for flags and FAZT_* alike: Granian would run `--workers -1` as one
        # worker, and a port past 65535 failed only at bind with an OverflowError.
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        if self.workers < 0:
            raise ValueError(f"workers must be 1 or more (0: one per core), not {self.workers}")
        if not self.cron_min_interval >= 0:  # NaN too
            raise ValueError(f"cron min interval must be 0 or more seconds, not {self.cron_min_interval}")
        for name in ("cron_threads", "wasm_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be 1 or more, not {getattr(self, name)}")

    @property
    def cache_dir(self) -> Path:
        """Compiled components live beside the cartridge: derived data, rebuilt when missing."""
        return Path(self.cache or self.cartridge + ".cache")

    @property
    def url(self) -> str:
        """The base URL `up` serves on (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def to_env(self) -> dict[str, str]:
        return {f"FAZT_{k.upper()}": str(getattr(self, k)) for k in self.__struct_fields__}

    @classmethod
    def from_env(cls, **overrides) -> HostSettings:
        values: dict = {}
        for field in cls.__struct_fields__:
            env = os.environ.get(f"FAZT_{field.upper()}")
            if env is not None and env != "":
                values[field] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as e:
            field = re.search(r"`\$\.(\w+)`", str(e))
            where = f" (FAZT_{field[1].upper()} or its flag)" if field else ""
            raise ManifestError(f"host settings: {e}{where}") from None
