"""End to end: the example files through the real pipeline for each example tenant, against golden files.

Each tenant gets a fresh SQLite store, its domain pack and tenant policy published and activated through the
catalog, and its domain's example file run with `run_file` (the code behind `breakdesk run`). What was decided
for every input line is read back from the store and compared with tests/golden/<tenant>.json.

Regenerate the goldens after an intended change with

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/e2e

and review the diff: every changed line is a changed decision.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import (
    REPO,
    SIBLING,
    STAGES,
    TENANTS,
    UPDATE_GOLDEN,
    Runs,
    RunView,
    all_audit,
    all_rows,
    dump_golden,
    example_file,
    explicit_id,
    gen_examples,
    golden_path,
    pack_files,
    setup_tenant,
)

from breakdesk.cli.run_cmds import run_file
from breakdesk.packs.loader import read_file
from breakdesk.packs.testing import run_pack_tests
from breakdesk.packs.workspace import compile_domain_file, compile_tenant_file
from breakdesk.store import Store

ALL_TENANTS = sorted(TENANTS)
DOMAINS = ("finance", "healthcare")
BREAKDESK = str(Path(sys.executable).with_name("breakdesk"))


def _cli_env(db_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    if db_url:
        env["BREAKDESK_DATABASE_URL"] = db_url
    return env


def _diff(expected: dict[str, Any], actual: dict[str, Any], limit: int = 25) -> str:
    out: list[str] = []
    for key in ("tenant", "file"):
        if expected.get(key) != actual.get(key):
            out.append(f"{key}: expected {expected.get(key)!r}, got {actual.get(key)!r}")
    exp_c, act_c = expected.get("counts", {}), actual.get("counts", {})
    for key in sorted(set(exp_c) | set(act_c)):
        if exp_c.get(key) != act_c.get(key):
            out.append(f"counts.{key}: expected {exp_c.get(key)!r}\n{' ' * 10}got      {act_c.get(key)!r}")
    exp_l, act_l = expected.get("lines", {}), actual.get("lines", {})
    bad = [k for k in sorted(set(exp_l) | set(act_l), key=int) if exp_l.get(k) != act_l.get(k)]
    for k in bad[:limit]:
        out.append(f"line {k}: expected {exp_l.get(k)}\n{' ' * 10}got      {act_l.get(k)}")
    if len(bad) > limit:
        out.append(f"... and {len(bad) - limit} more differing lines")
    return "\n".join(out)


# ============================================================================================ goldens


@pytest.mark.parametrize("tenant", ALL_TENANTS)
async def test_golden(runs: Runs, tenant: str) -> None:
    run = await runs.get(tenant)
    actual = run.view.golden()
    path = golden_path(tenant)
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_golden(actual), encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run UPDATE_GOLDEN=1 .venv/bin/pytest tests/e2e"
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert expected == actual, (
        f"decisions for {tenant} differ from {path.relative_to(REPO)} "
        f"(UPDATE_GOLDEN=1 rewrites it after an intended change):\n{_diff(expected, actual)}"
    )


@pytest.mark.parametrize("tenant", ALL_TENANTS)
async def test_every_line_is_accounted_for(runs: Runs, tenant: str) -> None:
    """processed + recurrences + duplicates + rejected = lines, and the per-line view agrees with the report."""
    run = await runs.get(tenant)
    rep, view = run.view.report, run.view
    assert rep.processed + rep.recurrences + rep.duplicates + len(rep.rejected) == len(view.parsed)
    outcomes = view.outcome_counts()
    assert outcomes == Counter(new=rep.processed, recurrence=rep.recurrences, duplicate=rep.duplicates,
                               rejected=len(rep.rejected))
    assert len(view.rows) == rep.processed
    assert rep.stage_errors == 0
    assert 1 <= len(rep.rejected) <= 5
    for r in rep.rejected:
        assert r.line is not None and r.reason


# ============================================================================================ audit & events


@pytest.mark.parametrize("tenant", ALL_TENANTS)
async def test_audit_chain_and_event_counts(runs: Runs, tenant: str) -> None:
    run = await runs.get(tenant)
    rep = run.view.report
    async with await Store.open(run.url) as store:
        result = await store.verify_audit(tenant)
        assert result.ok, result
        rows = await all_rows(store, tenant)
        total = 0
        for row in rows:
            events = await store.get_events(tenant, row["exception_id"])
            stages = [e["stage"] for e in events]
            assert stages == [*STAGES, *["recurrence"] * row["recurrence_count"]], row["exception_id"]
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            total += len(events)
        # every new exception: one event per stage; every recurrence: one event on the exception it repeats
        assert total == len(STAGES) * rep.processed + rep.recurrences
        assert sum(r["recurrence_count"] for r in rows) == rep.recurrences
        entries = await all_audit(store, tenant)
        # one audit entry per pipeline pass (all its stage decisions) and one per recurrence
        decided = [e for e in entries if e.action == "pipeline.decided"]
        recorded = [e for e in entries if e.action == "recurrence.recorded"]
        assert len(decided) == rep.processed and len(recorded) == rep.recurrences
        assert {e.subject for e in decided} == {r["exception_id"] for r in rows}
        assert [[s["stage"] for s in e.detail["stages"]] for e in decided] == [list(STAGES)] * len(decided)
        assert result.checked == len(entries)


# ============================================================================================ idempotence


@pytest.mark.parametrize("tenant", ALL_TENANTS)
async def test_second_run_creates_nothing(runs: Runs, tenant: str, tmp_path: Path) -> None:
    run = await runs.get(tenant)
    db = tmp_path / "rerun.db"
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{run.db}{suffix}")
        if src.exists():
            shutil.copy(src, f"{db}{suffix}")
    first = run.view.report
    async with await Store.open(f"sqlite+aiosqlite:///{db}") as store:
        before = {r["exception_id"]: r["recurrence_count"] for r in await all_rows(store, tenant)}
        again = await run_file(store, example_file(tenant), tenant, batch_size=100)
        after = {r["exception_id"]: r["recurrence_count"] for r in await all_rows(store, tenant)}
        assert (await store.verify_audit(tenant)).ok
    assert again.processed == 0 and not again.exception_ids
    assert after.keys() == before.keys(), "a second run of the same file created exception rows"
    assert [(r.line, r.reason) for r in again.rejected] == [(r.line, r.reason) for r in first.rejected]
    assert again.duplicates + again.recurrences == len(run.view.parsed) - len(first.rejected)
    # only lines without any key (no exceptionId, idempotencyKey or source id) can come back as recurrences
    keyless = 0
    for _, obj in run.view.parsed:
        if isinstance(obj, dict) and isinstance(obj.get("rawPayload", {}), dict) and "tenantId" not in obj:
            payload = obj.get("rawPayload", obj)
            if not (explicit_id(obj) or obj.get("idempotencyKey") or obj.get("sourceId") or payload.get("eventId")):
                keyless += 1
    assert again.recurrences == keyless
    assert sum(after.values()) - sum(before.values()) == again.recurrences


# ============================================================================================ isolation


@pytest.mark.parametrize("tenant", ["acme-capital", "summit-care"])
async def test_tenant_isolation(runs: Runs, tenant: str, tmp_path: Path) -> None:
    """In one store, the sibling tenant first processes the same file (same idempotency keys, source ids and
    fingerprints; only the exception ids renamed), then the tenant processes it. The tenant's decisions must be
    exactly those of a fresh store, and neither tenant can see the other's exceptions, events or audit."""
    fresh = await runs.get(tenant)
    other = SIBLING[tenant]
    renamed = tmp_path / "other.jsonl"
    with example_file(tenant).open(encoding="utf-8") as src, renamed.open("w", encoding="utf-8") as dst:
        for raw in src:
            try:
                obj = json.loads(raw)
            except ValueError:
                dst.write(raw)
                continue
            if isinstance(obj, dict) and isinstance(obj.get("exceptionId"), str):
                obj["exceptionId"] = "OTHER-" + obj["exceptionId"]
            dst.write(json.dumps(obj) + "\n")
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}") as store:
        await setup_tenant(store, other)
        other_report = await run_file(store, renamed, other, batch_size=100)
        await setup_tenant(store, tenant)
        report = await run_file(store, example_file(tenant), tenant, batch_size=100)
        view = await RunView(tenant, example_file(tenant), report).load(store)
        assert view.golden() == fresh.view.golden(), "another tenant's data changed this tenant's decisions"

        mine = {r["exception_id"] for r in await all_rows(store, tenant)}
        theirs = {r["exception_id"] for r in await all_rows(store, other)}
        assert len(mine) == report.processed and len(theirs) == other_report.processed
        assert mine and theirs and not (mine & theirs)
        for eid in sorted(mine):
            assert await store.get_exception(other, eid) is None
            assert await store.get_events(other, eid) == []
        for eid in sorted(theirs):
            assert await store.get_exception(tenant, eid) is None
            assert await store.get_events(tenant, eid) == []
        assert {e.subject for e in await all_audit(store, other)} & mine == set()
        assert {e.subject for e in await all_audit(store, tenant)} & theirs == set()
        for me, their_ids in ((tenant, theirs), (other, mine)):
            page, _ = await store.list_exceptions(me, limit=1000)
            assert all(r["tenant_id"] == me and r["exception_id"] not in their_ids for r in page)
            page, _ = await store.list_exceptions(me, text="EXC-", limit=1000)
            assert all(r["tenant_id"] == me for r in page)
        assert (await store.verify_audit(tenant)).ok
        assert (await store.verify_audit(other)).ok


