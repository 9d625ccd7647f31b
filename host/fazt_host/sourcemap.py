"""Guest stacks through the bundle's source map (v3): `fn@app.js:L:C` -> `fn@index.js:L:C`.

The build maps the bundle back to the app's files; the host reads a stack
through it only when it logs one, so requests pay nothing for it. Sources in
the map's `ignoreList` (the SDK, the generated entry) and frames outside the
bundle (componentize-js's glue) are the runtime's: each run of them is logged
as one line.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import OrderedDict
from collections.abc import Callable

BUNDLE = "app.js"  # the bundle's name in the engine's stacks (guest-sdk/build.mjs)
BUNDLE_FRAME = f"@{BUNDLE}:"  # in any text holding a frame of the bundle
RUNTIME_FRAMES = "(fazt runtime)"
_FRAME = re.compile(r"^(\s*)(.*)@(.+):(\d+):(\d+)$")
_BASE64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

Segment = tuple[int, int, int, int]  # generated column, source index, original line, original column (0-based)


def vlq_values(field: str) -> list[int]:
    """The signed integers of one Base64 VLQ field."""
    values, value, shift = [], 0, 0
    for char in field:
        digit = _BASE64[char]
        value += (digit & 31) << shift
        if digit & 32:
            shift += 5
            continue
        values.append(-(value >> 1) if value & 1 else value >> 1)
        value, shift = 0, 0
    return values


def decode_mappings(mappings: str) -> list[list[Segment]]:
    """Per generated line, its mapped segments in column order; unmapped ones are left out."""
    lines: list[list[Segment]] = []
    source = line = column = 0  # relative across the whole string; the generated column per line
    for text in mappings.split(";"):
        segments: list[Segment] = []
        generated = 0
        for field in filter(None, text.split(",")):
            values = vlq_values(field)
            generated += values[0]
            if len(values) >= 4:
                source, line, column = source + values[1], line + values[2], column + values[3]
                segments.append((generated, source, line, column))
            else:  # a segment that maps to nothing ends the previous one
                segments.append((generated, -1, 0, 0))
        lines.append(segments)
    return lines


class SourceMap:
    def __init__(self, data: bytes):
        payload = json.loads(data)
        self.sources: list[str] = [str(s) for s in payload["sources"]]
        self.ignored = {self.sources[i] for i in payload.get("ignoreList", [])}
        self.lines = decode_mappings(payload["mappings"])

    def original(self, line: int, column: int) -> tuple[str, int, int] | None:
        """(source, line, column) of a 1-based position in the bundle, or None where nothing maps."""
        segments = self.lines[line - 1] if 0 < line <= len(self.lines) else []
        at = bisect.bisect_right(segments, (column - 1, len(self.sources))) - 1
        if at < 0 or segments[at][1] < 0:
            return None
        _, source, orig_line, orig_column = segments[at]
        return self.sources[source], orig_line + 1, orig_column + 1


def read(data: bytes | None) -> SourceMap | None:
    """The map, or None if there is none or it does not read (the stack is then logged as it is)."""
    try:
        return SourceMap(data) if data else None
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def own_frame(line: str, source_map: SourceMap) -> str | None:
    """A frame line of the app's own code, mapped; None for the runtime's frames."""
    frame = _FRAME.match(line)
    if frame is None:
        return line
    indent, name, file, row, column = frame.groups()
    if file != BUNDLE:
        return None
    found = source_map.original(int(row), int(column))
    if found is None or found[0] in source_map.ignored:
        return None
    return f"{indent}{name}@{found[0]}:{found[1]}:{found[2]}"


def map_stack(stack: str, source_map: SourceMap) -> str:
    out: list[str] = []
    repeats = 0  # of the last line (deep recursion repeats one frame a hundred times)
    for line in stack.split("\n"):
        mapped = own_frame(line, source_map)
        if mapped is None:
            mapped = line[: len(line) - len(line.lstrip())] + RUNTIME_FRAMES
            if out and out[-1] == mapped:
                continue
        if out and out[-1] == mapped and mapped.strip():
            repeats += 1
            continue
        _note_repeats(out, repeats)
        repeats = 0
        out.append(mapped)
    _note_repeats(out, repeats)
    return "\n".join(out)


def _note_repeats(out: list[str], repeats: int) -> None:
    if repeats:
        out.append(f"{out[-1][: len(out[-1]) - len(out[-1].lstrip())]}(the frame above {repeats} more time{'s' * (repeats > 1)})")


class StackMapper:
    """Maps stacks through the source map of the version that threw. The last few decoded maps
    are kept (an LRU by the map's hash): a stack is read only when it is logged."""

    def __init__(self, find: Callable[[str, int], str | None], load: Callable[[str], bytes | None], size: int = 4):
        self._find = find  # (app, version) -> the hash of its map
        self._load = load  # hash -> the map's bytes
        self._size = size
        self._maps: OrderedDict[str, SourceMap | None] = OrderedDict()

    def _map(self, digest: str) -> SourceMap | None:
        if digest in self._maps:
            self._maps.move_to_end(digest)
            return self._maps[digest]
        source_map = self._maps[digest] = read(self._load(digest))
        if len(self._maps) > self._size:
            self._maps.popitem(last=False)
        return source_map

    def map(self, app: str, version: int, stack: str) -> str:
        """The stack with its frames mapped; as it was if there is no map or it does not read."""
        try:
            digest = self._find(app, version)
            source_map = self._map(digest) if digest else None
            return map_stack(stack, source_map) if source_map else stack
        except Exception:  # noqa: BLE001 - a map that does not read must not cost the error its log line
            return stack
