"""`breakdesk pack …`: validate, schema, test, import — packs are code, so they get a compiler's ergonomics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from breakdesk.cli import app
from breakdesk.cli.common import EXIT_INVALID, console, err_console, fail, print_problems

pack_app = typer.Typer(help="Validate, test, import and publish domain packs and tenant policies.", no_args_is_help=True)
app.add_typer(pack_app, name="pack")


@pack_app.command("validate")
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Pack files or directories (YAML or JSON).")],
) -> None:
    """Validate packs; tenant policies are checked against the domain packs given alongside them."""
    from breakdesk.packs.workspace import validate_paths

    report = validate_paths(paths)
    if not report.files:
        err_console.print("[red]error:[/] no pack files found")
        raise typer.Exit(EXIT_INVALID)
    for note in report.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if report.problems:
        n = print_problems(report.problems)
        err_console.print(f"[bold red]{n} problem(s)[/] in {len(report.files)} file(s)")
        raise typer.Exit(EXIT_INVALID)
    for d in report.domains:
        console.print(
            f"[green]✓[/] domain {d.ref}: {len(d.types)} types, {len(d.spec.severityRules)} severity rules, "
            f"{len(d.tools)} tools, {len(d.playbooks)} playbooks, {len(d.spec.tests)} tests"
        )
    for t in report.tenants:
        console.print(f"[green]✓[/] tenant policy {t.ref} → {t.domain.ref}: {len(t.spec.tests)} tests")


@pack_app.command("schema")
def schema(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to a file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of packs (for editor validation and autocompletion)."""
    from breakdesk.packs.schema import pack_json_schema

    text = json.dumps(pack_json_schema(), indent=2)
    if output:
        try:
            output.write_text(text + "\n")
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
    else:
        typer.echo(text)


@pack_app.command("test")
def test(
    domain_pack: Annotated[Path, typer.Argument(help="The domain pack file.")],
    tenant: Annotated[
        list[Path] | None, typer.Option("--tenant", "-t", help="Tenant policy file(s) whose tests to run too.")
    ] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here (for CI).")] = None,
) -> None:
    """Run a pack's test cases through the real pipeline and compare with their expectations."""
    from rich.table import Table

    from breakdesk.packs.problems import PackError
    from breakdesk.packs.testing import run_pack_tests, write_junit
    from breakdesk.packs.workspace import compile_domain_file, compile_tenant_file

    try:
        domain = compile_domain_file(domain_pack)
        tenants = [compile_tenant_file(t, domain) for t in tenant or []]
    except PackError as exc:
        print_problems(exc.problems)
        raise typer.Exit(EXIT_INVALID) from None
    results = run_pack_tests(domain, tenants)
    table = Table(title=f"Pack tests: {domain.ref}", show_lines=False)
    for col in ("suite", "test", "result", "details"):
        table.add_column(col, overflow="fold")
    for r in results:
        details = "; ".join(r.failures) if r.failures else (
            f"{r.actual['exceptionType']} {r.actual['severity']} {r.actual['playbook']}"
            f"{' approval' if r.actual['approvalRequired'] else ''}"
        )
        table.add_row(r.suite, r.name, "[green]pass[/]" if r.passed else "[red]FAIL[/]", details)
    console.print(table)
    failed = sum(1 for r in results if not r.passed)
    if junit:
        try:
            write_junit(results, junit)
        except OSError as exc:
            fail(f"cannot write the JUnit report {junit}: {exc.strerror or exc}")
    console.print(f"{len(results) - failed} passed, {failed} failed")
    if not results:
        err_console.print("[yellow]no test cases found[/]")
    if failed:
        raise typer.Exit(1)
