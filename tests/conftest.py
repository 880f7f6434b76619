"""Shared fixtures: database URLs for SQLite and PostgreSQL, and a scriptable embeddings endpoint.

PostgreSQL is expected on 127.0.0.1:5432 with trust auth (override with BREAKDESK_TEST_PG_HOST/PORT/USER).
Each pytest session (and each xdist worker) gets its own freshly created database, dropped at the end.
When PostgreSQL is unreachable the postgres variants skip, except under CI=true, where they fail: CI must
never pass by silently not testing PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

PG_HOST = os.environ.get("BREAKDESK_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BREAKDESK_TEST_PG_PORT", "5432"))
PG_ADMIN_DB = os.environ.get("BREAKDESK_TEST_PG_DB", "test")

# The pipeline searches similar cases in this process unless a test asks for a search process
# (tests/memory/test_search_process.py): one per test's store would start hundreds of processes. Commands run
# in a subprocess with the BREAKDESK_* variables dropped (the README tour, the demo) use the default, `auto`.
os.environ.setdefault("BREAKDESK_MEMORY_SEARCH_PROCESS", "off")


def _candidate_users() -> list[str]:
    users = [os.environ.get("BREAKDESK_TEST_PG_USER", ""), "postgres", "root"]
    with contextlib.suppress(KeyError, OSError):
        users.append(getpass.getuser())
    return list(dict.fromkeys(u for u in users if u))


async def _find_pg_user() -> tuple[str | None, str]:
    """The first candidate user that can connect to the admin database, or (None, why not)."""
    try:
        import asyncpg
    except ImportError:
        return None, "asyncpg is not installed"
    errors: list[str] = []
    for user in _candidate_users():
        try:
            conn = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=user, database=PG_ADMIN_DB, timeout=5
            )
        except Exception as exc:  # any failure just means "try the next user"
            errors.append(f"{user}: {type(exc).__name__}: {exc}")
            continue
        await conn.close()
        return user, ""
    return None, "; ".join(errors) or "no candidate users"


async def _admin(user: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=PG_ADMIN_DB, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _unavailable(reason: str) -> NoReturn:
    message = f"PostgreSQL at {PG_HOST}:{PG_PORT}/{PG_ADMIN_DB} is not usable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: PostgreSQL tests must run, not skip)", pytrace=False)
    pytest.skip(message)


def _pg_database() -> Iterator[str]:
    """URL of a new PostgreSQL database, dropped afterwards (skips, or fails under CI, if absent)."""
    user, why = asyncio.run(_find_pg_user())
    if user is None:
        _unavailable(why)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"bd_test_{worker}_{secrets.token_hex(4)}"
    asyncio.run(_admin(user, f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_admin(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a PostgreSQL database private to this session/worker."""
    yield from _pg_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a fresh SQLite file and on the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'breakdesk.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def own_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """`db_url`, but on PostgreSQL a database of its own: for a test whose background worker goes over every
    tenant in the database, so that the other tests' tenants (some with embeddings endpoints nobody answers)
    do not set its pace."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'breakdesk.db'}"
    else:
        yield from _pg_database()


@pytest.fixture
def both_builds() -> Callable[[Callable[[], Any], str], tuple[Any, Any]]:
    """`(function, its module's import path)` → the function's result as JSON, from this process (compiled) and
    from a subprocess that imports every compiled module from its source (`BREAKDESK_INTERPRETED=1`): what the
    compiled and interpreted builds must agree on. Skips where nothing is compiled (fails under CI=true)."""
    from breakdesk import native

    if not native.compiled_modules():
        if os.environ.get("CI") == "true":
            pytest.fail("the decision core is not compiled")
        pytest.skip("nothing is compiled: nothing to compare")
    root = Path(__file__).resolve().parents[1]

    def run(function: Callable[[], Any], module: str) -> tuple[Any, Any]:
        name = function.__name__
        code = (f"import json, sys\nfrom breakdesk import native\nfrom {module} import {name}\n"
                "assert native.compiled_modules() == [], 'still compiled'\n"
                f"sys.stdout.write(json.dumps({name}(), default=str, sort_keys=True))")
        env = {**os.environ, native.INTERPRET_ENV: "1"}
        done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        compiled = json.loads(json.dumps(function(), default=str, sort_keys=True))
        return compiled, json.loads(done.stdout)

    return run


# ---------------------------------------------------------------------------------------------- embeddings

#: (request path, JSON body, request headers) -> (HTTP status, response body[, response headers])
Reply = Callable[[str, dict[str, Any], Mapping[str, str]],
                 tuple[int, bytes] | tuple[int, bytes, Mapping[str, str]]]


def vectors_reply(embed: Callable[[str], list[float]]) -> Reply:
    """A well-formed embeddings answer: `embed(text)` for every input, in order."""
    def reply(path: str, body: dict[str, Any], headers: Mapping[str, str]) -> tuple[int, bytes]:
        data = [{"object": "embedding", "index": i, "embedding": embed(t)} for i, t in enumerate(body["input"])]
        return 200, json.dumps({"object": "list", "data": data}).encode()
    return reply


class ScriptedEndpoint:
    """A real HTTP server on 127.0.0.1 standing in for an OpenAI-compatible embeddings endpoint: every POST
    is answered by `reply`, which a test sets (and may change mid-test), and recorded in `calls`."""

    def __init__(self) -> None:
        self.reply: Reply = lambda path, body, headers: (503, b"{}")
        self.calls: list[dict[str, Any]] = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, raw, *more = endpoint.reply(self.path, body, self.headers)
                self.send_response(status)
                for name, value in (more[0] if more else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, embed: Callable[[str], list[float]]) -> None:
        self.reply = vectors_reply(embed)


@pytest.fixture
def scripted_embeddings() -> Iterator[ScriptedEndpoint]:
    endpoint = ScriptedEndpoint()
    threading.Thread(target=endpoint.server.serve_forever, daemon=True).start()
    try:
        yield endpoint
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()
