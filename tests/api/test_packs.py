"""Packs over HTTP, all through the shared Catalog: publish JSON or YAML, validate only (every problem with its
path), list, read, activate, roll back, diff and run test suites — for domain packs and tenant policies."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .conftest import Api, Tenant, mini_domain, mini_policy


def url(t: Tenant, rest: str = "") -> str:
    return f"/v1/tenants/{t.tenant_id}/packs{rest}"


def yaml_body(data: dict[str, Any]) -> bytes:
    return yaml.safe_dump(data, sort_keys=False).encode()


async def publish(api: Api, t: Tenant, data: dict[str, Any], *, as_yaml: bool = False, activate: bool = False) -> Any:
    headers = {**t.headers("admin"), "Content-Type": "application/yaml" if as_yaml else "application/json"}
    content = yaml_body(data) if as_yaml else None
    return await api.client.post(
        url(t),
        params={"activate": "true"} if activate else None,
        content=content,
        json=None if as_yaml else data,
        headers=headers,
    )


def domain_v(version: str, **changes: Any) -> dict[str, Any]:
    data = mini_domain()
    data["version"] = version
    data.update(changes)
    return data


async def test_publish_json_and_yaml_activate_and_list(api: Api) -> None:
    t = await api.tenant(packs=False)
    r = await publish(api, t, domain_v("1.0.0"), activate=True)
    assert r.status_code == 201, r.text
    assert r.json()["pack"] | {"publishedAt": "", "contentHash": ""} == {
        "kind": "domain", "name": "mini", "version": "1.0.0", "contentHash": "", "publishedAt": "",
        "publishedBy": r.json()["pack"]["publishedBy"], "active": True,
    }
    assert r.json()["created"] is True and r.json()["activated"]["action"] == "activate"
    assert r.json()["pack"]["publishedBy"].startswith("apikey:")
    again = await publish(api, t, domain_v("1.0.0"), as_yaml=True)  # same content as YAML: idempotent
    assert again.status_code == 200 and again.json()["created"] is False
    r = await publish(api, t, mini_policy(t.tenant_id), as_yaml=True, activate=True)
    assert r.status_code == 201 and r.json()["pack"]["kind"] == "tenant"
    r = await publish(api, t, domain_v("1.1.0", description="newer"))
    assert r.status_code == 201 and r.json()["pack"]["active"] is False
    listing = (await api.client.get(url(t), headers=t.headers("admin"))).json()
    assert listing["active"] == {"domain": "mini@1.0.0", "tenant": f"{t.tenant_id}@1.0.0"}
    assert [(p["kind"], p["version"], p["active"]) for p in listing["items"]] == [
        ("domain", "1.0.0", True), ("tenant", "1.0.0", True), ("domain", "1.1.0", False)
    ]
    only = (await api.client.get(url(t), params={"kind": "tenant"}, headers=t.headers("admin"))).json()
    assert [p["name"] for p in only["items"]] == [t.tenant_id]
    content = (await api.client.get(url(t, "/domain/mini/versions/1.1.0"), headers=t.headers("admin"))).json()
    assert content["content"]["description"] == "newer" and content["pack"]["active"] is False
    assert (await api.client.get(url(t, "/domain/mini/versions/9.9.9"), headers=t.headers("admin"))).status_code == 404


async def test_versions_are_immutable(api: Api) -> None:
    t = await api.tenant(packs=False)
    assert (await publish(api, t, domain_v("1.0.0"))).status_code == 201
    r = await publish(api, t, domain_v("1.0.0", description="changed"))
    assert r.status_code == 409 and "immutable" in r.json()["detail"]


async def test_validate_only_returns_every_problem_with_its_path(api: Api) -> None:
    t = await api.tenant(packs=False)
    bad = domain_v("not-semver")
    bad["severityRules"][0]["severity"] = "URGENT"
    bad["playbooks"][0]["steps"][0]["tool"] = "noSuchTool"
    bad["surprise"] = True
    r = await api.client.post(url(t, "/validate"), json=bad, headers=t.headers("admin"))
    assert r.status_code == 422 and r.json()["type"].endswith("/pack-invalid")
    problems = r.json()["errors"]
    paths = {p["path"] for p in problems}
    assert {"$.version", "$.severityRules[0].severity", "$.surprise"} <= paths
    assert all(p["in"] == "body" and p["file"] == "body" and p["message"] for p in problems)
    assert r.json()["detail"] == f"{len(problems)} problems in the pack"
    r = await api.client.post(url(t, "/validate"), json=domain_v("2.0.0"), headers=t.headers("admin"))
    assert r.status_code == 200
    assert r.json() == {"valid": True, "kind": "domain", "name": "mini", "version": "2.0.0"}
    assert (await api.client.get(url(t), headers=t.headers("admin"))).json()["items"] == []  # nothing published
    cross = copy.deepcopy(domain_v("2.0.0"))
    cross["playbooks"][0]["steps"][0]["tool"] = "noSuchTool"
    r = await api.client.post(url(t, "/validate"), json=cross, headers=t.headers("admin"))
    assert r.status_code == 422 and any("noSuchTool" in p["message"] for p in r.json()["errors"])
    r = await api.client.post(url(t, "/validate"), json=mini_policy(t.tenant_id), headers=t.headers("admin"))
    assert r.status_code == 422 and "publish the domain pack first" in r.json()["errors"][0]["message"]


async def test_publishing_an_invalid_pack_is_a_pack_problem(api: Api) -> None:
    t = await api.tenant(packs=False)
    r = await api.client.post(
        url(t), content=b"kind: DomainPack\nname: [unclosed\n", headers={**t.headers("admin"), "Content-Type": "application/yaml"}
    )
    assert r.status_code == 422 and r.json()["type"].endswith("/pack-invalid")
    assert r.json()["errors"][0]["path"] == "$" and "invalid YAML" in r.json()["errors"][0]["message"]
    r = await api.client.post(url(t), content=b"a: 1\na: 2\n", headers={**t.headers("admin"), "Content-Type": "text/yaml"})
    assert r.status_code == 422 and "duplicate key" in r.json()["errors"][0]["message"]
    policy = mini_policy("someone-else")
    r = await publish(api, t, policy)
    assert r.status_code == 422
    r = await api.client.post(url(t), content=b"<xml/>", headers={**t.headers("admin"), "Content-Type": "application/xml"})
    assert r.status_code == 415


async def test_activate_rollback_and_refusals(api: Api) -> None:
    t = await api.tenant(packs=False)
    await publish(api, t, domain_v("1.0.0"))
    await publish(api, t, domain_v("1.1.0", description="b"))
    h = t.headers("admin")
    # a tenant policy cannot be activated before a domain pack
    await publish(api, t, mini_policy(t.tenant_id))
    r = await api.client.post(url(t, f"/tenant/{t.tenant_id}/versions/1.0.0/activate"), headers=h)
    assert r.status_code == 422 and r.json()["type"].endswith("/pack-invalid")
    r = await api.client.post(url(t, "/domain/mini/versions/1.0.0/activate"), headers=h)
    assert r.status_code == 200 and r.json()["action"] == "activate"
    r = await api.client.post(url(t, "/domain/mini/versions/1.1.0/activate"), headers=h)
    assert r.json()["version"] == "1.1.0"
    r = await api.client.post(url(t, "/domain/rollback"), headers=h)
    assert (r.status_code, r.json()["version"], r.json()["action"]) == (200, "1.0.0", "rollback")
    r = await api.client.post(url(t, "/domain/rollback"), headers=h)
    assert r.status_code == 404  # nothing earlier
    r = await api.client.post(url(t, "/domain/mini/versions/7.0.0/activate"), headers=h)
    assert r.status_code == 404
    history = (await api.client.get(url(t, "/activations"), headers=h)).json()["items"]
    assert [(a["action"], a["version"]) for a in history] == [("activate", "1.0.0"), ("activate", "1.1.0"), ("rollback", "1.0.0")]
    assert (await api.client.get(url(t, "/activations?kind=tenant"), headers=h)).json()["items"] == []
    audit = await api.store.get_audit(t.tenant_id, "pack:domain:mini@1.0.0")
    assert [e.action for e in audit] == ["pack.publish", "pack.activate", "pack.rollback"]


async def test_diff(api: Api) -> None:
    t = await api.tenant(packs=False)
    await publish(api, t, domain_v("1.0.0"))
    changed = domain_v("1.1.0")
    changed["severityRules"][0]["severity"] = "CRITICAL"
    del changed["tools"]["fixOrder"]
    changed["playbooks"][0]["steps"] = changed["playbooks"][0]["steps"][:1]
    await publish(api, t, changed)
    r = await api.client.get(url(t, "/domain/mini/diff"), params={"from": "1.0.0", "to": "1.1.0"}, headers=t.headers("admin"))
    assert r.status_code == 200
    d = r.json()
    assert (d["fromVersion"], d["toVersion"]) == ("1.0.0", "1.1.0")
    assert d["changes"]["tools"]["removed"] == ["fixOrder"]
    assert "big-break" in d["changes"]["severityRules"]["changed"]
    r = await api.client.get(url(t, "/domain/mini/diff"), params={"from": "1.0.0", "to": "3.0.0"}, headers=t.headers("admin"))
    assert r.status_code == 404
    r = await api.client.get(url(t, "/domain/mini/diff"), params={"from": "1.0.0"}, headers=t.headers("admin"))
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "$.to"


async def test_pack_test_suites(api: Api) -> None:
    t = await api.tenant()  # mini domain + policy active
    h = t.headers("admin")
    r = await api.client.post(url(t, "/domain/mini/versions/1.0.0/test"), headers=h)
    assert r.status_code == 200
    body = r.json()
    assert body["failed"] == 0 and body["passed"] == 3
    assert {c["suite"] for c in body["results"]} == {"mini@1.0.0", f"{t.tenant_id}@1.0.0"}
    r = await api.client.post(url(t, f"/tenant/{t.tenant_id}/versions/1.0.0/test"), headers=h)
    assert r.status_code == 200 and r.json()["passed"] == 2 and r.json()["failed"] == 0
    failing = domain_v("1.0.1")
    failing["tests"][0]["expect"]["severity"] = "LOW"
    await publish(api, t, failing)
    body = (await api.client.post(url(t, "/domain/mini/versions/1.0.1/test"), headers=h)).json()
    assert body["failed"] == 1
    [bad] = [c for c in body["results"] if not c["passed"]]
    assert bad["failures"] == ["severity: expected LOW, got HIGH"] and bad["actual"]["severity"] == "HIGH"
    assert (await api.client.post(url(t, "/domain/mini/versions/4.0.0/test"), headers=h)).status_code == 404
