"""`breakdesk similar --status` reads statuses as the API does (a typo is an error, not "no cases")."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from memkit import SMALL, make_tenant, process
from typer.testing import CliRunner

from breakdesk.cli import _register, app
from breakdesk.store import Store


def test_similar_status_is_checked_and_case_insensitive(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    async def setup() -> tuple[str, str]:
        store = await Store.open(url)
        try:
            t = await make_tenant(store)
            await process(store, t, SMALL)
            case = await store.get_case(t, "E-2")
            assert case is not None
            return t, case.status
        finally:
            await store.close()

    tenant, status = asyncio.run(setup())
    _register()
    runner = CliRunner()
    args = ["similar", "E-1", "--tenant", tenant, "-k", "2", "--json", "--db", url]
    upper = runner.invoke(app, [*args, "--status", status])
    assert upper.exit_code == 0, upper.output
    assert "E-2" in [h["exceptionId"] for h in json.loads(upper.output)["items"]]
    lower = runner.invoke(app, [*args, "--status", status.lower()])
    assert lower.exit_code == 0, lower.output
    assert json.loads(lower.output)["items"] == json.loads(upper.output)["items"]
    bogus = runner.invoke(app, [*args, "--status", "DONE"])
    assert bogus.exit_code == 2, bogus.output  # a usage error, as the API's 422
