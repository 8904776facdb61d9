"""No framework at all, over ASGI and over RSGI: what Granian's two interfaces cost by
themselves (``bench/request_cost.py --variants bare``), for the same answers as the bench views:
``/json/`` (the JSON view's bytes), ``/stream/`` (16 x 64 KiB, no Content-Length) and a
websocket echo at ``/ws/``. The floor under any Django on either interface.
"""

import json
from typing import Any

from .views import JSON_DATA, STREAM_CHUNK_SIZE, STREAM_CHUNKS

JSON_BODY = json.dumps(JSON_DATA).encode()
_CHUNK = b"x" * STREAM_CHUNK_SIZE
_JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(JSON_BODY)).encode()),
]
_STREAM_HEADERS = [(b"content-type", b"application/octet-stream")]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if kind == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text")})
    if scope["path"] == "/stream/":
        await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
        for _ in range(STREAM_CHUNKS):
            await send({"type": "http.response.body", "body": _CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": JSON_BODY})


_RSGI_JSON_HEADERS = [(k.decode(), v.decode()) for k, v in _JSON_HEADERS]
_RSGI_STREAM_HEADERS = [(k.decode(), v.decode()) for k, v in _STREAM_HEADERS]


class RSGIApp:
    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto == "ws":
            transport = await proto.accept()
            while True:
                message = await transport.receive()
                if message.kind == 0:  # close
                    return
                await transport.send_str(message.data)
        if scope.path == "/stream/":
            stream = proto.response_stream(200, _RSGI_STREAM_HEADERS)
            for _ in range(STREAM_CHUNKS):
                await stream.send_bytes(_CHUNK)
            return
        proto.response_bytes(200, _RSGI_JSON_HEADERS, JSON_BODY)


rsgi_app = RSGIApp()
