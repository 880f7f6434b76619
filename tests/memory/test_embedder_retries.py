"""OpenAIEmbedder against a busy endpoint (a real local server): transient answers are tried again after the
wait the endpoint asks for (`Retry-After`) or a backoff, within the tenant's `timeoutSeconds`; a refusal or a
client error is not."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest

from breakdesk.memory import embedders
from breakdesk.memory.embedders import EmbedderBusy, EmbedderError, EmbedderRejected, OpenAIEmbedder
from breakdesk.memory.embedders import retry_after_seconds as after

OK = json.dumps({"data": [{"index": 0, "embedding": [3.0, 4.0]}]}).encode()


def script(endpoint: Any, answers: list[tuple[int, bytes] | tuple[int, bytes, Mapping[str, str]]]) -> list[float]:
    """Answer the requests in order with `answers`; returns the times they arrived."""
    times: list[float] = []

    def reply(path: str, body: dict[str, Any], headers: Any) -> Any:
        times.append(time.monotonic())
        return answers.pop(0)

    endpoint.reply = reply
    return times


def resting(indexer: Any, tenant: str) -> Any:
    """The key of the tenant's embedding rest in `indexer` (its embedder's configuration)."""
    (key,) = [k for k in indexer._embed_after if k[0] == tenant]
    return key


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedders, "BACKOFF_S", 0.05)


async def test_retry_after_is_waited_for_then_the_request_repeated(scripted_embeddings: Any) -> None:
    times = script(scripted_embeddings, [(429, b"{}", {"Retry-After": "1"}), (200, OK)])
    emb = OpenAIEmbedder(scripted_embeddings.url, "m", timeout=10)
    try:
        vecs = await emb.embed(["a"])
    finally:
        await emb.aclose()
    assert vecs.tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]
    assert len(times) == 2 and times[1] - times[0] >= 0.95


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
async def test_transient_statuses_are_tried_again_with_a_growing_backoff(scripted_embeddings: Any,
                                                                       status: int) -> None:
    times = script(scripted_embeddings, [(status, b"{}"), (status, b"{}"), (200, OK)])
    emb = OpenAIEmbedder(scripted_embeddings.url, "m", timeout=10)
    try:
        assert (await emb.embed(["a"])).shape == (1, 2)
    finally:
        await emb.aclose()
    assert len(times) == 3
    assert times[1] - times[0] >= 0.05 and times[2] - times[1] >= 0.1  # 0.05, then doubled


async def test_a_persistently_busy_endpoint_is_an_embedder_error_after_the_retries(scripted_embeddings: Any) -> None:
    times = script(scripted_embeddings, [(503, b"{}")] * 5)
    emb = OpenAIEmbedder(scripted_embeddings.url, "m", timeout=10)
    try:
        with pytest.raises(EmbedderError, match="503"):
            await emb.embed(["a"])
    finally:
        await emb.aclose()
    assert len(times) == 1 + embedders.RETRIES


async def test_a_retry_after_past_the_timeout_gives_up_at_once(scripted_embeddings: Any) -> None:
    """A similar-cases query waits at most `timeoutSeconds`: an endpoint asking for two minutes is not waited
    for, and the error says what it asked."""
    times = script(scripted_embeddings, [(429, b"{}", {"Retry-After": "120"}), (200, OK)])
    emb = OpenAIEmbedder(scripted_embeddings.url, "m", timeout=2)
    t0 = time.monotonic()
    try:
        with pytest.raises(EmbedderBusy, match="retry after 120 s") as caught:
            await emb.embed(["a"])
    finally:
        await emb.aclose()
    assert time.monotonic() - t0 < 1.0 and len(times) == 1
    assert caught.value.retry_after == 120


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
async def test_client_errors_are_not_repeated(scripted_embeddings: Any, status: int) -> None:
    times = script(scripted_embeddings, [(status, b"{}"), (200, OK)])
    emb = OpenAIEmbedder(scripted_embeddings.url, "m", timeout=10)
    try:
        with pytest.raises(EmbedderRejected if status in (400, 413, 422) else EmbedderError):
            await emb.embed(["a"])
    finally:
        await emb.aclose()
    assert len(times) == 1


async def test_an_unreachable_endpoint_is_tried_again() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emb = OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "m", timeout=10)
    t0 = time.monotonic()
    try:
        with pytest.raises(EmbedderBusy, match="unreachable: ConnectError"):
            await emb.embed(["a"])
    finally:
        await emb.aclose()
    assert time.monotonic() - t0 >= 0.05 + 0.1  # both backoffs were waited


def test_retry_after_values() -> None:
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC).timestamp()
    assert after("7") == 7.0 and after(" 0 ") == 0.0 and after("1.5") == 1.5
    assert after(format_datetime(datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC), usegmt=True), now) == 30.0
    assert after("Sat, 28 Nov 2026 11:00:00 GMT", now) == 0.0  # a date already past: no wait
    assert after("-5") == 0.0
    for unreadable in (None, "", "soon", "nan", "Sat, 28 Nov 2026 12:00:30"):  # (the last: no zone)
        assert after(unreadable, now) is None


async def test_the_indexer_leaves_an_endpoint_alone_for_as_long_as_it_asks(store: Any, tenant_factory: Any,
                                                                         scripted_embeddings: Any) -> None:
    """A `Retry-After` longer than the tenant's `timeoutSeconds`: the pass gives up embedding at once, and the
    passes until then index cases without calling the endpoint; the first pass after it embeds them."""
    from memkit import SMALL, process

    from breakdesk.memory import Memory
    from breakdesk.memory.indexer import MemoryIndexer

    t = await tenant_factory({"embeddings": {"provider": "openai", "baseUrl": scripted_embeddings.url, "model": "m",
                                             "timeoutSeconds": 5}})
    mem = Memory(store)
    await process(store, t, SMALL[:3], memory=mem)
    times = script(scripted_embeddings, [(429, b"{}", {"Retry-After": "60"})])
    indexer = MemoryIndexer(store, mem)
    first = await indexer.run_once(t)
    assert first.errors == 1 and first.embedded == 0 and len(times) == 1
    again = await indexer.run_once(t)
    assert again.embedding_deferred and again.embedded == 0 and len(times) == 1  # not called
    key = resting(indexer, t)
    indexer._embed_after[key] = 0.0  # (the minute has passed)
    scripted_embeddings.answer(lambda text: [1.0, float(len(text) % 5)])
    later = await indexer.run_once(t)
    assert not later.embedding_deferred and later.embedded == 3
    assert key not in indexer._embed_after


def test_a_retry_after_that_is_no_number_of_seconds_is_unreadable() -> None:
    """`float` reads "inf" and "infinity" too: taken as a wait, the indexer would leave the tenant's endpoint
    alone for good (until a restart)."""
    for unreadable in ("inf", "Infinity", "-inf"):
        assert after(unreadable) is None


async def test_an_answer_that_trickles_in_is_cut_at_the_timeout() -> None:
    """httpx's timeout bounds each read, not the request: an endpoint sending its answer a byte at a time,
    each within the timeout, kept a similar-cases query waiting far past `timeoutSeconds`."""
    import asyncio

    body = OK

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode())
            for i in range(len(body)):
                writer.write(body[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    emb = OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "m", timeout=0.5, retries=0)
    t0 = time.monotonic()
    try:
        with pytest.raises(EmbedderBusy, match="no answer within"):
            await emb.embed(["a"])
    finally:
        await emb.aclose()
        server.close()
    assert time.monotonic() - t0 < 1.0


async def test_a_deferral_is_capped(store: Any, tenant_factory: Any, scripted_embeddings: Any) -> None:
    """A `Retry-After` a year ahead defers the tenant's embedding by an hour at most."""
    from memkit import SMALL, process

    from breakdesk.memory import Memory
    from breakdesk.memory.indexer import MAX_EMBED_DEFERRAL_S, MemoryIndexer

    t = await tenant_factory({"embeddings": {"provider": "openai", "baseUrl": scripted_embeddings.url, "model": "m",
                                             "timeoutSeconds": 5}})
    mem = Memory(store)
    await process(store, t, SMALL[:1], memory=mem)
    script(scripted_embeddings, [(503, b"{}", {"Retry-After": str(365 * 86400)})])
    indexer = MemoryIndexer(store, mem)
    before = time.monotonic()
    await indexer.run_once(t)
    assert before < indexer._embed_after[resting(indexer, t)] <= time.monotonic() + MAX_EMBED_DEFERRAL_S


