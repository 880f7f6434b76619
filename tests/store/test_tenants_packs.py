"""Tenants, pack publication (immutable versions), activation, rollback and history."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from breakdesk.audit import content_hash
from breakdesk.store import Conflict, NotFound, Store, StoreError

PACK_V1 = {"name": "finance", "version": "1.0.0", "taxonomy": {"PAYMENT_MISMATCH": {"severity": "HIGH"}}}
PACK_V2 = {"name": "finance", "version": "1.1.0", "taxonomy": {"PAYMENT_MISMATCH": {"severity": "CRITICAL"}}}
PACK_V3 = {"name": "finance", "version": "2.0.0", "taxonomy": {}}


async def test_tenant_crud(store: Store, new_tenant_id: Callable[[], str]) -> None:
    tid = new_tenant_id()
    created = await store.create_tenant(tid, "Acme", {"retention_days": 30})
    assert (created.tenant_id, created.name, created.settings) == (tid, "Acme", {"retention_days": 30})
    fetched = await store.get_tenant(tid)
    assert fetched == created
    assert tid in {t.tenant_id for t in await store.list_tenants()}
    with pytest.raises(Conflict, match="already exists"):
        await store.create_tenant(tid, "Again")
    assert await store.get_tenant(new_tenant_id()) is None
    assert (await store.ensure_tenant(tid)).name == "Acme"
    other = new_tenant_id()
    assert (await store.ensure_tenant(other, "Other")).name == "Other"
    with pytest.raises(StoreError):
        await store.create_tenant("")
    for bad in ("acme capital", "acme/x", "-acme", "acme!", "é"):  # the API's paths could never reach them
        with pytest.raises(StoreError, match="only letters, digits"):
            await store.create_tenant(bad)
    assert all(t.tenant_id not in ("acme capital", "acme/x") for t in await store.list_tenants())
    # Creating a tenant opens its audit chain.
    [entry] = await store.get_audit(tid)
    assert (entry.seq, entry.action, entry.subject) == (1, "tenant.create", f"tenant:{tid}")


async def test_publish_is_idempotent_and_versions_are_immutable(store: Store, tenant: str) -> None:
    first = await store.publish_pack(tenant, "domain", "finance", "1.0.0", PACK_V1, "alice")
    assert first.content_hash == content_hash(PACK_V1)
    assert first.ref == "finance@1.0.0"
    again = await store.publish_pack(
        tenant, "domain", "finance", "1.0.0", dict(reversed(PACK_V1.items())), "bob"
    )
    assert again == first  # same content (key order irrelevant): no-op, original publisher kept
    with pytest.raises(Conflict, match=r"finance@1\.0\.0 is already published .* immutable"):
        await store.publish_pack(tenant, "domain", "finance", "1.0.0", PACK_V2, "alice")
    fetched = await store.get_pack(tenant, "domain", "finance", "1.0.0")
    assert fetched is not None and fetched.content == PACK_V1
    assert await store.get_pack(tenant, "domain", "finance", "9.9.9") is None
    with pytest.raises(StoreError, match="pack kind"):
        await store.publish_pack(tenant, "weird", "x", "1", {}, "alice")


async def test_publish_for_unknown_tenant_is_not_found(
    store: Store, new_tenant_id: Callable[[], str]
) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        await store.publish_pack(new_tenant_id(), "domain", "finance", "1.0.0", PACK_V1, "alice")


async def test_list_pack_versions_filters(store: Store, tenant: str) -> None:
    await store.publish_pack(tenant, "domain", "finance", "1.0.0", PACK_V1, "alice")
    await store.publish_pack(tenant, "domain", "finance", "1.1.0", PACK_V2, "alice")
    await store.publish_pack(tenant, "domain", "logistics", "1.0.0", {"name": "logistics"}, "alice")
    await store.publish_pack(tenant, "tenant", "acme-policy", "1", {"tenantId": tenant}, "alice")
    everything = await store.list_pack_versions(tenant)
    assert [(p.kind, p.name, p.version) for p in everything] == [
        ("domain", "finance", "1.0.0"),
        ("domain", "finance", "1.1.0"),
        ("domain", "logistics", "1.0.0"),
        ("tenant", "acme-policy", "1"),
    ]
    assert [p.version for p in await store.list_pack_versions(tenant, kind="domain", name="finance")] == [
        "1.0.0",
        "1.1.0",
    ]
    assert [p.name for p in await store.list_pack_versions(tenant, kind="tenant")] == ["acme-policy"]


async def test_activation_rollback_and_history(store: Store, tenant: str) -> None:
    for content in (PACK_V1, PACK_V2, PACK_V3):
        await store.publish_pack(tenant, "domain", "finance", str(content["version"]), content, "alice")
    assert await store.active_pack(tenant, "domain") is None
    with pytest.raises(NotFound, match="roll back"):
        await store.rollback(tenant, "domain", "alice")
    with pytest.raises(NotFound, match="has not been published"):
        await store.activate(tenant, "domain", "finance", "3.0.0", "alice")

    await store.activate(tenant, "domain", "finance", "1.0.0", "alice")
    with pytest.raises(NotFound, match="roll back"):
        await store.rollback(tenant, "domain", "alice")  # nothing before the first activation
    await store.activate(tenant, "domain", "finance", "1.1.0", "alice")
    same = await store.activate(tenant, "domain", "finance", "1.1.0", "bob")  # already active: no new row
    assert same.activated_by == "alice"
    await store.activate(tenant, "domain", "finance", "2.0.0", "alice")
    active = await store.active_pack(tenant, "domain")
    assert active is not None and active.version == "2.0.0" and active.content == PACK_V3

    back = await store.rollback(tenant, "domain", "carol")
    assert (back.version, back.action, back.activated_by) == ("1.1.0", "rollback", "carol")
    back = await store.rollback(tenant, "domain", "carol")
    assert back.version == "1.0.0"  # rollbacks unwind, they do not toggle
    with pytest.raises(NotFound):
        await store.rollback(tenant, "domain", "carol")
    active = await store.active_pack(tenant, "domain")
    assert active is not None and active.version == "1.0.0"

    await store.activate(tenant, "domain", "finance", "2.0.0", "alice")
    assert (await store.rollback(tenant, "domain", "alice")).version == "1.0.0"

    history = await store.activation_history(tenant)
    assert [(a.action, a.version) for a in history] == [
        ("activate", "1.0.0"),
        ("activate", "1.1.0"),
        ("activate", "2.0.0"),
        ("rollback", "1.1.0"),
        ("rollback", "1.0.0"),
        ("activate", "2.0.0"),
        ("rollback", "1.0.0"),
    ]
    assert await store.activation_history(tenant, kind="tenant") == []
    assert await store.active_pack(tenant, "tenant") is None

    actions = [e.action for e in await store.get_audit(tenant, limit=1000)]
    assert actions.count("pack.publish") == 3
    assert actions.count("pack.activate") == 4 and actions.count("pack.rollback") == 3
    assert (await store.verify_audit(tenant)).ok


async def test_tenant_and_domain_kinds_are_independent(store: Store, tenant: str) -> None:
    await store.publish_pack(tenant, "domain", "finance", "1.0.0", PACK_V1, "alice")
    await store.publish_pack(tenant, "tenant", "policy", "1", {"p": 1}, "alice")
    await store.activate(tenant, "domain", "finance", "1.0.0", "alice")
    await store.activate(tenant, "tenant", "policy", "1", "alice")
    domain = await store.active_pack(tenant, "domain")
    policy = await store.active_pack(tenant, "tenant")
    assert domain is not None and domain.name == "finance"
    assert policy is not None and policy.name == "policy"
    with pytest.raises(NotFound):  # a domain pack name is not a tenant-policy version
        await store.activate(tenant, "tenant", "finance", "1.0.0", "alice")


async def test_active_pack_hashes_follow_activations_and_rollbacks(
    store: Store, tenant: str, new_tenant_id: Callable[[], str]
) -> None:
    """The orchestrator's per-batch freshness check: both kinds' content hashes in one read."""
    assert await store.active_pack_hashes(tenant) == {}
    for content in (PACK_V1, PACK_V2):
        await store.publish_pack(tenant, "domain", "finance", str(content["version"]), content, "alice")
    await store.publish_pack(tenant, "tenant", "policy", "1", {"p": 1}, "alice")
    await store.activate(tenant, "domain", "finance", "1.0.0", "alice")
    assert await store.active_pack_hashes(tenant) == {"domain": content_hash(PACK_V1)}
    await store.activate(tenant, "tenant", "policy", "1", "alice")
    await store.activate(tenant, "domain", "finance", "1.1.0", "alice")
    hashes = await store.active_pack_hashes(tenant)
    assert hashes == {"domain": content_hash(PACK_V2), "tenant": content_hash({"p": 1})}
    for kind in ("domain", "tenant"):
        active = await store.active_pack(tenant, kind)
        assert active is not None and active.content_hash == hashes[kind]
    await store.rollback(tenant, "domain", "alice")
    assert (await store.active_pack_hashes(tenant))["domain"] == content_hash(PACK_V1)
    other = new_tenant_id()
    await store.create_tenant(other, "Other")
    assert await store.active_pack_hashes(other) == {}
