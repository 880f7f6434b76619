"""Circuit breakers per (tenant, tool), on purgatory.

A tool that keeps failing for a tenant stops being called for `ttl` seconds (calls fail fast, without
touching the tool); then one trial call decides between closing the circuit and opening it again. One tenant's
failing endpoint never trips another tenant's breaker. States are readable (`states`) for the API and are
exported as the `breakdesk_tool_circuit_state` gauge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from purgatory import AsyncCircuitBreakerFactory, AsyncInMemoryUnitOfWork
from purgatory.domain import model as purgatory_model
from purgatory.domain.model import OpenedState
from purgatory.service._async.repository import AsyncInMemoryRepository

from breakdesk.tools.metrics import CIRCUIT_STATE, STATE_VALUES

SEP = "\x1f"  # tenant and tool names cannot contain it


class CircuitOpen(Exception):
    """The breaker of this tenant and tool is open: the call was not sent."""


@dataclass(frozen=True, slots=True)
class BreakerState:
    tool: str
    state: str  # closed | half-open | open
    failures: int
    opened_at: float | None  # epoch seconds
    retry_after_s: float | None  # seconds until a trial call is let through (open only)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "state": self.state,
            "failures": self.failures,
            "openedAt": self.opened_at,
            "retryAfterSeconds": self.retry_after_s,
        }


_NAMES = {"closed": "closed", "half-opened": "half-open", "opened": "open"}


class Breakers:
    def __init__(self, threshold: int = 5, ttl: float = 30.0) -> None:
        self.threshold = threshold
        self.ttl = ttl
        self._uow = AsyncInMemoryUnitOfWork()  # in-process state: each worker has its own breakers
        self._factory = AsyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=ttl, uow=self._uow)
        self._factory.add_listener(self._on_event)

    @staticmethod
    def _on_event(name: str, event_name: str, event: Any) -> None:
        tenant, _, tool = name.partition(SEP)
        if event_name == "state_changed":
            CIRCUIT_STATE.labels(tenant, tool).set(STATE_VALUES.get(event.state, 0))
        elif event_name == "circuit_breaker_created":
            CIRCUIT_STATE.labels(tenant, tool).set(0)

    async def get(self, tenant: str, tool: str) -> Any:
        return await self._factory.get_breaker(f"{tenant}{SEP}{tool}")

    def states(self, tenant: str) -> dict[str, BreakerState]:
        """Every breaker of a tenant that has seen a call (tools never called are closed implicitly)."""
        out: dict[str, BreakerState] = {}
        now = purgatory_model.time.time()  # purgatory's own clock, so both agree (and tests can fake it)
        repo = cast(AsyncInMemoryRepository, self._uow.contexts)
        for name, ctx in repo.breakers.items():
            t, _, tool = name.partition(SEP)
            if t != tenant:
                continue
            state = ctx.state
            opened = ctx.opened_at
            if state == "opened" and opened is not None and now > opened + ctx.ttl:
                state = "half-opened"  # the next call is the trial; purgatory flips lazily on that call
            retry = max(0.0, opened + ctx.ttl - now) if state == "opened" and opened is not None else None
            out[tool] = BreakerState(tool, _NAMES.get(state, state), int(ctx.failure_count or 0), opened, retry)
        return out


__all__ = ["BreakerState", "Breakers", "CircuitOpen", "OpenedState"]
