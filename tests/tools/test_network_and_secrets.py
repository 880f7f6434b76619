"""SSRF refusals (network policy per tenant) and secrets: injected into headers, never recorded anywhere."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import structlog
from tool_harness import (
    ToolServer,
    domain_pack,
    playbook,
    setup_tenant,
    single_tool_tenant,
    step,
    submit,
    tenant_policy,
    tool,
    uid,
)

from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.store import Store
from breakdesk.tools.executor import ToolCall, ToolExecutor
from breakdesk.tools.secrets import Redactor, SecretError, SecretResolver
from breakdesk.tools.ssrf import HostGuard, UnsafeTarget, host_allowed


def call(tenant: Any, args: dict[str, Any] | None = None) -> ToolCall:
    return ToolCall(tenant, "t1", args or {"ref": "R-1"}, "EX-1:s1", "EX-1")


def tid() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------- SSRF


def fixed_resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    "url, allowed, private, problem",
    [
        ("http://127.0.0.1:9/x", [], False, "loopback"),
        ("http://127.0.0.1:9/x", ["127.0.0.1"], False, "loopback"),
        ("http://127.0.0.1:9/x", [], True, "loopback"),  # private needs the host listed too
        ("http://10.1.2.3/x", ["*.corp.example"], True, "not in tools.allowedHosts"),
        ("http://169.254.169.254/latest/meta-data", [], False, "link-local"),
        ("http://[::1]/x", [], False, "loopback"),
        ("http://[::ffff:127.0.0.1]/x", [], False, "loopback"),
        ("http://0.0.0.0/x", ["0.0.0.0"], True, "unspecified"),
        ("http://224.0.0.1/x", ["224.0.0.1"], True, "multicast"),
        ("http://localhost/x", [], False, "loopback"),
        ("http://internal.example/x", [], False, "private"),
        ("http://rebind.example/x", [], False, "private"),  # one public and one private answer
        ("http://user:pw@api.example/x", [], False, "credentials"),
        ("ftp://api.example/x", [], False, "scheme"),
        ("http://nxdomain.example/x", [], False, "cannot be resolved"),
    ],
)
async def test_guard_refuses(url: str, allowed: list[str], private: bool, problem: str) -> None:
    guard = HostGuard(fixed_resolver({
        "localhost": ["127.0.0.1"],
        "internal.example": ["192.168.1.20"],
        "rebind.example": ["93.184.216.34", "10.0.0.5"],
        "api.example": ["93.184.216.34"],
    }))
    with pytest.raises(UnsafeTarget, match=problem):
        await guard.check(url, allowed, private)


async def test_guard_accepts_and_pins_the_checked_address() -> None:
    guard = HostGuard(fixed_resolver({"api.example": ["93.184.216.34"], "svc.corp.example": ["10.0.0.7"]}))
    public = await guard.check("https://api.example:8443/v1/x?y=1", [], False)
    assert public.url == "https://93.184.216.34:8443/v1/x?y=1"
    assert public.host_header == "api.example:8443" and public.sni_hostname == "api.example"
    private = await guard.check("http://svc.corp.example/x", ["*.corp.example"], True)
    assert private.address == "10.0.0.7" and private.sni_hostname is None
    loop = await guard.check("http://127.0.0.1:8765/x", ["127.0.0.1"], True)
    assert loop.url == "http://127.0.0.1:8765/x"


def test_host_patterns() -> None:
    assert host_allowed("a.corp.example", ["*.corp.example"])
    assert not host_allowed("corp.example", ["*.corp.example"])
    assert not host_allowed("evilcorp.example", ["*.corp.example"])
    assert host_allowed("API.Example.", ["api.example"])


async def test_executor_refuses_private_addresses_without_sending(
    executor: ToolExecutor, tool_server: ToolServer
) -> None:
    n = uid()
    spec = tool(f"{tool_server.base}/ok/{n}")
    for tools_policy in ({"allowPrivateNetworks": False}, {"allowedHosts": [], "allowPrivateNetworks": True},
                         {"allowedHosts": ["tools.example"]}):
        result = await executor.call(call(single_tool_tenant(tid(), spec, tools=tools_policy)))
        assert result.refused and "network policy" in (result.error or ""), (tools_policy, result)
    assert tool_server.counts[n] == 0
    allowed = await executor.call(call(single_tool_tenant(tid(), spec)))  # 127.0.0.1 listed + private allowed
    assert allowed.succeeded and tool_server.counts[n] == 1


# ---------------------------------------------------------------------------------------------- secrets


def test_resolver_reads_env_and_secrets_files(tmp_path: Path) -> None:
    redactor = Redactor()
    yaml_file = tmp_path / "secrets.yaml"
    yaml_file.write_text("relay: s3cret-from-yaml\n", encoding="utf-8")
    json_file = tmp_path / "secrets.json"
    json_file.write_text(json.dumps({"relay": "s3cret-from-json"}), encoding="utf-8")
    env = {"TOKEN": "tok-123456", "BREAKDESK_SECRETS_FILE": str(yaml_file)}
    resolver = SecretResolver(redactor, environ=env)
    assert resolver.resolve("env:TOKEN") == "tok-123456"
    assert resolver.resolve("file:relay") == "s3cret-from-yaml"
    assert SecretResolver(redactor, environ={}, secrets_file=json_file).resolve("file:relay") == "s3cret-from-json"
    for ref, why in (("env:MISSING", "not set"), ("file:nope", "not in the secrets file")):
        with pytest.raises(SecretError, match=why):
            resolver.resolve(ref)
    with pytest.raises(SecretError, match="no secrets file"):
        SecretResolver(redactor, environ={}).resolve("file:relay")
    assert redactor.redact({"a": ["x tok-123456 y"], "b": "s3cret-from-yaml"}) == {"a": ["x *** y"], "b": "***"}


async def test_missing_secret_refuses_the_call(executor: ToolExecutor, tool_server: ToolServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    n = uid()
    monkeypatch.delenv("BD_TEST_ABSENT", raising=False)
    spec = tool(f"{tool_server.base}/ok/{n}", secret={"ref": "env:BD_TEST_ABSENT"})
    result = await executor.call(call(single_tool_tenant(tid(), spec)))
    assert result.refused and result.error == "secret env:BD_TEST_ABSENT is not set"
    assert tool_server.counts[n] == 0


async def test_secrets_are_sent_but_never_stored_or_logged(
    store: Store, orch: Orchestrator, tool_server: ToolServer, tenant_id: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A tool server that echoes its headers back, and one that fails with the secret in its error body: the
    value reaches the tool, and appears in no event, audit entry, journal row, approval or log line."""
    secret, file_secret = f"sk-live-{uuid.uuid4().hex}", f"relay-{uuid.uuid4().hex}"
    monkeypatch.setenv("BD_TEST_TOKEN", secret)
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"relay_key": file_secret}), encoding="utf-8")
    monkeypatch.setenv("BREAKDESK_SECRETS_FILE", str(secrets_file))
    echo, relay = uid(), uid()
    tools = {
        "echo": tool(f"{tool_server.base}/echo/{echo}",
                     secret={"header": "Authorization", "ref": "env:BD_TEST_TOKEN", "format": "Bearer {value}"}),
        "relay": tool(f"{tool_server.base}/echo/{relay}", secret={"header": "X-Relay-Key", "ref": "file:relay_key"}),
        "leak": tool(f"{tool_server.base}/echo/{uid()}?status=500", secret={"ref": "env:BD_TEST_TOKEN"}),
    }
    dom = domain_pack(tools, [playbook("pb", [
        step("echo", "echo"),
        step("relay", "relay"),
        step("leak", "leak", args={"ref": "${steps.echo.output.headers.authorization}"}),
    ])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    buf = io.StringIO()
    structlog.reset_defaults()  # another test in this process may have configured a WARNING-level filter
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    try:
        eid, _ = await submit(orch, tenant_id, "R-SECRET")
    finally:
        structlog.reset_defaults()
    assert tool_server.headers[echo]["authorization"] == f"Bearer {secret}"
    assert tool_server.headers[relay]["x-relay-key"] == file_secret
    row = await store.get_exception(tenant_id, eid)
    assert row is not None and row["status"] == "ESCALATED"  # the leaking step failed (HTTP 500)
    journal = await store.execution_records(tenant_id, eid)
    assert [r.args["ref"] for r in journal if r.step_id == "leak"] == ["Bearer ***"]
    assert "HTTP 500" in (journal[-1].error or "") and "***" in (journal[-1].error or "")
    stored = json.dumps({
        "events": await store.get_events(tenant_id, eid),
        "audit": [e.detail for e in await store.get_audit(tenant_id, limit=1000)],
        "journal": [r.as_dict() for r in await store.execution_records(tenant_id, eid)],
        "row": row,
    }, default=str)
    logs = buf.getvalue()
    assert "tool.attempt" in logs and "***" in stored
    for value in (secret, file_secret):
        assert value not in stored and value not in logs
    assert (await store.verify_audit(tenant_id)).ok
