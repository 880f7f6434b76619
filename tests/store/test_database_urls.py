"""A database URL Breakdesk cannot use is a one-line usage error (exit 2) for every command, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from breakdesk.cli import _register, app

_register()
runner = CliRunner()


def invoke(args: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of `breakdesk ARGS`; `serve` in its own process, since it sets up logging for the
    process (in this one, onto the runner's stream, closed once it returns)."""
    if args[0] != "serve":
        done = runner.invoke(app, args)
        return done.exit_code, done.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREAKDESK_")}
    proc = subprocess.run([sys.executable, "-m", "breakdesk", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("notaurl", "invalid database URL 'notaurl': use sqlite+aiosqlite:///PATH or postgresql+asyncpg://"),
        ("postgresql+asyncpg://ops:hunter2@127.0.0.1:54x/x", "invalid database URL 'postgresql+asyncpg://ops:***@"),
        ("postgresql://ops:hunter2@127.0.0.1/x", "unsupported database URL 'postgresql://ops:***@127.0.0.1/x'"),
        ("mysql://x@localhost/y", "unsupported database URL"),
        ("sqlite:///plain.db", "unsupported database URL"),
        ("postgresql+asyncpg://nobody@127.0.0.1:1/x", "cannot connect to the database"),
    ],
)
@pytest.mark.parametrize("command", [["tenant", "list"], ["db", "upgrade"], ["serve", "--port", "0"]])
def test_an_unusable_database_url_is_a_usage_error(url: str, says: str, command: list[str]) -> None:
    code, err = invoke([*command, "--db", url])
    assert code == 2, err
    assert says in err and "hunter2" not in err and "Traceback" not in err


def test_a_sqlite_file_in_a_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "b.db"
    done = runner.invoke(app, ["tenant", "list", "--db", f"sqlite+aiosqlite:///{missing}"])
    assert done.exit_code == 2
    assert f"cannot open the SQLite database {missing}: directory {missing.parent} does not exist" in done.stderr


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    notdb = tmp_path / "notes.db"
    notdb.write_text("not a database\n")
    done = runner.invoke(app, ["tenant", "list", "--db", f"sqlite+aiosqlite:///{notdb}"])
    assert done.exit_code == 2 and "the file is not a SQLite database" in done.stderr, done.output


@pytest.mark.postgres
def test_a_value_longer_than_its_column_is_named_on_postgres(pg_url: str) -> None:
    """SQLite keeps long texts; PostgreSQL refuses them, and the message says so (no SQL, no value)."""
    import uuid

    done = runner.invoke(app, ["tenant", "create", f"t-{uuid.uuid4().hex[:8]}", "--name", "x" * 250, "--db", pg_url])
    assert done.exit_code == 2
    assert "a value is longer than the database allows (character varying(200))" in done.stderr, done.output


@pytest.mark.parametrize(
    "command",
    [["tenant", "list"], ["audit", "verify"], ["memory", "status"], ["show", "X", "--tenant", "t"],
     ["approvals", "list", "--tenant", "t"], ["apikey", "list"]],
)
def test_a_reading_command_does_not_create_a_mistyped_database(tmp_path: Path, command: list[str]) -> None:
    """Only commands that write create a SQLite file: a typo in the path is named, not answered with nothing."""
    typo = tmp_path / "breakdesk-typo.db"
    done = runner.invoke(app, [*command, "--db", f"sqlite+aiosqlite:///{typo}"])
    assert done.exit_code == 2 and f"no database at {typo}" in done.stderr, done.output
    assert not typo.exists()
    created = runner.invoke(app, ["tenant", "create", "t", "--db", f"sqlite+aiosqlite:///{typo}"])
    assert created.exit_code == 0 and typo.exists()  # a writing command creates it
