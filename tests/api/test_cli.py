"""`breakdesk apikey create|list|revoke`: the key is printed once, only its hash is stored, revocation sticks."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from breakdesk.api.auth import HASHER, parse_api_key
from breakdesk.cli import _register, app
from breakdesk.store import Store

_register()
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_apikey_lifecycle(db_url: str) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    code, _, err = invoke("tenant", "create", tenant, "--db", db_url)
    assert code == 0, err
    code, out, err = invoke("apikey", "create", "--tenant", tenant, "--role", "approver", "--name", "ops bot", "--db", db_url)
    assert code == 0, err
    token = out.strip()
    parsed = parse_api_key(token)
    assert parsed is not None and "store it now" in err
    key_id, secret = parsed

    async def stored() -> tuple[str, str, str | None, bool]:
        async with await Store.open(db_url) as store:
            key = await store.get_api_key(key_id)
            assert key is not None
            return key.secret_hash, key.role, key.tenant_id, key.revoked

    secret_hash, role, owner, revoked = asyncio.run(stored())
    assert (role, owner, revoked) == ("approver", tenant, False)
    assert secret not in secret_hash and HASHER.verify(secret_hash, secret)

    code, out, _ = invoke("apikey", "list", "--tenant", tenant, "--db", db_url)
    assert code == 0 and key_id in out and "ops bot" in out and secret not in out
    code, out, _ = invoke("apikey", "revoke", key_id, "--tenant", tenant, "--db", db_url)
    assert code == 0 and "revoked" in out
    assert asyncio.run(stored())[3] is True
    other = f"{tenant}-other"
    assert invoke("tenant", "create", other, "--db", db_url)[0] == 0
    code, _, err = invoke("apikey", "revoke", key_id, "--tenant", other, "--db", db_url)
    assert code == 2 and "no API key" in err  # a key is revoked through its own tenant only


def test_platform_keys_and_refusals(db_url: str) -> None:
    code, out, err = invoke("apikey", "create", "--role", "platform-admin", "--db", db_url)
    assert code == 0, err
    key_id = (parse_api_key(out.strip()) or ("", ""))[0]
    code, out, _ = invoke("apikey", "list", "--db", db_url)
    assert code == 0 and key_id in out
    assert invoke("apikey", "create", "--role", "platform-admin", "--tenant", "x", "--db", db_url)[0] == 2
    assert invoke("apikey", "create", "--role", "admin", "--db", db_url)[0] == 2
    code, _, err = invoke("apikey", "create", "--role", "root", "--tenant", "x", "--db", db_url)
    assert code == 2 and "unknown role" in err
    code, _, err = invoke("apikey", "create", "--role", "viewer", "--tenant", f"nobody-{uuid.uuid4().hex[:6]}", "--db", db_url)
    assert code == 2 and "does not exist" in err


def test_pack_publish_of_a_broken_file_names_the_problem_and_writes_nothing(db_url: str, tmp_path: object) -> None:
    from pathlib import Path

    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    assert invoke("tenant", "create", tenant, "--db", db_url)[0] == 0
    bad = Path(str(tmp_path)) / "broken.yaml"
    bad.write_text("kind: DomainPack\nname: x\nversion: [1\n", encoding="utf-8")
    code, _, err = invoke("pack", "publish", str(bad), "--tenant", tenant, "--db", db_url)
    assert code == 2
    assert "broken.yaml:$: invalid YAML at line 4" in err and "1 problem(s)" in err

    async def versions() -> int:
        async with await Store.open(db_url) as store:
            return len(await store.list_pack_versions(tenant))

    assert asyncio.run(versions()) == 0


def test_commands_refuse_a_bad_variable_before_starting(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """A clean one-line refusal naming the variable, not a traceback, and nothing bound or opened."""
    monkeypatch.setenv("BREAKDESK_APPROVAL_TTL_MINUTES", "soon")
    url = f"sqlite+aiosqlite:///{tmp_path}/never.db"
    for args in (["serve", "--db", url], ["worker", "--db", url], ["demo", "--db-file", str(tmp_path / "demo.db")]):
        code, _, err = invoke(*args)
        assert code != 0 and "BREAKDESK_APPROVAL_TTL_MINUTES" in err and "Traceback" not in err, (args, err)
    assert not list(tmp_path.iterdir())


def test_cli_logging_writes_to_stderr_as_it_is_when_a_line_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configured under one stderr (a test's captured output, closed after it), the CLI's warnings must go to
    the stderr of the moment, not fail on the closed one: the API's auth failures logged that way answered 500."""
    import io

    import structlog

    from breakdesk.cli.tool_cmds import configure_cli_logging

    saved = structlog.get_config()
    first, second = io.StringIO(), io.StringIO()
    try:
        structlog.reset_defaults()
        monkeypatch.setattr("sys.stderr", first)
        configure_cli_logging()
        first.close()
        monkeypatch.setattr("sys.stderr", second)
        structlog.get_logger("test").warning("after.swap")
        assert "after.swap" in second.getvalue()
    finally:
        structlog.configure(**saved)