# ============================================================================================ coverage of the packs


def _pack_data(tenant: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dom_path, pol_path = pack_files(tenant)
    return read_file(dom_path)[0], read_file(pol_path)[0]


@pytest.mark.parametrize("tenant", ALL_TENANTS)
async def test_examples_exercise_every_rule_of_the_packs(runs: Runs, tenant: str) -> None:
    """Every exception type, detection rule, severity rule, override, approval rule, guardrail and approved
    playbook of the tenant's packs decides at least one example exception."""
    view = (await runs.get(tenant)).view
    domain, policy = _pack_data(tenant)

    types = {r["exception_type"] for r in view.rows.values()}
    assert set(domain["exceptionTypes"]) | {"UNCLASSIFIED"} <= types

    intake = {x.get("ref") for x in view.evidence("intake") if "detected by rule" in x.get("message", "")}
    detection = {d["id"] for t in domain["exceptionTypes"].values() for d in t.get("detection", [])}
    assert detection - intake == set(), "detection rules never used"

    matched = {rule for e in view.stage_events("triage") for rule in e["payload"]["matchedRules"]}
    assert {r["id"] for r in domain["severityRules"]} - matched == set(), "severity rules never matched"

    overrides = {x["ref"] for x in view.evidence("triage") if x.get("kind") == "severity-override" and x.get("ref")}
    wanted = {f"severityOverrides[{i}]" for i in range(len(policy.get("severityOverrides", [])))}
    assert wanted - overrides == set(), "tenant severity overrides never applied"

    approvals = [x.get("message", "") for x in view.evidence("policy") if x.get("kind") == "approval"]
    for rule in policy.get("approvalRules", []):
        assert f"approval rule {rule['id']}" in approvals, f"approval rule {rule['id']} never applied"

    messages = [x.get("message", "") for x in view.evidence("policy")]
    guard = policy.get("guardrails", {})
    for sev in guard.get("noAutoActionIfSeverityIn", []):
        assert f"guardrail noAutoActionIfSeverityIn includes {sev}" in messages
    for etype in guard.get("requireApprovalForTypes", []):
        assert f"guardrail requireApprovalForTypes includes {etype}" in messages
    approved = set(policy["approvedPlaybooks"]) - set(guard.get("blockedPlaybooks", []))
    selectable_tools = {s.get("tool") for p in domain["playbooks"] if p["id"] in approved for s in p["steps"]}
    for tool in guard.get("blockedTools", []):
        if tool in selectable_tools:  # a blocked tool only shows when a selectable playbook calls it
            assert any(m.startswith(f"tool {tool} blocked") for m in messages), f"blocked tool {tool} never hit"
    for pb in guard.get("blockedPlaybooks", []):
        assert f"{pb} blocked by tenant guardrails" in messages
    if guard.get("escalateIfConfidenceBelow") is not None:
        assert any("below escalateIfConfidenceBelow" in m for m in messages)
    for pb in {p["id"] for p in domain["playbooks"]} - approved:
        assert f"{pb} matches but is not approved" in messages or f"{pb} blocked by tenant guardrails" in messages
    selected = {r["playbook_id"] for r in view.rows.values()}
    assert approved - selected == set(), "approved playbooks never selected"

    statuses = {r["status"] for r in view.rows.values()}
    assert {"IN_PROGRESS", "PENDING_APPROVAL", "ESCALATED", "TRIAGED"} <= statuses
    assert {"new", "recurrence", "duplicate", "rejected"} <= set(view.outcome_counts())


@pytest.mark.parametrize("domain", DOMAINS)
async def test_the_two_tenants_decide_differently(runs: Runs, domain: str) -> None:
    a, b = (t for t in ALL_TENANTS if TENANTS[t] == domain)
    la, lb = (await runs.get(a)).view.golden()["lines"], (await runs.get(b)).view.golden()["lines"]
    assert la.keys() == lb.keys()
    keys = ("severity", "playbook", "approvalRequired", "status")
    differ = [k for k in la if la[k]["outcome"] == "new" and tuple(la[k][x] for x in keys) != tuple(lb[k][x] for x in keys)]
    assert len(differ) >= 40, differ
    # same input, same intake: type, source and timestamp never depend on the tenant
    for k in la:
        assert {x: la[k].get(x) for x in ("outcome", "exceptionType", "source", "timestamp")} == {
            x: lb[k].get(x) for x in ("outcome", "exceptionType", "source", "timestamp")}


_CMP = re.compile(r"normalizedContext\.(\w+)\s*(>=|<=|<|>)\s*(-?[0-9][0-9_.]*)")
_TYPE = re.compile(r"exceptionType\s*==\s*'(\w+)'")
_OPS = {">=": lambda v, n: v >= n, "<=": lambda v, n: v <= n, ">": lambda v, n: v > n, "<": lambda v, n: v < n}


def _thresholds(domain: str) -> list[tuple[str, str | None, str, str, float]]:
    """(where, exception type or None, field, operator, threshold) of every numeric comparison in the packs."""
    dom = read_file(REPO / "packs" / domain / "domain.yaml")[0]
    out: list[tuple[str, str | None, str, str, float]] = []
    for rule in dom["severityRules"]:
        m = _TYPE.search(rule["condition"])
        out += [(rule["id"], m.group(1) if m else None, f, op, float(n)) for f, op, n in _CMP.findall(rule["condition"])]
    for pol_path in sorted((REPO / "packs" / domain / "tenants").glob("*.yaml")):
        pol = read_file(pol_path)[0]
        for i, ov in enumerate(pol.get("severityOverrides", [])):
            out += [(f"{pol['tenantId']} override {i}", ov["exceptionType"], f, op, float(n))
                    for f, op, n in _CMP.findall(ov.get("condition") or "")]
        for rule in pol.get("approvalRules", []):
            types = rule.get("exceptionTypes") or [None]
            out += [(rule["id"], t, f, op, float(n)) for t in types for f, op, n in _CMP.findall(rule.get("condition") or "")]
    return out


@pytest.mark.parametrize("domain", DOMAINS)
def test_examples_straddle_every_threshold(domain: str) -> None:
    """For each numeric comparison in a rule, override or approval condition, the examples send a value that
    satisfies it and one that does not, each within 1 of the threshold (e.g. 10,000,000 and 9,999,999.99)."""
    values: dict[tuple[str | None, str], list[float]] = {}
    for line in example_file(next(t for t in TENANTS if TENANTS[t] == domain)).read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("rawPayload", {}), dict):
            continue
        payload = obj.get("rawPayload", obj)
        etype = obj.get("exceptionType")
        for k, v in payload.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                values.setdefault((etype, k), []).append(float(v))
                values.setdefault((None, k), []).append(float(v))
    checks = _thresholds(domain)
    assert len(checks) >= 10
    missing = []
    for where, etype, field, op, n in checks:
        near = [v for v in values.get((etype, field), []) if abs(v - n) <= 1]
        if not any(_OPS[op](v, n) for v in near) or all(_OPS[op](v, n) for v in near):
            missing.append(f"{where}: {field} {op} {n:g} (values near it: {sorted(set(near))})")
    assert not missing, "\n".join(missing)


