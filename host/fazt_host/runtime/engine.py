"""The wasmtime engine and the cache of compiled components.

Compiling a component takes seconds; mapping a compiled one takes well under
a millisecond and shares its memory copy-on-write. So compiled artifacts live
as files in a cache folder beside the cartridge, keyed by the component's
hash, the wasmtime version and the engine's configuration, and are rebuilt
from the component in the cartridge whenever missing or damaged.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

import wasmtime
from wasmtime import Config, Engine
from wasmtime.component import Component

from ..artifacts import artifact_path, digest_path

# Epoch interruption ticks this often; wall-time limits round up to it.
EPOCH_TICK_S = 0.005


def make_engine() -> Engine:
    # A change here needs a new ENGINE_FINGERPRINT (artifacts.py): cached artifacts are for one Config.
    config = Config()
    config.epoch_interruption = True
    return Engine(config)


class EpochTicker:
    """Advances the engine's epoch so that `store.set_epoch_deadline` measures wall time."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fazt-epoch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Ticks follow the clock, not the wake-ups: guests spinning on the worker's core delay each
        # wake-up, and a tick per wake-up made time limits run late (a 20 s limit took 25 s).
        start, ticks = time.monotonic(), 0
        while not self._stop.wait(EPOCH_TICK_S):
            due = int((time.monotonic() - start) / EPOCH_TICK_S)
            while ticks < due:
                self._engine.increment_epoch()
                ticks += 1

    def stop(self) -> None:
        self._stop.set()


def ticks_for(timeout_ms: int) -> int:
    return max(1, int(timeout_ms / 1000 / EPOCH_TICK_S + 0.999))


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ComponentCache:
    """Compiled components on disk, verified by digest before they are mapped."""

    def __init__(self, engine: Engine, folder: Path):
        self.engine = engine
        self.folder = Path(folder)
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        """Private copies left by processes that died between copying and mapping."""
        for leftover in (self.folder / "live").glob("*-*.cwasm"):
            pid = leftover.name.split("-", 1)[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                leftover.unlink(missing_ok=True)

    def path_for(self, component_hash: str) -> Path:
        return artifact_path(self.folder, component_hash)

    def load(self, component_hash: str, fetch_component) -> Component:
        """Maps the compiled component, compiling it first when missing or damaged.

        `fetch_component()` returns the component's bytes (from the cartridge);
        it is called only when a compilation is needed.
        """
        component = self.map(component_hash)
        if component is not None:
            return component
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path_for(component_hash).with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one compiler per artifact across processes
            component = self.map(component_hash)
            if component is not None:
                return component
            wasm = fetch_component()
            if wasm is None or sha256(wasm) != component_hash:
                raise LookupError(f"component {component_hash[:12]} is missing or damaged in the cartridge")
            self.store(component_hash, Component(self.engine, wasm))
        component = self.map(component_hash)
        if component is None:
            raise RuntimeError(f"compiled component {component_hash[:12]} failed verification right after compiling")
        return component

    def state(self, component_hash: str) -> str:
        """'intact', 'missing' or 'damaged' (not what its digest says): the artifact as it lies in the cache."""
        path = self.path_for(component_hash)
        try:
            intact = file_sha256(path) == digest_path(path).read_text().strip()
        except FileNotFoundError:
            return "missing"
        return "intact" if intact else "damaged"

    def store(self, component_hash: str, component: Component) -> None:
        """Writes the compiled artifact and its digest; readers never see a partial file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path_for(component_hash)
        compiled = component.serialize()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(compiled)
        digest_path(path).write_text(sha256(compiled))
        tmp.replace(path)

    def map(self, component_hash: str) -> Component | None:
        """The compiled component, if its file is present and matches the digest written with it.

        The artifact is trusted native code and stays mapped for as long as the
        component serves, so it is first copied to a file private to this process
        (unlinked once mapped): whatever later happens to the cache folder, the
        code this process runs cannot change under it. The copy is verified
        against the digest, so a damaged or swapped artifact is rebuilt, not run.
        """
        path = self.path_for(component_hash)
        live = self.folder / "live"
        # Unique per call: threads of one process (the cron scheduler's) may map the same artifact at once.
        private = live / f"{os.getpid()}-{secrets.token_hex(6)}-{path.name}"
        try:
            expected = digest_path(path).read_text().strip()
            live.mkdir(exist_ok=True)
            shutil.copyfile(path, private)
            if file_sha256(private) != expected:
                return None
            return Component.deserialize_file(self.engine, str(private))
        except (OSError, wasmtime.WasmtimeError):
            return None
        finally:
            private.unlink(missing_ok=True)
