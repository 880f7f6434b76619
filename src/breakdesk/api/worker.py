"""The in-process intake worker: drains the durable intake queue through the pipeline.

At-least-once delivery with exactly-once effects:
- a claim is a lease, so items of a worker that died (SIGKILL, power loss) are claimed again once their
  lease runs out;
- an item's exception writes and its DONE mark commit in one transaction (`Submission.queue_id`), so an
  item is never both processed and still pending;
- every item has an idempotency key (its own, its source id, its exception id, else `queue:<id>`), so an
  item that is processed twice anyway (an expired lease while its first worker was merely slow) dedupes.
Rejected items (the pipeline cannot form an exception from them) are marked REJECTED with the reason: the
dead letter an integrator reads through `GET /v1/tenants/{t}/intake/{id}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence

from breakdesk.api.observe import ApiMetrics, get_logger
from breakdesk.api.settings import ApiSettings
from breakdesk.pipeline.execution import ExecutionService
from breakdesk.pipeline.orchestrator import BatchReport, NoActivePacks, Orchestrator
from breakdesk.pipeline.types import Submission
from breakdesk.store import Conflict, NotFound, QueueItem, Store, StoreError


class IntakeWorker:
    def __init__(
        self,
        store: Store,
        orchestrator: Orchestrator,
        settings: ApiSettings,
        metrics: ApiMetrics,
        inline_ids: set[int] | None = None,
    ) -> None:
        self.store = store
        self.orchestrator = orchestrator
        self.settings = settings
        self.metrics = metrics
        self.inline_ids = inline_ids if inline_ids is not None else set()
        self.log = get_logger("breakdesk.api.worker")
        self._wake = asyncio.Event()
        self._stop = False
        self._task: asyncio.Task[None] | None = None
        self._last_depth = 0.0
        self._waiting_tenants: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stop = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="breakdesk-intake-worker")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """New work was enqueued: skip the poll interval."""
        self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the batch in hand finish (bounded by `timeout`), then stop."""
        self._stop = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None

    async def _run(self) -> None:
        backoff = self.settings.worker_poll_seconds
        while not self._stop:
            try:
                handled = await self.run_once()
                backoff = self.settings.worker_poll_seconds
            except Exception:
                self.log.exception("worker.cycle_failed")
                handled = 0
                backoff = min(backoff * 2, 30.0)
            if handled == 0 and not self._stop:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), backoff)

    # -------------------------------------------------------------------------------------------- cycles

    async def run_once(self) -> int:
        """Claim one batch and process it; returns how many items were claimed."""
        await self._sample_depth()
        items = await self.store.claim(self.settings.worker_batch_size, lease_seconds=self.settings.worker_lease_seconds)
        # Items a ?wait=true request is processing in this process are its own to finish.
        items = [i for i in items if i.id not in self.inline_ids]
        if not items:
            return 0
        started = time.perf_counter()
        by_tenant: dict[str, list[QueueItem]] = defaultdict(list)
        for item in items:
            by_tenant[item.tenant_id].append(item)
        for tenant_id, group in by_tenant.items():
            await self._tenant_batch(tenant_id, group)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return len(items)

    async def drain(self, max_cycles: int = 10_000) -> int:
        """Process until the queue has nothing claimable (tests and shutdown-free tooling)."""
        total = 0
        for _ in range(max_cycles):
            n = await self.run_once()
            if n == 0:
                break
            total += n
        return total

    async def _sample_depth(self) -> None:
        now = time.monotonic()
        if now - self._last_depth < 5.0:
            return
        self._last_depth = now
        with contextlib.suppress(StoreError):
            self.metrics.queue_depth.set(await self.store.pending_intake(None))

    async def _tenant_batch(self, tenant_id: str, items: Sequence[QueueItem]) -> None:
        try:
            report = await self._process(tenant_id, items)
        except NoActivePacks as exc:
            now = time.monotonic()
            if now - self._waiting_tenants.get(tenant_id, -1e9) > 60:
                self._waiting_tenants[tenant_id] = now
                self.log.warning("worker.no_active_packs", tenant=tenant_id, items=len(items), detail=str(exc))
            return  # left leased: retried after the lease, so nothing is lost until packs are active
        except Conflict:
            # Another worker wrote some of these first (or a caller-chosen id collided): one item at a time
            # isolates the culprit and lets the rest dedupe.
            for item in items:
                await self._single(tenant_id, item)
            return
        except StoreError as exc:
            self.log.warning("worker.store_error", tenant=tenant_id, items=len(items), detail=str(exc))
            return
        except Exception:
            self.log.exception("worker.batch_failed", tenant=tenant_id, items=len(items))
            for item in items:
                await self._single(tenant_id, item)
            return
        await self._settle(tenant_id, items, report)

    async def _single(self, tenant_id: str, item: QueueItem) -> None:
        try:
            report = await self._process(tenant_id, [item])
        except NoActivePacks:
            return
        except StoreError as exc:
            if item.attempts >= self.settings.worker_max_attempts:
                await self._reject(tenant_id, item.id, f"gave up after {item.attempts} attempts: {exc}")
            return
        except Exception as exc:
            self.log.exception("worker.item_failed", tenant=tenant_id, queue_id=item.id)
            if item.attempts >= self.settings.worker_max_attempts:
                await self._reject(tenant_id, item.id, f"gave up after {item.attempts} attempts: {type(exc).__name__}")
            return
        await self._settle(tenant_id, [item], report)

    async def _process(self, tenant_id: str, items: Sequence[QueueItem]) -> BatchReport:
        subs = [
            Submission(item.payload, item.received_at, line=n, queue_id=item.id) for n, item in enumerate(items)
        ]
        return await self.orchestrator.process(tenant_id, subs, dry_run=False)

    async def _settle(self, tenant_id: str, items: Sequence[QueueItem], report: BatchReport) -> None:
        for outcome in report.items:
            self.metrics.processed.labels(outcome.outcome).inc()
        for rejected in report.rejected:
            if rejected.line is not None and 0 <= rejected.line < len(items):
                await self._reject(tenant_id, items[rejected.line].id, rejected.reason)

    async def _reject(self, tenant_id: str, queue_id: int, reason: str) -> None:
        try:
            await self.store.mark_rejected(tenant_id, queue_id, reason[:2000])
        except NotFound:
            pass  # finished meanwhile (another worker, or a ?wait=true request)
        except StoreError as exc:
            self.log.warning("worker.reject_failed", tenant=tenant_id, queue_id=queue_id, detail=str(exc))



