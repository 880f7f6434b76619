"""Regressions found by the end-to-end examples (each was a bug in src/; the tests keep it fixed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import setup_tenant

from breakdesk.cli.run_cmds import run_file
from breakdesk.store import Store

CASH = {"exceptionType": "CASH_BREAK", "sourceSystem": "nostro-recon"}


def _cash(eid: str, account: str, key: str | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {"exceptionId": eid, **CASH,
                            "rawPayload": {"accountId": account, "currency": "USD", "breakAmount": 25_000.0,
                                           "valueDate": "2025-03-13"}}
    if key is not None:
        line["idempotencyKey"] = key
    return line


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("batch_size", [100, 1], ids=["same-batch", "across-batches"])
async def test_reused_exception_id_with_another_key_rejects_only_that_line(tmp_path: Path, batch_size: int) -> None:
    path = _write(tmp_path / "reuse.jsonl", [
        _cash("EXC-1", "NOSTRO-USD-1", key="k1"),
        _cash("EXC-1", "NOSTRO-USD-2", key="k2"),   # same id, new key: a second problem sent under a used id
        _cash("EXC-2", "NOSTRO-USD-3"),
    ])
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 't.db'}") as store:
        await setup_tenant(store, "acme-capital")
        report = await run_file(store, path, "acme-capital", batch_size=batch_size)
        assert await store.get_exception("acme-capital", "EXC-2") is not None
    assert report.processed == 2
    assert [r.line for r in report.rejected] == [2] or report.duplicates == 1


async def test_missing_context_field_in_step_dependent_args_is_caught_at_planning(tmp_path: Path) -> None:
    # healthcare prior-auth-attach-and-reprocess, step `auth`: getAuthorization(patientId: normalizedContext.patientId,
    # procedureCodes: steps.claim.output.procedureCodes): the claim below has no patientId.
    path = _write(tmp_path / "noid.jsonl", [{
        "exceptionId": "EXC-HC-1", "exceptionType": "CLAIM_MISSING_PRIOR_AUTH", "sourceSystem": "remit-835",
        "rawPayload": {"claimId": "CLM-2500000001", "carc": "197"},
    }])
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 't.db'}") as store:
        await setup_tenant(store, "summit-care")
        await run_file(store, path, "summit-care", batch_size=10)
        row = await store.get_exception("summit-care", "EXC-HC-1")
        events = await store.get_events("summit-care", "EXC-HC-1")
    plan = next(e for e in events if e["stage"] == "resolution")["payload"]["plan"]
    auth = next(s for s in plan["steps"] if s["stepId"] == "auth")
    assert auth["status"] == "INVALID_ARGS"
    assert row is not None and row["status"] == "ESCALATED"
