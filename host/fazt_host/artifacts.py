"""Where compiled components are cached: a module of its own, light enough for `up` to ask
before it forks its workers (the runtime's modules take a second to import)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

# Bump the suffix whenever runtime/engine.py's make_engine changes its Config: a .cwasm loads only
# into an equal engine.
ENGINE_FINGERPRINT = f"wasmtime{importlib.metadata.version('wasmtime')}-epoch1"


def artifact_path(cache_folder: Path | str, component_hash: str) -> Path:
    """The compiled form of a component, for this wasmtime and engine configuration."""
    return Path(cache_folder) / f"{component_hash}-{ENGINE_FINGERPRINT}.cwasm"


def digest_path(artifact: Path) -> Path:
    """The SHA-256 of a compiled artifact, written beside it once the artifact is complete."""
    return artifact.with_name(artifact.name + ".sha256")
