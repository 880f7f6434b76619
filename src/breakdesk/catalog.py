"""The pack catalog service: publish, activate and roll back packs per tenant, never leaving a tenant with a
domain pack and tenant policy that do not compile together. Shared by the CLI and the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from breakdesk.packs.compiler import CompiledDomainPack, compile_domain, compile_tenant
from breakdesk.packs.diff import diff_packs
from breakdesk.packs.loader import model_from_data
from breakdesk.packs.problems import PackError, PackProblem
from breakdesk.packs.schema import DomainPack, TenantPolicy
from breakdesk.packs.versions import satisfies, sort_key
from breakdesk.store.errors import NotFound
from breakdesk.store.records import Activation, PackVersion

KINDS = {"DomainPack": "domain", "TenantPolicy": "tenant"}


@dataclass(frozen=True, slots=True)
class Published:
    version: PackVersion
    kind: str
    activated: Activation | None


def pack_identity(pack: DomainPack | TenantPolicy) -> tuple[str, str, str]:
    """(kind, name, version) under which a pack is stored; tenant policies are named by their tenant id."""
    if isinstance(pack, DomainPack):
        return "domain", pack.name, pack.version
    return "tenant", pack.tenantId, pack.version


class Catalog:
    def __init__(self, store: Any) -> None:
        self.store = store

    async def _domain_for(self, tenant_id: str, policy: TenantPolicy) -> CompiledDomainPack:
        """The active domain pack if it satisfies the binding, else the newest published version that does."""
        active = await self.store.active_pack(tenant_id, "domain")
        candidates: list[PackVersion] = []
        if active is not None and active.name == policy.domain.name:
            candidates.append(active)
        published = await self.store.list_pack_versions(tenant_id, "domain", policy.domain.name)
        candidates.extend(sorted(published, key=lambda p: sort_key(p.version), reverse=True))
        for pv in candidates:
            if satisfies(pv.version, policy.domain.versionRange):
                model = model_from_data(pv.content, pv.ref)
                assert isinstance(model, DomainPack)
                return compile_domain(model, pv.ref)
        raise PackError([PackProblem(
            f"{policy.tenantId}@{policy.version}", "$.domain",
            f"tenant {tenant_id!r} has no published domain pack {policy.domain.name!r} satisfying "
            f"{policy.domain.versionRange!r}; publish the domain pack first",
        )])

    async def validate(self, tenant_id: str, data: Any, source: str) -> DomainPack | TenantPolicy:
        """Full validation of a pack body for this tenant (tenant policies against their domain)."""
        pack = model_from_data(data, source)
        if isinstance(pack, DomainPack):
            compile_domain(pack, source)
        else:
            if pack.tenantId != tenant_id:
                raise PackError([PackProblem(source, "$.tenantId",
                                             f"policy is for tenant {pack.tenantId!r}, not {tenant_id!r}")])
            compile_tenant(pack, await self._domain_for(tenant_id, pack), source)
        return pack

    async def publish(
        self, tenant_id: str, data: Any, source: str, by: str, *, activate: bool = False
    ) -> Published:
        pack = await self.validate(tenant_id, data, source)
        kind, name, version = pack_identity(pack)
        content = pack.model_dump(mode="json", exclude_defaults=False)
        if activate:  # refuse before publishing, so a refused activation leaves nothing behind
            probe = PackVersion(0, tenant_id, kind, name, version, content, "", datetime.now(UTC), by)
            await self._check_pair(tenant_id, kind, probe)
        pv = await self.store.publish_pack(tenant_id, kind, name, version, content, by)
        act = await self.activate(tenant_id, kind, name, version, by) if activate else None
        return Published(pv, kind, act)

    async def _check_pair(self, tenant_id: str, kind: str, candidate: PackVersion) -> None:
        """Refuse an activation that would leave the tenant with packs that do not compile together."""
        other_kind = "tenant" if kind == "domain" else "domain"
        other = await self.store.active_pack(tenant_id, other_kind)
        if other is None:
            if kind == "tenant":
                raise PackError([PackProblem(candidate.ref, "$.domain", "activate a domain pack first")])
            return
        dom_pv, ten_pv = (candidate, other) if kind == "domain" else (other, candidate)
        dom = model_from_data(dom_pv.content, dom_pv.ref)
        ten = model_from_data(ten_pv.content, ten_pv.ref)
        assert isinstance(dom, DomainPack) and isinstance(ten, TenantPolicy)
        compile_tenant(ten, compile_domain(dom, dom_pv.ref), ten_pv.ref)

    async def activate(self, tenant_id: str, kind: str, name: str, version: str, by: str) -> Activation:
        pv = await self.store.get_pack(tenant_id, kind, name, version)
        if pv is None:
            raise NotFound(f"{kind} pack {name}@{version} is not published for tenant {tenant_id!r}")
        await self._check_pair(tenant_id, kind, pv)
        return await self.store.activate(tenant_id, kind, name, version, by)

    async def rollback(self, tenant_id: str, kind: str, by: str) -> Activation:
        target = await self.store.rollback_target(tenant_id, kind)
        if target is None:
            raise NotFound(f"no earlier {kind} pack version to roll back to for tenant {tenant_id!r}")
        pv = await self.store.get_pack(tenant_id, kind, *target)
        if pv is not None:
            await self._check_pair(tenant_id, kind, pv)
        return await self.store.rollback(tenant_id, kind, by)

    async def diff(self, tenant_id: str, kind: str, name: str, v1: str, v2: str) -> dict[str, Any]:
        a = await self.store.get_pack(tenant_id, kind, name, v1)
        b = await self.store.get_pack(tenant_id, kind, name, v2)
        for v, pv in ((v1, a), (v2, b)):
            if pv is None:
                raise NotFound(f"{kind} pack {name}@{v} is not published for tenant {tenant_id!r}")
        assert a is not None and b is not None
        return diff_packs(a.content, b.content)

    async def kind_of(self, tenant_id: str, name: str) -> str:
        """Which kind a pack name refers to for this tenant (error when ambiguous or unknown)."""
        kinds = [k for k in ("domain", "tenant") if await self.store.list_pack_versions(tenant_id, k, name)]
        if not kinds:
            raise NotFound(f"no pack named {name!r} is published for tenant {tenant_id!r}")
        if len(kinds) > 1:
            raise PackError([PackProblem(name, "$", "name is both a domain pack and a tenant policy: pass --kind")])
        return kinds[0]
