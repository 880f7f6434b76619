"""Authorization over *every* route, enumerated from the app itself (a new route is covered automatically):

- a credential of tenant B (each role, API key and JWT) against tenant A's resources gets the same 404 as a
  tenant that does not exist — nothing about A leaks, not even that it exists — and changes nothing;
- every role of tenant A gets exactly what the permission matrix grants (403 otherwise);
- every /v1 route declares exactly one permission, and docs/security.md shows the matrix in force.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.routing import APIRoute

from breakdesk.api.app import api_routes, route_permission, routes_markdown
from breakdesk.api.auth import create_api_key
from breakdesk.api.deps import Require
from breakdesk.api.rbac import TENANT_ROLES, Role, actions_markdown, allowed, matrix_markdown

from .conftest import Api, Tenant, break_item, mini_domain

SECRET = "matrix-test-secret-0123456789abcdef"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
PARAM = re.compile(r"\{(\w+)\}")


def bearer(tenant_id: str, roles: list[str], sub: str = "someone") -> dict[str, str]:
    token = jwt.encode(
        {"sub": sub, "tenant": tenant_id, "roles": roles, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256"
    )
    return {"Authorization": f"Bearer {token}"}


def v1_routes(api: Api) -> list[tuple[str, str, APIRoute]]:
    out = []
    for route in api_routes(api.app):
        if route.path.startswith("/v1"):
            out.extend((method, route.path, route) for method in sorted(route.methods or ()))
    assert len(out) >= 28
    return out


def body_for(method: str, path: str, tenant_id: str) -> tuple[Any, dict[str, str]]:
    """A *valid* body for each route, so a broken check would show up as a success, not a 422."""
    if path.endswith("/exceptions") and method == "POST":
        return [break_item(f"X-{uuid.uuid4().hex[:6]}")], {}
    if path.endswith("/actions"):
        return {"action": "comment", "text": "looked at it"}, {}
    if path.endswith("/api-keys") and method == "POST":
        return {"role": "viewer", "name": "made in the matrix"}, {}
    if path.endswith("/limits"):
        return {"requestsPerSecond": 5000, "burst": 5000}, {}
    if path == "/v1/tenants" and method == "POST":
        return {"tenantId": f"m-{uuid.uuid4().hex[:10]}"}, {}
    if (path.endswith("/packs") and method == "POST") or path.endswith("/packs/validate"):
        pack = mini_domain()
        pack["version"] = "1.0.0"
        return pack, {}
    if path.endswith("/approve"):
        return {"comment": "checked in the matrix"}, {}
    if path.endswith("/reject"):
        return {"comment": "not in the matrix"}, {}
    if path == "/v1/run":
        return {
            "tenantId": tenant_id,
            "domainPack": {"name": "mini", "version": "1.0.0"},
            "tenantPolicy": {"version": "1.0.0"},
            "exceptions": [break_item("R1")],
        }, {}
    return None, {}


async def resources(api: Api, t: Tenant) -> dict[str, str]:
    """Path parameter values naming real resources of tenant `t`."""
    r = await api.client.post(
        f"/v1/tenants/{t.tenant_id}/exceptions?wait=true", json=[break_item("A-1")], headers=t.headers("operator")
    )
    assert r.status_code == 200, r.text
    item = r.json()["items"][0]
    r = await api.client.post(  # a HIGH break with a write step: waits for approval
        f"/v1/tenants/{t.tenant_id}/exceptions?wait=true", json=[break_item("A-2", 5000)], headers=t.headers("operator")
    )
    assert r.status_code == 200 and r.json()["items"][0]["status"] == "PENDING_APPROVAL", r.text
    approvals, _ = await api.store.list_approvals(t.tenant_id)
    victim, _ = await create_api_key(api.store, t.tenant_id, Role.VIEWER, "victim", "tests")
    return {
        "exceptionId": item["exceptionId"],
        "approvalId": approvals[0].approval_id,
        "queueId": str(item["queueId"]),
        "keyId": victim.key_id,
        "kind": "domain",
        "name": "mini",
        "version": "1.0.0",
    }


def fill(path: str, tenant_id: str, params: dict[str, str]) -> str:
    return PARAM.sub(lambda m: tenant_id if m.group(1) == "tenantId" else params[m.group(1)], path)


def query_for(path: str) -> dict[str, str]:
    return {"from": "1.0.0", "to": "1.0.0"} if path.endswith("/diff") else {}


async def call(api: Api, method: str, path: str, tenant_id: str, params: dict[str, str], headers: dict[str, str]) -> Any:
    body, extra = body_for(method, path, tenant_id)
    return await api.client.request(
        method,
        fill(path, tenant_id, params),
        params=query_for(path),
        json=body,
        headers={**headers, **extra},
    )


async def snapshot(api: Api, tenant_id: str) -> tuple[Any, ...]:
    rows, _ = await api.store.list_exceptions(tenant_id, limit=1000)
    return (
        await api.store.audit_head(tenant_id),
        await api.store.queue_counts(tenant_id),
        sorted((r["exception_id"], r["status"], str(r["updated_at"])) for r in rows),
        [(k.key_id, k.revoked_at) for k in await api.store.list_api_keys(tenant_id)],
        [p.ref for p in await api.store.list_pack_versions(tenant_id)],
        [(a.approval_id, a.status, len(a.approvers)) for a in (await api.store.list_approvals(tenant_id))[0]],
        len(await api.store.activation_history(tenant_id)),
        (await api.store.get_tenant(tenant_id)).settings,  # type: ignore[union-attr]
    )


def every_route_declares_one_permission(api: Api) -> None:
    for method, path, route in v1_routes(api):
        requires = [d for d in route.dependant.dependencies if isinstance(d.call, Require)]
        assert len(requires) == 1, f"{method} {path} must declare exactly one require(...)"


async def test_every_v1_route_declares_exactly_one_permission(api: Api) -> None:
    every_route_declares_one_permission(api)
    public = {r.path for r in api_routes(api.app) if route_permission(r) is None}
    assert public == {"/healthz", "/readyz", "/metrics"}


async def test_foreign_tenant_credentials_get_the_nonexistent_tenant_404_everywhere(make_api: Any) -> None:
    async with make_api(jwt_hs256_secret=SECRET) as api:
        a = await api.tenant()
        b = await api.tenant()
        params = await resources(api, a)
        before = await snapshot(api, a.tenant_id)
        ghost = f"t-{uuid.uuid4().hex[:12]}"
        credentials = {f"{role} key": b.headers(role) for role in b.keys}
        credentials["jwt admin"] = bearer(b.tenant_id, ["admin"])
        credentials["jwt operator"] = bearer(b.tenant_id, ["operator", "viewer"])
        checked = 0
        for method, path, _ in v1_routes(api):
            for label, headers in credentials.items():
                r = await call(api, method, path, a.tenant_id, params, headers)
                where = f"{label}: {method} {path}"
                if "{tenantId}" in path:
                    assert r.status_code == 404, f"{where} -> {r.status_code} {r.text}"
                    assert r.headers["content-type"] == "application/problem+json"
                    ghost_r = await call(api, method, path, ghost, params, headers)
                    assert ghost_r.status_code == 404, where
                    mine = r.json()
                    theirs = ghost_r.json()
                    assert mine.pop("instance").replace(a.tenant_id, "T") == theirs.pop("instance").replace(ghost, "T")
                    assert mine == theirs, f"{where}: A's 404 differs from a missing tenant's"
                    assert a.tenant_id not in r.text.replace(fill(path, a.tenant_id, params), ""), where
                    assert "mini" not in r.text.replace(fill(path, a.tenant_id, params), ""), where
                elif path == "/v1/run":  # the tenant is in the body, read after the role check
                    expected = 404 if label != "viewer key" else 403
                    assert r.status_code == expected, f"{where} -> {r.status_code} {r.text}"
                elif path == "/v1/whoami":
                    assert r.status_code == 200 and r.json()["tenantId"] == b.tenant_id, where
                else:  # platform routes
                    assert r.status_code == 403, f"{where} -> {r.status_code} {r.text}"
                echoed = r.text.replace(fill(path, a.tenant_id, params), "")  # `instance` echoes the caller's path
                for field in ("exceptionId", "keyId", "approvalId"):
                    assert params[field] not in echoed, f"{where} leaks {field}"
                checked += 1
        assert checked >= 28 * len(credentials)
        assert await snapshot(api, a.tenant_id) == before, "a foreign credential changed tenant A"


async def test_every_role_gets_exactly_what_the_matrix_grants(make_api: Any) -> None:
    async with make_api(jwt_hs256_secret=SECRET) as api:
        a = await api.tenant()
        params = await resources(api, a)
        principals: list[tuple[str, Role, dict[str, str]]] = [
            (f"{r.label} key", r, a.headers(r.label)) for r in TENANT_ROLES
        ]
        principals += [(f"{r.label} jwt", r, bearer(a.tenant_id, [r.label])) for r in TENANT_ROLES]
        principals.append(("platform key", Role.PLATFORM_ADMIN, api.platform))
        principals.append(("platform jwt", Role.PLATFORM_ADMIN, bearer("ignored", ["platform-admin"])))
        for method, path, route in v1_routes(api):
            permission = route_permission(route)
            assert permission is not None
            for label, role, headers in principals:
                r = await call(api, method, path, a.tenant_id, params, headers)
                where = f"{label}: {method} {path} ({permission})"
                if allowed(role, permission):
                    assert r.status_code not in (401, 403), f"{where} -> {r.status_code} {r.text}"
                    assert r.status_code < 500, f"{where} -> {r.status_code} {r.text}"
                    if r.status_code == 404:  # only a resource the route itself could not find, never the tenant
                        assert r.json()["detail"] != "no such tenant", where
                else:
                    assert r.status_code == 403, f"{where} -> {r.status_code} {r.text}"
                    assert r.json()["type"].endswith("/forbidden")
                    assert permission in r.json()["detail"]


@pytest.mark.parametrize("role", [r.label for r in TENANT_ROLES])
async def test_severity_override_needs_approver(api: Api, role: str) -> None:
    t = await api.tenant()
    params = await resources(api, t)
    r = await api.client.post(
        f"/v1/tenants/{t.tenant_id}/exceptions/{params['exceptionId']}/actions",
        json={"action": "override_severity", "severity": "CRITICAL", "reason": "customer impact"},
        headers=t.headers(role),
    )
    expected = 200 if allowed(Role.parse(role) or Role.VIEWER, "exceptions.override") else 403
    assert r.status_code == expected, r.text


def test_docs_show_the_permission_matrix_in_force() -> None:
    from breakdesk.api import ApiSettings, create_app

    text = DOCS.read_text(encoding="utf-8")
    app = create_app(ApiSettings(access_log=False, worker_enabled=False))
    for name, table in (
        ("permission matrix", matrix_markdown()),
        ("action permissions", actions_markdown()),
        ("route table", routes_markdown(app)),
    ):
        assert table in text, f"docs/security.md is out of date: paste this {name}:\n\n{table}\n"
    from breakdesk.api.settings import ApiSettings as Settings

    missing = [f"BREAKDESK_{n.upper()}" for n in Settings.model_fields if f"`BREAKDESK_{n.upper()}`" not in text]
    assert not missing, f"docs/security.md does not document {missing}"
