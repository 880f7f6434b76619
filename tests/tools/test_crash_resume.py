"""Durable execution: a worker SIGKILLed in the middle of a playbook, and a new process that resumes it.

The tool server holds step 2's request open until the test has killed the worker, so the kill lands while a
call is in flight, after step 1 (not idempotent) has been sent and settled. Each test runs on SQLite and on
PostgreSQL (their journal writes take different paths: see `store/executions.py`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tool_harness import (
    ToolServer,
    domain_pack,
    playbook,
    release,
    setup_tenant,
    step,
    tenant_policy,
    tool,
    uid,
)

from breakdesk.pipeline.execution import ExecutionService
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.store import Store
from breakdesk.tools.executor import ToolExecutor

REPO = Path(__file__).resolve().parents[2]


def start_worker(url: str, tenant: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """`breakdesk run` on a one-line file, in its own process (the worker we are going to kill)."""
    lines = tmp_path / "one.jsonl"
    lines.write_text(json.dumps({"exceptionType": "BROKEN", "sourceSystem": "tests",
                                 "rawPayload": {"ref": "R-CRASH"}}) + "\n", encoding="utf-8")
    env = {**os.environ, "BREAKDESK_DATABASE_URL": url, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "breakdesk", "run", str(lines), "--tenant", tenant],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_call(server: ToolServer, name: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while server.counts[name] == 0:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        assert time.monotonic() < deadline, "the worker never reached the blocking step"
        time.sleep(0.02)


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


async def crashed_exception(store: Store, tenant: str) -> str:
    rows, _ = await store.list_exceptions(tenant, limit=10)
    assert len(rows) == 1 and rows[0]["status"] == "IN_PROGRESS"
    return str(rows[0]["exception_id"])


async def test_sigkill_mid_playbook_then_resume_never_repeats_a_completed_step(
    tool_server: ToolServer, tmp_path: Path, tenant_id: str, db_url: str
) -> None:
    charge, wait, notify = uid("charge"), uid("wait"), uid("notify")
    tools = {
        "charge": tool(f"{tool_server.base}/ok/{charge}", idempotent=False),  # must never run twice
        "wait": tool(f"{tool_server.base}/block/{wait}", idempotent=True, timeout=30),
        "notify": tool(f"{tool_server.base}/ok/{notify}", idempotent=False),
    }
    dom = domain_pack(tools, [playbook("pb", [step("charge", "charge"), step("wait", "wait"),
                                              step("notify", "notify")])])
    url = db_url  # a fresh SQLite file, or the session's PostgreSQL database
    async with await Store.open(url) as store:
        await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    worker = start_worker(url, tenant_id, tmp_path)
    try:
        wait_for_call(tool_server, wait, worker)
        kill(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
    release(tool_server, wait)
    assert (tool_server.counts[charge], tool_server.counts[wait], tool_server.counts[notify]) == (1, 1, 0)

    async with await Store.open(url) as store:
        eid = await crashed_exception(store, tenant_id)
        journal = await store.execution_records(tenant_id, eid)
        assert [(r.step_id, r.attempt, r.status, r.final) for r in journal] == [("charge", 1, "SUCCEEDED", True)]
    # a new process resumes: step 1 is settled and skipped, the idempotent step 2 is sent again, step 3 runs
    done = subprocess.run([sys.executable, "-m", "breakdesk", "resume", "--tenant", tenant_id, "--stalled-after", "0"],
                          env={**os.environ, "BREAKDESK_DATABASE_URL": url, "COLUMNS": "200"}, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 stalled execution(s), 1 advanced" in done.stdout, done.stdout
    assert (tool_server.counts[charge], tool_server.counts[wait], tool_server.counts[notify]) == (1, 2, 1)
    async with await Store.open(url) as store:
        row = await store.get_exception(tenant_id, eid)
        assert row is not None and row["status"] == "RESOLVED"
        assert (await store.verify_audit(tenant_id)).ok


async def test_sigkill_during_a_non_idempotent_call_escalates_instead_of_resending(
    tool_server: ToolServer, tmp_path: Path, tenant_id: str, db_url: str
) -> None:
    charge, transfer = uid("charge"), uid("transfer")
    tools = {
        "charge": tool(f"{tool_server.base}/ok/{charge}", idempotent=False),
        "transfer": tool(f"{tool_server.base}/block/{transfer}", idempotent=False, timeout=30),
    }
    dom = domain_pack(tools, [playbook("pb", [step("charge", "charge"), step("transfer", "transfer")])])
    url = db_url  # a fresh SQLite file, or the session's PostgreSQL database
    async with await Store.open(url) as store:
        await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    worker = start_worker(url, tenant_id, tmp_path)
    try:
        wait_for_call(tool_server, transfer, worker)
        kill(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
    release(tool_server, transfer)

    async with await Store.open(url) as store, ToolExecutor() as executor:
        eid = await crashed_exception(store, tenant_id)
        journal = await store.execution_records(tenant_id, eid)
        assert [(r.step_id, r.attempt, r.status) for r in journal] == [("charge", 1, "SUCCEEDED"),
                                                                      ("transfer", 1, "STARTED")]
        # resumed at once, the attempt may still be in flight in a live worker: nothing is done
        now = ExecutionService(store, executor, packs=Orchestrator(store).active_packs)
        early = await now.run(tenant_id, eid)
        assert not early.executed and "in flight elsewhere" in early.reason
        # past the attempt's deadline the worker is presumed dead; the outcome is unknown: escalate, never resend
        later = ExecutionService(store, executor, packs=Orchestrator(store).active_packs,
                                 clock=lambda: datetime.now(UTC) + timedelta(minutes=5))
        out = await later.run(tenant_id, eid)
        assert out.status == "ESCALATED" and "outcome is unknown" in out.reason, out
        assert (tool_server.counts[charge], tool_server.counts[transfer]) == (1, 1)
        journal = await store.execution_records(tenant_id, eid)
        assert [(r.step_id, r.attempt, r.status, r.final) for r in journal][-1] == ("transfer", 1, "UNKNOWN", True)
        assert (await store.verify_audit(tenant_id)).ok
