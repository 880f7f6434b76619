"""The similar-cases route when the embeddings endpoint changes dimensions under one model name."""

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


def _vec(dims: int) -> Callable[[str], list[float]]:
    return lambda text: [float(len(text) % 7 + 1), *([1.0] * (dims - 1))]


async def test_similar_survives_the_endpoint_changing_dimensions(api: Api, endpoint: str) -> None:
    """Same model name, different dimensions (a redeployed endpoint): stored 4-d vectors, 3-d queries."""
    REPLY["fn"] = ok(_vec(4))
    t = await embedding_tenant(api, endpoint)
    first, _ = await submit(api, t, "DIM-1", "DIM-2")
    indexer = MemoryIndexer(api.store, packs=api.ctx.orchestrator.active_packs)
    await indexer.run_once(t.tenant_id)
    r = await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions/{first}/similar", headers=t.headers("viewer"))
    assert r.status_code == 200 and r.json()["items"][0]["semantic"] is not None, r.text
    REPLY["fn"] = ok(_vec(3))
    (third,) = await submit(api, t, "DIM-3")
    # the new exception has no vector yet: its query is embedded now, with 3 dimensions
    r = await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions/{third}/similar", headers=t.headers("viewer"))
    problem(r)
    assert r.status_code == 200


async def test_indexer_after_a_dimension_change_keeps_similar_working(api: Api, endpoint: str) -> None:
    """The indexer embeds new cases with the endpoint's new dimensions: the tenant's searches keep working
    (the old vectors are re-embedded, not mixed with the new ones)."""
    REPLY["fn"] = ok(_vec(4))
    t = await embedding_tenant(api, endpoint)
    first, _ = await submit(api, t, "DIX-1", "DIX-2")
    indexer = MemoryIndexer(api.store, packs=api.ctx.orchestrator.active_packs)
    await indexer.run_once(t.tenant_id)
    r = await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions/{first}/similar", headers=t.headers("viewer"))
    assert r.status_code == 200, r.text
    REPLY["fn"] = ok(_vec(3))
    (third,) = await submit(api, t, "DIX-3")
    await indexer.run_once(t.tenant_id)
    for eid in (first, third):
        r = await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions/{eid}/similar",
                                 headers=t.headers("viewer"))
        problem(r)
        assert r.status_code == 200
        assert all(h["semantic"] is not None for h in r.json()["items"]), r.text
