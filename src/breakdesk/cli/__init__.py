"""The `breakdesk` command. Each sub-command group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="breakdesk",
    help="Breakdesk: a multi-tenant exception desk driven by domain and tenant policy packs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _check_environment() -> None:
    """Before any command: the `BREAKDESK_*` variables read where they are used (`breakdesk.envvars`) are
    checked, so a bad one stops the command with its name instead of failing the work that reads it."""
    from breakdesk import envvars

    try:
        envvars.check()
    except ValueError as exc:
        from breakdesk.cli.common import fail

        fail(f"configuration: {exc}")


@app.command()
def version() -> None:
    """Print the version, the Python running it and whether the decision core runs compiled."""
    import platform

    from breakdesk import __version__, native

    core = f"decision core {native.status()}"
    if core.endswith("interpreted"):
        core += f" (installed with BREAKDESK_COMPILE=0, without a C compiler, or {native.INTERPRET_ENV}=1)"
    typer.echo(f"breakdesk {__version__} · Python {platform.python_version()} · {core}")


def _register() -> None:
    # Imported for their side effect of adding commands to `app`.
    from breakdesk.cli import (  # noqa: F401
        api_cmds,
        memory_cmds,
        pack_cmds,
        pack_import,
        run_cmds,
        store_cmds,
        tool_cmds,
    )


def main() -> None:
    _register()
    app()
