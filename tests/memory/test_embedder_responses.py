"""OpenAIEmbedder against malformed answers from a real local endpoint: always an EmbedderError."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from breakdesk.memory.embedders import EmbedderError, OpenAIEmbedder

BODIES: list[bytes] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        raw = BODIES.pop(0)
        self.send_response(200)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def bad_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("bodies", [
    [b'{"data": [[0.1, 0.2]]}'],  # items that are not objects
    [b'{"data": {"0": [0.1]}}'],  # data an object
    [b'{"data": [{"index": 0, "embedding": [NaN, 1.0]}]}'],
    [b'{"data": [{"index": 0, "embedding": [1e300, 1.0]}]}'],  # beyond float32
    [b'{"data": [{"index": 0, "embedding": []}]}'],
    [b'{"data": [{"index": 0, "embedding": [1.0, 0.0]}]}',  # batches of different dimensions
     b'{"data": [{"index": 0, "embedding": [1.0, 0.0, 0.0]}]}'],
], ids=["list-items", "dict-data", "nan", "overflow", "empty", "ragged-batches"])
async def test_malformed_embeddings_are_embedder_errors(bad_server: str, bodies: list[bytes]) -> None:
    BODIES[:] = bodies
    emb = OpenAIEmbedder(bad_server, "m", batch_size=1)
    try:
        with pytest.raises(EmbedderError):
            await emb.embed(["a"] * len(bodies))
    finally:
        await emb.aclose()
