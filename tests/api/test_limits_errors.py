"""Per-tenant rate limits (429 + Retry-After, overridable per tenant), request size limits (413 before the
body is parsed), and RFC 9457 problem documents for every kind of error — including the catch-all 500,
which says nothing about the internals."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from breakdesk.api.problems import KINDS, TYPE_BASE

from .conftest import Api, break_item


def assert_problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == TYPE_BASE + slug
    assert body["title"] == KINDS[slug].title and body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["instance"] == r.request.url.path
    assert r.headers["x-request-id"]
    return body


async def test_rate_limit_429_with_retry_after_per_tenant(make_api: Any) -> None:
    async with make_api(rate_limit_rps=0.5, rate_limit_burst=3) as api:
        a = await api.tenant(packs=False)
        b = await api.tenant(packs=False)
        codes = [(await api.client.get("/v1/whoami", headers=a.headers("viewer"))).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = await api.client.get("/v1/whoami", headers=a.headers("admin"))  # any key of the tenant: one bucket
        body = assert_problem(r, 429, "rate-limited")
        assert int(r.headers["retry-after"]) >= 1 and "0.5 requests/s" in body["detail"]
        assert (await api.client.get("/v1/whoami", headers=b.headers("viewer"))).status_code == 200  # B unaffected
        # a platform admin raises A's limit: at once in this process, within the tenant cache time elsewhere
        r = await api.client.put(
            f"/v1/tenants/{a.tenant_id}/limits", json={"requestsPerSecond": 1000, "burst": 1000}, headers=api.platform
        )
        assert r.status_code == 200 and r.json()["limits"]["requestsPerSecond"] == 1000
        assert (await api.client.get("/v1/whoami", headers=a.headers("viewer"))).status_code == 200
        settings = (await api.store.get_tenant(a.tenant_id)).settings  # type: ignore[union-attr]
        assert settings["limits"] == {"requestsPerSecond": 1000.0, "burst": 1000}
        r = await api.client.put(f"/v1/tenants/{a.tenant_id}/limits", json={}, headers=api.platform)
        assert r.json()["limits"]["requestsPerSecond"] == 0.5  # back to the server default
        audit = await api.store.get_audit(a.tenant_id, f"tenant:{a.tenant_id}")
        assert [e.action for e in audit] == ["tenant.create", "tenant.settings", "tenant.settings"]


async def test_unauthenticated_requests_do_not_spend_a_tenants_quota(make_api: Any) -> None:
    async with make_api(rate_limit_rps=0.1, rate_limit_burst=1) as api:
        t = await api.tenant(packs=False)
        for _ in range(5):
            await api.client.get(f"/v1/tenants/{t.tenant_id}", headers={"X-API-Key": "bdk_0123456789abcdef_" + "x" * 43})
        assert (await api.client.get(f"/v1/tenants/{t.tenant_id}", headers=t.headers("viewer"))).status_code == 200


async def test_bodies_over_the_hard_cap_are_refused_before_parsing(make_api: Any) -> None:
    async with make_api(max_request_bytes=4096, max_body_bytes=2048) as api:
        t = await api.tenant(packs=False)
        huge = b"[" + b"1," * 5000 + b"1]"
        r = await api.client.post(
            f"/v1/tenants/{t.tenant_id}/exceptions",
            content=huge,
            headers={**t.headers("operator"), "Content-Type": "application/json"},
        )
        assert_problem(r, 413, "payload-too-large")

        async def chunks() -> Any:  # no Content-Length: counted while streaming
            for _ in range(10):
                yield b"x" * 1000

        r = await api.client.post(
            f"/v1/tenants/{t.tenant_id}/packs", content=chunks(), headers={**t.headers("admin"), "Content-Type": "application/json"}
        )
        assert_problem(r, 413, "payload-too-large")
        r = await api.client.post(
            f"/v1/tenants/{t.tenant_id}/exceptions",
            content=b"x" * 3000,
            headers={**t.headers("operator"), "Content-Type": "application/json"},
        )
        body = assert_problem(r, 413, "payload-too-large")
        assert "2048" in body["detail"]  # the tenant's limit, below the hard cap


@pytest.mark.parametrize(
    ("method", "path", "status", "slug"),
    [
        ("GET", "/v1/nothing-here", 404, "not-found"),
        ("GET", "/nothing", 404, "not-found"),
        ("DELETE", "/v1/whoami", 405, "method-not-allowed"),
        ("PATCH", "/v1/tenants", 405, "method-not-allowed"),
    ],
)
async def test_routing_errors_are_problems(api: Api, method: str, path: str, status: int, slug: str) -> None:
    r = await api.client.request(method, path, headers=api.platform)
    assert_problem(r, status, slug)
    if status == 405:  # every method served at the path, although FastAPI routes them separately
        assert r.headers["allow"] == {"/v1/whoami": "GET", "/v1/tenants": "GET, POST"}[path]


async def test_every_problem_kind_reaches_the_client_as_problem_json(api: Api) -> None:
    t = await api.tenant()
    h = t.headers("admin")
    tid = t.tenant_id
    cases: list[tuple[httpx.Response, int, str]] = [
        (await api.client.get("/v1/whoami"), 401, "unauthorized"),
        (await api.client.get("/v1/tenants", headers=h), 403, "forbidden"),
        (await api.client.get(f"/v1/tenants/{tid}/exceptions/EX-X", headers=h), 404, "not-found"),
        (await api.client.post("/v1/tenants", json={"tenantId": tid}, headers=api.platform), 409, "conflict"),
        (await api.client.post(f"/v1/tenants/{tid}/exceptions", content=b"{", headers={**h, "Content-Type": "application/json"}), 400, "malformed-request"),
        (await api.client.post(f"/v1/tenants/{tid}/exceptions", content=b"{}", headers={**h, "Content-Type": "text/plain"}), 415, "unsupported-media-type"),
        (await api.client.get(f"/v1/tenants/{tid}/exceptions?limit=x", headers=h), 422, "validation-error"),
        (await api.client.post(f"/v1/tenants/{tid}/packs", json={"kind": "DomainPack"}, headers=h), 422, "pack-invalid"),
    ]
    for r, status, slug in cases:
        body = assert_problem(r, status, slug)
        for secret in t.keys.values():
            assert secret not in r.text
        if slug in ("validation-error", "pack-invalid"):
            assert body["errors"] and all({"in", "path", "message"} <= set(e) for e in body["errors"])


async def test_unexpected_errors_are_a_500_problem_without_internals(api: Api) -> None:
    async def boom() -> None:
        raise RuntimeError("secret internal detail: password=hunter2")

    api.app.router.add_api_route("/v1/boom", boom)
    r = await api.client.get("/v1/boom")
    body = assert_problem(r, 500, "internal-error")
    assert "hunter2" not in r.text and "RuntimeError" not in r.text and "Traceback" not in r.text
    assert body["detail"] == "an internal error occurred; it has been logged"


async def test_a_database_outage_is_503_not_500(api: Api) -> None:
    t = await api.tenant(packs=False)
    assert (await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions", headers=t.headers("viewer"))).status_code == 200
    from breakdesk.store.errors import StoreError

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("the database connection was lost; retry the operation")

    original = api.store.list_exceptions
    api.store.list_exceptions = broken  # type: ignore[method-assign]
    try:
        r = await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions", headers=t.headers("viewer"))
    finally:
        api.store.list_exceptions = original  # type: ignore[method-assign]
    assert_problem(r, 503, "service-unavailable")
    assert r.headers["retry-after"] == "1"


async def test_request_ids_are_echoed_or_made(api: Api) -> None:
    r = await api.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await api.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32


async def test_health_readiness_and_prometheus(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    r = await api.client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready", "database": "ok", "worker": "disabled"}
    t = await api.tenant()
    await api.client.post(f"/v1/tenants/{t.tenant_id}/exceptions", json=break_item("P-1"), headers=t.headers("operator"))
    text = (await api.client.get("/metrics")).text
    assert 'breakdesk_http_requests_total{method="POST",route="/v1/tenants/{tenantId}/exceptions",status="202"} 1.0' in text
    assert "breakdesk_intake_accepted_total 1.0" in text
    assert t.tenant_id not in text  # no tenant data in process metrics


async def test_readiness_fails_when_migrations_are_missing(tmp_path: Any) -> None:
    from breakdesk.api import create_app
    from breakdesk.store import Store

    from .conftest import api_settings

    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", migrate=False)
    try:
        app = create_app(api_settings(), store)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["database"] == "unreachable-or-outdated"
    finally:
        await store.close()


async def test_inputs_are_read_strictly(api: Api) -> None:
    """Found by Schemathesis: `true` is not a number and `0.5` is not a timestamp."""
    t = await api.tenant(packs=False)
    r = await api.client.put(f"/v1/tenants/{t.tenant_id}/limits", json={"burst": True}, headers=api.platform)
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "$.burst"
    r = await api.client.put(f"/v1/tenants/{t.tenant_id}/limits", json={"burst": "5"}, headers=api.platform)
    assert r.status_code == 422
    for route in ("exceptions", "metrics"):
        r = await api.client.get(f"/v1/tenants/{t.tenant_id}/{route}", params={"until": "0.5"}, headers=t.headers("admin"))
        assert r.status_code == 422 and r.json()["errors"][0]["path"] == "$.until"
        r = await api.client.get(
            f"/v1/tenants/{t.tenant_id}/{route}", params={"until": "2025-01-01T00:00:00"}, headers=t.headers("admin")
        )
        assert r.status_code == 200  # no zone: UTC
