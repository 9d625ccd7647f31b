"""Fast `list<u64>` from guest to host: bytes packed eight to a word.

wasmtime-py converts a component list element by element, and its C API
stores every element as a 32-byte value, so a stock `list<u8>` crosses at
~1.5 MB/s. Reading the u64 payloads of that value array with one strided
copy moves ~100 MB/s. This reaches into wasmtime-py's private conversion
(`ListType.convert_from_c`) and the C value layout, which is why wasmtime is
pinned exactly and the layout is checked at import.
"""

from __future__ import annotations

import ctypes

from wasmtime import _ffi as ffi
from wasmtime.component import _types

_VAL = ffi.wasmtime_component_val_t
_VALUE_SIZE = 32
_WORDS_PER_VALUE = _VALUE_SIZE // 8
_PAYLOAD_WORD = 1  # the union `of` starts 8 bytes in

if (
    ctypes.sizeof(_VAL) != _VALUE_SIZE
    or _VAL.kind.offset != 0
    or _VAL.of.offset != 8
    or ffi.wasmtime_component_valunion_t.u64.offset != 0
):
    raise ImportError("wasmtime's component value layout changed: runtime/words.py needs updating")

_stock_convert_from_c = _types.ListType.convert_from_c


def _convert_from_c(self: _types.ListType, c: ffi.wasmtime_component_val_t):
    element = self.element
    if not isinstance(element, _types.U64):
        return _stock_convert_from_c(self, c)
    lst = c.of.list
    try:
        n = lst.size
        if n == 0:
            return b""
        raw = (ctypes.c_uint64 * (n * _WORDS_PER_VALUE)).from_address(ctypes.addressof(lst.data.contents))
        return memoryview(raw).cast("B").cast("Q")[_PAYLOAD_WORD::_WORDS_PER_VALUE].tobytes()
    finally:
        # u64 values own nothing, so freeing the array alone is safe.
        ffi.wasmtime_component_vallist_delete(ctypes.byref(lst))


def install() -> None:
    """Makes every `list<u64>` argument of a host function arrive as packed little-endian bytes."""
    _types.ListType.convert_from_c = _convert_from_c
