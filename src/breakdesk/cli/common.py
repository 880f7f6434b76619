"""Shared CLI helpers: one console, one way to print pack problems and exit with code 2."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from breakdesk.packs.problems import PackProblem

console = Console()
err_console = Console(stderr=True)

EXIT_INVALID = 2


def fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def unknown_exception(exception_id: str, tenant: str) -> NoReturn:
    """The one answer for an exception id the tenant does not have (unknown, or another tenant's): exit 1."""
    fail(f"no exception {exception_id!r} for tenant {tenant!r}", code=1)


def print_problems(problems: Iterable[PackProblem]) -> int:
    n = 0
    for p in problems:
        err_console.print(
            f"[red]{escape(p.file)}[/]:[cyan]{escape(p.path)}[/]: {escape(p.reason)}", highlight=False, soft_wrap=True
        )
        n += 1
    return n
