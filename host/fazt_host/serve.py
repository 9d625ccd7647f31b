"""`fazt-host up`: Granian with N worker processes over one cartridge, and one cron scheduler process."""

from __future__ import annotations

import os
import subprocess
import sys

from .config import HostSettings


def serve(settings: HostSettings) -> int:
    from granian import Granian
    from granian.constants import Interfaces

    from . import cartridge

    cartridge.connect(settings.cartridge).close()  # create and migrate once, before workers race to
    workers = settings.workers or os.cpu_count() or 1
    os.environ.update(settings.to_env())  # workers read their settings from the environment
    print(
        f"fazt-host serving {settings.cartridge} on http://{settings.host}:{settings.port} with {workers} workers",
        file=sys.stderr,
    )
    # One scheduler per host, not per worker: its own process, started before Granian forks.
    scheduler = subprocess.Popen([sys.executable, "-m", "fazt_host.triggers.cron"])
    try:
        Granian(
            "fazt_host.host:rsgi_app",
            address=settings.host,
            port=settings.port,
            interface=Interfaces.RSGI,
            workers=workers,
            factory=True,
            respawn_failed_workers=True,
            log_access=False,
        ).serve()
    finally:
        scheduler.terminate()
        scheduler.wait()
    return 0
