"""Fixtures for the unit tests: real compiled packs (see packkit for the helpers that build them)."""

from __future__ import annotations

import pytest

from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy

from .packkit import (
    MINI_DOMAIN,
    MINI_TENANT,
    desk_domain_data,
    desk_tenant_data,
    domain_from,
    mini_domain_data,
    mini_tenant_data,
    tenant_from,
)


@pytest.fixture(scope="session")
def mini_domain() -> CompiledDomainPack:
    return domain_from(mini_domain_data(), str(MINI_DOMAIN))


@pytest.fixture(scope="session")
def mini_tenant(mini_domain: CompiledDomainPack) -> CompiledTenantPolicy:
    return tenant_from(mini_tenant_data(), mini_domain, str(MINI_TENANT))


@pytest.fixture(scope="session")
def desk_domain() -> CompiledDomainPack:
    return domain_from(desk_domain_data(), "desk-domain.yaml")


@pytest.fixture(scope="session")
def desk_tenant(desk_domain: CompiledDomainPack) -> CompiledTenantPolicy:
    return tenant_from(desk_tenant_data(), desk_domain, "desk-tenant.yaml")
