"""Signal handlers that take no lock: what a signal should do runs on a thread of its own.

A Python signal handler runs in the main thread between two bytecodes, possibly
while that thread holds a lock, such as the one inside a `threading.Event` it
is waiting on. A handler that takes the same lock (`Event.set()`) then waits
for ever on its own thread. The handlers made here only write the signal's
number to a pipe; a helper thread reads it and does the work.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import traceback
from typing import Callable

PR_SET_PDEATHSIG = 1


UP_PID = "FAZT_UP_PID"  # set by `up` for the processes it starts: the parent they must not outlive


def die_with_parent(signum: int) -> None:
    """Has Linux send `signum` to this process when its parent ends, even when that is killed outright
    (SIGKILL, the OOM killer): `up`'s workers and scheduler would otherwise serve on, orphaned, and
    hold its port. A parent that ended before this was asked (a worker slow to start) is seen at
    once. Elsewhere, nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return
    parent = os.environ.get(UP_PID)
    if parent and os.getppid() != int(parent):
        os.kill(os.getpid(), signum)


def lock_free(callback: Callable[[int], object], name: str = "fazt-signals"):
    """A signal handler that runs `callback(signum)` on a helper thread (started now)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    owner = os.getpid()

    def handler(signum, frame) -> None:
        # A process forked from this one (a Granian worker not yet past its own setup) shares the
        # pipe but not the thread: its signals are not this process's to act on.
        if os.getpid() != owner:
            return
        try:
            os.write(write_end, bytes([signum]))
        except BlockingIOError:  # the pipe is full: the thread has plenty to do already
            pass

    def relay() -> None:
        while True:
            data = os.read(read_end, 64)
            if not data:
                return
            for signum in data:
                try:
                    callback(signum)
                except Exception:  # noqa: BLE001 - the next signal must still be relayed
                    traceback.print_exc(file=sys.stderr)

    threading.Thread(target=relay, name=name, daemon=True).start()
    return handler
