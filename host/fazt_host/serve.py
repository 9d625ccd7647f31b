"""`fazt-host up`: Granian with N worker processes over one cartridge, and one cron scheduler process."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from .config import HostSettings
from .signals import UP_PID

# A scheduler process that dies is started again after 1 s, 2 s, 4 s ... at most a minute; one
# that ran this long before dying starts the count again, so a rare crash waits only 1 s.
RESTART_BASE_S = 1.0
RESTART_MAX_S = 60.0
STABLE_S = 60.0
# How long `stop` waits for the scheduler (which waits up to 3 s for runs in flight) before killing it.
STOP_WAIT_S = 10.0


def restart_delay(failures: int) -> float:
    """Seconds before the next start after `failures` deaths in a row."""
    return min(RESTART_BASE_S * 2 ** min(failures - 1, 16), RESTART_MAX_S)


def died(returncode: int) -> bool:
    """Whether a scheduler that ended with this status died, rather than was asked to stop.

    It exits with 0 only when SIGTERM or SIGINT asked it to (from `up`, or a signal to the whole
    process group), and one such signal may also end it before it has set up its handlers.
    """
    return returncode != 0 and returncode not in (-signal.SIGTERM, -signal.SIGINT)


WORKER_STOP_S = 5  # how long a worker may take to stop before Granian kills it


class SchedulerProcess:
    """The cron scheduler beside Granian, started again with backoff whenever it dies, until `stop`.

    A scheduler that was asked to stop (see `died`) is not started again, nor is one that ends after
    `up` began to shut down (`shutting_down`).
    """

    def __init__(self, argv: list[str]):
        self.argv = argv
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._supervise, name="fazt-cron-supervisor", daemon=True)

    def start(self) -> None:
        # The first one starts here, before Granian forks its workers; the thread starts the others.
        # It outlives each process it starts, as it must: the scheduler asks for SIGTERM when the
        # thread that started it ends (PR_SET_PDEATHSIG).
        self._proc = subprocess.Popen(self.argv)
        self._thread.start()

    def _supervise(self) -> None:
        failures, proc = 0, self._proc
        while True:
            started = time.monotonic()
            code = proc.wait()
            if not died(code):
                return
            failures = 1 if time.monotonic() - started >= STABLE_S else failures + 1
            delay = restart_delay(failures)
            # Waiting before saying anything keeps `up`'s own shutdown quiet: a signal to the whole
            # process group stops the scheduler too, and stop() ends this wait.
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                proc = self._proc = subprocess.Popen(self.argv)
            print(
                f"fazt-host: the cron scheduler exited with status {code}; started it again after {delay:g} s",
                file=sys.stderr,
                flush=True,
            )

    def shutting_down(self) -> None:
        """`up` is stopping: a scheduler that ends from now on is not started again (callable from any thread)."""
        self._stopping.set()

    def stop(self) -> None:
        with self._lock:  # no new process once this has begun
            self._stopping.set()
            proc = self._proc
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                print(f"fazt-host: the cron scheduler did not stop within {STOP_WAIT_S:g} s; killed it",
                      file=sys.stderr, flush=True)
                proc.kill()
                proc.wait()
        self._thread.join()


def _lock_free_signals(server, scheduler: SchedulerProcess) -> None:
    """Granian's own handlers set a threading.Event in the signal handler, which can wait for ever on a
    lock its main thread holds (see signals.py); these run them on a thread of their own instead, and
    tell the scheduler's supervisor first that `up` is stopping."""
    from .signals import lock_free

    interrupt = getattr(server, "signal_handler_interrupt", None)
    reload = getattr(server, "signal_handler_reload", None)
    if interrupt is None or reload is None:
        return

    def stop(signum: int) -> None:
        scheduler.shutting_down()
        interrupt(signum, None)

    server.signal_handler_interrupt = lock_free(stop, "fazt-up-signals")
    server.signal_handler_reload = lock_free(lambda signum: reload(signum, None), "fazt-up-reload")


def claim_core(settings: HostSettings) -> int | None:
    """Pins this worker process, and every thread it starts later, to a core no sibling holds.

    Only when there are at least as many workers as usable cores. A worker's
    wasm thread replaces copy-on-write pages and unmaps a whole instance on
    every request, and each of those flushes the TLB of every core where
    another thread of the process runs at that moment (an IPI, slow in a VM).
    With the event loop and the wasm thread on one core the flushes stay local,
    and the other workers keep the other cores busy. The claim is an exclusive
    lock on a file per core in the cache folder, held for the worker's
    lifetime, so a respawned worker takes the core its predecessor left.
    """
    cores = sorted(os.sched_getaffinity(0))
    if settings.workers < len(cores):
        return None
    folder = settings.cache_dir / "cores"
    folder.mkdir(parents=True, exist_ok=True)
    for core in cores:
        fd = os.open(folder / f"{core}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            for tid in os.listdir("/proc/self/task"):
                os.sched_setaffinity(int(tid), {core})
        except OSError:  # a sandbox that forbids it: serve unpinned
            os.close(fd)
            return None
        _claimed.append(fd)  # open for as long as the process lives
        return core
    return None


_claimed: list[int] = []


def address_problem(host: str, port: int) -> str | None:
    """Why `up` cannot serve on host:port (something listens there already, or the address is no
    address of this machine), or None.

    Granian's workers bind with SO_REUSEPORT, which would let a second host share
    the port of a running one and take half its connections. A socket bound
    without it fails where any listener is (TIME_WAIT leftovers do not count).
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        return f"cannot resolve the address {host} ({e.strerror}): pick another --host"
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"{host}:{port} is already in use (another fazt-host up?); stop it or pick another --port"
            return f"cannot serve on {host}:{port} ({e.strerror}): pick another --host or --port"
    return None


def serve(settings: HostSettings) -> int:
    import msgspec
    from granian import Granian
    from granian.constants import Interfaces, Loops

    from . import apps, cartridge

    conn = cartridge.connect(settings.cartridge)  # create and migrate once, before workers race to
    cartridge.record_address(conn, settings.url)
    stale = apps.stale_artifacts(conn, settings.cache_dir)
    conn.close()
    workers = settings.workers or os.cpu_count() or 1
    settings = msgspec.structs.replace(settings, workers=workers)  # the workers read it to claim cores
    os.environ.update(settings.to_env())  # workers read their settings from the environment
    os.environ[UP_PID] = str(os.getpid())  # its workers and scheduler end with it (signals.die_with_parent)
    if stale:
        # A deleted cache folder, a damaged file: compiled now (it says which), not by the first request to each app.
        subprocess.run([sys.executable, "-m", "fazt_host.precompile"])
    print(
        f"fazt-host serving {settings.cartridge} on {settings.url} with {workers} workers",
        file=sys.stderr,
    )
    # One scheduler per host, not per worker: its own process, kept running while Granian serves.
    scheduler = SchedulerProcess([sys.executable, "-m", "fazt_host.triggers.cron"])
    scheduler.start()
    try:
        server = Granian(
            "fazt_host.host:rsgi_app",
            address=settings.host,
            port=settings.port,
            interface=Interfaces.RSGI,
            loop=Loops.uvloop,
            workers=workers,
            factory=True,
            respawn_failed_workers=True,
            # Without it Granian waits for ever on a worker that does not stop: up would hang on exit.
            workers_kill_timeout=WORKER_STOP_S,
            log_access=False,
        )
        _lock_free_signals(server, scheduler)
        server.serve()
    finally:
        scheduler.stop()
    return 0
