"""Exceptions over HTTP: durable accept (202), idempotency, ?wait=true decisions, the dead letter, listing with
filters, cursors and sorts, the detail view, the event stream, and human actions through the lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from breakdesk.memory import Memory
from breakdesk.memory.indexer import MemoryIndexer

from .conftest import Api, Tenant, break_item


def url(t: Tenant, rest: str = "") -> str:
    return f"/v1/tenants/{t.tenant_id}{rest}"


async def submit(api: Api, t: Tenant, body: Any, *, wait: bool = False, headers: dict[str, str] | None = None) -> Any:
    return await api.client.post(
        url(t, "/exceptions"),
        params={"wait": "true"} if wait else None,
        json=body,
        headers={**t.headers("operator"), **(headers or {})},
    )


# ---------------------------------------------------------------------------------------------- accepting


async def test_single_exception_is_accepted_durably(api: Api) -> None:
    t = await api.tenant()
    r = await submit(api, t, break_item("O-1"))
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 1 and body["duplicates"] == 0
    [item] = body["items"]
    assert r.headers["location"] == item["statusUrl"] == url(t, f"/intake/{item['queueId']}")
    assert await api.store.queue_counts(t.tenant_id) == {"PENDING": 1, "DONE": 0, "REJECTED": 0}
    status = (await api.client.get(item["statusUrl"], headers=t.headers("viewer"))).json()
    assert (status["state"], status["attempts"], status["exceptionId"]) == ("PENDING", 0, None)
    await api.drain()  # the session's database may hold other tests' pending items too: count this tenant's
    assert await api.store.queue_counts(t.tenant_id) == {"PENDING": 0, "DONE": 1, "REJECTED": 0}
    status = (await api.client.get(item["statusUrl"], headers=t.headers("viewer"))).json()
    assert status["state"] == "DONE" and status["exceptionId"].startswith("EX-")
    exc = await api.client.get(url(t, f"/exceptions/{status['exceptionId']}"), headers=t.headers("viewer"))
    assert exc.json()["exception"]["exceptionType"] == "BREAK"


@pytest.mark.parametrize("shape", ["array", "items"])
async def test_batches_as_array_or_items_wrapper(api: Api, shape: str) -> None:
    t = await api.tenant()
    items = [break_item(f"B-{n}") for n in range(7)]
    r = await submit(api, t, items if shape == "array" else {"items": items})
    assert r.status_code == 202
    assert [i["index"] for i in r.json()["items"]] == list(range(7))
    assert len({i["queueId"] for i in r.json()["items"]}) == 7
    assert "location" not in r.headers
    await api.drain()
    rows, _ = await api.store.list_exceptions(t.tenant_id)
    assert len(rows) == 7


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ("just a string", "$", "expected an object or an array of objects"),
        ([], "$", "no items"),
        ({"items": []}, "$.items", "no items"),
        ([break_item("a"), 3], "$[1]", "an exception must be a JSON object"),
        ({"items": [break_item("a"), {}]}, "$.items[1]", "the exception is empty"),
        ([break_item("a", idempotencyKey={"x": 1})], "$[0].idempotencyKey", "must be a string of 1 to 200 characters"),
        ([break_item("a", idempotencyKey="k" * 201)], "$[0].idempotencyKey", "must be a string of 1 to 200 characters"),
        (break_item("a", tenantId="someone-else"), "$.tenantId", "does not match the tenant in the path"),
    ],
)
async def test_shape_errors_name_their_json_path(api: Api, body: Any, path: str, message: str) -> None:
    t = await api.tenant(packs=False)
    r = await submit(api, t, body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["type"] == "https://breakdesk.dev/problems/validation-error"
    assert {"in": "body", "path": path, "message": message} in problem["errors"]
    assert await api.store.queue_counts(t.tenant_id) == {"PENDING": 0, "DONE": 0, "REJECTED": 0}


async def test_every_shape_error_is_reported_at_once(api: Api) -> None:
    t = await api.tenant(packs=False)
    r = await submit(api, t, [1, break_item("ok"), "x", break_item("b", tenantId="nope")])
    assert [e["path"] for e in r.json()["errors"]] == ["$[0]", "$[2]", "$[3].tenantId"]


async def test_unreadable_bodies(api: Api) -> None:
    t = await api.tenant(packs=False)
    h = {**t.headers("operator"), "Content-Type": "application/json"}
    r = await api.client.post(url(t, "/exceptions"), content=b'{"a": ', headers=h)
    assert r.status_code == 400 and r.json()["type"].endswith("/malformed-request")
    r = await api.client.post(url(t, "/exceptions"), content=b"", headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "$"
    r = await api.client.post(url(t, "/exceptions"), content=b"a,b", headers={**h, "Content-Type": "text/csv"})
    assert r.status_code == 415 and r.json()["type"].endswith("/unsupported-media-type")
    r = await api.client.post(url(t, "/exceptions"), content=b"\xff\xfe", headers=h)
    assert r.status_code == 400


async def test_batch_count_and_body_size_limits(make_api: Any) -> None:
    async with make_api(max_batch_items=5) as api:
        t = await api.tenant(packs=False)
        r = await submit(api, t, [break_item(str(n)) for n in range(6)])
        assert r.status_code == 413 and r.json()["type"].endswith("/batch-too-large")
        assert (await submit(api, t, [break_item(str(n)) for n in range(5)])).status_code == 202
        r = await api.client.put(url(t, "/limits"), json={"maxBodyBytes": 2048, "maxBatchItems": 100}, headers=api.platform)
        assert r.status_code == 200 and r.json()["limits"]["maxBodyBytes"] == 2048
        big = [break_item("x" * 100) for _ in range(30)]
        r = await submit(api, t, big)
        assert r.status_code == 413 and r.json()["type"].endswith("/payload-too-large")
        assert (await submit(api, t, [break_item(str(n)) for n in range(6)])).status_code == 202  # 100 now


# ------------------------------------------------------------------------------------------- idempotency


async def test_idempotency_key_replays_the_same_answer(api: Api) -> None:
    t = await api.tenant()
    body = [break_item("I-1"), break_item("I-2")]
    first = await submit(api, t, body, headers={"Idempotency-Key": "req-1"})
    assert first.status_code == 202
    again = await submit(api, t, body, headers={"Idempotency-Key": "req-1"})
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await api.store.queue_counts(t.tenant_id) == {"PENDING": 2, "DONE": 0, "REJECTED": 0}
    await api.drain()
    after = await submit(api, t, body, headers={"Idempotency-Key": "req-1"})
    assert after.json() == first.json()
    rows, _ = await api.store.list_exceptions(t.tenant_id)
    assert len(rows) == 2
    other = await submit(api, t, [break_item("I-3")], headers={"Idempotency-Key": "req-1"})
    assert other.status_code == 422 and other.json()["type"].endswith("/idempotency-key-reused")
    waited = await submit(api, t, body, wait=True, headers={"Idempotency-Key": "req-1"})
    assert waited.status_code == 422  # the same key with ?wait=true is a different request
    bad = await submit(api, t, body, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["in"] == "header"


async def test_item_keys_dedupe_across_requests(api: Api) -> None:
    t = await api.tenant()
    a = await submit(api, t, [break_item("K-1", idempotencyKey="evt-1"), break_item("K-2")])
    b = await submit(api, t, [break_item("K-1", idempotencyKey="evt-1")])
    assert b.json()["items"][0] == {**a.json()["items"][0], "duplicate": True}
    assert (b.json()["accepted"], b.json()["duplicates"]) == (0, 1)
    await api.drain()
    c = await submit(api, t, [break_item("K-1", idempotencyKey="evt-1")], wait=True)
    assert c.json()["items"][0]["outcome"] == "duplicate"
    rows, _ = await api.store.list_exceptions(t.tenant_id)
    assert len(rows) == 2


# ------------------------------------------------------------------------------------------------- ?wait=true


async def test_wait_returns_each_items_decision(api: Api) -> None:
    t = await api.tenant()
    r = await submit(
        api,
        t,
        [
            break_item("W-1", amount=5000),  # HIGH → approval for the write step
            break_item("W-2", amount=10),
            break_item("W-1", amount=7000),  # same order: a recurrence of the first
            {"exceptionType": "BREAK", "rawPayload": "not an object"},
            break_item("W-3", idempotencyKey="dup"),
            break_item("W-3", idempotencyKey="dup"),
        ],
        wait=True,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["processed"], body["recurrences"], body["duplicates"], body["rejected"]) == (3, 1, 1, 1)
    items = body["items"]
    assert [i["outcome"] for i in items] == ["processed", "processed", "recurrence", "rejected", "processed", "duplicate"]
    first = items[0]
    assert (first["severity"], first["status"], first["playbookId"], first["approvalRequired"]) == (
        "HIGH", "PENDING_APPROVAL", "PB_BREAK", True
    )
    assert (items[1]["severity"], items[1]["status"], items[1]["approvalRequired"]) == ("MEDIUM", "IN_PROGRESS", False)
    assert items[2]["exceptionId"] == first["exceptionId"]
    assert items[3]["exceptionId"] is None and "rawPayload must be a JSON object" in items[3]["reason"]
    assert items[5]["exceptionId"] == items[4]["exceptionId"]
    dead = await api.client.get(url(t, f"/intake/{items[3]['queueId']}"), headers=t.headers("viewer"))
    assert dead.json()["state"] == "REJECTED" and "rawPayload must be a JSON object" in dead.json()["error"]
    assert await api.store.queue_counts(t.tenant_id) == {"PENDING": 0, "DONE": 4, "REJECTED": 1}
    await api.drain()  # nothing of this tenant's left for the worker (other tests' items may be)
    assert await api.store.queue_counts(t.tenant_id) == {"PENDING": 0, "DONE": 4, "REJECTED": 1}


async def test_wait_without_active_packs_queues_nothing(api: Api) -> None:
    t = await api.tenant(packs=False)
    r = await submit(api, t, break_item("N-1"), wait=True)
    assert r.status_code == 409 and r.json()["type"].endswith("/no-active-packs")
    assert await api.store.queue_counts(t.tenant_id) == {"PENDING": 0, "DONE": 0, "REJECTED": 0}
    assert (await submit(api, t, break_item("N-1"))).status_code == 202  # durable intake does not need packs


async def test_wait_has_its_own_item_limit(make_api: Any) -> None:
    async with make_api(wait_max_items=3) as api:
        t = await api.tenant()
        r = await submit(api, t, [break_item(str(n)) for n in range(4)], wait=True)
        assert r.status_code == 413 and "wait=true" in r.json()["detail"]


# --------------------------------------------------------------------------------------------- dead letter


async def test_worker_rejections_are_visible_with_their_reason(api: Api) -> None:
    t = await api.tenant()
    r = await submit(api, t, [{"sourceSystem": "x"}, break_item("D-1")])
    bad, good = r.json()["items"]
    await api.drain()
    dead = (await api.client.get(url(t, f"/intake/{bad['queueId']}"), headers=t.headers("viewer"))).json()
    assert dead["state"] == "REJECTED" and "no payload" in dead["error"] and dead["exceptionId"] is None
    ok = (await api.client.get(url(t, f"/intake/{good['queueId']}"), headers=t.headers("viewer"))).json()
    assert ok["state"] == "DONE" and ok["error"] is None
    missing = await api.client.get(url(t, "/intake/999999999"), headers=t.headers("viewer"))
    assert missing.status_code == 404


# -------------------------------------------------------------------------------------------------- listing


async def seeded(api: Api) -> Tenant:
    t = await api.tenant()
    items = [break_item(f"L-{n}", amount=5000 if n % 3 == 0 else 10, sourceSystem="ledger" if n % 2 else "bank") for n in range(12)]
    items.append({"sourceSystem": "ops", "rawPayload": {"failReason": "timeout", "orderId": "F-1"}})
    r = await submit(api, t, items, wait=True)
    assert r.status_code == 200
    return t


async def test_filters(api: Api) -> None:
    t = await seeded(api)

    async def ids(**params: Any) -> list[str]:
        r = await api.client.get(url(t, "/exceptions"), params=params, headers=t.headers("viewer"))
        assert r.status_code == 200, r.text
        return [i["exceptionType"] + ":" + (i["severity"] or "") for i in r.json()["items"]]

    assert len(await ids()) == 13
    assert len(await ids(severity="HIGH")) == 4
    assert len(await ids(severity=["HIGH", "MEDIUM"])) == 12
    assert await ids(type="FAIL") == ["FAIL:LOW"]
    assert len(await ids(source="bank")) == 6
    assert len(await ids(status="PENDING_APPROVAL")) == 4
    assert len(await ids(status=["PENDING_APPROVAL", "IN_PROGRESS"], type="BREAK")) == 12
    assert await ids(q="no-such-text-anywhere") == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await ids(since=future) == []
    assert len(await ids(until=future)) == 13
    r = await api.client.get(url(t, "/exceptions"), params={"status": "NOPE"}, headers=t.headers("viewer"))
    assert r.status_code == 422 and r.json()["errors"][0]["in"] == "query"
    assert r.json()["errors"][0]["path"].startswith("$.status")


async def test_text_search_matches_ids(api: Api) -> None:
    t = await seeded(api)
    rows, _ = await api.store.list_exceptions(t.tenant_id, limit=1)
    eid = rows[0]["exception_id"]
    r = await api.client.get(url(t, "/exceptions"), params={"q": eid[-8:].lower()}, headers=t.headers("viewer"))
    assert [i["exceptionId"] for i in r.json()["items"]] == [eid]


@pytest.mark.parametrize("sort", ["-received_at", "received_at", "-updated_at", "updated_at", "-priority", "priority"])
async def test_cursor_pages_cover_everything_once(api: Api, sort: str) -> None:
    t = await seeded(api)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4, "sort": sort}
        if cursor:
            params["cursor"] = cursor
        r = await api.client.get(url(t, "/exceptions"), params=params, headers=t.headers("viewer"))
        assert r.status_code == 200
        body = r.json()
        seen.extend(i["exceptionId"] for i in body["items"])
        cursor = body["nextCursor"]
        pages += 1
        if cursor is None:
            assert "link" not in r.headers
            break
        assert 'rel="next"' in r.headers["link"] and "cursor=" in r.headers["link"]
    assert pages == 4 and len(seen) == len(set(seen)) == 13
    key = sort.lstrip("-")
    if key == "priority":
        rows = [
            (await api.client.get(url(t, f"/exceptions/{e}"), headers=t.headers("viewer"))).json()["exception"]["priority"]
            for e in seen
        ]
        assert rows == sorted(rows, reverse=sort.startswith("-"))


async def test_bad_cursor_and_limits_are_validation_errors(api: Api) -> None:
    t = await seeded(api)
    for params, where in (({"cursor": "garbage"}, "$.cursor"), ({"limit": 0}, "$.limit"), ({"limit": 5000}, "$.limit"),
                          ({"sort": "name"}, "$.sort"), ({"since": "yesterday"}, "$.since"),
                          # valid ISO 8601, but outside what a UTC date-time can hold (was a 500)
                          ({"since": "0001-01-01T00:00:00+01:00"}, "$.since"),
                          ({"until": "9999-12-31T23:59:59-01:00"}, "$.until")):
        r = await api.client.get(url(t, "/exceptions"), params=params, headers=t.headers("viewer"))
        assert r.status_code == 422, (params, r.text)
        assert r.json()["errors"][0]["in"] == "query" and r.json()["errors"][0]["path"] == where
    first = await api.client.get(url(t, "/exceptions"), params={"limit": 2}, headers=t.headers("viewer"))
    r = await api.client.get(
        url(t, "/exceptions"), params={"limit": 2, "sort": "priority", "cursor": first.json()["nextCursor"]},
        headers=t.headers("viewer"),
    )
    assert r.status_code == 422  # a cursor made for another sort


# ---------------------------------------------------------------------------------------------------- reads


async def test_detail_has_record_timeline_evidence_and_audit(api: Api) -> None:
    t = await api.tenant()
    r = await submit(api, t, break_item("R-1", amount=5000), wait=True)
    eid = r.json()["items"][0]["exceptionId"]
    d = (await api.client.get(url(t, f"/exceptions/{eid}"), headers=t.headers("viewer"))).json()
    assert d["exception"]["exceptionId"] == eid and d["record"]["exceptionId"] == eid
    assert d["record"]["rawPayload"] == {"orderId": "R-1", "amount": 5000}
    stages = [e["stage"] for e in d["timeline"]]
    assert stages[:3] == ["intake", "triage", "policy"] and stages[-1] == "feedback"
    assert [e["seq"] for e in d["timeline"]] == list(range(1, len(stages) + 1))
    assert all(e["decision"]["confidence"] >= 0 for e in d["timeline"])
    assert any(ev["stage"] == "triage" and "big-break" in ev["message"] for ev in d["evidence"])
    assert {a["subject"] for a in d["audit"]} == {eid}
    # a HIGH break waits for a person: the decision and the approval request it raised are audited
    assert [a["action"] for a in d["audit"]] == ["pipeline.decided", "approval.requested"]
    assert not d["eventsTruncated"] and not d["auditTruncated"]
    missing = await api.client.get(url(t, "/exceptions/EX-NOPE"), headers=t.headers("viewer"))
    assert missing.status_code == 404 and missing.json()["detail"] == "no such exception"


async def test_event_stream_pages(api: Api) -> None:
    t = await api.tenant()
    r = await submit(api, t, break_item("E-1"), wait=True)
    eid = r.json()["items"][0]["exceptionId"]
    all_events = (await api.client.get(url(t, f"/exceptions/{eid}/events"), headers=t.headers("viewer"))).json()
    n = len(all_events["items"])
    assert n >= 6 and all_events["nextAfterSeq"] is None
    page = (await api.client.get(url(t, f"/exceptions/{eid}/events?limit=2&afterSeq=2"), headers=t.headers("viewer"))).json()
    assert [e["seq"] for e in page["items"]] == [3, 4] and page["nextAfterSeq"] == 4
    assert (await api.client.get(url(t, "/exceptions/EX-NOPE/events"), headers=t.headers("viewer"))).status_code == 404


# -------------------------------------------------------------------------------------------------- actions


async def test_human_actions_follow_the_lifecycle(api: Api) -> None:
    t = await api.tenant()
    r = await submit(api, t, break_item("H-1", amount=10), wait=True)
    eid = r.json()["items"][0]["exceptionId"]
    act_url = url(t, f"/exceptions/{eid}/actions")

    async def act(body: dict[str, Any], role: str = "operator") -> Any:
        return await api.client.post(act_url, json=body, headers=t.headers(role))

    r = await act({"action": "assign", "assignee": "dana", "comment": "yours"})
    assert r.status_code == 200 and r.json()["exception"]["assignee"] == "dana"
    assert r.json()["event"]["stage"] == "human.assign" and r.json()["event"]["payload"]["previous"] is None
    r = await act({"action": "comment", "text": "called the bank"})
    assert r.json()["event"]["payload"] == {"action": "comment", "text": "called the bank"}
    r = await act({"action": "reopen"})
    assert r.status_code == 409 and r.json()["type"].endswith("/invalid-state")
    r = await act({"action": "override_severity", "severity": "HIGH", "reason": "big customer"}, role="approver")
    assert r.status_code == 200
    event = r.json()["event"]
    assert event["stage"] == "human.override"
    assert event["payload"]["learning"] == {
        "kind": "severity-override", "exceptionType": "BREAK", "fingerprint": r.json()["exception"]["fingerprint"],
        "from": "MEDIUM", "to": "HIGH", "domainPack": "mini@1.0.0", "tenantPolicy": f"{t.tenant_id}@1.0.0",
        "reason": "big customer",
    }
    assert r.json()["exception"]["severity"] == "HIGH"
    same = await act({"action": "override_severity", "severity": "HIGH", "reason": "again"}, role="approver")
    assert same.status_code == 409
    r = await act({"action": "close", "reason": "fixed", "resolution": "rebooked"})
    closed = r.json()["exception"]
    assert closed["status"] == "CLOSED" and closed["resolvedAt"] is not None
    assert (await act({"action": "close"})).status_code == 409
    r = await act({"action": "reopen", "reason": "came back"})
    assert r.json()["exception"]["status"] == "TRIAGED" and r.json()["exception"]["resolvedAt"] is None
    d = (await api.client.get(url(t, f"/exceptions/{eid}"), headers=t.headers("viewer"))).json()
    assert d["record"]["severity"] == "HIGH" and d["record"]["resolutionStatus"] == "TRIAGED"
    human = [e["stage"] for e in d["timeline"] if e["stage"].startswith("human.")]
    assert human == ["human.assign", "human.comment", "human.override", "human.close", "human.reopen"]
    actions = [a for a in d["audit"] if a["action"].startswith("exception.")]
    assert [a["action"] for a in actions] == [
        "exception.assign", "exception.comment", "exception.override_severity", "exception.close", "exception.reopen"
    ]
    assert all(a["actor"].startswith("apikey:") for a in actions)
    verify = (await api.client.get(url(t, "/audit/verify"), headers=t.headers("admin"))).json()
    assert verify["ok"] is True


async def test_stock_wording_of_actions_without_words_is_not_what_a_person_said(api: Api) -> None:
    """Closing (or assigning) without a reason: the timeline still says "closed by a person", but the
    resolution summary the memory keeps neither quotes it nor lets it push out what people did write."""
    t = await api.tenant()
    r = await submit(api, t, break_item("W-1"), wait=True)
    eid = r.json()["items"][0]["exceptionId"]

    async def act(body: dict[str, Any]) -> Any:
        r = await api.client.post(url(t, f"/exceptions/{eid}/actions"), json=body,
                                  headers=t.headers("operator"))
        assert r.status_code == 200, r.text
        return r.json()["event"]

    said = [f"chased the counterparty ({i})" for i in range(5)]
    for text in said:
        await act({"action": "comment", "text": text})
    assigned = await act({"action": "assign", "assignee": "dana"})
    closed = await act({"action": "close"})
    assert closed["payload"]["reason"] == "" and closed["payload"]["resolution"] is None  # nothing typed
    for event, stock in ((assigned, "assigned to dana"), (closed, "closed by a person")):
        marked = {"kind": "human", "message": stock, "data": {"defaultMessage": True}}
        assert event["decision"]["evidence"] == [marked]  # still shown, marked as no one's words
    await MemoryIndexer(api.store, Memory(api.store)).catch_up(t.tenant_id)
    case = await api.store.get_case(t.tenant_id, eid)
    assert case is not None and case.resolution is not None
    assert case.resolution["comments"] == said, case.resolution["comments"]
    assert case.resolution["headline"].endswith(f'"{said[-1]}"'), case.resolution["headline"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"action": "dance"}, "$"),
        ({"action": "comment"}, "$.comment.text"),
        ({"action": "override_severity", "severity": "HUGE", "reason": "x"}, "$.override_severity.severity"),
        ({"action": "override_severity", "severity": "LOW"}, "$.override_severity.reason"),
        ({"action": "close", "colour": "red"}, "$.close.colour"),
        ([], "$"),
    ],
)
async def test_action_validation_errors_have_paths(api: Api, body: Any, path: str) -> None:
    t = await api.tenant()
    r = await submit(api, t, break_item("V-1"), wait=True)
    eid = r.json()["items"][0]["exceptionId"]
    r = await api.client.post(url(t, f"/exceptions/{eid}/actions"), json=body, headers=t.headers("approver"))
    assert r.status_code == 422, r.text
    assert path in [e["path"] for e in r.json()["errors"]]


async def test_actions_on_unknown_exceptions_are_404(api: Api) -> None:
    t = await api.tenant()
    r = await api.client.post(
        url(t, "/exceptions/EX-NOPE/actions"), json={"action": "comment", "text": "x"}, headers=t.headers("operator")
    )
    assert r.status_code == 404


def test_query_timestamps_are_read_as_utc() -> None:
    """Filters compare with UTC timestamps: a zone-less value is UTC, an offset is converted."""
    from pydantic import TypeAdapter

    from breakdesk.api.schemas import QueryDateTime

    read = TypeAdapter(QueryDateTime).validate_python
    assert read("2025-03-01T12:00:00") == datetime(2025, 3, 1, 12, tzinfo=UTC)
    converted = read("2025-03-01T13:00:00+01:00")
    assert converted.tzinfo == UTC and converted == datetime(2025, 3, 1, 12, tzinfo=UTC)
