"""Prometheus metrics of tool calls, registered once per process in the default registry (the API's
`/metrics` endpoint exports them with everything else)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TOOL_ATTEMPTS = Counter(
    "breakdesk_tool_attempts",
    "HTTP attempts of tool calls, by outcome (success, http_error, timeout, connect_error, "
    "invalid_response, circuit_open).",
    ["tenant", "tool", "outcome"],
)
TOOL_LATENCY = Histogram(
    "breakdesk_tool_attempt_seconds",
    "Latency of tool call attempts (request sent to response read).",
    ["tenant", "tool"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
CIRCUIT_STATE = Gauge(
    "breakdesk_tool_circuit_state",
    "Circuit breaker state per tenant and tool: 0 closed, 1 half-open, 2 open.",
    ["tenant", "tool"],
)
STATE_VALUES = {"closed": 0, "half-opened": 1, "opened": 2}
