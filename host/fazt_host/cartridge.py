"""The cartridge: one SQLite file (APSW, WAL) that holds everything the host knows.

Several processes open it at once (Granian workers, the CLI), so every
connection waits on locks instead of failing, and writes are short
transactions. Each capability owns its tables and migrates them with
`migrate(conn, name, steps)`; the host's own tables are the steps below.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw

BUSY_TIMEOUT_MS = 30_000
MMAP_BYTES = 256 << 30
# WAL checkpoints of a Checkpointer, in 4 KiB pages: every CHECKPOINT_PAGES a background
# checkpoint starts, past CHECKPOINT_LIMIT_PAGES the writer checkpoints itself (the WAL's bound).
CHECKPOINT_PAGES = 1000  # SQLite's own auto-checkpoint size: as little left unchecked as before
CHECKPOINT_LIMIT_PAGES = 16384  # 64 MiB
CHECKPOINT_WAIT_MS = 500  # at the limit, for other writers' transaction or checkpoint to end
CHECKPOINT_IDLE_S = 1.0  # no commit for this long: the WAL file is truncated

# Schema steps, applied in order, each once. Append; never edit a released step.
HOST_MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value ANY) STRICT;
    INSERT INTO meta VALUES ('generation', 0);

    -- Content-addressed bytes: components, sources, static files.
    CREATE TABLE objects(hash TEXT PRIMARY KEY, size INTEGER NOT NULL, data BLOB NOT NULL) STRICT;

    CREATE TABLE apps(
        name TEXT PRIMARY KEY,
        active INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    ) STRICT;

    CREATE TABLE versions(
        app TEXT NOT NULL,
        version INTEGER NOT NULL,
        manifest TEXT NOT NULL,
        source_hash TEXT NOT NULL,
        component TEXT NOT NULL REFERENCES objects(hash),
        created_at REAL NOT NULL,
        PRIMARY KEY(app, version)
    ) STRICT;
    CREATE INDEX versions_by_source ON versions(source_hash);

    -- Files of a version: kind 'source' (what was built) or 'static' (served from public/).
    CREATE TABLE files(
        app TEXT NOT NULL,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL,
        path TEXT NOT NULL,
        object TEXT NOT NULL REFERENCES objects(hash),
        size INTEGER NOT NULL,
        PRIMARY KEY(app, version, kind, path)
    ) STRICT;
    """,
]


class CartridgeError(Exception):
    """A cartridge that cannot be opened or is not for this host; the message says what to do."""


def connect(path: str | Path) -> apsw.Connection:
    """Opens (creating if needed) and migrates the cartridge."""
    try:
        conn = apsw.Connection(str(path))
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        conn.pragma("journal_mode", "wal")
    except apsw.CantOpenError:
        where = Path(path).parent
        reason = "its folder does not exist" if not where.is_dir() else "it is a folder or cannot be written"
        raise CartridgeError(f"cannot open the cartridge {path}: {reason}; pass --cartridge a file path") from None
    except apsw.NotADBError:
        raise CartridgeError(f"{path} is not a cartridge (not an SQLite database): pass --cartridge another file") from None
    conn.pragma("synchronous", "normal")
    conn.pragma("foreign_keys", True)
    # Reads through a memory map beat SQLite's page cache here, and stay steady
    # as the file grows (documents at millions of rows); it is address space only.
    conn.pragma("mmap_size", MMAP_BYTES)
    conn.execute("CREATE TABLE IF NOT EXISTS schema(owner TEXT PRIMARY KEY, version INTEGER NOT NULL) STRICT")
    migrate(conn, "host", HOST_MIGRATIONS)
    return conn


