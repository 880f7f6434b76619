"""The durable write path end to end: chunked transactions, a failure mid-batch, and what the audit
chain vouches for."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from e2e_harness import (
    STAGES,
    RunView,
    all_audit,
    all_rows,
    example_file,
    explicit_id,
    parse_lines,
    setup_tenant,
)
from sqlalchemy.engine import make_url

from breakdesk.audit import canonical_json
from breakdesk.cli.run_cmds import read_jsonl
from breakdesk.pipeline.orchestrator import BatchReport, Orchestrator, Rejected
from breakdesk.pipeline.types import Submission
from breakdesk.store import Store, StoreError
from breakdesk.store.exceptions import BatchResult

TENANT = "acme-capital"  # its example file has recurrences, in-batch duplicates and rejections


def _submissions(path: Path) -> tuple[list[Submission], list[Rejected]]:
    subs: list[Submission] = []
    rejected: list[Rejected] = []
    now = datetime.now(UTC)
    for lineno, _, obj, reason in read_jsonl(path, 1 << 20):
        if reason is not None:
            rejected.append(Rejected(lineno, reason))
        else:
            subs.append(Submission(obj, now, lineno))
    return subs, rejected


async def _run(store: Store, orch: Orchestrator, batch: int) -> BatchReport:
    subs, rejected = _submissions(example_file(TENANT))
    total = BatchReport(rejected=rejected)
    for start in range(0, len(subs), batch):
        total.merge(await orch.process(TENANT, subs[start:start + batch]))
    return total


async def _statuses(url: str) -> dict[str, str]:
    async with await Store.open(url) as store:
        return {r["exception_id"]: r["status"] for r in await all_rows(store, TENANT)}


async def _stored(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Stored exception id -> its event stream."""
    return {row["exception_id"]: await store.get_events(TENANT, row["exception_id"])
            for row in await all_rows(store, TENANT)}


def _assert_whole(streams: dict[str, list[dict[str, Any]]]) -> None:
    """Every stored exception has all its stage events, numbered without gaps."""
    for eid, events in streams.items():
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), eid
        stages = [e["stage"] for e in events if e["stage"] != "recurrence"]
        assert tuple(stages) == STAGES, eid


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def private_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own: the example tenants' ids are fixed, so the session's shared
    PostgreSQL database (where other tests may create the same tenant) will not do."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'private.db'}"
        return
    shared = make_url(str(request.getfixturevalue("pg_url")))  # skips when PostgreSQL is unavailable
    name = f"bd_e2e_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(host=shared.host, port=shared.port, user=shared.username,
                                     database=shared.database)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield shared.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_chunked_writes_store_what_one_transaction_stores(private_url: str, tmp_path: Path) -> None:
    """The whole example file as one batch, written in chunks of 7 (recurrences and duplicates of
    exceptions from earlier chunks included) and in one transaction: the same outcome for every line."""
    views = []
    for url, chunk in ((private_url, 7), (f"sqlite+aiosqlite:///{tmp_path / 'one.db'}", 10_000)):
        async with await Store.open(url) as store:
            await setup_tenant(store, TENANT)
            report = await _run(store, Orchestrator(store, write_chunk=chunk), batch=1_000)
            view = await RunView(TENANT, example_file(TENANT), report).load(store)
            assert (await store.verify_audit(TENANT)).ok
            decided = [e for e in await all_audit(store, TENANT) if e.action == "pipeline.decided"]
            assert len(decided) == report.processed
        _assert_whole(view.events)
        views.append(view)
    chunked, single = views
    assert chunked.report.recurrences > 0 and chunked.report.duplicates > 0
    assert chunked.golden() == single.golden()


class _FailingStore(Store):
    """A real store whose n-th batch write fails before touching the database (a crash mid-batch)."""

    fail_on = 2

    async def write_batch(self, tenant_id: str, writes: Any, **kwargs: Any) -> BatchResult:
        self.fail_on -= 1
        if self.fail_on == 0:
            raise StoreError("the database connection was lost; retry the operation")
        return await super().write_batch(tenant_id, writes, **kwargs)


async def test_a_failed_chunk_leaves_whole_exceptions_and_a_rerun_completes_the_batch(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fail.db'}"
    async with await _FailingStore.open(url) as store:
        await setup_tenant(store, TENANT)
        with pytest.raises(StoreError, match="connection was lost"):
            await _run(store, Orchestrator(store, write_chunk=20), batch=1_000)
        first = await _stored(store)
        # the first chunk is stored, whole; nothing of the second or later chunks is
        assert 0 < len(first) <= 20
        _assert_whole(first)
        assert (await store.verify_audit(TENANT)).ok

        again = await _run(store, Orchestrator(store, write_chunk=20), batch=1_000)
        assert again.duplicates >= len(first)  # what was stored dedupes by idempotency key
        assert not set(first) & set(again.exception_ids)
        after = await _stored(store)
        _assert_whole(after)
        assert (await store.verify_audit(TENANT)).ok

    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'clean.db'}") as clean:
        await setup_tenant(clean, TENANT)
        await _run(clean, Orchestrator(clean), batch=1_000)
        reference = await _stored(clean)
        statuses = {r["exception_id"]: r["status"] for r in await all_rows(clean, TENANT)}
    # Lines with an exception id (or another key) come out exactly as in a clean run; a line with no key at
    # all cannot be recognised when sent again (a rerun of the CLI after any crash behaves the same).
    keyed = {eid for _, obj in parse_lines(example_file(TENANT)) if (eid := explicit_id(obj))}
    assert keyed and keyed & set(first)
    assert {e: [x["stage"] for x in evs] for e, evs in after.items() if e in keyed} == {
        e: [x["stage"] for x in evs] for e, evs in reference.items() if e in keyed}
    assert all(statuses[e] == row_status for e, row_status in (await _statuses(url)).items() if e in keyed)


async def test_the_audit_entry_digests_the_events_as_stored(tmp_path: Path) -> None:
    """`eventsDigest` is sha256 of the canonical JSON of [[stage, decision, payload], ...] read back from
    the event stream, so an auditor can recompute it from the stored events alone."""
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}") as store:
        await setup_tenant(store, TENANT)
        report = await _run(store, Orchestrator(store), batch=100)
        for eid in report.exception_ids[:25]:
            events = await store.get_events(TENANT, eid)
            entry = next(a for a in await store.get_audit(TENANT, subject=eid) if a.action == "pipeline.decided")
            body = canonical_json([[e["stage"], e["decision"], e["payload"]] for e in events[:len(STAGES)]])
            assert entry.detail["eventsDigest"] == hashlib.sha256(body).hexdigest()
