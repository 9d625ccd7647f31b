"""Streamed response bodies that go out only as fast as the client takes them.

Granian's RSGI stream transport queues what it is sent without bound, so a
client that reads slowly, or not at all, would have a large response (an
object of gigabytes) held whole in the worker's memory. Here Granian serves the
response as a file that is a FIFO (`response_file`): it reads the next piece
only when the socket has taken the last, and `send_bytes` waits while the
pipe is full. Memory per response: the pipe's buffer and Granian's 128 KiB
read buffer, whatever the size.

The FIFO's name is gone as soon as both ends are open: the write end opens
(non-blocking) only once Granian holds the read end, so nothing else can.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import secrets
import tempfile
import time

PIPE_BYTES = 1 << 20  # the pipe's buffer (Linux's default most a process may set)
OPEN_WAIT_S = 10.0  # Granian opens the file as the response starts: within milliseconds
IDLE_S = 60.0  # a client that takes nothing for this long is given up on
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Stalled(Exception):
    """The client took nothing for IDLE_S, or Granian never opened the pipe."""


class PipedBody:
    """What `response_stream`'s transport offers (`send_bytes`), with the writer waiting on the client."""

    def __init__(self, fd: int):
        self._fd = fd
        self._loop = asyncio.get_running_loop()

    async def send_bytes(self, data: bytes) -> None:
        """Raises BrokenPipeError once the client has gone (Granian closed its end)."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                await self._writable()

    async def _writable(self) -> None:
        ready = self._loop.create_future()
        self._loop.add_writer(self._fd, lambda: ready.done() or ready.set_result(None))
        try:
            await asyncio.wait_for(ready, IDLE_S)
        except asyncio.TimeoutError:
            raise Stalled(f"the client took nothing for {IDLE_S:.0f} s") from None
        finally:
            self._loop.remove_writer(self._fd)

    def close(self) -> None:
        """Ends the body: Granian reads what is left, then the end of the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


async def response_piped(proto, status: int, headers: list) -> PipedBody:
    """Starts a response whose body is sent through the returned PipedBody; close() it when done."""
    path = os.path.join(tempfile.gettempdir(), f"fazt-body-{os.getpid()}-{secrets.token_hex(8)}")
    os.mkfifo(path, 0o600)
    try:
        proto.response_file(status, headers, path)
        fd = await _open_writer(path)
    finally:
        os.unlink(path)
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # a smaller system limit: the default buffer only means more wake-ups
        pass
    return PipedBody(fd)


async def _open_writer(path: str) -> int:
    """The FIFO's write end, once Granian has its read end (until then a non-blocking open fails)."""
    give_up = time.monotonic() + OPEN_WAIT_S
    delay = 0.0002
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
        if time.monotonic() > give_up:
            raise Stalled("the HTTP server never took the response body")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.01)