async def test_a_deferral_is_the_endpoints_not_the_tenants(store: Any, tenant_factory: Any,
                                                          scripted_embeddings: Any) -> None:
    """A tenant whose policy moves to another model (or endpoint) embeds at once: the wait was asked for by
    the endpoint it left."""
    from memkit import SMALL, process

    from breakdesk.catalog import Catalog
    from breakdesk.memory import Memory
    from breakdesk.memory.indexer import EmbeddingDeferred, MemoryIndexer

    embeddings = {"provider": "openai", "baseUrl": scripted_embeddings.url, "model": "m", "timeoutSeconds": 5}
    t = await tenant_factory({"embeddings": embeddings})
    mem = Memory(store)
    await process(store, t, SMALL[:2], memory=mem)
    script(scripted_embeddings, [(429, b"{}", {"Retry-After": "600"})])
    indexer = MemoryIndexer(store, mem)
    assert (await indexer.run_once(t)).errors == 1
    with pytest.raises(EmbeddingDeferred):
        await indexer.embed(t)
    policy = await store.active_pack(t, "tenant")
    assert policy is not None
    data = {**policy.content, "version": "9.9.9", "embeddings": {**embeddings, "model": "m2"}}
    await Catalog(store).publish(t, data, "policy.yaml", "tests", activate=True)
    scripted_embeddings.answer(lambda text: [1.0, float(len(text) % 5)])
    report = await indexer.run_once(t)
    assert not report.embedding_deferred and report.embedded == 2


