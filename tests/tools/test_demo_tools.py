"""The bundled demo tool server: every tool of the example packs answers, in the shape its schema declares,
and the example exceptions are resolved end to end against it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tool_fixtures import fast_settings, make_stack
from tool_harness import compiled

from breakdesk.catalog import Catalog
from breakdesk.cli.run_cmds import run_file
from breakdesk.packs.loader import read_file
from breakdesk.store import Store
from breakdesk.tools.demo_server import DEMO_ENV_SECRETS, DEMO_FILE_SECRETS, PACK_BASE_URL, BackgroundServer
from breakdesk.tools.executor import ToolCall, ToolExecutor

REPO = Path(__file__).resolve().parents[2]
SAMPLES = {"cusip": "037833100", "currency": "USD", "serviceDate": "2025-03-14", "expiryDate": "2026-03-14"}


def sample(name: str, schema: dict[str, Any]) -> Any:
    """A valid value for one parameter of the example packs' tools."""
    if name in SAMPLES:
        return SAMPLES[name]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "array":
        return ["99213"]
    if kind == "boolean":
        return True
    if kind == "object":
        return {"note": "demo"}
    if kind in ("number", "integer"):
        return 1
    return f"{name.upper()}-1001"


async def publish_example_tenant(store: Store, domain: str, tenant: str) -> None:
    dom, dom_src = read_file(REPO / "packs" / domain / "domain.yaml")
    pol, pol_src = read_file(REPO / "packs" / domain / "tenants" / f"{tenant}.yaml")
    await store.create_tenant(tenant, tenant)
    await Catalog(store).publish(tenant, dom, dom_src, "tests", activate=True)
    await Catalog(store).publish(tenant, pol, pol_src, "tests", activate=True)


@pytest.fixture(scope="module")
def demo_server() -> Iterator[BackgroundServer]:
    server = BackgroundServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def demo_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k, v in DEMO_ENV_SECRETS.items():
        monkeypatch.setenv(k, v)
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps(DEMO_FILE_SECRETS), encoding="utf-8")
    monkeypatch.setenv("BREAKDESK_SECRETS_FILE", str(path))


@pytest.mark.parametrize("domain", ["finance", "healthcare"])
async def test_every_example_tool_answers_in_its_declared_shape(
    domain: str, demo_server: BackgroundServer, demo_secrets: None
) -> None:
    dom = yaml.safe_load((REPO / "packs" / domain / "domain.yaml").read_text(encoding="utf-8"))
    policy = {"kind": "TenantPolicy", "tenantId": f"all-{domain}", "version": "1.0.0",
              "domain": {"name": domain, "versionRange": "*"},
              "tools": {"allow": sorted(dom["tools"]), "allowedHosts": ["127.0.0.1"], "allowPrivateNetworks": True}}
    tenant = compiled(dom, policy)
    async with ToolExecutor(fast_settings(url_rewrites={PACK_BASE_URL: demo_server.base_url})) as ex:
        for name, spec in dom["tools"].items():
            props = spec["parameters"].get("properties", {})
            args = {p: sample(p, props[p]) for p in props}
            result = await ex.call(ToolCall(tenant, name, args, f"EX-DEMO:{name}", "EX-DEMO"))
            assert result.succeeded, (name, result.error)
            assert result.attempts[0].status_code in (200, 201)
            assert (spec.get("output") is None) == (tenant.domain.tools[name].output_validator is None)
    calls = httpx.get(f"{demo_server.base_url}/calls").json()
    assert sum(calls.values()) >= len(dom["tools"])


async def test_write_tools_refuse_requests_without_credentials(demo_server: BackgroundServer) -> None:
    async with httpx.AsyncClient(base_url=demo_server.base_url) as client:
        denied = await client.post("/finance/cases", json={"caseType": "X", "title": "t", "reference": "r"})
        assert denied.status_code == 401
        headers = {"Authorization": "Bearer x", "Idempotency-Key": "EX-9:case"}
        one = await client.post("/finance/cases", json={"caseType": "X", "title": "t", "reference": "r"},
                                headers=headers)
        two = await client.post("/finance/cases", json={"caseType": "X", "title": "t", "reference": "r"},
                                headers=headers)
        assert one.json()["caseId"] == two.json()["caseId"]  # the case system dedupes on the key
        assert (await client.get("/healthz")).json()["service"] == "breakdesk-demo-tools"


async def test_example_exceptions_are_resolved_end_to_end(demo_server: BackgroundServer, demo_secrets: None,
                                                          tmp_path: Path) -> None:
    """Northwind's example file against the demo tools: real tool calls resolve exceptions, and everything the
    executor did is in the journal and the audit chain."""
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}") as store, \
            ToolExecutor(fast_settings(url_rewrites={PACK_BASE_URL: demo_server.base_url})) as ex:
        await publish_example_tenant(store, "finance", "northwind-securities")
        stack = make_stack(store, ex)
        report = await run_file(store, REPO / "examples" / "finance.jsonl", "northwind-securities", 100,
                                execution=stack.execution, dry_run=False)
        assert report.by_status["RESOLVED"] >= 10, report.by_status
        assert report.by_status.get("IN_PROGRESS", 0) == 0
        rows, _ = await store.list_exceptions("northwind-securities", status="RESOLVED", limit=5)
        journal = await store.execution_records("northwind-securities", rows[0]["exception_id"])
        assert journal and all(r.status in ("SUCCEEDED", "SKIPPED") for r in journal if r.final)
        assert (await store.verify_audit("northwind-securities")).ok
