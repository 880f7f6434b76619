"""The similar-cases route against an embeddings endpoint that misbehaves: malformed answers, NaN vectors,
and other dimensions under the same model name (a redeployed endpoint). Never a 500."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from breakdesk.catalog import Catalog
from breakdesk.memory.indexer import MemoryIndexer

from .conftest import Api, break_item, mini_policy


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


async def similar(api: Api, t: Any, eid: str) -> Any:
    r = await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions/{eid}/similar", headers=t.headers("viewer"))
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def sized(dims: int) -> Callable[[str], list[float]]:
    return lambda text: [float(len(text) % 7 + 1), *([1.0] * (dims - 1))]


async def test_items_that_are_not_objects_leave_lexical_search(api: Api, scripted_embeddings: Any) -> None:
    """{"data": [[...]]} is a bad response: lexical + structured search answers."""
    scripted_embeddings.reply = lambda path, body, headers: (
        200, json.dumps({"data": [[0.1, 0.2] for _ in body["input"]]}).encode())
    t = await embedding_tenant(api, scripted_embeddings.url)
    first, _ = await submit(api, t, "NO-1", "NO-2")
    assert (await similar(api, t, first))["vectorSource"] == "none"


async def test_nan_vectors_never_reach_the_scores(api: Api, scripted_embeddings: Any) -> None:
    scripted_embeddings.answer(lambda text: [float("nan"), 1.0])
    t = await embedding_tenant(api, scripted_embeddings.url)
    first, second = await submit(api, t, "NAN-1", "NAN-2")
    await MemoryIndexer(api.store, packs=api.ctx.orchestrator.active_packs).run_once(t.tenant_id)
    items = (await similar(api, t, first))["items"]
    assert [h["exceptionId"] for h in items] == [second]
    assert all(isinstance(h["score"], float) for h in items), items


async def test_a_query_of_other_dimensions_is_not_compared(api: Api, scripted_embeddings: Any) -> None:
    """Stored 4-d vectors, then the endpoint answers 3-d: the new exception's query vector cannot be compared
    with them, so it is left out until the indexer re-embeds."""
    scripted_embeddings.answer(sized(4))
    t = await embedding_tenant(api, scripted_embeddings.url)
    first, _ = await submit(api, t, "DIM-1", "DIM-2")
    await MemoryIndexer(api.store, packs=api.ctx.orchestrator.active_packs).run_once(t.tenant_id)
    assert (await similar(api, t, first))["items"][0]["semantic"] is not None
    scripted_embeddings.answer(sized(3))
    (third,) = await submit(api, t, "DIM-3")
    assert (await similar(api, t, third))["vectorSource"] == "none"


async def test_the_indexer_re_embeds_after_a_dimension_change(api: Api, scripted_embeddings: Any) -> None:
    """New cases embed with the new dimensions, the old vectors are embedded again (not mixed with them), and
    every search keeps its vector signal."""
    scripted_embeddings.answer(sized(4))
    t = await embedding_tenant(api, scripted_embeddings.url)
    first, _ = await submit(api, t, "DIX-1", "DIX-2")
    indexer = MemoryIndexer(api.store, packs=api.ctx.orchestrator.active_packs)
    await indexer.run_once(t.tenant_id)
    scripted_embeddings.answer(sized(3))
    (third,) = await submit(api, t, "DIX-3")
    await indexer.run_once(t.tenant_id)
    sizes = {v.vector.shape[0] for v in await api.store.vectors_after(t.tenant_id, "openai:m", 0, 100)}
    assert sizes == {3}
    for eid in (first, third):
        assert all(h["semantic"] is not None for h in (await similar(api, t, eid))["items"])
