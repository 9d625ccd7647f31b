"""A private PostgreSQL 15 cluster on loopback for the documents benchmark.

Debian's `postgresql` package (the Makefile installs it); initdb into
bench/.work/docs/pg, `pg_ctl start` on a free port, stopped and removed at the
end. PostgreSQL refuses to run as root, so as root the cluster belongs to the
`postgres` user the package creates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import msgspec
import psycopg
from psycopg.types.json import set_json_loads

BIN = Path("/usr/lib/postgresql/15/bin")
# Memory as a tuned single-tenant server would have it, and commits without
# waiting for fsync (what the cartridge's WAL with synchronous=normal does).
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "2GB",
    "effective_cache_size": "16GB",
    "maintenance_work_mem": "256MB",
    "work_mem": "16MB",
    "max_wal_size": "8GB",
    "synchronous_commit": "off",
}

# The same three expression indexes as fazt.json's ["owner", ["owner", "createdAt"], "status"].
SCHEMA = """
CREATE TABLE docs(id bigserial PRIMARY KEY, body jsonb NOT NULL);
CREATE INDEX docs_owner ON docs((body->>'owner'));
CREATE INDEX docs_owner_created ON docs((body->>'owner'), (body->>'createdAt'));
CREATE INDEX docs_status ON docs((body->>'status'));
"""


class Postgres:
    def __init__(self, folder: Path, port: int):
        if not (BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 is missing ({BIN}): apt-get install -y postgresql (make bench-docs does)")
        self.folder, self.port = folder.resolve(), port
        self.data = folder / "data"
        self.as_root = os.geteuid() == 0

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True)

    def start(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", "bench", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = " ".join(f"-c {k}={v}" for k, v in SETTINGS.items())
        try:
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "start",
                      "-o", f"-p {self.port} -k {self.folder} {options}")
        except subprocess.CalledProcessError:
            raise RuntimeError("PostgreSQL did not start:\n" + (self.folder / "log").read_text()[-2000:]) from None

    def stop(self) -> None:
        try:
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def connect(self) -> psycopg.Connection:
        conn = psycopg.connect(host="127.0.0.1", port=self.port, user="bench", dbname="postgres", autocommit=True)
        set_json_loads(msgspec.json.decode, conn)  # rows decode as the fazt replies do
        return conn


def copy_file(conn: psycopg.Connection, path: Path, progress=None) -> int:
    """COPY the NDJSON file into `docs(body)`, streamed in 4 MiB chunks; returns the rows copied."""
    sent = 0
    with conn.cursor() as cur, open(path, "rb") as f:
        with cur.copy("COPY docs(body) FROM STDIN") as copy:
            for chunk in iter(lambda: f.read(4 << 20), b""):
                # COPY's text format reads backslashes as escapes.
                copy.write(chunk.replace(b"\\", b"\\\\"))
                sent += chunk.count(b"\n")
                if progress:
                    progress(sent)
        return cur.rowcount
