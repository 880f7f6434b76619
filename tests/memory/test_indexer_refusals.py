"""The indexer's embedding pass against an endpoint that rejects one input (HTTP 400, e.g. a text
over the model's context length): the other cases must still be embedded."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from memkit import SMALL, process, sf

from breakdesk.memory import Memory
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.store import Store


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["input"]
        if any("POISON" in t for t in texts):
            status, raw = 400, b'{"error": {"message": "maximum context length exceeded"}}'
        else:
            status, raw = 200, json.dumps({"data": [{"index": i, "embedding": [1.0, float(len(t) % 5)]}
                                                    for i, t in enumerate(texts)]}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


async def test_one_rejected_case_does_not_stop_embedding_for_good(store: Store, tenant_factory: Any,
                                                                  endpoint: str) -> None:
    t = await tenant_factory({"embeddings": {"provider": "openai", "baseUrl": endpoint, "model": "m",
                                             "batchSize": 4}})
    mem = Memory(store)
    await process(store, t, [*SMALL[:2], sf("E-P", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "POISON", "ST-P"),
                             *SMALL[2:]], memory=mem)
    indexer = MemoryIndexer(store, mem)
    for _ in range(3):  # passes of the background loop
        await indexer.run_once(t)
    embedded = {v.exception_id for v in await store.vectors_after(t, "openai:m", 0, 100)}
    assert embedded == {"E-1", "E-2", "E-3", "E-4", "E-5", "E-6"}
