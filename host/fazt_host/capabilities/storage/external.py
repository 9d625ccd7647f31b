"""The external S3 backend: an object's bytes in a bucket of AWS S3, R2, MinIO...

Only bytes live there, one external object per upload (`blob_data.location`);
buckets, keys, metadata and listings stay in the cartridge, so an app sees one
namespace whatever holds the bytes. The endpoint, bucket and credentials come
from the host's environment (FAZT_S3_*), never from an app.

aioboto3 runs on an event loop of its own in a daemon thread: the wasm thread
(synchronous) and the server's loop (asynchronous) both hand it coroutines,
so neither blocks the other and one client's connection pool serves both.
Uploads go up in parts of one fixed size (R2 refuses unequal non-trailing
parts), the next part read while the previous one is on the wire.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from typing import Any

import msgspec

from ...cartridge import transaction

MIB = 1 << 20
READ_PIECE = 512 * 1024
COPY_MAX = 5 << 30  # CopyObject's limit: larger objects are copied part by part


class S3Settings(msgspec.Struct, frozen=True):
    """FAZT_S3_BUCKET turns the backend on; the rest default like the AWS SDKs do."""

    bucket: str
    endpoint: str = ""  # default: AWS for the region
    region: str = "us-east-1"
    access_key_id: str = ""  # default: the AWS SDK's own chain (AWS_* variables, profiles, roles)
    secret_access_key: str = ""
    prefix: str = "fazt/"  # where in the bucket this host's objects live
    part_mb: int = 8

    @classmethod
    def from_env(cls) -> S3Settings | None:
        values = {f: os.environ[f"FAZT_S3_{f.upper()}"] for f in cls.__struct_fields__ if os.environ.get(f"FAZT_S3_{f.upper()}")}
        if "bucket" not in values:
            return None
        try:
            settings = msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as e:
            raise ValueError(f"FAZT_S3_* settings: {e}") from None
        if not 5 <= settings.part_mb <= 5120:
            raise ValueError("FAZT_S3_PART_MB must be between 5 and 5120 (S3's part size limits)")
        return settings


class External:
    """One process's client of the external bucket."""

    def __init__(self, settings: S3Settings):
        self.settings = settings
        self.part_size = settings.part_mb * MIB
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="fazt-s3", daemon=True).start()
        try:
            self.client = self.run(self._open())
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise

    async def _open(self):
        import aioboto3
        from aiobotocore.config import AioConfig

        s = self.settings
        config = AioConfig(
            # An unreachable bucket fails a request in seconds, not after a long series of retries.
            s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=3, read_timeout=60, max_pool_connections=32,
        )
        self._context = aioboto3.Session().client(
            "s3", endpoint_url=s.endpoint or None, region_name=s.region,
            aws_access_key_id=s.access_key_id or None, aws_secret_access_key=s.secret_access_key or None, config=config,
        )
        client = await self._context.__aenter__()
        try:
            try:
                await client.head_bucket(Bucket=s.bucket)
            except client.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                    raise
                await client.create_bucket(Bucket=s.bucket)
        except BaseException:
            await self._context.__aexit__(None, None, None)  # its HTTP session too, not left to warn at exit
            raise
        return client

    # -- bridging: coroutines run on this object's loop ------------------------------------------
    def submit(self, coro) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro) -> Any:
        """From a thread that is not this object's loop (the wasm thread, the CLI)."""
        return self.submit(coro).result()

    async def arun(self, coro) -> Any:
        """From another event loop (the server's)."""
        return await asyncio.wrap_future(self.submit(coro))

    def call(self, op: str, **kw) -> Any:
        return self.run(getattr(self.client, op)(Bucket=self.settings.bucket, **kw))

    def new_location(self, app: str) -> str:
        return f"{self.settings.prefix}{app}/{secrets.token_hex(16)}"

    # -- reading ----------------------------------------------------------------------------------
    async def _open_body(self, location: str, start: int, end: int | None):
        if end is not None and end <= start:
            return None  # nothing to read, and no Range header says so
        kw = {} if start == 0 and end is None else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        return (await self.client.get_object(Bucket=self.settings.bucket, Key=location, **kw))["Body"]

    @staticmethod
    async def _close(body) -> None:
        body.close()

    # The object is opened before these return, so an unreachable bucket fails the call (before any
    # response status is sent), not the iteration.
    def read(self, location: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self._pieces(self.run(self._open_body(location, start, end)))

    def _pieces(self, body) -> Iterator[bytes]:
        if body is None:
            return
        try:
            while chunk := self.run(body.read(READ_PIECE)):
                yield chunk
        finally:
            self.run(self._close(body))

    async def aread(self, location: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self._apieces(await self.arun(self._open_body(location, start, end)))

    async def _apieces(self, body) -> AsyncIterator[bytes]:
        if body is None:
            return
        try:
            while chunk := await self.arun(body.read(READ_PIECE)):
                yield chunk
        finally:
            await self.arun(self._close(body))

    # -- copying and deleting ---------------------------------------------------------------------
    def copy(self, source: str, dest: str, size: int) -> None:
        """Server-side: the bytes never come through this host."""
        bucket = self.settings.bucket
        if size <= COPY_MAX:
            self.call("copy_object", Key=dest, CopySource={"Bucket": bucket, "Key": source})
            return
        upload_id = self.call("create_multipart_upload", Key=dest)["UploadId"]
        try:
            parts = []
            for n, offset in enumerate(range(0, size, self.part_size), 1):
                last = min(offset + self.part_size, size) - 1
                reply = self.call("upload_part_copy", Key=dest, UploadId=upload_id, PartNumber=n,
                                  CopySource={"Bucket": bucket, "Key": source}, CopySourceRange=f"bytes={offset}-{last}")
                parts.append({"PartNumber": n, "ETag": reply["CopyPartResult"]["ETag"]})
            self.call("complete_multipart_upload", Key=dest, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self.call("abort_multipart_upload", Key=dest, UploadId=upload_id)
            raise

    def delete(self, items: list[tuple[str, str | None]]) -> None:
        """Deletes objects and aborts their unfinished multipart uploads; gone already is fine."""
        for location, pending in items:
            if pending:
                try:
                    self.call("abort_multipart_upload", Key=location, UploadId=pending)
                except self.client.exceptions.NoSuchUpload:
                    pass
        for i in range(0, len(items), 1000):
            keys = [{"Key": location} for location, _ in items[i : i + 1000]]
            self.call("delete_objects", Delete={"Objects": keys, "Quiet": True})


class Sink:
    """Bytes of one upload going into one external object."""

    def __init__(self, ext: External, conn, data: int, location: str):
        self.ext, self.conn, self.data, self.location = ext, conn, data, location
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.sent = 0
        self.inflight: tuple[int, int, Future] | None = None

    def write(self, data) -> None:
        self.buffer += data
        size = self.ext.part_size
        while len(self.buffer) >= size:
            self._send(bytes(self.buffer[:size]))
            del self.buffer[:size]

    def _send(self, body: bytes) -> None:
        if self.upload_id is None:
            upload_id = self.ext.call("create_multipart_upload", Key=self.location)["UploadId"]
            try:
                self._record(upload_id)  # a process that dies now leaves an upload the sweep can abort
            except BaseException:  # not recorded: nothing else knows of the upload to abort it
                self.ext.call("abort_multipart_upload", Key=self.location, UploadId=upload_id)
                raise
            self.upload_id = upload_id
        self._wait()
        number = len(self.parts) + 1
        coro = self.ext.client.upload_part(
            Bucket=self.ext.settings.bucket, Key=self.location, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.inflight = (number, len(body), self.ext.submit(coro))

    def _wait(self) -> None:
        if self.inflight is None:
            return
        number, size, future = self.inflight
        self.inflight = None
        self.parts.append({"PartNumber": number, "ETag": future.result()["ETag"]})
        self.sent += size
        self._record()

    def _record(self, upload_id: str | None = None) -> None:
        with transaction(self.conn):
            self.conn.execute("UPDATE blob_data SET size = ?, pending = ? WHERE id = ?",
                              (self.sent, upload_id or self.upload_id, self.data))

    def close(self) -> None:
        if self.upload_id is None:
            self.ext.call("put_object", Key=self.location, Body=bytes(self.buffer))
        else:
            if self.buffer:
                self._send(bytes(self.buffer))
            self._wait()
            self.ext.call("complete_multipart_upload", Key=self.location, UploadId=self.upload_id,
                          MultipartUpload={"Parts": self.parts})
        self.buffer = bytearray()

    def abort(self) -> None:
        """Waits for a part on the wire; the caller trashes the object (and the multipart upload)."""
        if self.inflight is not None:
            try:
                self._wait()
            except Exception:  # noqa: BLE001 - the upload is being dropped anyway
                pass


_current: External | None = None
_configured = False
_lock = threading.Lock()


def current() -> External | None:
    """This process's external bucket, set up from FAZT_S3_* on first use; None without FAZT_S3_BUCKET."""
    global _current, _configured
    with _lock:
        if not _configured:
            settings = S3Settings.from_env()
            _current = External(settings) if settings else None
            _configured = True
        return _current


def configure(settings: S3Settings | None) -> External | None:
    """Sets this process's external bucket explicitly (tests, tools)."""
    global _current, _configured
    with _lock:
        _current = External(settings) if settings else None
        _configured = True
        return _current
