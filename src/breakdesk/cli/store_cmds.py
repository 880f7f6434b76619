"""CLI commands over the store: db, tenant, pack catalog, audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from breakdesk.cli import app
from breakdesk.cli.common import console, fail
from breakdesk.cli.pack_cmds import pack_app
from breakdesk.cli.runtime import check_store, known_tenant, run_or_fail, run_with_store

UrlOpt = Annotated[
    str | None,
    typer.Option("--db", envvar="BREAKDESK_DATABASE_URL", help="Database URL (default sqlite ./breakdesk.db)."),
]
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="Tenant id.")]
KindOpt = Annotated[str | None, typer.Option("--kind", help="domain or tenant (detected when omitted).")]


def _kind(kind: str | None) -> str | None:
    """`--kind` as given, checked (the store would only say that no such pack is published)."""
    if kind is not None and kind not in ("domain", "tenant"):
        fail(f"--kind must be domain or tenant, not {kind!r}")
    return kind

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
tenant_app = typer.Typer(help="Create and list tenants.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify the tamper-evident audit chain.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenant_app, name="tenant")
app.add_typer(audit_app, name="audit")


@db_app.command("upgrade")
def db_upgrade(db: UrlOpt = None) -> None:
    """Apply database migrations (also done automatically on start)."""
    check_store(db)
    console.print("[green]✓[/] database is at the latest migration")


@tenant_app.command("create")
def tenant_create(
    tenant_id: Annotated[str, typer.Argument(
        help="Tenant id: letters, digits, '_', '-', '.', starting with a letter or digit (≤ 100).")],
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    db: UrlOpt = None,
) -> None:
    """Create a tenant."""
    t = run_with_store(lambda s: s.create_tenant(tenant_id, name or tenant_id), db)
    console.print(f"[green]✓[/] tenant {t.tenant_id} created")


@tenant_app.command("list")
def tenant_list(db: UrlOpt = None) -> None:
    """List tenants."""
    tenants = run_with_store(lambda s: s.list_tenants(), db, reads=True)
    table = Table("tenant", "name", "created")
    for t in tenants:
        table.add_row(t.tenant_id, t.name, f"{t.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


@pack_app.command("publish")
def pack_publish(
    file: Annotated[Path, typer.Argument(help="Pack file (YAML or JSON).")],
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant (default: a policy's tenantId).")] = None,
    activate: Annotated[bool, typer.Option("--activate", help="Activate right after publishing.")] = False,
    by: Annotated[str, typer.Option("--by", help="Who publishes (recorded).")] = "cli",
    db: UrlOpt = None,
) -> None:
    """Validate and publish a pack version for a tenant (versions are immutable)."""
    from breakdesk.catalog import Catalog
    from breakdesk.packs.loader import model_from_data, read_file
    from breakdesk.packs.schema import TenantPolicy

    data, source = run_or_fail(lambda: read_file(file))
    if tenant is None:  # a tenant policy names its tenant; anything else must validate before asking for one
        pack = run_or_fail(lambda: model_from_data(data, source))
        if not isinstance(pack, TenantPolicy):
            fail("a domain pack is published for a tenant: pass --tenant")
        tenant = pack.tenantId
    tid: str = tenant
    pub = run_with_store(lambda s: Catalog(s).publish(tid, data, source, by, activate=activate), db)
    console.print(f"[green]✓[/] published {pub.kind} pack {pub.version.ref} for {tid}")
    if pub.activated:
        console.print(f"[green]✓[/] activated {pub.activated.name}@{pub.activated.version}")


@pack_app.command("activate")
def pack_activate(
    name: Annotated[str, typer.Argument(help="Pack name (a tenant policy's name is its tenant id).")],
    version: Annotated[str, typer.Argument(help="Version to activate.")],
    tenant: TenantOpt,
    kind: KindOpt = None,
    by: Annotated[str, typer.Option("--by", help="Who activates it (recorded).")] = "cli",
    db: UrlOpt = None,
) -> None:
    """Activate a published version (refused if the tenant's packs would not compile together)."""
    from breakdesk.catalog import Catalog

    async def go(s):  # type: ignore[no-untyped-def]
        await known_tenant(s, tenant)
        cat = Catalog(s)
        k = _kind(kind) or await cat.kind_of(tenant, name)
        return await cat.activate(tenant, k, name, version, by)

    act = run_with_store(go, db)
    console.print(f"[green]✓[/] {act.kind} pack {act.name}@{act.version} active for {tenant}")


@pack_app.command("rollback")
def pack_rollback(
    tenant: TenantOpt,
    kind: Annotated[str, typer.Option("--kind", help="domain or tenant.")] = "tenant",
    by: Annotated[str, typer.Option("--by", help="Who rolls back (recorded).")] = "cli",
    db: UrlOpt = None,
) -> None:
    """Re-activate the previously active version."""
    from breakdesk.catalog import Catalog

    async def go(s):  # type: ignore[no-untyped-def]
        await known_tenant(s, tenant)
        return await Catalog(s).rollback(tenant, kind, by)

    act = run_with_store(go, db)
    console.print(f"[green]✓[/] rolled back: {act.kind} pack {act.name}@{act.version} active for {tenant}")


@pack_app.command("history")
def pack_history(tenant: TenantOpt, db: UrlOpt = None) -> None:
    """Published versions and the activation history of a tenant."""

    async def go(s):  # type: ignore[no-untyped-def]
        await known_tenant(s, tenant)
        return await s.list_pack_versions(tenant), await s.activation_history(tenant)

    versions, history = run_with_store(go, db, reads=True)
    t1 = Table("kind", "name", "version", "published", "by", title=f"Published packs of {tenant}")
    for v in versions:
        t1.add_row(v.kind, v.name, v.version, f"{v.published_at:%Y-%m-%d %H:%M:%S}", v.published_by)
    t2 = Table("when", "action", "kind", "name", "version", "by", title="Activations")
    for a in history:
        t2.add_row(f"{a.activated_at:%Y-%m-%d %H:%M:%S}", a.action, a.kind, a.name, a.version, a.activated_by)
    console.print(t1, t2)


@pack_app.command("diff")
def pack_diff(
    name: Annotated[str, typer.Argument(help="Pack name (a tenant policy's name is its tenant id).")],
    v1: Annotated[str, typer.Argument(help="The version to compare from.")],
    v2: Annotated[str, typer.Argument(help="The version to compare to.")],
    tenant: TenantOpt,
    kind: KindOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    db: UrlOpt = None,
) -> None:
    """Structured diff between two published versions: items added, removed, changed per section."""
    from breakdesk.catalog import Catalog

    async def go(s):  # type: ignore[no-untyped-def]
        await known_tenant(s, tenant)
        cat = Catalog(s)
        k = _kind(kind) or await cat.kind_of(tenant, name)
        return await cat.diff(tenant, k, name, v1, v2)

    d = run_with_store(go, db, reads=True)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    if not d:
        console.print(f"{name} {v1} → {v2}: no differences")
        return
    table = Table("section", "added", "removed", "changed", title=f"{name} {v1} → {v2}")
    for section, ch in d.items():
        if section == "other":
            table.add_row("other fields", "", "", ", ".join(ch))
            continue
        changed = "; ".join(f"{k} ({', '.join(v)})" for k, v in ch["changed"].items())
        table.add_row(section, ", ".join(ch["added"]), ", ".join(ch["removed"]), changed)
    console.print(table)


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="One tenant (default: all).")] = None,
    db: UrlOpt = None,
) -> None:
    """Recompute each tenant's hash chain; name the first broken entry. Exit 1 if any chain is broken."""

    async def go(s):  # type: ignore[no-untyped-def]
        ids = [tenant] if tenant is not None else [t.tenant_id for t in await s.list_tenants()]
        return [(tid, await s.verify_audit(tid)) for tid in ids]

    results = run_with_store(go, db, reads=True)
    broken = 0
    for tid, r in results:
        if r.ok:
            console.print(f"[green]✓[/] {tid}: {r.checked} entries, chain intact")
        else:
            broken += 1
            console.print(f"[red]✗[/] {tid}: first broken entry seq {r.first_broken_seq}: {r.reason}")
    if broken:
        raise typer.Exit(1)
