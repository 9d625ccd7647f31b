"""What a deploy checks about cron entries beyond the manifest's own validation."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ...config import ManifestError
from .schedule import check_min_interval

HANDLER_INTERFACE = "fazt:host/handler@0.1.0"


def cron_files(manifest) -> dict[str, str]:
    """Entry name -> file, for the build (entries without a file use the app's `scheduled`)."""
    return {e.name: e.file for e in manifest.cron if e.file}


def check_deploy(folder: Path, manifest, prebuilt: bool, min_interval_s: float) -> None:
    """Refuses cron files that cannot be used (ManifestError) and schedules below this host's
    minimum interval (ValueError); messages name the entry."""
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


def missing_handlers(host, component_hash: str, names: list[str]) -> list[str]:
    """The entries the app has no handler for (no file, and no `scheduled` on its default export).

    The SDK answers `{"handlers": [...]}` from the exports alone, running no app code; a component
    that does not answer so (not built by this SDK) is not judged: [].
    """
    from ...config import Limits
    from ...runtime import GuestError, Invocation

    try:
        raw = host.runtime.call(host.guest(component_hash), HANDLER_INTERFACE, "scheduled",
                                json.dumps({"handlers": names}), Invocation("deploy", "deploy", Limits(timeout_ms=5000)))
        missing = json.loads(raw).get("missing")
    except (GuestError, ValueError, AttributeError):
        return []
    return [name for name in missing if name in names] if isinstance(missing, list) else []
