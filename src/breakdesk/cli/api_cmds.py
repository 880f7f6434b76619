"""`breakdesk serve` (the HTTP API with its intake worker) and `breakdesk apikey …` (credentials for it)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from breakdesk.cli import app
from breakdesk.cli.common import console, err_console, fail
from breakdesk.cli.runtime import check_store, known_tenant, run_with_store
from breakdesk.cli.store_cmds import UrlOpt

apikey_app = typer.Typer(help="Create, list and revoke API keys for the HTTP API.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")

TenantKeyOpt = Annotated[
    str | None, typer.Option("--tenant", "-t", help="Tenant id (omit for platform-admin keys).")
]


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to bind.")] = 8080,
    db: UrlOpt = None,
    worker: Annotated[
        bool | None,
        typer.Option("--worker/--no-worker",
                     help="Run the in-process intake worker, the approval and resume scheduler and the memory indexer "
                          "(default: $BREAKDESK_WORKER_ENABLED, else on)."),
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="debug, info, warning, error.")] = None,
) -> None:
    """Run the REST API (FastAPI on uvicorn, one process) with the in-process intake worker.

    Configuration comes from BREAKDESK_* variables (see docs/security.md); the server refuses to start when
    JWT is enabled without a key.
    """
    import uvicorn

    from breakdesk.api import ApiSettings, ConfigError, create_app
    from breakdesk.api.observe import configure_logging

    try:
        settings = ApiSettings.from_env(database_url=db, worker_enabled=worker, log_level=log_level)
        configure_logging(settings.log_level)
        api = create_app(settings)
    except ConfigError as exc:
        fail(f"configuration: {exc}")
    check_store(settings.database_url)  # (the app opens its own on startup, where a failure is a traceback)
    err_console.print(f"Breakdesk API on http://{host}:{port} (docs at /docs)", highlight=False)
    uvicorn.run(
        api,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=False,  # the app writes its own structured access log
        server_header=False,
        timeout_graceful_shutdown=15,
    )


@app.command("worker")
def worker_process(
    db: UrlOpt = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="debug, info, warning, error.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on 127.0.0.1:PORT.")
    ] = None,
) -> None:
    """Process accepted exceptions, run plans and the approval scheduler without serving HTTP.

    Pair with `breakdesk serve --no-worker` so pipeline work does not compete with request latency, or run
    several against one database (claims are leases). Settings are the BREAKDESK_WORKER_* / EXECUTION /
    SCHEDULER variables of docs/security.md. SIGTERM or Ctrl-C lets the batch in hand finish.
    """
    import asyncio
    import signal

    from prometheus_client import start_http_server

    from breakdesk.api import ApiSettings, ConfigError
    from breakdesk.api.app import open_store
    from breakdesk.api.observe import ApiMetrics, configure_logging, get_logger
    from breakdesk.api.worker import Background
    from breakdesk.heap import tune_for_throughput
    from breakdesk.pipeline.orchestrator import Orchestrator
    from breakdesk.store import StoreError

    try:
        settings = ApiSettings.from_env(database_url=db, worker_enabled=True, log_level=log_level)
    except ConfigError as exc:
        fail(f"configuration: {exc}")
    configure_logging(settings.log_level)
    log = get_logger("breakdesk.worker")

    async def main() -> None:
        store = await open_store(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        metrics = ApiMetrics()
        if metrics_port is not None:
            try:
                start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
            except OSError as exc:
                await store.close()
                fail(f"cannot serve metrics on 127.0.0.1:{metrics_port}: {exc.strerror or exc}")
        background = Background(store, Orchestrator(store), settings, metrics)
        tune_for_throughput()
        background.start()
        err_console.print("Breakdesk worker running (Ctrl-C stops)", highlight=False)
        log.info("worker.started", database=store.dialect, execution=settings.execution_enabled)
        try:
            await stop.wait()
        finally:
            await background.stop()
            await store.close()
            log.info("worker.stopped")

    try:
        asyncio.run(main())
    except StoreError as exc:
        fail(f"store: {exc}")


@apikey_app.command("create")
def apikey_create(
    role: Annotated[str, typer.Option("--role", "-r", help="viewer, operator, approver, admin or platform-admin.")],
    tenant: TenantKeyOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="What the key is for.")] = None,
    by: Annotated[str, typer.Option("--by", help="Who creates it (recorded).")] = "cli",
    db: UrlOpt = None,
) -> None:
    """Create a key and print it once (only its hash is stored). Platform-admin keys take no tenant."""
    from breakdesk.api.auth import create_api_key
    from breakdesk.api.rbac import Role

    parsed = Role.parse(role)
    if parsed is None:
        fail(f"unknown role {role!r}: use viewer, operator, approver, admin or platform-admin")
    if parsed is Role.PLATFORM_ADMIN and tenant is not None:
        fail("a platform-admin key belongs to no tenant: drop --tenant")
    if parsed is not Role.PLATFORM_ADMIN and tenant is None:
        fail(f"a {parsed.label} key belongs to a tenant: pass --tenant")
    label = name or f"{parsed.label} key"
    key, token = run_with_store(lambda s: create_api_key(s, tenant, parsed, label, by), db)
    err_console.print(
        f"[green]✓[/] {key.role} key {key.key_id} for {key.tenant_id or 'the platform'} — store it now, "
        "it is not shown again:",
        highlight=False,
    )
    typer.echo(token)


@apikey_app.command("list")
def apikey_list(tenant: TenantKeyOpt = None, db: UrlOpt = None) -> None:
    """List a tenant's keys (or the platform keys): ids, roles, names, usage, revocation — never secrets."""
    async def go(store: Any) -> list[Any]:
        if tenant is not None:
            await known_tenant(store, tenant)
        return await store.list_api_keys(tenant)

    keys = run_with_store(go, db, reads=True)
    table = Table(title=f"API keys of {tenant if tenant is not None else 'the platform'}")
    table.add_column("key id", no_wrap=True)  # copied into `apikey revoke`: never folded
    for column in ("role", "name", "created", "last used", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(
            k.key_id,
            k.role,
            k.name,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
            f"{k.revoked_at:%Y-%m-%d %H:%M} by {k.revoked_by}" if k.revoked_at else "",
        )
    console.print(table)


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(
        help="Key id: the 16 hex characters between 'bdk_' and the next '_' (`apikey list`'s key id).")],
    tenant: TenantKeyOpt = None,
    by: Annotated[str, typer.Option("--by", help="Who revokes it (recorded).")] = "cli",
    db: UrlOpt = None,
) -> None:
    """Revoke a key. Running servers stop accepting it within their key cache time (30 s by default)."""
    key = run_with_store(lambda s: s.revoke_api_key(tenant, key_id, by), db)
    console.print(f"[green]✓[/] key {key.key_id} revoked", highlight=False)
