"""`breakdesk similar` and `breakdesk memory index` on a SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from memkit import SMALL, make_tenant, process
from typer.testing import CliRunner

from breakdesk.cli import _register, app
from breakdesk.store import Store


def test_similar_and_index_commands(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    async def setup() -> str:
        store = await Store.open(url)
        try:
            t = await make_tenant(store)
            await process(store, t, SMALL)
            return t
        finally:
            await store.close()

    tenant = asyncio.run(setup())
    _register()
    runner = CliRunner()
    out = runner.invoke(app, ["similar", "E-1", "--tenant", tenant, "-k", "2", "--json", "--db", url])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["items"][0]["exceptionId"] == "E-2" and data["items"][0]["why"]
    shown = runner.invoke(app, ["similar", "E-1", "--tenant", tenant, "-k", "2", "--db", url], terminal_width=60)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    first = data["items"][0]
    # each hit: its whole id and score on one line, its explanation and resolution indented below
    head = next(i for i, line in enumerate(lines) if f" {first['exceptionId']}  {first['score']:.2f}  " in line)
    below = " ".join(line.strip() for line in lines[head + 1:head + 6])
    assert below.startswith(first["why"].split(";")[0]) and lines[head + 1].startswith("    ")
    assert ("not resolved yet" if first["resolution"] is None else f"resolution: {first['resolution']}") in below
    none = runner.invoke(app, ["similar", "E-1", "--tenant", tenant, "--type", "NO_SUCH_TYPE", "--db", url])
    assert none.exit_code == 0 and "no similar cases match these filters" in none.output
    out = runner.invoke(app, ["similar", "E-404", "--tenant", tenant, "--db", url])
    assert out.exit_code == 1
    out = runner.invoke(app, ["similar", "E-1", "--tenant", "other-tenant", "--db", url])
    assert out.exit_code == 1  # another tenant's id is simply unknown
    out = runner.invoke(app, ["memory", "index", "--tenant", tenant, "--db", url])
    assert out.exit_code == 0 and tenant in out.output
