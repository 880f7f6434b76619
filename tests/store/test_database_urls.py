"""A database URL Breakdesk cannot use is a one-line usage error (exit 2) for every command, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from breakdesk.cli import _register, app

_register()
runner = CliRunner()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("notaurl", "invalid database URL 'notaurl': use sqlite+aiosqlite:///PATH or postgresql+asyncpg://"),
        ("postgresql://ops:hunter2@127.0.0.1/x", "unsupported database URL 'postgresql://ops:***@127.0.0.1/x'"),
        ("mysql://x@localhost/y", "unsupported database URL"),
        ("sqlite:///plain.db", "unsupported database URL"),
        ("postgresql+asyncpg://nobody@127.0.0.1:1/x", "cannot connect to the database"),
    ],
)
@pytest.mark.parametrize("command", [["tenant", "list"], ["db", "upgrade"], ["serve", "--port", "0"]])
def test_an_unusable_database_url_is_a_usage_error(url: str, says: str, command: list[str]) -> None:
    done = runner.invoke(app, [*command, "--db", url])
    assert done.exit_code == 2, (done.output, done.exception)
    assert says in done.stderr and "hunter2" not in done.stderr and "Traceback" not in done.output


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
