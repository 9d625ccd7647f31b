"""Bare Granian RSGI hello: the ceiling for a Python server on this machine.

Serves the same response as bench/peers/hello.js, with no wasm and no framework:

    python -m granian --interface rsgi --workers 2 --host 127.0.0.1 --port 8000 granian_hello:app
"""

BODY = b'{"hello":"world"}'
HEADERS = [("content-type", "application/json")]


async def app(scope, proto):
    proto.response_bytes(200, HEADERS, BODY)
