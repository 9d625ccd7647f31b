"""Calls across the component boundary, for the few value kinds the fazt:host world uses.

wasmtime-py reads a function's type through the C API on every call, host
import and export alike, and converts each value through a Python type
object: a tenth of a millisecond per call here, more than most host functions
take. The world passes only strings, u32s, an enum and `list<u64>` (bytes
packed eight to a word), so these calls convert each C value by its `kind`
and leave the type alone. A value of any other kind (a component that imports
our names with other types) is refused with a trap.

This reaches into wasmtime-py's C bindings and value layout, which is why
wasmtime is pinned exactly and the layout is checked at import.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from ctypes import byref
from itertools import count
from typing import Any

from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import _enter

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
    raise ImportError("wasmtime's component value layout changed: runtime/abi.py needs updating")

_STRING = ffi.WASMTIME_COMPONENT_STRING.value
_U32 = ffi.WASMTIME_COMPONENT_U32.value
_U64 = ffi.WASMTIME_COMPONENT_U64.value
_ENUM = ffi.WASMTIME_COMPONENT_ENUM.value
_LIST = ffi.WASMTIME_COMPONENT_LIST.value


def _name(vec: ffi.wasm_byte_vec_t) -> str:
    """A string or enum case the host now owns: read, then freed."""
    try:
        return ctypes.string_at(vec.data, vec.size).decode("utf-8")
    finally:
        ffi.wasm_byte_vec_delete(byref(vec))


def _words(lst: ffi.wasmtime_component_vallist_t) -> bytes:
    """A `list<u64>` as its packed little-endian bytes: the u64 payloads of the value array,
    read with one strided copy (element by element it would cross at ~1.5 MB/s)."""
    try:
        n = lst.size
        if n == 0:
            return b""
        if lst.data[0].kind != _U64:
            raise TypeError("the host takes lists of u64 only")
        raw = (ctypes.c_uint64 * (n * _WORDS_PER_VALUE)).from_address(ctypes.addressof(lst.data.contents))
        return memoryview(raw).cast("B").cast("Q")[_PAYLOAD_WORD::_WORDS_PER_VALUE].tobytes()
    finally:
        ffi.wasmtime_component_vallist_delete(byref(lst))  # u64 elements own nothing


def _from_c(value: Any) -> Any:
    kind = value.kind
    if kind == _STRING:
        return _name(value.of.string)
    if kind == _U32:
        return value.of.u32
    if kind == _LIST:
        return _words(value.of.list)
    if kind == _ENUM:
        return _name(value.of.enumeration)
    ffi.wasmtime_component_val_delete(byref(value))
    raise TypeError(f"the host takes no values of kind {kind}")


_functions: dict[int, Callable[..., str | None]] = {}
_ids = count(1)


@ffi.wasmtime_component_func_callback_t
def _call_host(data, _context, _type, args, nargs, results, nresults):  # noqa: ANN001 - a C callback
    error = None
    try:
        result = _functions[data](*[_from_c(args[i]) for i in range(nargs)])
        if nresults:
            if not isinstance(result, str):
                raise TypeError("a host function with a result returned no string")
            results[0].kind = _STRING
            results[0].of.string = ffi.str_to_capi(result)
        elif result is not None:
            raise TypeError("a host function without a result returned one")
    except WasmtimeError as e:
        error = e
    except Exception as e:  # noqa: BLE001 - raised again by the export call's caller, as wasmtime-py does
        _enter.LAST_EXCEPTION = e
        error = WasmtimeError("python exception")
    return ctypes.cast(error._consume(), ctypes.c_void_p).value if error else 0


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _forget(data):  # noqa: ANN001 - a C callback
    _functions.pop(data, None)


def add_host_function(instance, name: str, fn: Callable[..., str | None]) -> None:
    """Defines `name` in a linker instance (`Linker.root().add_instance(...)`) as `fn(*args)`."""
    instance._assert_not_locked()
    key = next(_ids)
    _functions[key] = fn
    encoded = name.encode("utf-8")
    error = ffi.wasmtime_component_linker_instance_add_func(
        instance.ptr(), ctypes.create_string_buffer(encoded), len(encoded), _call_host, key, _forget
    )
    if error:
        raise WasmtimeError._from_ptr(error)


def call_export(func, store, arg: str) -> str:
    """Calls an export that takes one string and returns one (checked at deploy), then its post-return."""
    param = _VAL()
    param.kind = _STRING
    param.of.string = ffi.str_to_capi(arg)
    result = _VAL()
    context = store._context()
    try:
        _enter.enter_wasm(lambda: ffi.wasmtime_component_func_call(byref(func._func), context, byref(param), 1, byref(result), 1))
    finally:
        ffi.wasmtime_component_val_delete(byref(param))
    if result.kind != _STRING:
        ffi.wasmtime_component_val_delete(byref(result))
        raise WasmtimeError("the export returned no string")
    text = _name(result.of.string)
    _enter.enter_wasm(lambda: ffi.wasmtime_component_func_post_return(byref(func._func), context))
    return text
