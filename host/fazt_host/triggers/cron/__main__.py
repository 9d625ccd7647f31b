"""The scheduler process that `fazt-host up` starts beside Granian (one per host, not per worker)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from ...config import HostSettings
from ...host import cron_scheduler

PR_SET_PDEATHSIG = 1


def main() -> None:
    # Die with the `up` process even when it is killed outright (Linux).
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    scheduler = cron_scheduler(HostSettings.from_env())
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop_soon())
    signal.signal(signal.SIGINT, lambda *_: scheduler.stop_soon())
    print(f"fazt-host cron scheduler running ({scheduler.threads} threads)", file=sys.stderr, flush=True)
    scheduler.run_forever()
    scheduler.stop()
    # Runs still in flight end with the process; the next scheduler records them as interrupted.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
