"""Documents of a realistic shape, streamed from a fixed seed (same N, same bytes).

    .venv/bin/python -m bench.docs.generate N > notes.ndjson

~500 B of JSON each, no `id` (the store and PostgreSQL each make their own):
an owner among USERS users (HEAVY_SHARE of the documents go to HEAVY heavy
users: ~2000 documents each at 1M, so pages 1000 deep exist), increasing unique
ISO `createdAt` (1-5 s apart), a skewed `status`, a title, tags, a number,
a nested address and a body text. JSON escapes never occur (the words hold
no quote or backslash), so the lines go into COPY's text format unchanged.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

SEED = 20261125
USERS = 10_000
HEAVY = 50
HEAVY_SHARE = 0.1
STATUSES = ("active", "archived", "draft", "deleted")
STATUS_WEIGHTS = (70, 20, 9, 1)
START_MS = int(time.mktime((2024, 1, 1, 0, 0, 0, 0, 0, 0)) - time.timezone) * 1000
POOL = 8192  # texts drawn from pools made up front: sampling words per document is the slow part
ZIP_RANGE = (10_000, 99_999)  # an unindexed lookup of a zip below it reads every row
WORDS = (
    "alpha bravo cedar delta ember fable garnet harbor island jasper kettle lantern meadow nectar orbit "
    "pepper quartz river saddle timber umber velvet willow xenon yonder zephyr amber basil cobalt dune "
    "falcon glacier hazel indigo juniper kelp lilac maple nimbus olive pine quill rust sage thistle ursa "
    "violet wren yarrow zinc meeting invoice draft budget review launch sprint report summary ticket"
).split()
TAGS = ("work", "home", "urgent", "idea", "todo", "later", "travel", "finance", "health", "reading",
        "music", "family", "project", "archive", "shopping", "errand")
CITIES = ("Lisbon", "Porto", "Berlin", "Hamburg", "Paris", "Lyon", "Madrid", "Valencia", "Rome", "Milan",
          "Vienna", "Prague", "Warsaw", "Oslo", "Dublin", "Zurich")
COUNTRIES = ("PT", "PT", "DE", "DE", "FR", "FR", "ES", "ES", "IT", "IT", "AT", "CZ", "PL", "NO", "IE", "CH")

_encode = msgspec.json.encode


def owner_name(k: int) -> str:
    return f"u{k:05d}"


def heavy_owners() -> list[str]:
    return [owner_name(k) for k in range(HEAVY)]


def iso(ms: int) -> str:
    s, m = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{m:03d}Z"


def _pool(rng: random.Random, make) -> list:
    return [make() for _ in range(POOL)]


def documents(n: int, seed: int = SEED) -> Iterator[bytes]:
    """`n` JSON lines (each ending in a newline)."""
    rng = random.Random(seed)
    rand, randint, choice, sample, bits = rng.random, rng.randint, rng.choice, rng.sample, rng.getrandbits
    statuses = _pool(rng, lambda: rng.choices(STATUSES, STATUS_WEIGHTS)[0])
    titles = _pool(rng, lambda: " ".join(sample(WORDS, randint(3, 7))).capitalize())
    tags = _pool(rng, lambda: sample(TAGS, randint(0, 4)))
    streets = _pool(rng, lambda: f"{randint(1, 400)} {choice(WORDS).capitalize()} Street")
    bodies = _pool(rng, lambda: " ".join(sample(WORDS, 36)))
    owners = [owner_name(k) for k in range(USERS)]
    ms = START_MS
    second, prefix = -1, ""
    for _ in range(n):
        ms += randint(1000, 5000)
        s, m = divmod(ms, 1000)
        if s != second:
            second, prefix = s, iso(ms)[:-5]
        owner = randint(0, HEAVY - 1) if rand() < HEAVY_SHARE else randint(HEAVY, USERS - 1)
        city = randint(0, len(CITIES) - 1)
        r = bits(65)  # one draw picks five pool entries, 13 bits each
        doc = {
            "owner": owners[owner],
            "createdAt": f"{prefix}.{m:03d}Z",
            "status": statuses[r & (POOL - 1)],
            "title": titles[(r >> 13) & (POOL - 1)],
            "tags": tags[(r >> 26) & (POOL - 1)],
            "n": randint(0, 1_000_000),
            "score": round(rand() * 100, 2),
            "pinned": rand() < 0.05,
            "address": {
                "street": streets[(r >> 39) & (POOL - 1)],
                "city": CITIES[city],
                "zip": str(randint(*ZIP_RANGE)),
                "country": COUNTRIES[city],
            },
            "body": bodies[r >> 52],
        }
        yield _encode(doc) + b"\n"


def fingerprint() -> str:
    """Changes whenever this generator does: a cached file is reused only if it matches."""
    return hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:10]


def ensure_file(n: int, folder: Path, log=print) -> Path:
    """The N-document file, written once (streamed) and reused by later runs."""
    path = folder / f"notes-{n}-{fingerprint()}.ndjson"
    if path.exists():
        return path
    for old in folder.glob(f"notes-{n}-*.ndjson"):
        old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    started = time.perf_counter()
    with open(tmp, "wb", buffering=1 << 20) as out:
        for i, line in enumerate(documents(n), 1):
            out.write(line)
            if i % 1_000_000 == 0:
                log(f"generated {i:,} documents ({time.perf_counter() - started:.0f} s)")
    tmp.replace(path)
    return path


if __name__ == "__main__":
    sys.stdout.buffer.writelines(documents(int(sys.argv[1])))