# ============================================================================================ generator


@pytest.mark.parametrize("domain", DOMAINS)
def test_checked_in_examples_are_the_generator_output(domain: str) -> None:
    gen = gen_examples()
    expected = "".join(gen.dumps_line(x) + "\n" for x in gen.generate(domain, gen.DEFAULT_COUNT, gen.DEFAULT_SEED))
    assert (REPO / "examples" / f"{domain}.jsonl").read_text(encoding="utf-8") == expected, (
        "examples/ is stale: run .venv/bin/python scripts/gen_examples.py and UPDATE_GOLDEN=1 .venv/bin/pytest tests/e2e"
    )
    assert gen.DEFAULT_COUNT >= 220


def _is_bad(line: Any) -> bool:
    return isinstance(line, str) or "tenantId" in line or not isinstance(line.get("rawPayload", {}), dict) or not {
        k for k in line if k not in ("exceptionId", "exceptionType", "sourceSystem", "timestamp", "idempotencyKey", "sourceId")}


@pytest.mark.parametrize("domain", DOMAINS)
def test_generator_is_deterministic_and_keeps_shares_small(domain: str) -> None:
    """(How fast it generates is the benches' business: a CPU-time bound here failed on a slow CI VM.)"""
    gen = gen_examples()
    assert gen.generate(domain, 300, 7) == gen.generate(domain, 300, 7)
    assert gen.generate(domain, 300, 7) != gen.generate(domain, 300, 8)
    assert len(gen.generate(domain, 17, 1)) == 17 and gen.generate(domain, 0, 1) == []
    big = gen.generate(domain, 20_000, 42)
    assert len(big) == 20_000
    bad = sum(1 for x in big if _is_bad(x))
    ids = Counter(x["exceptionId"] for x in big if isinstance(x, dict) and "exceptionId" in x)
    keys = Counter(x["idempotencyKey"] for x in big if isinstance(x, dict) and "idempotencyKey" in x)
    repeated = sum(n - 1 for n in ids.values()) + sum(n - 1 for n in keys.values())
    assert 0 < bad <= 0.005 * len(big), bad
    assert 0 < repeated <= 0.05 * len(big), repeated
    assert sum(1 for x in big if isinstance(x, dict) and "exceptionId" not in x) <= 0.05 * len(big)
    small = gen.generate(domain, gen.DEFAULT_COUNT, gen.DEFAULT_SEED)
    assert 1 <= sum(1 for x in small if _is_bad(x)) <= 5