class Checkpointer:
    """Copies a writer's WAL into the database file on a thread of its own.

    SQLite's auto-checkpoint runs inside the commit that takes the WAL past 1000
    pages, so a large upload (4 MiB commits) stalls in a checkpoint and two
    fsyncs every few MiB. With `attach`, the writer's commits only wake this
    thread, which checkpoints from its own connection (PASSIVE: writers go on).
    Past CHECKPOINT_LIMIT_PAGES the writer checkpoints itself while holding the
    write lock, so the WAL stays bounded when writes outpace this thread, and
    also when writers of several processes take turns (auto-checkpoint never
    catches up with those: the WAL starts over only once all of it is copied).
    Once commits stop, the WAL file is truncated. A checkpoint that would wait
    on readers, or on others for long, is skipped: a later one catches up.
    """

    def __init__(self, path: str | Path):
        self._conn = apsw.Connection(str(path))  # no busy timeout (but at the limit): busy means skip
        self._conn.pragma("journal_mode", "wal")  # opens the file: until then checkpoints do nothing
        self._lock = threading.Lock()  # one checkpoint of this process at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_commit: float | None = None  # since the WAL was last truncated
        self._pages = 0  # in the WAL at the writer's last commit
        self._due = CHECKPOINT_PAGES  # the WAL size that wakes the thread next
        self._thread = threading.Thread(target=self._run, name="fazt-checkpoint", daemon=True)
        self._thread.start()

    def attach(self, conn: apsw.Connection) -> None:
        """Checkpoints for `conn`'s commits (the WAL hook replaces its auto-checkpoint)."""
        conn.set_wal_hook(self._committed)

    def close(self) -> None:
        """Stops the thread; attached writers still checkpoint themselves past the limit."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        with self._lock:  # a writer at the limit may be using the connection
            self._conn.close()

    def _committed(self, conn: apsw.Connection, db: str, pages: int) -> int:
        self._last_commit = time.monotonic()
        if pages >= CHECKPOINT_LIMIT_PAGES:
            with self._lock:  # waits for this thread's checkpoint, then copies the rest
                try:
                    self._under_write_lock(conn, db)
                except apsw.Error as e:  # the commit stands; as with auto-checkpoint, a later one retries
                    print(f"cartridge: checkpoint failed: {e}", file=sys.stderr)
        elif pages >= self._due:  # once per CHECKPOINT_PAGES of new WAL, not per commit (small commits)
            self._due = pages + CHECKPOINT_PAGES
            self._wake.set()
        elif pages < self._pages:  # the WAL restarted
            self._due = CHECKPOINT_PAGES
        self._pages = pages
        return apsw.SQLITE_OK

    def _under_write_lock(self, conn: apsw.Connection, db: str) -> None:
        """A checkpoint while no writer (of any process) can append: it copies the whole WAL, so the
        next writer starts it over, even when writers in other processes never pause."""
        if self._stop.is_set():
            _checkpoint(conn, apsw.SQLITE_CHECKPOINT_PASSIVE, db)
            return
        self._conn.set_busy_timeout(CHECKPOINT_WAIT_MS)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except apsw.BusyError:
            return
        finally:
            self._conn.set_busy_timeout(0)
        try:
            for _ in range(CHECKPOINT_WAIT_MS // 10):  # another process's checkpoint: it ends soon, nothing is appended
                try:
                    conn.wal_checkpoint(db, apsw.SQLITE_CHECKPOINT_PASSIVE)
                    return
                except apsw.BusyError:
                    time.sleep(0.01)
        finally:
            self._conn.execute("ROLLBACK")

    def _run(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(CHECKPOINT_IDLE_S)
            self._wake.clear()
            last = self._last_commit
            if self._stop.is_set():
                break
            try:
                if woken:
                    with self._lock:
                        _checkpoint(self._conn, apsw.SQLITE_CHECKPOINT_PASSIVE)
                elif last is not None and time.monotonic() - last >= CHECKPOINT_IDLE_S:
                    with self._lock:
                        if _checkpoint(self._conn, apsw.SQLITE_CHECKPOINT_TRUNCATE) and self._last_commit == last:
                            self._last_commit = None
            except apsw.Error as e:  # a checkpoint failing must not end the thread: a later one retries
                print(f"cartridge: checkpoint failed: {e}", file=sys.stderr)


def _checkpoint(conn: apsw.Connection, mode: int, db: str = "main") -> bool:
    """True if every frame of the WAL is in the database file (and for TRUNCATE, the WAL file emptied)."""
    try:
        log, done = conn.wal_checkpoint(db, mode)
    except (apsw.BusyError, apsw.LockedError):
        return False
    return log == done


def migrate(conn: apsw.Connection, owner: str, steps: list[str]) -> None:
    """Applies the steps of `owner` (the host or a capability) that this cartridge lacks."""

    def applied() -> int:
        row = conn.execute("SELECT version FROM schema WHERE owner = ?", (owner,)).fetchone()
        return row[0] if row else 0

    done = applied()
    if done > len(steps):
        raise CartridgeError(f"the cartridge was written by a newer fazt-host ({owner} schema {done}, this one "
                             f"knows {len(steps)}): run the newer fazt-host, or upgrade this one")
    if done == len(steps):
        return
    with transaction(conn):
        for step in steps[applied() :]:  # re-read under the lock: another process may have migrated
            conn.execute(step)
        conn.execute("INSERT OR REPLACE INTO schema VALUES (?, ?)", (owner, len(steps)))


@contextmanager
def transaction(conn: apsw.Connection) -> Iterator[apsw.Connection]:
    """A write transaction that takes the write lock up front (no upgrade deadlocks)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # an interrupted write has already rolled the whole transaction back
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def app_exists(conn: apsw.Connection, app: str) -> bool:
    """Whether the app is deployed. What makes an app's state anew (a collection, a bucket, log lines)
    asks it inside its own transaction: an invocation still running when its app is removed must not
    leave state behind for the next app of that name."""
    return conn.execute("SELECT 1 FROM apps WHERE name = ?", (app,)).fetchone() is not None


def bump_generation(conn: apsw.Connection) -> None:
    """Tells every worker that apps changed; they re-read the app table on their next request."""
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")


def record_address(conn: apsw.Connection, url: str) -> None:
    """Where `fazt-host up` serves this cartridge: commands that print URLs (keys create) use it."""
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('address', ?)", (url,))


def served_address(conn: apsw.Connection) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'address'").fetchone()
    return row[0] if row else None


def generation(conn: apsw.Connection) -> int:
    return conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]


def put_object(conn: apsw.Connection, digest: str, data: bytes) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO objects(hash, size, data) VALUES (?, ?, ?)", (digest, len(data), data)
    )


def get_object(conn: apsw.Connection, digest: str) -> bytes | None:
    row = conn.execute("SELECT data FROM objects WHERE hash = ?", (digest,)).fetchone()
    return row[0] if row else None


def backup(conn: apsw.Connection, dest: str | Path) -> None:
    """A consistent online copy of the cartridge.

    One backup step copies every page inside a single read transaction: in WAL
    mode writers go on meanwhile, and a step-wise copy would restart each time
    another process commits (under steady writes, forever).
    """
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        out = apsw.Connection(str(tmp))
        try:
            with out.backup("main", conn, "main") as b:
                b.step(-1)
            out.pragma("journal_mode", "delete")
        finally:
            out.close()
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed copy leaves nothing beside the destination
        raise
