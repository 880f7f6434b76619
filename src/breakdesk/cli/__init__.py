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
