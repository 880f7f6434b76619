"""What-if runs and pack test runs against *published* pack versions, by name and version — never files.

A what-if runs the real pure stages (intake → feedback) with the named versions, without activating them
and without writing anything; the only store reads are the pack versions and the tenant's recurrence
counts, so severity rules that look at recurrence decide as they would in production. Each item is
decided on its own: merging repeats of one fingerprint into recurrences is the live pipeline's job.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from breakdesk.api.schemas import RunItem, StepDecision
from breakdesk.catalog import Catalog
from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy, compile_domain, compile_tenant
from breakdesk.packs.loader import model_from_data
from breakdesk.packs.problems import PackError, PackProblem
from breakdesk.packs.schema import DomainPack, TenantPolicy
from breakdesk.packs.testing import CaseResult, run_pack_tests
from breakdesk.pipeline.intake import IntakeRejected, intake
from breakdesk.pipeline.stages import decide
from breakdesk.pipeline.types import RecurrenceInfo, Submission
from breakdesk.store import NotFound, PackVersion, Store

_CACHE_SIZE = 32
_domains: OrderedDict[str, CompiledDomainPack] = OrderedDict()
_policies: OrderedDict[tuple[str, str], CompiledTenantPolicy] = OrderedDict()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def compiled_domain(pv: PackVersion) -> CompiledDomainPack:
    """Compile a stored domain pack once per content hash (versions are immutable)."""
    hit = _domains.get(pv.content_hash)
    if hit is not None:
        return hit
    model = model_from_data(pv.content, pv.ref)
    if not isinstance(model, DomainPack):
        raise PackError([PackProblem(pv.ref, "$.kind", "stored content is not a domain pack")])
    compiled = compile_domain(model, pv.ref)
    _remember(_domains, pv.content_hash, compiled)
    return compiled


def compiled_policy(pv: PackVersion, domain: CompiledDomainPack, domain_hash: str) -> CompiledTenantPolicy:
    key = (pv.content_hash, domain_hash)
    hit = _policies.get(key)
    if hit is not None:
        return hit
    model = model_from_data(pv.content, pv.ref)
    if not isinstance(model, TenantPolicy):
        raise PackError([PackProblem(pv.ref, "$.kind", "stored content is not a tenant policy")])
    compiled = compile_tenant(model, domain, pv.ref)
    _remember(_policies, key, compiled)
    return compiled


async def published(store: Store, tenant_id: str, kind: str, name: str, version: str) -> PackVersion:
    pv = await store.get_pack(tenant_id, kind, name, version)
    if pv is None:
        what = "tenant policy" if kind == "tenant" else f"domain pack {name}"
        raise NotFound(f"{what}@{version} is not published for this tenant")
    return pv


async def what_if(
    store: Store, tenant_id: str, domain_name: str, domain_version: str, policy_version: str, items: list[dict[str, Any]]
) -> tuple[str, str, list[RunItem]]:
    dom_pv = await published(store, tenant_id, "domain", domain_name, domain_version)
    pol_pv = await published(store, tenant_id, "tenant", tenant_id, policy_version)
    domain = compiled_domain(dom_pv)
    policy = compiled_policy(pol_pv, domain, dom_pv.content_hash)
    now = datetime.now(UTC)
    prepared: list[tuple[int, Any]] = []
    out: dict[int, RunItem] = {}
    for n, data in enumerate(items):
        try:
            ir = intake(Submission(data, now, line=n), tenant_id, _id_for(data, n), domain)
        except IntakeRejected as exc:
            out[n] = RunItem(index=n, outcome="rejected", reason=str(exc))
            continue
        except Exception as exc:  # hostile input never escapes as a 500
            out[n] = RunItem(index=n, outcome="rejected", reason=f"unprocessable: {type(exc).__name__}")
            continue
        prepared.append((n, ir))
    stats = await store.fingerprint_stats(tenant_id, {ir.fingerprint for _, ir in prepared})
    for n, ir in prepared:
        st = stats.get(ir.fingerprint)
        rec = RecurrenceInfo(st.occurrences, st.first_seen, st.last_seen, st.last_exception_id) if st else None
        d = decide(ir, domain, policy, received_at=now, now=now, recurrence=rec)
        out[n] = RunItem(
            index=n,
            outcome="decided",
            exception_type=ir.record.exception_type,
            severity=d.triage.severity.value if d.triage else None,
            status=d.status.value,
            actionability=d.policy.actionability.value if d.policy else None,
            playbook_id=d.policy.playbook_id if d.policy else None,
            approval_required=d.approval_required,
            fingerprint=ir.fingerprint,
            reason=d.error,
            timeline=[
                StepDecision(
                    stage=e.stage,
                    decision=e.decision.model_dump(mode="json", by_alias=True, exclude_none=True) if e.decision else None,
                )
                for e in d.events
            ],
        )
    return domain.ref, policy.ref, [out[n] for n in sorted(out)]


def _id_for(data: Any, n: int) -> str:
    given = data.get("exceptionId") if isinstance(data, dict) else None
    if isinstance(given, str) and given.strip() and len(given.strip()) <= 200:
        return given.strip()
    return f"what-if-{n}"


async def pack_tests(store: Store, catalog: Catalog, tenant_id: str, kind: str, name: str, version: str) -> list[CaseResult]:
    """A published version's test suites: a domain pack's own (plus the tenant's cases under its active
    policy, when that policy accepts this version); a tenant policy's against the domain it binds to."""
    pv = await published(store, tenant_id, kind, name, version)
    if kind == "domain":
        domain = compiled_domain(pv)
        tenants: list[CompiledTenantPolicy] = []
        active = await store.active_pack(tenant_id, "tenant")
        if active is not None:
            # An active policy that does not bind to this version is skipped: the domain's own suites still run.
            with contextlib.suppress(PackError):
                tenants.append(compiled_policy(active, domain, pv.content_hash))
        return run_pack_tests(domain, tenants)
    model = model_from_data(pv.content, pv.ref)
    if not isinstance(model, TenantPolicy):
        raise PackError([PackProblem(pv.ref, "$.kind", "stored content is not a tenant policy")])
    domain = await catalog._domain_for(tenant_id, model)
    policy = compile_tenant(model, domain, pv.ref)
    return [r for r in run_pack_tests(domain, [policy]) if r.suite.startswith(policy.ref) or f"[{tenant_id}]" in r.suite]
