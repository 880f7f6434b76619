"""The pack test runner: each test case goes through the real pipeline stages and is compared with `expect`.

Domain-level tests describe what the domain alone decides, so they run under a neutral policy that approves
every playbook and allows every tool (and adds no overrides or rules of its own). Tenant tests run under their
own policy. The runner calls the same pure stages as production, so new stages plug in without changes here.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy, compile_tenant
from breakdesk.packs.schema import DomainBinding, PackTestCase, TenantPolicy, ToolPolicy
from breakdesk.pipeline.intake import IntakeRejected, intake
from breakdesk.pipeline.stages import decide
from breakdesk.pipeline.types import Submission

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class CaseResult:
    suite: str
    name: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    actual: dict[str, Any] = field(default_factory=dict)


def neutral_policy(domain: CompiledDomainPack) -> CompiledTenantPolicy:
    policy = TenantPolicy(
        tenantId="pack-tests",
        version="0.0.0",
        domain=DomainBinding(name=domain.name, versionRange="*"),
        approvedPlaybooks=list(domain.playbooks),
        tools=ToolPolicy(allow=list(domain.tools)),
    )
    return compile_tenant(policy, domain, "<neutral policy>")


def run_case(case: PackTestCase, domain: CompiledDomainPack, tenant: CompiledTenantPolicy, suite: str) -> CaseResult:
    data = dict(case.input)
    data.setdefault("sourceSystem", "pack-test")
    if "rawPayload" not in data:
        data["rawPayload"] = {}
    sub = Submission(data=data, received_at=_EPOCH)
    try:
        ir = intake(sub, tenant.tenant_id, f"test-{case.name}"[:200], domain)
    except IntakeRejected as exc:
        return CaseResult(suite, case.name, False, [f"input rejected: {exc}"])
    out = decide(ir, domain, tenant, received_at=_EPOCH, now=_EPOCH)
    actual: dict[str, Any] = {
        "exceptionType": ir.record.exception_type,
        "severity": out.triage.severity.value if out.triage else None,
        "playbook": (out.policy.playbook_id if out.policy else None) or "none",
        "approvalRequired": out.approval_required,
        "actionability": out.policy.actionability.value if out.policy else None,
        "status": out.status.value,
    }
    failures: list[str] = []
    if out.error:
        failures.append(out.error)
    exp = case.expect
    checks = {
        "exceptionType": exp.exceptionType,
        "severity": exp.severity.value if exp.severity else None,
        "playbook": exp.playbook,
        "approvalRequired": exp.approvalRequired,
        "actionability": exp.actionability,
        "status": exp.status,
    }
    for key, want in checks.items():
        if want is not None and actual[key] != want:
            failures.append(f"{key}: expected {want}, got {actual[key]}")
    return CaseResult(suite, case.name, not failures, failures, actual)


def run_pack_tests(
    domain: CompiledDomainPack, tenants: list[CompiledTenantPolicy] | None = None
) -> list[CaseResult]:
    results: list[CaseResult] = []
    neutral = neutral_policy(domain)
    by_id = {t.tenant_id: t for t in tenants or []}
    for case in domain.spec.tests:
        if case.tenant is not None:
            if case.tenant not in by_id:
                continue
            results.append(run_case(case, domain, by_id[case.tenant], f"{domain.ref} [{case.tenant}]"))
        else:
            results.append(run_case(case, domain, neutral, domain.ref))
    for t in tenants or []:
        for case in t.spec.tests:
            results.append(run_case(case, domain, t, t.ref))
    return results


def write_junit(results: list[CaseResult], path: str | Path) -> None:
    root = ET.Element("testsuites", name="breakdesk-pack-tests")
    suites: dict[str, list[CaseResult]] = {}
    for r in results:
        suites.setdefault(r.suite, []).append(r)
    for name, cases in suites.items():
        failures = sum(1 for c in cases if not c.passed)
        suite = ET.SubElement(root, "testsuite", name=name, tests=str(len(cases)), failures=str(failures), errors="0")
        for c in cases:
            tc = ET.SubElement(suite, "testcase", classname=name, name=c.name)
            if not c.passed:
                f = ET.SubElement(tc, "failure", message=c.failures[0] if c.failures else "failed")
                f.text = "\n".join(c.failures)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
