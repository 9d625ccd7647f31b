"""Compiles the active apps whose compiled code is missing from the cache, before `up` serves.

Run by `up` as a child process (`python -m fazt_host.precompile`, settings from the
environment): Granian forks its workers from `up`, which should not have started
wasmtime's compiler threads first.
"""

from __future__ import annotations

import sys

from .config import HostSettings
from .deploy import compile_missing
from .host import Host


def main() -> int:
    return 1 if compile_missing(Host(HostSettings.from_env()), sys.stderr) else 0


if __name__ == "__main__":
    raise SystemExit(main())
