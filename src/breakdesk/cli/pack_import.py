"""`breakdesk pack import FILE --from sentinai [-o OUT]`: convert a foreign pack into the native format.

The conversion itself is a pure function (`breakdesk.packs.sentinai`); this module reads the file, writes YAML
(stdout, or OUT by its suffix: .yaml/.yml/.json) and turns every problem into `file:json.path: reason` lines on
stderr with exit code 2.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from breakdesk.cli.common import EXIT_INVALID, console, err_console, fail
from breakdesk.cli.pack_cmds import pack_app
from breakdesk.packs.problems import PackError, PackProblem

OUTPUT_SUFFIXES = (".yaml", ".yml", ".json")


class ImportFormat(StrEnum):
    sentinai = "sentinai"


class _NoAliasDumper(yaml.SafeDumper):
    """Never write YAML anchors/aliases: imported packs are read and edited by people."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=120)


def _print_problems(problems: list[PackProblem]) -> None:
    for p in problems:
        err_console.print(
            f"[red]{escape(p.file)}[/]:[cyan]{escape(p.path)}[/]: {escape(p.reason)}",
            highlight=False,
            soft_wrap=True,
        )
    err_console.print(f"[bold red]{len(problems)} problem(s)[/]; nothing was written", highlight=False)


@pack_app.command("import")
def import_pack(
    file: Annotated[
        Path, typer.Argument(help="The pack to import (JSON or YAML).", metavar="FILE", show_default=False)
    ],
    from_: Annotated[
        ImportFormat,
        typer.Option("--from", help="Format of FILE (only 'sentinai' for now).", show_default=False),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="OUT",
            help="Write to OUT instead of stdout; .json writes JSON, .yaml/.yml YAML.",
        ),
    ] = None,
    version: Annotated[
        str, typer.Option("--version", help="Version of the imported pack when the source states none.")
    ] = "1.0.0",
    domain: Annotated[
        str | None,
        typer.Option("--domain", help="Tenant packs: the domain pack name, when the source names none."),
    ] = None,
    domain_version_range: Annotated[
        str,
        typer.Option("--domain-version-range", help="Tenant packs: the domain versions the policy binds to."),
    ] = "^1.0.0",
) -> None:
    """Convert a SentinAI domain pack or tenant pack into a native pack (YAML on stdout unless -o)."""
    from breakdesk.packs.loader import read_file
    from breakdesk.packs.sentinai import SentinaiImportError, convert_sentinai

    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        fail(f"cannot tell the output format of {escape(str(output))}: use a .yaml, .yml or .json file name")
    try:
        data, source = read_file(file)
    except PackError as exc:
        _print_problems(exc.problems)
        raise typer.Exit(EXIT_INVALID) from None
    try:
        result = convert_sentinai(
            data, source, version=version, domain_name=domain, domain_version_range=domain_version_range
        )
    except SentinaiImportError as exc:
        _print_problems(exc.problems)
        raise typer.Exit(EXIT_INVALID) from None

    if output is not None and output.suffix.lower() == ".json":
        text = json.dumps(result.data, indent=2, ensure_ascii=False) + "\n"
    else:
        text = dump_yaml(result.data)
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {escape(str(output))}: {escape(exc.strerror or str(exc))}")
    kind = "domain pack" if result.kind == "domain" else "tenant policy"
    ident = result.data.get("name") if result.kind == "domain" else result.data.get("tenantId")
    console.print(
        f"[green]✓[/] imported {kind} {escape(str(ident))}@{escape(str(result.data.get('version')))} "
        f"→ {escape(str(output))}",
        highlight=False,
    )