async def test_a_failing_endpoint_is_given_a_growing_rest_between_passes(store: Any, tenant_factory: Any,
                                                                        scripted_embeddings: Any) -> None:
    """An endpoint that keeps failing (here 503 after every retry) is not called on every pass: the indexer
    goes over every tenant in turn, and a dead endpoint's retries would delay all of them each round. The
    rest doubles per failure in a row, up to a bound, and a pass that embeds ends it."""
    from memkit import SMALL, process

    from breakdesk.memory import Memory
    from breakdesk.memory.indexer import EMBED_BACKOFF_S, MAX_EMBED_BACKOFF_S, MemoryIndexer

    t = await tenant_factory({"embeddings": {"provider": "openai", "baseUrl": scripted_embeddings.url, "model": "m",
                                             "timeoutSeconds": 5}})
    mem = Memory(store)
    await process(store, t, SMALL[:3], memory=mem)
    times = script(scripted_embeddings, [(503, b"{}")] * 30)
    indexer = MemoryIndexer(store, mem)
    rests = []
    for failures in range(1, 8):
        before = time.monotonic()
        report = await indexer.run_once(t)
        assert report.errors == 1 and report.embedded == 0 and not report.embedding_deferred
        assert len(times) == 3 * failures  # the first try and its two retries, once per pass that tries
        key = resting(indexer, t)
        rests.append(indexer._embed_after[key] - before)
        again = await indexer.run_once(t)  # at once: the endpoint is left alone
        assert again.embedding_deferred and again.errors == 0 and len(times) == 3 * failures
        assert again.indexed == 0  # (what there was to index, the first pass did)
        indexer._embed_after[key] = 0.0  # (the rest has passed)
    expected = [min(EMBED_BACKOFF_S * 2 ** i, MAX_EMBED_BACKOFF_S) for i in range(7)]
    assert expected[-1] == MAX_EMBED_BACKOFF_S
    for rest, want in zip(rests, expected, strict=True):
        assert want <= rest <= want + 5  # (the pass's own time on top)
    scripted_embeddings.answer(lambda text: [1.0, float(len(text) % 5)])
    assert (await indexer.run_once(t)).embedded == 3
    assert key not in indexer._embed_after and key not in indexer._embed_failures


