"""What a deploy checks about cron entries beyond the manifest's own validation."""

from __future__ import annotations

import time
from pathlib import Path

from ...config import ManifestError
from .schedule import check_min_interval

HANDLER_INTERFACE = "fazt:host/handler@0.1.0"


def cron_files(manifest) -> dict[str, str]:
    """Entry name -> file, for the build (entries without a file use the app's `scheduled`)."""
    return {e.name: e.file for e in manifest.cron if e.file}


def check_deploy(folder: Path, manifest, prebuilt: bool, min_interval_s: float) -> None:
    """Refuses cron files that cannot be used (ManifestError: fazt.json is wrong) and schedules below
    this host's minimum interval (ValueError: this host's setting refuses them); messages name the entry."""
    now_ms = int(time.time() * 1000)
    for entry in manifest.cron:
        if entry.file is not None:
            if prebuilt:
                raise ManifestError(
                    f"cron entry {entry.name!r}: a prebuilt component cannot take cron files; "
                    "drop \"file\" and export a scheduled(event, ctx) handler"
                )
            path = folder / entry.file
            if not path.is_file():
                raise ManifestError(f"cron entry {entry.name!r}: file {entry.file} not found in {folder}")
        check_min_interval(entry, min_interval_s, now_ms)


def exports_scheduled(guest) -> bool:
    from ...runtime import GuestError

    try:
        guest.export(HANDLER_INTERFACE, "scheduled")
    except GuestError:
        return False
    return True
