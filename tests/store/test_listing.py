"""list_exceptions: every filter, and keyset pagination with no duplicates and no gaps."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from store_builders import T0, make_write

from breakdesk.store import InvalidCursor, Store, StoreError

N = 37


@pytest.fixture
async def listed(store: Store, tenant: str) -> list[dict[str, Any]]:
    writes = []
    for n in range(N):
        # Pairs of exceptions share a received_at, so the id tie-breaker is exercised.
        writes.append(
            make_write(
                tenant,
                f"EXC-{n:03d}",
                n,
                events=1,
                received_at=T0 + timedelta(minutes=n // 2),
                updated_at=T0 + timedelta(hours=1, seconds=(n * 7) % 11),
                status=("TRIAGED", "RESOLVED", "IN_PROGRESS")[n % 3],
                summary=f"Invoice {n} {'100% mismatch' if n % 5 == 0 else 'ok_value'}",
            )
        )
    await store.write_batch(tenant, writes)
    rows, cursor = await store.list_exceptions(tenant, limit=1000)
    assert cursor is None and len(rows) == N
    return rows


async def _all_pages(store: Store, tenant: str, limit: int, **kw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page, cursor = await store.list_exceptions(tenant, limit=limit, cursor=cursor, **kw)
        assert len(page) <= limit
        out.extend(page)
        if cursor is None:
            return out
        assert len(page) == limit
    raise AssertionError("pagination did not terminate")


@pytest.mark.parametrize(
    "sort", ["-received_at", "received_at", "-updated_at", "updated_at", "-priority", "priority"]
)
async def test_pagination_covers_everything_once_in_order(
    store: Store, tenant: str, listed: list[dict[str, Any]], sort: str
) -> None:
    key = sort.lstrip("-")
    expected = sorted(listed, key=lambda r: (r[key], r["exception_id"]), reverse=sort.startswith("-"))
    for limit in (1, 5, 36, 37):
        got = await _all_pages(store, tenant, limit, sort=sort)
        assert [r["exception_id"] for r in got] == [r["exception_id"] for r in expected], (sort, limit)


async def test_pagination_with_filter_and_concurrent_insert(
    store: Store, tenant: str, listed: list[dict[str, Any]]
) -> None:
    page1, cursor = await store.list_exceptions(tenant, status="TRIAGED", limit=4)
    # A newer exception arriving between pages must not shift or duplicate later pages.
    await store.write_batch(
        tenant,
        [make_write(tenant, "EXC-NEW", 99, events=0, status="TRIAGED", received_at=T0 + timedelta(days=1))],
    )
    rest: list[dict[str, Any]] = []
    while cursor is not None:
        page, cursor = await store.list_exceptions(tenant, status="TRIAGED", limit=4, cursor=cursor)
        rest.extend(page)
    ids = [r["exception_id"] for r in page1 + rest]
    expected = [
        r["exception_id"]
        for r in sorted(listed, key=lambda r: (r["received_at"], r["exception_id"]), reverse=True)
        if r["status"] == "TRIAGED"
    ]
    assert ids == expected


@pytest.mark.parametrize(
    ("kwargs", "predicate"),
    [
        ({"status": "RESOLVED"}, lambda r: r["status"] == "RESOLVED"),
        ({"status": ["RESOLVED", "IN_PROGRESS"]}, lambda r: r["status"] in ("RESOLVED", "IN_PROGRESS")),
        ({"exception_type": "STOCK_OUT"}, lambda r: r["exception_type"] == "STOCK_OUT"),
        ({"severity": "CRITICAL"}, lambda r: r["severity"] == "CRITICAL"),
        ({"severity": ("LOW", "HIGH")}, lambda r: r["severity"] in ("LOW", "HIGH")),
        ({"source_system": "wms"}, lambda r: r["source_system"] == "wms"),
        ({"since": T0 + timedelta(minutes=5)}, lambda r: r["received_at"] >= T0 + timedelta(minutes=5)),
        ({"until": T0 + timedelta(minutes=5)}, lambda r: r["received_at"] < T0 + timedelta(minutes=5)),
        (
            {"since": T0 + timedelta(minutes=3), "until": T0 + timedelta(minutes=9), "status": "TRIAGED"},
            lambda r: (
                T0 + timedelta(minutes=3) <= r["received_at"] < T0 + timedelta(minutes=9)
                and r["status"] == "TRIAGED"
            ),
        ),
        ({"text": "100%"}, lambda r: "100%" in r["summary"]),  # % is matched literally, not as a wildcard
        ({"text": "OK_VALUE"}, lambda r: "ok_value" in r["summary"]),  # case-insensitive, _ literal
        ({"text": "exc-01"}, lambda r: r["exception_id"].startswith("EXC-01")),
        ({"text": "src-7"}, lambda r: r["source_id"].startswith("SRC-7")),
        ({"exception_type": "NOPE"}, lambda r: False),
    ],
)
async def test_filters(
    store: Store, tenant: str, listed: list[dict[str, Any]], kwargs: dict[str, Any], predicate: Any
) -> None:
    expected = {r["exception_id"] for r in listed if predicate(r)}
    got = await _all_pages(store, tenant, 4, **kwargs)
    assert {r["exception_id"] for r in got} == expected
    assert len(got) == len(expected)


async def test_list_rows_omit_record_unless_asked(
    store: Store, tenant: str, listed: list[dict[str, Any]]
) -> None:
    assert "record" not in listed[0]
    rows, _ = await store.list_exceptions(tenant, limit=1, include_record=True)
    assert rows[0]["record"]["tenantId"] == tenant


async def test_bad_arguments(store: Store, tenant: str, listed: list[dict[str, Any]]) -> None:
    _, cursor = await store.list_exceptions(tenant, limit=2)
    assert cursor is not None
    with pytest.raises(InvalidCursor, match="made for sort"):
        await store.list_exceptions(tenant, limit=2, cursor=cursor, sort="priority")
    for junk in ("not-base64!!", "bm9wZQ", cursor[:-3]):
        with pytest.raises(InvalidCursor):
            await store.list_exceptions(tenant, cursor=junk)
    with pytest.raises(StoreError, match="sort must be"):
        await store.list_exceptions(tenant, sort="summary")
    with pytest.raises(StoreError, match="limit"):
        await store.list_exceptions(tenant, limit=0)
