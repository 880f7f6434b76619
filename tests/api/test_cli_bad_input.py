"""Commands given something that does not exist, or cannot be used, say so in one line and exit non-zero:
never an empty answer with exit 0, never a traceback (file, tenant and value named)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from breakdesk.cli import _register, app

_register()
runner = CliRunner()


@pytest.fixture()
def db(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bad.db'}"
    done = runner.invoke(app, ["tenant", "create", "t1", "--db", url])
    assert done.exit_code == 0, done.output
    return url


@pytest.mark.parametrize(
    ("command", "tenant"),
    [
        (["pack", "history"], "nosuch"),
        (["apikey", "list"], "nosuch"),
        (["apikey", "list"], ""),  # not "the platform's keys"
        (["approvals", "list"], "nosuch"),
        (["resume"], "nosuch"),
        (["memory", "index"], "nosuch"),
        (["memory", "status"], "nosuch"),
        (["audit", "verify"], ""),  # not "every tenant"
        (["pack", "activate", "finance", "1.0.0"], "nosuch"),  # not "no pack named 'finance'"
        (["pack", "diff", "finance", "1.0.0", "1.0.1"], "nosuch"),
        (["pack", "rollback"], "nosuch"),  # not "no earlier version"
    ],
)
def test_an_unknown_tenant_is_a_usage_error(db: str, command: list[str], tenant: str) -> None:
    done = runner.invoke(app, [*command, "--tenant", tenant, "--db", db])
    assert done.exit_code == 2 and f"tenant {tenant!r} does not exist" in done.stderr, done.output


def test_unknown_ids_and_unusable_values(db: str, tmp_path: Path) -> None:
    listed = runner.invoke(app, ["approvals", "list", "--tenant", "t1", "--exception", "NOPE", "--db", db])
    assert listed.exit_code == 1 and "no exception 'NOPE' for tenant 't1'" in listed.stderr
    missing = tmp_path / "no-such-dir" / "schema.json"
    schema = runner.invoke(app, ["pack", "schema", "-o", str(missing)])
    assert schema.exit_code == 2 and f"cannot write {missing}" in schema.stderr
    for edits in (str(tmp_path / "no-such.json"), str(tmp_path)):
        approve = runner.invoke(app, ["approvals", "approve", "AP-X", "--tenant", "t1", "--edits", edits, "--db", db])
        assert approve.exit_code == 2 and f"--edits {edits}: neither a JSON object nor a readable" in approve.stderr
    listy = runner.invoke(app, ["approvals", "approve", "AP-X", "--tenant", "t1", "--edits", '[{"a": 1}]', "--db", db])
    assert listy.exit_code == 2 and "--edits must be a JSON object" in listy.stderr
    for value in ("inf", "1e12"):
        resumed = runner.invoke(app, ["resume", "--tenant", "t1", "--stalled-after", value, "--db", db])
        assert resumed.exit_code == 2 and "--stalled-after" in resumed.output, resumed.output


def test_a_busy_metrics_port_is_named(db: str) -> None:
    """`worker --metrics-port` on a port in use: one line, exit 2, before the worker says it runs."""
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "breakdesk", "worker", "--metrics-port", str(port), "--db", db],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
    assert "worker running" not in done.stderr


def test_run_and_pack_commands_name_the_real_problem(db: str, tmp_path: Path) -> None:
    """An unknown tenant is not "publish and activate packs first"; a file that is no pack is not "pass --tenant";
    a bogus --kind is not "no such pack published"; the demo's database in a missing directory is one line."""
    lines = tmp_path / "in.jsonl"
    lines.write_text("{}\n")
    run = runner.invoke(app, ["run", str(lines), "--tenant", "nosuch", "--dry-run", "--db", db])
    assert run.exit_code == 2 and "tenant 'nosuch' does not exist" in run.stderr, run.output
    listy = tmp_path / "list.yaml"
    listy.write_text("[1, 2]\n")
    publish = runner.invoke(app, ["pack", "publish", str(listy), "--db", db])
    assert publish.exit_code == 2 and "a pack must be a mapping" in publish.output, publish.output
    for command in (["pack", "activate", "finance", "1.0.0"], ["pack", "diff", "finance", "1.0.0", "1.0.1"]):
        kind = runner.invoke(app, [*command, "--tenant", "t1", "--kind", "bogus", "--db", db])
        assert kind.exit_code == 2 and "--kind must be domain or tenant, not 'bogus'" in kind.stderr
    import os
    import subprocess
    import sys

    missing = tmp_path / "no-such-dir" / "demo.db"  # (in its own process: the demo sets up the process's logging)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREAKDESK_")}
    demo = subprocess.run([sys.executable, "-m", "breakdesk", "demo", "--db-file", str(missing)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert demo.returncode == 2 and f"directory {missing.parent} does not exist" in demo.stderr, demo.stderr