class BackgroundRuns:
    """Executions an approval resumed, run after the response is sent: an approver's request must not wait
    for tool calls (timeouts, retries). A run lost to a crash is not lost work: the scheduler resumes
    IN_PROGRESS exceptions nobody touched for `stalled_after_seconds`, and the journal never repeats a
    completed step."""

    def __init__(self, execution: ExecutionService) -> None:
        self.execution = execution
        self.log = get_logger("breakdesk.api.runs")
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, tenant_id: str, exception_id: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(tenant_id, exception_id), name=f"breakdesk-run-{exception_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, tenant_id: str, exception_id: str) -> None:
        try:
            outcome = await self.execution.run(tenant_id, exception_id)
            self.log.info("run.finished", tenant=tenant_id, exception=exception_id, status=outcome.status,
                          executed=outcome.executed, reason=outcome.reason)
        except Exception as exc:  # the scheduler resumes it; the API must not lose its loop to a tool
            self.log.warning("run.failed", tenant=tenant_id, exception=exception_id,
                             error=f"{type(exc).__name__}: {exc}")

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float = 10.0) -> None:
        """Let running executions finish (bounded); what is cut off is resumed by the next scheduler."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)


class Background:
    """The work a server does besides answering requests, wired once for `breakdesk serve` (in-process) and
    `breakdesk worker` (a separate process, so pipeline CPU does not compete with request latency): the
    tool executor, execution and approval services, and — with `worker` — the intake worker and the
    approval/resume scheduler. Several workers may share a database: claims are leases."""

    def __init__(
        self,
        store: Store,
        orchestrator: Orchestrator,
        settings: ApiSettings,
        metrics: ApiMetrics,
        inline_ids: set[int] | None = None,
    ) -> None:
        from breakdesk.approvals.service import ApprovalService
        from breakdesk.tools.executor import ToolExecutor

        self.settings = settings
        self.executor = ToolExecutor()
        execution = ExecutionService(store, self.executor, packs=orchestrator.active_packs)  # one pack cache
        self.approvals = ApprovalService(store, execution)
        self.execution: ExecutionService | None = None
        self.runs: BackgroundRuns | None = None
        if settings.execution_enabled:
            orchestrator.execution = self.execution = execution
            self.runs = BackgroundRuns(execution)
        self.worker: IntakeWorker | None = None
        if settings.worker_enabled:
            self.worker = IntakeWorker(store, orchestrator, settings, metrics, inline_ids)
        self._store = store
        self._orchestrator = orchestrator
        self._stop = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._indexer: asyncio.Task[None] | None = None

    def start(self) -> None:
        from datetime import timedelta

        from breakdesk.approvals.scheduler import Scheduler

        if self.worker is None:
            return
        self.worker.start()
        scheduler = Scheduler(
            self._store, self.approvals, self.execution,
            interval=self.settings.scheduler_interval_seconds,
            stalled_after=timedelta(seconds=self.settings.stalled_after_seconds),
        )
        self._scheduler = asyncio.get_running_loop().create_task(scheduler.run(self._stop), name="breakdesk-scheduler")
        # --- memory: resolutions, changed exceptions and embeddings reach the memory without another process
        memory = self._orchestrator.memory
        if self.settings.memory_indexer_enabled and memory is not None:
            from breakdesk.memory.indexer import MemoryIndexer

            indexer = MemoryIndexer(self._store, memory, packs=self._orchestrator.active_packs)
            self._indexer = asyncio.get_running_loop().create_task(
                indexer.run(self._stop, self.settings.memory_index_interval_seconds), name="breakdesk-memory-indexer")
        # --- end memory

    async def stop(self) -> None:
        """Stop taking work, let the batch in hand and running executions settle (bounded), close the pool."""
        self._stop.set()
        if self._indexer is not None:  # a pass commits page by page with its position: cutting one loses nothing
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._indexer
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                await self._scheduler
        if self.worker is not None:
            await self.worker.stop()
        if self.runs is not None:
            await self.runs.close()
        await self.executor.aclose()
