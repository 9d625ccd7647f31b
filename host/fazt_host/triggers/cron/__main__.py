"""The scheduler process that `fazt-host up` starts beside Granian (one per host, not per worker)."""

from __future__ import annotations

import os
import signal
import sys

from ...config import HostSettings
from ...host import cron_scheduler
from ...signals import die_with_parent, lock_free


def main() -> None:
    die_with_parent(signal.SIGTERM)
    scheduler = cron_scheduler(HostSettings.from_env())
    # Not scheduler.stop_soon() in the handler itself: the main thread may hold the lock it takes.
    stop = lock_free(lambda _signum: scheduler.stop_soon(), "fazt-cron-signals")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"fazt-host cron scheduler running ({scheduler.threads} threads)", file=sys.stderr, flush=True)
    scheduler.run_forever()
    scheduler.stop()
    # Runs still in flight end with the process; the next scheduler records them as interrupted.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
