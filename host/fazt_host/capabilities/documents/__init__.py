"""Documents: JSON documents in collections, queried like supabase-js.

The guest's query builder (guest-sdk/src/db.js) sends one operation as JSON
through `fazt:host/documents.query` and gets the `{data, error, count}` reply
back as one string. The store lives in `store.py`, the SQL compiler in
`compile.py`, the request shapes and name rules in `spec.py`.
"""

from __future__ import annotations

import apsw

from ...cartridge import transaction
from ...config import Manifest
from ...runtime import Invocation
from .. import Capability
from . import store
from .store import Store


class Documents(Capability):
    name = "documents"
    interface = "fazt:host/documents@0.1.0"
    migrations = store.MIGRATIONS

    def setup(self, conn: apsw.Connection) -> None:
        super().setup(conn)
        self.store = Store(conn)
        # A bulk import killed before it rebuilt its indexes leaves them missing: rebuild them.
        if store.missing_indexes(conn):
            with transaction(conn):
                store.restore_indexes(conn)

    def functions(self):
        return {"query": self.query}

    def query(self, invocation: Invocation, request: str) -> str:
        return self.store.run(invocation.app, request, invocation.limits)

    def configure(self, conn: apsw.Connection, manifest: Manifest) -> list[str]:
        return store.sync_indexes(conn, manifest.name, manifest.indexes)

    def forget(self, conn: apsw.Connection, app: str) -> None:
        store.forget(conn, app)
