"""`breakdesk approvals list|show|approve|reject|expire` and `breakdesk executions`, in-process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tool_fixtures import make_stack
from tool_harness import (
    ToolServer,
    domain_pack,
    playbook,
    setup_tenant,
    step,
    submit,
    tenant_policy,
    tool,
    uid,
)
from typer.testing import CliRunner

from breakdesk.cli import _register, app
from breakdesk.store import Store
from breakdesk.tools.executor import ToolExecutor

_register()
runner = CliRunner()


def setup(url: str, server: ToolServer, tenant: str, count: int) -> tuple[str, list[str]]:
    act = uid("act")

    async def go() -> list[str]:
        async with await Store.open(url) as store, ToolExecutor() as ex:
            dom = domain_pack({"act": tool(f"{server.base}/ok/{act}", idempotent=False)},
                              [playbook("pb", [step("act", "act")])])
            rule = {"id": "all", "approverRoles": ["approver"]}
            await setup_tenant(store, tenant, dom, tenant_policy(tenant, dom, approvalRules=[rule]))
            stack = make_stack(store, ex)
            return [(await submit(stack.orch, tenant, f"R-{i}"))[0] for i in range(count)]

    return act, asyncio.run(go())


def approvals_of(url: str, tenant: str) -> list[dict[str, object]]:
    done = runner.invoke(app, ["approvals", "list", "--tenant", tenant, "--db", url, "--json", "--all"])
    assert done.exit_code == 0, done.output
    return list(json.loads(done.output))


def test_cli_approvals_flow(tmp_path: Path, tool_server: ToolServer, tenant_id: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    act, eids = setup(url, tool_server, tenant_id, 3)
    listed = runner.invoke(app, ["approvals", "list", "--tenant", tenant_id, "--db", url])
    assert listed.exit_code == 0 and "3 approval request(s)" in listed.output, listed.output
    items = {a["exceptionId"]: a["approvalId"] for a in approvals_of(url, tenant_id)}
    narrow = runner.invoke(app, ["approvals", "list", "--tenant", tenant_id, "--db", url], terminal_width=60)
    for eid, aid in items.items():  # each request's ids whole on one line, even at 60 columns
        assert any(aid in line and str(eid) in line and "PENDING" in line for line in narrow.output.splitlines())
    first, second, third = (str(items[e]) for e in eids)

    shown = runner.invoke(app, ["approvals", "show", first, "--tenant", tenant_id, "--db", url])
    assert shown.exit_code == 0 and json.loads(shown.output)["status"] == "PENDING"

    refused = runner.invoke(app, ["approvals", "approve", first, "--tenant", tenant_id, "--db", url,
                                  "--as", "pipeline"])
    assert refused.exit_code == 1 and "automated actor" in refused.output
    for verb in ("approve", "reject"):  # an empty --as is refused, not recorded under the login name
        blank = runner.invoke(app, ["approvals", verb, first, "--tenant", tenant_id, "--db", url, "--as", "",
                                    "-m", "why", "--no-execute"] if verb == "approve" else
                              ["approvals", verb, first, "--tenant", tenant_id, "--db", url, "--as", "", "-m", "why"])
        assert blank.exit_code == 1 and "an approver must be named" in blank.output, blank.output
    approved = runner.invoke(app, ["approvals", "approve", first, "--tenant", tenant_id, "--db", url,
                                   "--as", "bob", "--role", "approver", "-m", "looks right",
                                   "--edits", json.dumps({"act": {"ref": "R-EDITED"}})])
    assert approved.exit_code == 0, approved.output
    assert "APPROVED by bob" in approved.output and "execution: RESOLVED" in approved.output
    assert tool_server.counts[act] == 1 and json.loads(tool_server.bodies[act][0]) == {"ref": "R-EDITED"}

    journal = runner.invoke(app, ["executions", eids[0], "--tenant", tenant_id, "--db", url], terminal_width=70)
    assert journal.exit_code == 0 and "SUCCEEDED" in journal.output
    assert any(line.split()[4:8] == ["act", "SUCCEEDED", "✓", "200"] for line in journal.output.splitlines()), \
        journal.output
    waiting = runner.invoke(app, ["executions", eids[2], "--tenant", tenant_id, "--db", url])
    assert waiting.exit_code == 0 and f"no execution recorded for {eids[2]}" in waiting.output
    for who, eid in ((tenant_id, "NO-SUCH-EXC"), ("other-tenant", eids[0])):  # unknown here: not "no execution"
        unknown = runner.invoke(app, ["executions", eid, "--tenant", who, "--db", url])
        assert unknown.exit_code == 1 and f"no exception {eid!r} for tenant {who!r}" in unknown.output

    no_reason = runner.invoke(app, ["approvals", "reject", second, "--tenant", tenant_id, "--db", url,
                                    "--as", "bob", "-m", ""])
    assert no_reason.exit_code == 1 and "reason" in no_reason.output
    rejected = runner.invoke(app, ["approvals", "reject", second, "--tenant", tenant_id, "--db", url,
                                   "--as", "bob", "-m", "not ours", "--close"])
    assert rejected.exit_code == 0 and "REJECTED by bob" in rejected.output

    expired = runner.invoke(app, ["approvals", "expire", "--db", url])
    assert expired.exit_code == 0 and "0 approval request(s) expired" in expired.output
    statuses = {a["approvalId"]: a["status"] for a in approvals_of(url, tenant_id)}
    assert statuses == {first: "APPROVED", second: "REJECTED", third: "PENDING"}
    assert tool_server.counts[act] == 1


def test_cli_expire_goes_on_past_a_page(tmp_path: Path, tool_server: ToolServer, tenant_id: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`approvals expire` expires every due request, however many: a page at a time (here of 2)."""
    import sqlite3

    from breakdesk.cli import tool_cmds

    url = f"sqlite+aiosqlite:///{tmp_path / 'expire.db'}"
    setup(url, tool_server, tenant_id, 5)
    with sqlite3.connect(tmp_path / "expire.db") as db:
        db.execute("UPDATE approvals SET expires_at = '2000-01-01 00:00:00.000000'")
    monkeypatch.setattr(tool_cmds, "EXPIRE_PAGE", 2)
    expired = runner.invoke(app, ["approvals", "expire", "--db", url])
    assert expired.exit_code == 0 and "5 approval request(s) expired" in expired.output, expired.output
    assert {a["status"] for a in approvals_of(url, tenant_id)} == {"EXPIRED"}
