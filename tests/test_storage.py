"""The internal storage backend in-process: chunks, atomic visibility, listing, quota, keys, signing."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid

import pytest

from conftest import put_parts, register_apps

from fazt_host import cartridge
from fazt_host.capabilities.storage import http as storage_http
from fazt_host.capabilities.storage import store
from fazt_host.capabilities.storage.store import CHUNK, StorageError
from fazt_host.host import capabilities

MB = 1 << 20


@pytest.fixture
def conn(tmp_path):
    c = cartridge.connect(tmp_path / "fazt.db")
    capabilities(c)
    register_apps(c, "a", "b")
    return c


def put(conn, key, data, app="a", bucket="files", upsert=True, quota=1 << 40, ctype="application/octet-stream"):
    up = store.Upload(conn, app, bucket, key, ctype, {}, upsert, quota)
    for i in range(0, len(data), 300_000):  # writes that straddle chunk boundaries
        up.write(data[i : i + 300_000])
    return up.finish()


def get(conn, key, app="a", bucket="files", start=0, end=None):
    meta, data = store.head(conn, app, bucket, key)
    return b"".join(store.read(conn, data, start, end))


def chunk_rows(conn) -> int:
    return conn.execute("SELECT count(*) FROM blob_chunks").fetchone()[0]


def test_bytes_round_trip_with_md5_etag_and_ranges(conn):
    data = os.urandom(2 * CHUNK + 12345)
    meta = put(conn, "big.bin", data)
    assert meta["size"] == len(data) and meta["etag"] == hashlib.md5(data).hexdigest()
    assert get(conn, "big.bin") == data
    for start, end in [(0, 1), (CHUNK - 3, CHUNK + 3), (CHUNK, 2 * CHUNK), (5, len(data)), (2 * CHUNK + 1, 2 * CHUNK + 2)]:
        assert get(conn, "big.bin", start=start, end=end) == data[start:end]
    assert put(conn, "empty", b"")["size"] == 0 and get(conn, "empty") == b""


def test_an_upload_is_invisible_until_it_finishes_and_abort_leaves_nothing(conn):
    up = store.Upload(conn, "a", "files", "k", "text/plain", {}, True, 1 << 40)
    up.write(os.urandom(3 * CHUNK))
    with pytest.raises(StorageError) as e:
        store.head(conn, "a", "files", "k")
    assert e.value.status == 404
    assert store.listing(conn, "a", "files")[0] == []
    up.abort()
    assert chunk_rows(conn) == 0 and conn.execute("SELECT count(*) FROM blob_data").fetchone()[0] == 0


def test_concurrent_writers_to_one_key_the_last_to_finish_wins(conn):
    first = store.Upload(conn, "a", "files", "k", "", {}, True, 1 << 40)
    second = store.Upload(conn, "a", "files", "k", "", {}, True, 1 << 40)
    first.write(b"1" * (CHUNK + 1))
    second.write(b"2" * 10)
    second.finish()
    first.finish()
    assert get(conn, "k") == b"1" * (CHUNK + 1)
    # The replaced bytes wait out the grace time for readers, then go.
    assert store.sweep(conn, now=time.time() + store.ORPHAN_GRACE_S + 1) == 1
    assert chunk_rows(conn) == 2


def test_housekeeping_sweeps_bytes_let_go_of_without_a_write(tmp_path):
    from fazt_host.capabilities.storage import Storage

    conn = cartridge.connect(tmp_path / "fazt.db")
    storage = next(c for c in capabilities(conn) if isinstance(c, Storage))
    storage.setup(conn)
    register_apps(conn, "a")
    put(conn, "k", b"1" * (CHUNK + 1))
    put(conn, "k", b"2")  # the first bytes are an orphan now, past their grace below
    conn.execute("UPDATE blob_data SET changed_at = changed_at - ? WHERE state = 'orphan'", (store.ORPHAN_GRACE_S + 1,))
    storage.housekeep()  # what a serving worker runs about once a minute
    assert chunk_rows(conn) == 1 and get(conn, "k") == b"2"


def test_without_upsert_an_existing_key_is_refused(conn):
    put(conn, "k", b"x")
    with pytest.raises(StorageError) as e:
        put(conn, "k", b"y", upsert=False)
    assert e.value.status == 409 and e.value.error == "Duplicate"
    assert get(conn, "k") == b"x"


def test_quota_stops_an_upload_and_keeps_nothing_of_it(conn):
    put(conn, "a", b"x" * MB, quota=2 * MB)
    with pytest.raises(StorageError) as e:
        put(conn, "b", b"y" * (2 * MB), quota=2 * MB)
    assert e.value.status == 413 and e.value.error == "QuotaExceeded"
    assert chunk_rows(conn) == 2 and store.usage(conn, "a") == MB
    with pytest.raises(StorageError):
        store.copy(conn, "a", "files", "a", "a2", quota=int(1.5 * MB))


def test_uploads_side_by_side_cannot_pass_the_quota_together(conn):
    put(conn, "small", b"s" * (MB // 4), quota=2 * MB)
    first, second = (store.Upload(conn, "a", "files", k, "", {}, True, 2 * MB) for k in ("one", "two"))
    for upload in (first, second):  # each began with room for itself
        upload.write(b"x" * MB)
    first.finish()
    with pytest.raises(StorageError) as e:
        second.finish()
    assert e.value.error == "QuotaExceeded"
    assert store.usage(conn, "a") == MB + MB // 4  # before: both landed, 2.25 MiB under a 2 MiB quota
    assert [o["key"] for o in store.listing(conn, "a", "files", "", 10)[0]] == ["one", "small"]
    replacing = store.Upload(conn, "a", "files", "one", "", {}, True, 2 * MB)
    replacing.write(b"y" * (MB + MB // 2))  # fits once the object it replaces is gone
    assert replacing.finish()["size"] == MB + MB // 2


def test_an_upload_a_crash_cut_off_does_not_count_against_the_quota(conn):
    cut = store.Upload(conn, "a", "files", "cut", "", {}, True, 2 * MB)
    cut.write(b"x" * (3 * MB // 2))  # the host dies here: no finish, no abort, swept an hour later
    assert store.usage(conn, "a") == 0  # before: 1.5 MiB of a 2 MiB quota, until swept
    assert put(conn, "next", b"y" * (3 * MB // 2), quota=2 * MB)["size"] == 3 * MB // 2


def test_usage_is_kept_as_the_sum_of_what_the_quota_counts(conn):
    def summed(app="a"):
        return conn.execute("SELECT coalesce(sum(size), 0) FROM blob_data WHERE app = ? "
                            "AND state IN ('live', 'part')", (app,)).fetchone()[0]

    put(conn, "k", b"x" * (CHUNK + 5))
    put(conn, "k", b"y" * 10)  # replaced: an orphan, not counted
    put(conn, "other", b"z" * 7, app="b")
    open_upload = store.Upload(conn, "a", "files", "open", "", {}, True, 1 << 40)
    open_upload.write(b"w" * 100)
    store.copy(conn, "a", "files", "k", "k2", quota=1 << 40)
    store.copy(conn, "a", "files", "k2", "k3", quota=1 << 40, move=True)
    assert store.usage(conn, "a") == summed() and store.usage(conn, "b") == summed("b") == 7
    open_upload.abort()
    store.remove(conn, "a", "files", ["k"])
    store.sweep(conn, now=time.time() + store.ORPHAN_GRACE_S + 1)
    assert store.usage(conn, "a") == summed() == 10  # k3 alone
    assert store.usage(conn, "nobody") == 0


def test_the_object_an_upsert_replaces_leaves_room_for_it(conn):
    put(conn, "k", b"x" * 700_000, quota=MB)
    assert put(conn, "k", b"y" * 700_000, quota=MB)["size"] == 700_000
    assert get(conn, "k") == b"y" * 700_000 and store.usage(conn, "a") == 700_000
    with pytest.raises(StorageError) as e:  # another key gets no such room
        put(conn, "other", b"z" * 700_000, quota=MB)
    assert e.value.error == "QuotaExceeded"


@pytest.mark.parametrize("ctype, metadata", [("text/plain\r\nx-evil: 1", {}), ("text/\x00", {}), ("text/plain", {"a b": "v"}),
                                             ("text/plain", {"": "v"}), ("text/plain", {"note": "line\nbreak"})])
def test_what_cannot_be_served_as_headers_is_refused_at_upload(conn, ctype, metadata):
    with pytest.raises(StorageError) as e:
        store.Upload(conn, "a", "files", "k", ctype, metadata, True, 1 << 40)
    assert e.value.status == 400 and e.value.error == "InvalidRequest"
    assert store.Upload(conn, "a", "files", "k", "text/plain; charset=utf-8", {"x-Note_1": "a\tb ~"}, True, 1 << 40).finish()


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../b", "./a", "a/./b", "/abs", "a\x00b", "a\nb", "tab\there",
                                 "x" * 1025, "é" * 513, ""])
def test_hostile_keys_are_refused(conn, key):
    with pytest.raises(StorageError) as e:
        put(conn, key, b"x")
    assert e.value.status == 400
    assert chunk_rows(conn) == 0


@pytest.mark.parametrize("bucket", ["A", "ab", "-ab", "ab-", "a_b", "a.b", "x" * 64, "a/b", ""])
def test_bad_bucket_names_are_refused(conn, bucket):
    with pytest.raises(StorageError):
        put(conn, "k", b"x", bucket=bucket)


def test_unicode_and_long_keys_work(conn):
    for key in ["ünï/cødé 🙂.txt", "d/" + "x" * 1020, "a b+c%20d"]:
        put(conn, key, key.encode())
        assert get(conn, key) == key.encode()


def test_listing_by_folder_with_pages(conn):
    keys = ["a.txt", "b/1", "b/2", "b/c/3", "c", "d/4", "e"] + [f"p/{i:02}" for i in range(25)]
    for k in keys:
        put(conn, k, b"x")
    objects, prefixes, more = store.listing(conn, "a", "files", "", 100, "", "/")
    assert [o["key"] for o in objects] == ["a.txt", "c", "e"] and prefixes == ["b/", "d/", "p/"] and more is None
    objects, prefixes, _ = store.listing(conn, "a", "files", "b/", 100, "", "/")
    assert [o["key"] for o in objects] == ["b/1", "b/2"] and prefixes == ["b/c/"]
    seen, start = [], ""
    while True:
        objects, prefixes, start = store.listing(conn, "a", "files", "", 4, start, "/")
        seen += [o["key"] for o in objects] + prefixes
        if start is None:
            break
    assert sorted(seen) == ["a.txt", "b/", "c", "d/", "e", "p/"] and len(seen) == 6
    seen, start = [], ""
    while True:
        objects, _, start = store.listing(conn, "a", "files", "p/", 10, start)
        seen += [o["key"] for o in objects]
        if start is None:
            break
    assert seen == [f"p/{i:02}" for i in range(25)]
    assert store.decode_cursor(store.encode_cursor("b/c/\x00")) == "b/c/\x00"


def test_a_folder_pages_as_supabase_lists_it_subfolders_first(conn):
    for k in ["Banana", "Zed", "apple", "b/1", "m/x/2", "n/", "n/in", "z/3", "z/4", "zz"]:
        put(conn, k, b"x")
    whole = ["b/", "m/", "n/", "z/", "Banana", "Zed", "apple", "zz"]  # folders, then objects: storage.search's order
    objects, folders, cursor = store.folder_listing(conn, "a", "files", "", 100)
    assert folders + [o["key"] for o in objects] == whole and cursor is None
    for limit in (1, 2, 3, 4, 5):  # before: folders sorted first only within each page
        seen, cursor = [], ""
        while cursor is not None:
            objects, folders, cursor = store.folder_listing(conn, "a", "files", "", limit, cursor)
            assert len(objects) + len(folders) <= limit
            seen += folders + [o["key"] for o in objects]
        assert seen == whole, limit
        by_offset = []
        for offset in range(0, len(whole) + limit, limit):
            objects, folders, _ = store.folder_listing(conn, "a", "files", "", limit, "", offset)
            by_offset += folders + [o["key"] for o in objects]
        assert by_offset == whole, limit
    # A folder's own marker object (an S3 client's "n/") is no entry of it.
    objects, folders, _ = store.folder_listing(conn, "a", "files", "n/", 10)
    assert [o["key"] for o in objects] == ["n/in"] and folders == []
    with pytest.raises(store.StorageError, match="invalid cursor"):
        store.folder_listing(conn, "a", "files", "", 10, "x:y")


def test_sorted_listing_and_search_as_supabase_lists(conn):
    keys = ["s/b.txt", "s/A.txt", "s/c.txt", "s/ab%_.txt", "s/Apple/x", "s/apricot/y", "s/zed/z", "s/zed/w", "t/a.txt"]
    for i, key in enumerate(keys):
        put(conn, key, b"x")
        conn.execute("UPDATE blob_objects SET created_at = ?, updated_at = ? WHERE key = ?", (i, 100 - i, key))

    def names(*args, **kw):
        objects, prefixes = store.sorted_listing(conn, "a", "files", "s/", *args, **kw)
        return prefixes + [o["key"] for o in objects]

    assert names(100, 0) == ["s/Apple/", "s/apricot/", "s/zed/", "s/A.txt", "s/ab%_.txt", "s/b.txt", "s/c.txt"]
    assert names(100, 0, column="created_at", order="desc") == [
        "s/zed/", "s/apricot/", "s/Apple/", "s/ab%_.txt", "s/c.txt", "s/A.txt", "s/b.txt"]
    assert names(100, 0, column="updated_at") == names(100, 0, column="created_at", order="desc")[:3][::-1] + [
        "s/ab%_.txt", "s/c.txt", "s/A.txt", "s/b.txt"]
    assert names(100, 0, "a") == ["s/Apple/", "s/apricot/", "s/A.txt", "s/ab%_.txt"]  # ignoring case
    assert names(100, 0, "AB%") == ["s/ab%_.txt"] and names(100, 0, "_") == [] and names(100, 0, "%") == []
    pages = [names(2, offset, column="created_at") for offset in (0, 2, 4, 6)]
    assert sum(pages, []) == names(100, 0, column="created_at") and pages[-1] == ["s/ab%_.txt"]
    for column, order in (("size", "asc"), ("name; drop table x", "asc"), ("name", "sideways")):
        with pytest.raises(StorageError) as e:
            store.sorted_listing(conn, "a", "files", "s/", 10, 0, column=column, order=order)
        assert e.value.status == 400


def test_remove_copy_move(conn):
    data = os.urandom(CHUNK + 7)
    put(conn, "src", data)
    put(conn, "dst", b"old")
    store.copy(conn, "a", "files", "src", "dst", upsert=True)
    assert get(conn, "dst") == data and get(conn, "src") == data
    store.copy(conn, "a", "files", "src", "elsewhere/x", dest_bucket="other")
    assert get(conn, "elsewhere/x", bucket="other") == data
    store.copy(conn, "a", "files", "src", "moved", move=True)
    assert get(conn, "moved") == data
    with pytest.raises(StorageError):
        store.head(conn, "a", "files", "src")
    removed = store.remove(conn, "a", "files", ["moved", "never", "../no-such-key"])
    assert [r["key"] for r in removed] == ["moved"]  # a key no object can have is not found, as "never" (it refused all)
    store.sweep(conn, now=time.time() + store.ORPHAN_GRACE_S + 1)
    live = conn.execute("SELECT coalesce(sum(size), 0) FROM blob_data").fetchone()[0]
    assert live == 2 * len(data)  # dst and other/elsewhere/x


def test_copy_and_move_refuse_an_existing_destination_unless_upsert(conn):
    put(conn, "src", b"new")
    put(conn, "dst", b"old")
    put(conn, "dst", b"old", bucket="other")
    for move in (False, True):
        for dest, bucket in (("dst", None), ("dst", "other"), ("src", None)):
            with pytest.raises(StorageError) as e:
                store.copy(conn, "a", "files", "src", dest, dest_bucket=bucket, move=move)
            assert (e.value.status, e.value.error) == (409, "Duplicate")
    assert get(conn, "dst") == b"old" and get(conn, "dst", bucket="other") == b"old" and get(conn, "src") == b"new"
    store.copy(conn, "a", "files", "src", "dst", upsert=True)
    assert get(conn, "dst") == b"new"
    store.copy(conn, "a", "files", "src", "dst", dest_bucket="other", upsert=True, move=True)
    assert get(conn, "dst", bucket="other") == b"new" and not store.listing(conn, "a", "files", "src")[0]
    store.copy(conn, "a", "files", "dst", "fresh")  # a free destination needs no upsert
    assert get(conn, "fresh") == b"new"


def test_a_copy_can_replace_the_metadata_and_onto_itself_changes_only_that(conn):
    put(conn, "src", b"bytes", ctype="text/plain")
    copied = store.copy(conn, "a", "files", "src", "dst", content_type="x/new", metadata={"k": "v"})
    assert (copied["contentType"], copied["metadata"]) == ("x/new", {"k": "v"})
    meta = store.head(conn, "a", "files", "dst")[0]
    assert (meta["contentType"], meta["metadata"]) == ("x/new", {"k": "v"})
    assert store.head(conn, "a", "files", "src")[0]["contentType"] == "text/plain"
    chunks = chunk_rows(conn)
    store.copy(conn, "a", "files", "src", "src", upsert=True, content_type="y/z", metadata={"a": "b"})
    meta, _ = store.head(conn, "a", "files", "src")
    assert (meta["contentType"], meta["metadata"]) == ("y/z", {"a": "b"}) and get(conn, "src") == b"bytes"
    assert chunk_rows(conn) == chunks  # in place: no bytes copied


def test_an_object_made_of_parts_reads_copies_moves_and_is_swept_whole(conn):
    parts = [os.urandom(CHUNK + 5), os.urandom(3), b"", os.urandom(2 * CHUNK)]
    data = b"".join(parts)
    chunks = chunk_rows(conn)
    put_parts(conn, "whole", parts)
    assert chunk_rows(conn) - chunks == 2 + 1 + 0 + 2  # the parts' chunks, not copies of them
    assert get(conn, "whole") == data and store.head(conn, "a", "files", "whole")[0]["size"] == len(data)
    for start, end in [(0, 1), (CHUNK, CHUNK + 6), (CHUNK + 4, CHUNK + 9), (CHUNK + 7, len(data)), (len(data) - 1, len(data))]:
        assert get(conn, "whole", start=start, end=end) == data[start:end]
    assert store.usage(conn, "a") == len(data)
    store.copy(conn, "a", "files", "whole", "copy")
    store.copy(conn, "a", "files", "whole", "moved", move=True)
    put(conn, "copy-of-copy", b"old")
    store.copy(conn, "a", "files", "copy", "copy-of-copy", upsert=True)
    store.remove(conn, "a", "files", ["moved", "copy"])
    store.sweep(conn, now=time.time() + store.ORPHAN_GRACE_S + 1)
    assert get(conn, "copy-of-copy") == data and store.usage(conn, "a") == len(data)
    store.remove(conn, "a", "files", ["copy-of-copy"])
    store.sweep(conn, now=time.time() + store.ORPHAN_GRACE_S + 1)
    assert chunk_rows(conn) == chunks
    assert conn.execute("SELECT count(*) FROM blob_data").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM blob_pieces").fetchone()[0] == 0
    put_parts(conn, "again", parts)
    with cartridge.transaction(conn):
        store.forget(conn, "a")
    assert chunk_rows(conn) == 0 and conn.execute("SELECT count(*) FROM blob_pieces").fetchone()[0] == 0


def test_bucket_settings_read_as_supabase_does_and_refuse_the_rest(conn):
    assert [store.size_limit(v) for v in (1024, "20MB", "1.5gb", "30KB", "3B", None)] == [
        1024, 20_000_000, 1_500_000_000, 30_000, 3, None]
    for bad in (0, -1, True, 1.5, "1e3", "20 MiB", "MB", "9" * 30 + "GB", 1 << 60, [1]):
        with pytest.raises(StorageError) as e:
            store.size_limit(bad)
        assert e.value.status == 400, bad
    assert store.mime_types(["IMAGE/PNG", "text/*"]) == ["image/png", "text/*"] and store.mime_types([]) is None
    for bad in (["image"], ["*/*"], ["a/b\r\nx: y"], "image/png", [1], ["a/b"] * 101):
        with pytest.raises(StorageError):
            store.mime_types(bad)


def test_a_buckets_limits_hold_for_every_way_in(conn):
    store.create_bucket(conn, "a", "small", file_size_limit=10, allowed_mime_types=["text/*"])
    put(conn, "ok", b"x" * 10, bucket="small", ctype="text/plain; charset=utf-8")
    for key, size, ctype, error in (("big", 11, "text/plain", "EntityTooLarge"), ("img", 1, "image/png", "InvalidMimeType")):
        with pytest.raises(StorageError) as e:
            put(conn, key, b"x" * size, bucket="small", ctype=ctype)
        assert e.value.error == error
    with pytest.raises(StorageError) as e:  # each part fits, the whole does not
        put_parts(conn, "parts", [b"x" * 6, b"x" * 6], bucket="small")
    assert e.value.error == "EntityTooLarge"
    put(conn, "big", b"x" * 11, ctype="text/plain")
    with pytest.raises(StorageError) as e:
        store.copy(conn, "a", "files", "big", "big", dest_bucket="small")
    assert e.value.error == "EntityTooLarge"
    assert [o["key"] for o in store.listing(conn, "a", "small")[0]] == ["ok"]
    store.update_bucket(conn, "a", "small", file_size_limit=None)
    assert put(conn, "big", b"x" * 11, bucket="small", ctype="text/plain")["size"] == 11
    assert store.bucket(conn, "a", "small")["allowedMimeTypes"] == ["text/*"]  # left as it was


def test_objects_stored_before_ids_get_one_each(tmp_path):
    old = cartridge.connect(tmp_path / "old.db")
    cartridge.migrate(old, "storage", store.MIGRATIONS[:5])  # the schema before object ids
    register_apps(old, "a")
    with cartridge.transaction(old):
        bid = store.bucket_id(old, "a", "files", create=True)
        for key in ("x", "y"):
            old.execute("INSERT INTO blob_objects(bucket, key, data, size, etag, content_type, metadata, created_at, "
                        "updated_at) VALUES (?, ?, 0, 0, 'same', 'text/plain', '{}', 0, 0)", (bid, key))
    capabilities(old)
    ids = [store.head(old, "a", "files", key)[0]["id"] for key in ("x", "y")]
    assert ids[0] != ids[1] and all(uuid.UUID(i).version == 4 for i in ids)


def test_an_upload_whose_app_is_removed_meanwhile_leaves_no_chunks(conn):
    # before: forget dropped the upload's row and its chunks so far, and the chunks written after it
    # belonged to no row, for good (and clashed with the next upload given that row's id)
    up = store.Upload(conn, "a", "files", "k", "", {}, True, 1 << 40)
    up.write(b"x" * (CHUNK * store.CHUNKS_PER_COMMIT))
    with cartridge.transaction(conn):
        store.forget(conn, "a")
    with pytest.raises(StorageError, match="its app was removed"):
        up.write(b"y" * (CHUNK * store.CHUNKS_PER_COMMIT))
    assert chunk_rows(conn) == 0


def test_apps_never_see_each_other(conn):
    put(conn, "secret", b"a's", app="a")
    with pytest.raises(StorageError):
        store.head(conn, "b", "files", "secret")
    assert store.listing(conn, "b", "files")[0] == []
    assert store.remove(conn, "b", "files", ["secret"]) == []
    put(conn, "secret", b"b's", app="b")
    assert get(conn, "secret", app="a") == b"a's"
    with cartridge.transaction(conn):
        store.forget(conn, "a")
    assert store.buckets(conn, "a") == [] and get(conn, "secret", app="b") == b"b's"


def test_abandoned_uploads_are_swept(conn):
    up = store.Upload(conn, "a", "files", "k", "", {}, True, 1 << 40)
    up.write(b"x" * (CHUNK + 1))
    assert store.sweep(conn) == 0
    assert store.sweep(conn, now=time.time() + store.ABANDONED_S + 1) == 1
    assert chunk_rows(conn) == 0


def test_checkpoints_off_the_writer_keep_the_wal_bounded_and_truncate_it_when_idle(conn, tmp_path, monkeypatch):
    monkeypatch.setattr(cartridge, "CHECKPOINT_PAGES", 256)  # 1 MiB
    monkeypatch.setattr(cartridge, "CHECKPOINT_LIMIT_PAGES", 1024)  # 4 MiB
    monkeypatch.setattr(cartridge, "CHECKPOINT_IDLE_S", 0.2)
    wal = tmp_path / "fazt.db-wal"
    checkpointer = cartridge.Checkpointer(tmp_path / "fazt.db")
    checkpointer.attach(conn)
    data = os.urandom(24 * MB)
    up = store.Upload(conn, "a", "files", "big", "", {}, True, 1 << 40)
    largest = 0
    for i in range(0, len(data), MB):
        up.write(data[i : i + MB])
        largest = max(largest, wal.stat().st_size)
    up.finish()
    commit = CHUNK * store.CHUNKS_PER_COMMIT
    assert largest < 4 * MB + 2 * commit  # the limit plus what a commit past it adds
    deadline = time.monotonic() + 10
    while wal.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wal.stat().st_size == 0
    assert get(conn, "big") == data
    checkpointer.close()
    assert not checkpointer._thread.is_alive()
    put(conn, "after", b"still written")  # the writer goes on without the thread
    assert get(conn, "after") == b"still written" and get(conn, "big") == data


def test_checkpoints_bound_the_wal_under_writers_that_never_pause(tmp_path, monkeypatch):
    """Two writers (two workers) take turns: the WAL is never fully copied between commits, unless
    the checkpoint at the limit keeps both out while it runs."""
    monkeypatch.setattr(cartridge, "CHECKPOINT_PAGES", 256)
    monkeypatch.setattr(cartridge, "CHECKPOINT_LIMIT_PAGES", 1024)  # 4 MiB
    path, wal = tmp_path / "fazt.db", tmp_path / "fazt.db-wal"
    writers = [cartridge.connect(path) for _ in range(2)]
    capabilities(writers[0])
    register_apps(writers[0], "a")
    checkpointers = [cartridge.Checkpointer(path) for _ in writers]
    for checkpointer, writer in zip(checkpointers, writers):
        checkpointer.attach(writer)
    data = os.urandom(16 * MB)
    errors = []

    def upload(writer, key):
        try:
            up = store.Upload(writer, "a", "files", key, "", {}, True, 1 << 40)
            for i in range(0, len(data), MB):
                up.write(data[i : i + MB])
            up.finish()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=upload, args=(w, f"k{i}")) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    largest = 0
    while any(t.is_alive() for t in threads):
        largest = max(largest, wal.stat().st_size)
        time.sleep(0.002)
    for t in threads:
        t.join()
    assert not errors
    commit = CHUNK * store.CHUNKS_PER_COMMIT
    assert largest < 4 * MB + 4 * commit  # 32 MiB were written
    assert get(writers[0], "k0") == data and get(writers[1], "k1") == data
    for checkpointer in checkpointers:
        checkpointer.close()


def test_signed_tokens(conn):
    path = storage_http.signed_path(conn, "/a", "download", "a", "files", "k", 60)
    token = path.rpartition("token=")[2]
    assert storage_http.check_token(conn, token, ("download",), "a", "files", "k") == "download"
    for args in [(("upload", "upsert"), "a", "files", "k"), (("download",), "b", "files", "k"),
                 (("download",), "a", "other", "k"), (("download",), "a", "files", "k2")]:
        with pytest.raises(StorageError, match="invalid signature"):
            storage_http.check_token(conn, token, *args)
    expires, _, mac = token.partition(".")
    with pytest.raises(StorageError, match="invalid signature"):
        storage_http.check_token(conn, f"{int(expires) + 1000}.{mac}", ("download",), "a", "files", "k")
    old = storage_http.signed_path(conn, "/a", "download", "a", "files", "k", -10).rpartition("token=")[2]
    with pytest.raises(StorageError, match="expired"):
        storage_http.check_token(conn, old, ("download",), "a", "files", "k")
    # An upload URL signed with upsert says so; one without cannot be made to.
    upsert = storage_http.signed_path(conn, "/a", "upsert", "a", "files", "k", 60).rpartition("token=")[2]
    assert storage_http.check_token(conn, upsert, ("upload", "upsert"), "a", "files", "k") == "upsert"
    plain = storage_http.signed_path(conn, "/a", "upload", "a", "files", "k", 60).rpartition("token=")[2]
    assert storage_http.check_token(conn, plain, ("upload", "upsert"), "a", "files", "k") == "upload"
