"""`breakdesk similar` and `breakdesk memory index` on a SQLite file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from memkit import on_store, stored_tenant
from typer.testing import CliRunner

from breakdesk.cli import _register, app


def test_similar_and_index_commands(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    tenant = stored_tenant(url)
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
    for follow in ([], ["--follow"]):  # an unknown tenant is a usage error, not a row of zeros or a loop
        out = runner.invoke(app, ["memory", "index", *follow, "--tenant", "no-such-tenant", "--db", url])
        assert out.exit_code == 2 and "tenant 'no-such-tenant' does not exist" in out.output, out.output


def test_similar_since_is_iso_8601_and_utc_without_a_zone(tmp_path: Path, monkeypatch: Any) -> None:
    """`--since` reads as the API does: `Z` or an offset honoured, no zone meaning UTC whatever the machine's
    local time (typer's datetime read it as local time and refused `Z`)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'since.db'}"

    tenant = stored_tenant(url)  # SMALL, received 2025-03-14T09:00:00Z, one second apart
    _register()
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        def found(since: str) -> set[str]:
            out = CliRunner().invoke(app, ["similar", "E-1", "--tenant", tenant, "-k", "10", "--json",
                                           "--since", since, "--db", url])
            assert out.exit_code == 0, out.output
            return {h["exceptionId"] for h in json.loads(out.output)["items"]}

        everything = found("2025-03-14T09:00:00Z")
        later = {e for e in everything if e >= "E-4"}  # E-n received at 09:00:0(n-1)
        assert later and later != everything
        assert found("2025-03-14T09:00:03") == found("2025-03-14T09:00:03Z") == later
        assert found("2025-03-14T10:00:03+01:00") == later
        assert found("2025-03-14T09:00:03-04:00") == set()
        bad = CliRunner().invoke(app, ["similar", "E-1", "--tenant", tenant, "--since", "yesterday", "--db", url])
        assert bad.exit_code == 2 and "ISO 8601" in bad.output
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_memory_index_reports_the_cases_a_new_pack_version_rendered_again(tmp_path: Path) -> None:
    """At the usual 80 columns, every column of the report whole; the rerendered count after a new domain pack
    version that rewords the settlement fails' description (E-1 .. E-4)."""
    from test_rerender import NEW_WORDS, activate, finance

    url = f"sqlite+aiosqlite:///{tmp_path / 'pack.db'}"

    tenant = stored_tenant(url)
    _register()
    runner = CliRunner()
    columns = ["scanned", "indexed", "resolved", "rerendered", "embedded", "errors"]
    first = runner.invoke(app, ["memory", "index", "--tenant", tenant, "--db", url], terminal_width=80)
    assert first.exit_code == 0, first.output
    new_version = finance("1.1.0", SETTLEMENT_FAIL={"description": NEW_WORDS})
    on_store(url, lambda store: activate(store, tenant, new_version))
    out = runner.invoke(app, ["memory", "index", "--tenant", tenant, "--db", url], terminal_width=80)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert any(line.split() == ["tenant", *columns] for line in lines), out.output
    row = next(line.split() for line in lines if tenant in line)
    assert dict(zip(columns, row[1:], strict=True))["rerendered"] == "4"


def test_index_follow_keeps_to_the_tenants_asked_for(tmp_path: Path) -> None:
    """`memory index --follow --tenant A` indexes A and leaves B alone (it used to follow every tenant, so a
    user holding one tenant's embedding calls back got all of them)."""
    import os
    import signal
    import subprocess
    import sys

    url = f"sqlite+aiosqlite:///{tmp_path / 'follow.db'}"
    a = stored_tenant(url, memory=False)  # exceptions processed, nothing indexed
    b = stored_tenant(url, memory=False)

    async def counts(store: Any) -> tuple[int, int]:
        return await store.count_cases(a), await store.count_cases(b)

    assert on_store(url, counts) == (0, 0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREAKDESK_")}
    proc = subprocess.Popen([sys.executable, "-m", "breakdesk", "memory", "index", "--follow", "--tenant", a,
                             "--interval", "0.1", "--db", url], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while on_store(url, counts)[0] == 0:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "tenant A was never indexed"
            time.sleep(0.2)
        time.sleep(1.0)  # ten more rounds: B would have been indexed in the first
        assert on_store(url, counts)[1] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
