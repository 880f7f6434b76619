"""`breakdesk serve --no-worker` + `breakdesk worker`: the API only accepts, a separate worker process drains the
durable queue, and SIGTERM stops the worker cleanly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from breakdesk.store import Store

from .conftest import break_item, mini_tenant
from .live import LiveServer

pytestmark = pytest.mark.slow


async def test_a_separate_worker_process_drains_what_the_api_accepted(db_url: str, tmp_path: Path) -> None:
    store = await Store.open(db_url)
    try:
        tenant_id, key = await mini_tenant(store, "wp")
        with LiveServer(db_url, tmp_path / "server.log", worker_enabled="false", execution_enabled="false") as server:
            async with httpx.AsyncClient(base_url=server.base_url, headers={"X-API-Key": key}) as client:
                r = await client.post(f"/v1/tenants/{tenant_id}/exceptions",
                                      json=[break_item(f"W-{n}", 10 + n) for n in range(40)])
                assert r.status_code == 202, r.text
                await asyncio.sleep(0.5)
                assert (await store.queue_counts(tenant_id))["PENDING"] == 40, "the API alone must not process"
                log = (tmp_path / "worker.log").open("wb")
                worker = subprocess.Popen(
                    [sys.executable, "-m", "breakdesk", "worker"],
                    env={**server.env, "BREAKDESK_WORKER_POLL_SECONDS": "0.05", "BREAKDESK_LOG_LEVEL": "info"}, stdout=log, stderr=subprocess.STDOUT,
                )
                try:
                    deadline = time.monotonic() + 60
                    while (await store.queue_counts(tenant_id))["DONE"] < 40:
                        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                        assert time.monotonic() < deadline, await store.queue_counts(tenant_id)
                        await asyncio.sleep(0.1)
                finally:
                    worker.send_signal(signal.SIGTERM)
                    code = worker.wait(timeout=30)
                assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
                listed = (await client.get(f"/v1/tenants/{tenant_id}/exceptions", params={"limit": 100})).json()
                assert len(listed["items"]) == 40
        assert "worker.stopped" in (tmp_path / "worker.log").read_text()
        assert (await store.verify_audit(tenant_id)).ok
    finally:
        await store.close()
