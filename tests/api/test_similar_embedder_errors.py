"""The similar-cases route against an embeddings endpoint sending malformed answers."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from breakdesk.catalog import Catalog
from breakdesk.memory.indexer import MemoryIndexer

from .conftest import Api, break_item, mini_policy

#: input texts -> (status, raw body); set per test
REPLY: dict[str, Callable[[list[str]], tuple[int, bytes]]] = {}


def ok(vectors: Callable[[str], list[float]]) -> Callable[[list[str]], tuple[int, bytes]]:
    def reply(texts: list[str]) -> tuple[int, bytes]:
        data = [{"index": i, "embedding": vectors(t)} for i, t in enumerate(texts)]
        return 200, json.dumps({"data": data}).encode()
    return reply


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, raw = REPLY["fn"](body["input"])
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


async def embedding_tenant(api: Api, url: str) -> Any:
    t = await api.tenant()
    policy = mini_policy(t.tenant_id)
    policy["version"] = "1.0.1"
    policy["embeddings"] = {"provider": "openai", "baseUrl": url, "model": "m", "batchSize": 8}
    await Catalog(api.store).publish(t.tenant_id, policy, "p.yaml", "tests", activate=True)
    return t


async def submit(api: Api, t: Any, *orders: str) -> list[str]:
    r = await api.client.post(f"/v1/tenants/{t.tenant_id}/exceptions?wait=true",
                              json=[break_item(o) for o in orders], headers=t.headers("operator"))
    assert r.status_code in (200, 201), r.text
    return [i["exceptionId"] for i in r.json()["items"]]


def problem(r: Any) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json") or r.status_code == 200


async def test_similar_survives_an_endpoint_sending_non_object_items(api: Api, endpoint: str) -> None:
    """{"data": [[...]]} (items not objects) is a bad response: lexical search answers, not a 500."""
    REPLY["fn"] = lambda texts: (200, json.dumps({"data": [[0.1, 0.2] for _ in texts]}).encode())
    t = await embedding_tenant(api, endpoint)
    first, _ = await submit(api, t, "NO-1", "NO-2")
    r = await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions/{first}/similar", headers=t.headers("viewer"))
    problem(r)
    assert r.status_code == 200 and r.json()["vectorSource"] == "none"


async def test_similar_survives_nan_vectors_from_the_endpoint(api: Api, endpoint: str) -> None:
    """An endpoint answering NaN embeddings must not poison the scores (NaN in JSON / a 500)."""
    REPLY["fn"] = lambda texts: (200, json.dumps({"data": [{"index": i, "embedding": [float("nan"), 1.0]}
                                                           for i, _ in enumerate(texts)]}).encode())
    t = await embedding_tenant(api, endpoint)
    first, second = await submit(api, t, "NAN-1", "NAN-2")
    await MemoryIndexer(api.store, packs=api.ctx.orchestrator.active_packs).run_once(t.tenant_id)
    r = await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions/{first}/similar", headers=t.headers("viewer"))
    problem(r)
    assert r.status_code == 200
    items = r.json()["items"]
    assert [h["exceptionId"] for h in items] == [second]
    assert all(isinstance(h["score"], float) for h in items), items
