"""`POST /v1/run` (what-if with named pack versions, never paths, writes nothing), tenants and their API keys
managed over HTTP, and the audit endpoints."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from breakdesk.catalog import Catalog

from .conftest import Api, break_item, mini_domain


def run_body(tenant_id: str | None = None, domain_version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "domainPack": {"name": "mini", "version": domain_version},
        "tenantPolicy": {"version": "1.0.0"},
        "exceptions": [break_item("W-1", amount=5000), break_item("W-2", amount=5), {"rawPayload": []}],
        **extra,
    }
    if tenant_id is not None:
        body["tenantId"] = tenant_id
    return body


async def state(api: Api, tenant_id: str) -> tuple[Any, ...]:
    rows, _ = await api.store.list_exceptions(tenant_id)
    return (await api.store.audit_head(tenant_id), len(rows), await api.store.queue_counts(tenant_id),
            len(await api.store.activation_history(tenant_id)))


async def test_what_if_decides_with_named_versions_and_writes_nothing(api: Api) -> None:
    t = await api.tenant()
    stricter = mini_domain()
    stricter["version"] = "1.5.0"
    stricter["severityRules"][0]["severity"] = "CRITICAL"
    await Catalog(api.store).publish(t.tenant_id, stricter, "v2.yaml", "tests")  # published, not active
    before = await state(api, t.tenant_id)
    r = await api.client.post("/v1/run", json=run_body(), headers=t.headers("operator"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["tenantId"], body["domainPack"], body["tenantPolicy"]) == (t.tenant_id, "mini@1.0.0", f"{t.tenant_id}@1.0.0")
    first, second, third = body["items"]
    assert (first["outcome"], first["severity"], first["status"], first["approvalRequired"]) == (
        "decided", "HIGH", "PENDING_APPROVAL", True
    )
    assert [s["stage"] for s in first["timeline"]][:3] == ["intake", "triage", "policy"]
    assert (second["severity"], second["status"]) == ("MEDIUM", "IN_PROGRESS")
    assert third["outcome"] == "rejected" and "rawPayload" in third["reason"]
    v15 = await api.client.post("/v1/run", json=run_body(domain_version="1.5.0"), headers=t.headers("operator"))
    assert v15.status_code == 200 and v15.json()["items"][0]["severity"] == "CRITICAL"
    assert v15.json()["domainPack"] == "mini@1.5.0"
    incompatible = mini_domain()
    incompatible["version"] = "2.0.0"
    await Catalog(api.store).publish(t.tenant_id, incompatible, "v2.yaml", "tests")
    before = await state(api, t.tenant_id)
    v2 = await api.client.post("/v1/run", json=run_body(domain_version="2.0.0"), headers=t.headers("operator"))
    assert v2.status_code == 422 and v2.json()["type"].endswith("/pack-invalid")  # the policy binds ^1.0.0
    assert await state(api, t.tenant_id) == before  # nothing written, nothing activated
    assert (await api.store.active_pack(t.tenant_id, "domain")).version == "1.0.0"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b["domainPack"].update(path="/etc/passwd"),
        lambda b: b["domainPack"].update(file="packs/finance/domain.yaml"),
        lambda b: b.update(domainPackPath="packs/finance/domain.yaml"),
        lambda b: b["tenantPolicy"].update(url="file:///tmp/x.yaml"),
        lambda b: b.pop("domainPack"),
        lambda b: b.update(exceptions=[]),
    ],
)
async def test_what_if_never_loads_from_a_path(api: Api, tamper: Any) -> None:
    t = await api.tenant()
    body = run_body()
    tamper(body)
    r = await api.client.post("/v1/run", json=body, headers=t.headers("operator"))
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("/validation-error") and r.json()["errors"]


async def test_what_if_scoping(api: Api) -> None:
    a = await api.tenant()
    b = await api.tenant()
    assert (await api.client.post("/v1/run", json=run_body(a.tenant_id), headers=b.headers("admin"))).status_code == 404
    assert (await api.client.post("/v1/run", json=run_body("t-nobody"), headers=b.headers("admin"))).status_code == 404
    assert (await api.client.post("/v1/run", json=run_body(domain_version="9.9.9"), headers=a.headers("operator"))).status_code == 404
    r = await api.client.post("/v1/run", json=run_body(), headers=api.platform)
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "$.tenantId"
    r = await api.client.post("/v1/run", json=run_body(a.tenant_id), headers=api.platform)
    assert r.status_code == 200 and r.json()["tenantId"] == a.tenant_id


# ------------------------------------------------------------------------------------------------- tenants


async def test_platform_admin_manages_tenants(api: Api) -> None:
    new_id = f"acme-{uuid.uuid4().hex[:8]}"
    r = await api.client.post(
        "/v1/tenants", json={"tenantId": new_id, "name": "Acme", "limits": {"requestsPerSecond": 5}}, headers=api.platform
    )
    assert r.status_code == 201, r.text
    assert r.json()["limits"]["requestsPerSecond"] == 5 and r.json()["limits"]["burst"] == 10_000
    assert (await api.client.post("/v1/tenants", json={"tenantId": new_id}, headers=api.platform)).status_code == 409
    for bad in ({"tenantId": "has space"}, {"tenantId": ""}, {"tenantId": "x", "extra": 1}, {"tenantId": "x" * 101}):
        r = await api.client.post("/v1/tenants", json=bad, headers=api.platform)
        assert r.status_code == 422, bad
    listed = (await api.client.get("/v1/tenants", headers=api.platform)).json()["items"]
    assert new_id in {t["tenantId"] for t in listed}
    one = (await api.client.get(f"/v1/tenants/{new_id}", headers=api.platform)).json()
    assert one["name"] == "Acme"
    assert (await api.client.get("/v1/tenants/t-nobody-here", headers=api.platform)).status_code == 404


async def test_admins_manage_their_keys(api: Api) -> None:
    t = await api.tenant(packs=False)
    r = await api.client.post(
        f"/v1/tenants/{t.tenant_id}/api-keys", json={"role": "operator", "name": "ci"}, headers=t.headers("admin")
    )
    assert r.status_code == 201
    created = r.json()
    assert created["key"].startswith(f"bdk_{created['keyId']}_") and created["role"] == "operator"
    who = await api.client.get("/v1/whoami", headers={"X-API-Key": created["key"]})
    assert who.json()["role"] == "operator" and who.json()["name"] == "ci"
    listed = (await api.client.get(f"/v1/tenants/{t.tenant_id}/api-keys", headers=t.headers("admin"))).json()["items"]
    assert created["keyId"] in {k["keyId"] for k in listed}
    assert all("key" not in k and "secretHash" not in k for k in listed)
    for bad in ({"role": "platform-admin", "name": "x"}, {"role": "root", "name": "x"}, {"role": "viewer"}):
        r = await api.client.post(f"/v1/tenants/{t.tenant_id}/api-keys", json=bad, headers=t.headers("admin"))
        assert r.status_code == 422, bad
    r = await api.client.delete(f"/v1/tenants/{t.tenant_id}/api-keys/nope", headers=t.headers("admin"))
    assert r.status_code == 404


async def test_audit_endpoints(api: Api) -> None:
    t = await api.tenant()
    await api.client.post(f"/v1/tenants/{t.tenant_id}/exceptions?wait=true", json=break_item("A-1"), headers=t.headers("operator"))
    h = t.headers("admin")
    page = (await api.client.get(f"/v1/tenants/{t.tenant_id}/audit?limit=3", headers=h)).json()
    assert [e["seq"] for e in page["items"]] == [1, 2, 3] and page["nextAfterSeq"] == 3
    assert page["items"][0]["action"] == "tenant.create"
    assert page["items"][1]["prevHash"] == page["items"][0]["hash"]
    nxt = (await api.client.get(f"/v1/tenants/{t.tenant_id}/audit?limit=3&afterSeq=3", headers=h)).json()
    assert nxt["items"][0]["seq"] == 4
    keys = (await api.client.get(f"/v1/tenants/{t.tenant_id}/audit", params={"subject": "apikey:" + "x"}, headers=h)).json()
    assert keys["items"] == []
    v = (await api.client.get(f"/v1/tenants/{t.tenant_id}/audit/verify", headers=h)).json()
    assert v["ok"] is True and v["checked"] == v["headSeq"] > 5