# ============================================================================================ pack suites


@pytest.mark.parametrize("domain", DOMAINS)
def test_pack_test_suites_pass(domain: str) -> None:
    dom = compile_domain_file(REPO / "packs" / domain / "domain.yaml")
    policies = sorted((REPO / "packs" / domain / "tenants").glob("*.yaml"))
    assert len(policies) == 2
    tenants = [compile_tenant_file(p, dom) for p in policies]
    results = run_pack_tests(dom, tenants)
    failed = [f"{r.suite} / {r.name}: {'; '.join(r.failures)}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    suites = {r.suite for r in results}
    assert dom.ref in suites and {t.ref for t in tenants} <= suites
    assert len(results) >= len(dom.spec.tests) + sum(len(t.spec.tests) for t in tenants)


# ============================================================================================ CLI


async def test_cli_run_reports_and_writes_rejected_lines(tmp_path: Path) -> None:
    gen = gen_examples()
    lines = gen.generate("finance", 90, 3)
    bad = [i for i, x in enumerate(lines, 1) if _is_bad(x)]
    assert bad, "the sample must contain bad lines (pick another seed)"
    sample = tmp_path / "sample.jsonl"
    sample.write_text("".join(gen.dumps_line(x) + "\n" for x in lines), encoding="utf-8")
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    async with await Store.open(url) as store:
        await setup_tenant(store, "acme-capital")
    done = subprocess.run([BREAKDESK, "run", str(sample), "--tenant", "acme-capital", "--batch-size", "25"],
                          env=_cli_env(url), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "processed" in out and "rejected" in out, out
    assert re.search(r"rejected\W+" + str(len(bad)) + r"\b", out), out
    errors = sample.with_name("sample.jsonl.errors.jsonl")
    assert errors.exists(), out
    rejected = [json.loads(x) for x in errors.read_text().splitlines()]
    assert [r["line"] for r in rejected] == bad
    assert all(r["reason"] and r["file"].endswith("sample.jsonl") for r in rejected)
    async with await Store.open(url) as store:
        assert (await store.verify_audit("acme-capital")).ok
        rows = await all_rows(store, "acme-capital")
    assert 0 < len(rows) < len(lines) - len(bad)

    # An errors file that is the input, or that cannot be written, is refused before anything is processed:
    # the rejected lines found after the commit would otherwise overwrite the input or be lost.
    again = tmp_path / "again.jsonl"
    again.write_bytes(sample.read_bytes())
    for where, says in ((again, "is the input file"), (tmp_path / "no-such-dir" / "e.jsonl", "does not exist"),
                        (tmp_path, "is a directory")):
        refused = subprocess.run([BREAKDESK, "run", str(again), "--tenant", "acme-capital", "--errors", str(where)],
                                 env=_cli_env(url), cwd=REPO, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and says in refused.stderr, refused.stdout + refused.stderr
    assert again.read_bytes() == sample.read_bytes()
    async with await Store.open(url) as store:
        assert len(await all_rows(store, "acme-capital")) == len(rows)


def test_cli_demo(tmp_path: Path) -> None:
    # at a terminal's usual 80 columns: the summary must show whole tenant names and counts; the similar cases
    # searched in a process of their own, as on a user's machine of two CPUs or more (the tests' default is off)
    env = {**_cli_env(), "COLUMNS": "80", "BREAKDESK_MEMORY_SEARCH_PROCESS": "on"}
    done = subprocess.run([BREAKDESK, "demo", "--db-file", str(tmp_path / "demo.db")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "search process" not in done.stderr, done.stderr  # (it answered: no failure, nothing searched here)
    out = done.stdout
    start = out.index("Demo")
    table = out[start:]
    rows: dict[str, list[str]] = {}
    for tenant in ALL_TENANTS:
        row = next((line.split() for line in table.splitlines() if line.split()[:1] == [tenant]), None)
        assert row is not None, f"no row for {tenant} in the demo table:\n{table}"
        assert len(row) == 8 and all(c.replace("/", "").isdigit() for c in row[1:]), row  # counts, none cut
        rows[tenant] = row[1:]
    # the same file under two policies: the two tenants of a domain end up with different counts
    assert rows["acme-capital"] != rows["northwind-securities"], rows
    assert rows["riverside-health"] != rows["summit-care"], rows
    assert "processed" in table
    # examples arrive in batches, as a stream would: the exception shown was triaged with similar past cases
    timeline = out.split("Decision timeline", 1)[1]
    assert "• similar cases:" in timeline and re.search(r"^ {7}EXC-\S+ \(\d\.\d\d\)", timeline, re.M), out
    # ...and, as the server's worker would, the demo leaves how exceptions were resolved in the memory
    with sqlite3.connect(tmp_path / "demo.db") as db:
        resolved = dict(db.execute("SELECT tenant_id, count(*) FROM memory_cases WHERE resolution IS NOT NULL "
                                   "GROUP BY tenant_id").fetchall())
        done = dict(db.execute("SELECT tenant_id, count(*) FROM exceptions WHERE status IN "
                               "('RESOLVED', 'CLOSED', 'FAILED') GROUP BY tenant_id").fetchall())
    assert resolved == done and done, (resolved, done)