async def test_a_pass_embeds_for_a_bounded_time_and_the_next_goes_on(store: Any, tenant_factory: Any,
                                                                    scripted_embeddings: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A backfill (minilm: ~75 cases/s) must not hold the tenant's pass for minutes: each pass embeds until
    `EMBED_SECONDS_PER_PASS` have gone (here none: one batch), and the next goes on from the watermark."""
    from memkit import SMALL, process

    from breakdesk.memory import Memory
    from breakdesk.memory import indexer as indexer_module
    from breakdesk.memory.indexer import MemoryIndexer

    monkeypatch.setattr(indexer_module, "EMBED_SECONDS_PER_PASS", 0.0)
    t = await tenant_factory({"embeddings": {"provider": "openai", "baseUrl": scripted_embeddings.url, "model": "m"}})
    mem = Memory(store)
    await process(store, t, SMALL, memory=mem)
    scripted_embeddings.answer(lambda text: [1.0, float(len(text) % 5)])
    indexer = MemoryIndexer(store, mem, embed_batch=2)
    assert [(await indexer.run_once(t)).embedded for _ in range(4)] == [2, 2, 2, 0]
    state = await store.memory_state(t)
    assert state is not None and state.embedded_upto == max(c.id for c in await store.cases_after(t, 0))


async def test_a_round_indexes_every_tenant_before_it_embeds_any(store: Any, tenant_factory: Any) -> None:
    """So one tenant's embedding (a slow model or endpoint) delays no other tenant's status changes and
    resolutions by more than one round's embedding."""
    import asyncio

    from breakdesk.memory import Memory
    from breakdesk.memory.indexer import MemoryIndexer

    tenants = [await tenant_factory() for _ in range(3)]
    indexer = MemoryIndexer(store, Memory(store))
    calls: list[tuple[str, str]] = []
    stop = asyncio.Event()
    catch_up, embed = indexer.catch_up, indexer.embed

    async def catching_up(tenant_id: str) -> Any:
        calls.append(("index", tenant_id))
        return await catch_up(tenant_id)

    async def embedding(tenant_id: str, *args: Any, **kw: Any) -> int:
        calls.append(("embed", tenant_id))
        stop.set()  # (the round ends here: the loop looks at `stop` before each tenant)
        return await embed(tenant_id, *args, **kw)

    indexer.catch_up, indexer.embed = catching_up, embedding  # type: ignore[method-assign]
    await asyncio.wait_for(indexer.run(stop, interval=0.01), 60)
    first_embed = calls.index(next(c for c in calls if c[0] == "embed"))
    assert {t for kind, t in calls[:first_embed] if kind == "index"} >= set(tenants)


async def test_moving_to_another_endpoint_of_the_same_model_ends_the_rest(store: Any, tenant_factory: Any,
                                                                         scripted_embeddings: Any) -> None:
    """The usual cure for a dead endpoint is a policy pointing elsewhere: it is tried at once, though its
    model (and so its vectors' name) is the same."""
    from memkit import SMALL, process

    from breakdesk.catalog import Catalog
    from breakdesk.memory import Memory
    from breakdesk.memory.indexer import MemoryIndexer

    dead = {"provider": "openai", "baseUrl": "http://127.0.0.1:9/v1", "model": "m", "timeoutSeconds": 1}
    t = await tenant_factory({"embeddings": dead})
    mem = Memory(store)
    await process(store, t, SMALL[:2], memory=mem)
    indexer = MemoryIndexer(store, mem)
    assert (await indexer.run_once(t)).errors == 1  # unreachable: a failed pass, then a rest
    assert (await indexer.run_once(t)).embedding_deferred
    policy = await store.active_pack(t, "tenant")
    assert policy is not None
    moved = {**policy.content, "version": "9.9.9", "embeddings": {**dead, "baseUrl": scripted_embeddings.url}}
    await Catalog(store).publish(t, moved, "policy.yaml", "tests", activate=True)
    scripted_embeddings.answer(lambda text: [1.0, float(len(text) % 5)])
    report = await indexer.run_once(t)
    assert not report.embedding_deferred and report.embedded == 2


async def test_a_short_retry_after_does_not_cut_the_rest_short(store: Any, tenant_factory: Any,
                                                               scripted_embeddings: Any) -> None:
    """An endpoint that answers `429 Retry-After: 1` to every try still gets the backoff's rest: a rest of a
    second would cost every round its retries again."""
    from memkit import SMALL, process

    from breakdesk.memory import Memory
    from breakdesk.memory.indexer import EMBED_BACKOFF_S, MemoryIndexer

    t = await tenant_factory({"embeddings": {"provider": "openai", "baseUrl": scripted_embeddings.url, "model": "m",
                                             "timeoutSeconds": 5}})
    mem = Memory(store)
    await process(store, t, SMALL[:1], memory=mem)
    times = script(scripted_embeddings, [(429, b"{}", {"Retry-After": "1"})] * 3)
    indexer = MemoryIndexer(store, mem)
    before = time.monotonic()
    assert (await indexer.run_once(t)).errors == 1 and len(times) == 3
    assert indexer._embed_after[resting(indexer, t)] - before >= EMBED_BACKOFF_S


async def test_the_loop_does_not_pause_while_a_bound_left_work(store: Any, tenant_factory: Any,
                                                              scripted_embeddings: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A backfill cut into bounded passes goes on at once, not after the pause between rounds (which would
    halve a minilm backfill's pace); once nothing is left, the loop pauses."""
    import asyncio

    from memkit import SMALL, process

    from breakdesk.memory import Memory
    from breakdesk.memory import indexer as indexer_module
    from breakdesk.memory.indexer import MemoryIndexer

    monkeypatch.setattr(indexer_module, "EMBED_SECONDS_PER_PASS", 0.0)  # one batch per pass
    t = await tenant_factory({"embeddings": {"provider": "openai", "baseUrl": scripted_embeddings.url, "model": "m"}})
    mem = Memory(store)
    await process(store, t, SMALL, memory=mem)
    scripted_embeddings.answer(lambda text: [1.0, float(len(text) % 5)])
    indexer = MemoryIndexer(store, mem, embed_batch=2)
    stop = asyncio.Event()
    loop = asyncio.create_task(indexer.run(stop, interval=600))
    try:
        # (generous: on PostgreSQL the loop also goes over other tests' tenants, and the first round tries
        # each of their endpoints, some of which nobody answers)
        deadline = asyncio.get_running_loop().time() + 120
        while asyncio.get_running_loop().time() < deadline:
            state = await store.memory_state(t)
            if state is not None and await store.count_cases(t, state.embedded_upto) == 0:
                break
            await asyncio.sleep(0.05)
        assert state is not None and await store.count_cases(t, state.embedded_upto) == 0  # three passes, no pause
    finally:
        stop.set()
        await asyncio.wait_for(loop, 30)
