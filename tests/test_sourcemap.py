"""Guest stacks read through the build's source map (fazt_host.sourcemap), without a host."""

from __future__ import annotations

import json

import pytest

from fazt_host.sourcemap import SourceMap, StackMapper, decode_mappings, vlq_values

# Bundle line 2, from column 2: index.js line 5 column 5; line 3: the SDK's runtime.js.
MAP = json.dumps({
    "version": 3,
    "sources": ["index.js", "guest-sdk/src/runtime.js"],
    "ignoreList": [1],
    "mappings": "AAAA;EAII;ACMJ",
}).encode()
STACK = "helper@app.js:2:5\nserveFetch@app.js:3:1\nfetch@app.js:3:9\nexport$fetch@/tmp/fazt-build-x/sources/initializer.js:508:15\n"


def test_vlq_values():
    assert vlq_values("AAAA") == [0, 0, 0, 0]
    assert vlq_values("gBD") == [16, -1]
    assert decode_mappings("A,EAII;;ACMJ") == [[(0, -1, 0, 0), (2, 0, 4, 4)], [], [(0, 1, 10, 0)]]


def test_positions_map_to_the_original_1_based():
    source_map = SourceMap(MAP)
    assert source_map.original(2, 5) == ("index.js", 5, 5)
    assert source_map.original(2, 1) is None  # before the line's first segment
    assert source_map.original(99, 1) is None


def test_own_frames_mapped_and_runtime_frames_collapsed():
    mapper = StackMapper(lambda app, version: "m1", lambda digest: MAP)
    assert mapper.map("a", 1, STACK) == "helper@index.js:5:5\n(fazt runtime)\n"
    indented = mapper.map("a", 1, "    helper@app.js:2:5\n    fetch@app.js:3:9")
    assert indented == "    helper@index.js:5:5\n    (fazt runtime)"


def test_a_frame_repeated_by_deep_recursion_is_one_line_and_a_count():
    mapper = StackMapper(lambda app, version: "m1", lambda digest: MAP)
    stack = "helper@app.js:2:5\n" * 128 + "fetch@app.js:3:9\n"
    assert mapper.map("a", 1, stack) == "helper@index.js:5:5\n(the frame above 127 more times)\n(fazt runtime)\n"


@pytest.mark.parametrize(
    "find, load",
    [
        (lambda app, version: None, lambda digest: MAP),  # a version without a map
        (lambda app, version: "m1", lambda digest: None),  # its object is gone
        (lambda app, version: "m1", lambda digest: b"{not json"),
        (lambda app, version: "m1", lambda digest: b'{"sources": [], "mappings": "AAAA;!!"}'),
        (lambda app, version: "m1", lambda digest: b'{"sources": [], "mappings": "A;EAII"}'),  # no source 0
        (lambda app, version: 1 / 0, lambda digest: MAP),  # the cartridge failed
    ],
)
def test_a_missing_or_malformed_map_leaves_the_stack_as_it_is(find, load):
    assert StackMapper(find, load).map("a", 1, STACK) == STACK


def test_decoded_maps_are_kept_for_a_few_versions():
    loads = []
    mapper = StackMapper(lambda app, version: f"m{version}", lambda digest: loads.append(digest) or MAP, size=2)
    for version in (1, 1, 2, 1, 3, 2):
        mapper.map("a", version, STACK)
    assert loads == ["m1", "m2", "m3", "m2"]
