"""Helpers for the unit tests: build real compiled packs from small YAML files or Python dicts.

Nothing here mocks project code: every helper goes through the real loader and compiler.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy, compile_domain, compile_tenant
from breakdesk.packs.loader import model_from_data
from breakdesk.packs.schema import DomainPack, TenantPolicy
from breakdesk.pipeline.intake import intake
from breakdesk.pipeline.stages import Decided, decide
from breakdesk.pipeline.types import IntakeResult, RecurrenceInfo, SimilarCase, Submission

TESTS = Path(__file__).resolve().parent.parent
PACKS = TESTS / "data" / "packs"
UNIT_DATA = TESTS / "data" / "unit"
MINI_DOMAIN = PACKS / "mini-domain.yaml"
MINI_TENANT = PACKS / "mini-tenant.yaml"

#: Fixed clock: stage results must not depend on the wall clock.
RECEIVED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def read_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict)
    return data


def mini_domain_data() -> dict[str, Any]:
    return read_yaml(MINI_DOMAIN)


def mini_tenant_data() -> dict[str, Any]:
    return read_yaml(MINI_TENANT)


def desk_domain_data() -> dict[str, Any]:
    """A richer domain pack for stage tests (tests/data/unit/desk-domain.yaml); a fresh copy each call."""
    return copy.deepcopy(_DESK_DOMAIN)


def desk_tenant_data() -> dict[str, Any]:
    return copy.deepcopy(_DESK_TENANT)


_DESK_DOMAIN = read_yaml(UNIT_DATA / "desk-domain.yaml")
_DESK_TENANT = read_yaml(UNIT_DATA / "desk-tenant.yaml")


def domain_from(data: dict[str, Any], source: str = "domain.yaml") -> CompiledDomainPack:
    pack = model_from_data(data, source)
    assert isinstance(pack, DomainPack)
    return compile_domain(pack, source)


def tenant_from(
    data: dict[str, Any], domain: CompiledDomainPack, source: str = "tenant.yaml"
) -> CompiledTenantPolicy:
    pack = model_from_data(data, source)
    assert isinstance(pack, TenantPolicy)
    return compile_tenant(pack, domain, source)


def submit(
    domain: CompiledDomainPack, data: dict[str, Any], tenant_id: str = "t1", exception_id: str = "ex-1"
) -> IntakeResult:
    return intake(Submission(data=data, received_at=RECEIVED), tenant_id, exception_id, domain)


def run(
    domain: CompiledDomainPack,
    tenant: CompiledTenantPolicy,
    data: dict[str, Any],
    *,
    recurrence: RecurrenceInfo | None = None,
    similar: tuple[SimilarCase, ...] = (),
) -> Decided:
    """Intake + every decision stage, with the fixed clock."""
    ir = submit(domain, data, tenant.tenant_id)
    return decide(
        ir, domain, tenant, received_at=RECEIVED, now=RECEIVED, recurrence=recurrence, similar=similar
    )


def messages(decision: Any) -> list[str]:
    return [e.message for e in decision.evidence]
