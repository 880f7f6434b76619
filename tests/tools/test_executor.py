"""The HTTP executor against a real tool server: policy, schemas, retries, breakers, response limits."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from purgatory.domain import model as purgatory_model
from tool_fixtures import fast_settings
from tool_harness import (
    ToolServer,
    arrived,
    compiled,
    domain_pack,
    playbook,
    single_tool_tenant,
    step,
    tenant_policy,
    tool,
    uid,
)

from breakdesk.tools.executor import ToolCall, ToolExecutor
from breakdesk.tools.metrics import CIRCUIT_STATE


def call(tenant: Any, args: dict[str, Any] | None = None, name: str = "t1", **kw: Any) -> ToolCall:
    return ToolCall(tenant, name, args if args is not None else {"ref": "R-1"}, f"EX-1:{uuid.uuid4().hex[:6]}",
                    "EX-1", **kw)


def tid() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------- basics


async def test_success_sends_idempotency_key_and_validates_output(executor: ToolExecutor, tool_server: ToolServer) -> None:
    n = uid()
    out = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    tenant = single_tool_tenant(tid(), tool(f"{tool_server.base}/ok/{n}", output=out))
    c = call(tenant, {"ref": "R/1 ?x", "note": "hi"})
    result = await executor.call(c)
    assert result.succeeded, result
    assert result.output["args"] == {"ref": "R/1 ?x", "note": "hi"}
    assert [a.number for a in result.attempts] == [1]
    assert tool_server.headers[n]["idempotency-key"] == c.idempotency_key
    assert result.attempts[0].status_code == 200 and result.attempts[0].latency_ms > 0


async def test_url_placeholders_are_encoded_and_get_arguments_become_query(
    executor: ToolExecutor, tool_server: ToolServer
) -> None:
    n = uid()
    params = {"type": "object", "properties": {"ref": {"type": "string"}, "page": {"type": "integer"}},
              "required": ["ref"]}
    tenant = single_tool_tenant(tid(), tool(f"{tool_server.base}/ok/{n}" + "-{ref}", method="GET", params=params))
    result = await executor.call(call(tenant, {"ref": "a b?c&d", "page": 2}))
    assert result.succeeded, result
    assert result.url is not None and result.url.endswith("-a%20b%3Fc%26d")  # one encoded path segment
    assert tool_server.counts[f"{n}-a b?c&d"] == 1
    assert result.output["args"] == {"page": "2"}


async def test_tenant_overrides_win(executor: ToolExecutor, tool_server: ToolServer) -> None:
    default, override = uid(), uid()
    t = tid()
    tenant = single_tool_tenant(t, tool(f"{tool_server.base}/ok/{default}"),
                                tools={"overrides": {"t1": {"url": f"{tool_server.base}/ok/{override}"}}})
    assert (await executor.call(call(tenant))).succeeded
    assert tool_server.counts[override] == 1 and tool_server.counts[default] == 0


# ------------------------------------------------------------------------------------------ policy checks


async def test_tool_must_be_allow_listed_and_not_blocked_at_call_time(
    executor: ToolExecutor, tool_server: ToolServer
) -> None:
    n = uid()
    spec = tool(f"{tool_server.base}/ok/{n}")
    dom = domain_pack({"t1": spec, "t2": spec}, [playbook("pb", [step("s1", "t1")])])
    not_allowed = compiled(dom, tenant_policy("a", dom, tools={"allow": ["t2"]}))
    blocked = compiled(dom, tenant_policy("b", dom, guardrails={"blockedTools": ["t1"]}))
    for tenant, why in ((not_allowed, "not in tools.allow"), (blocked, "blocked by tenant guardrails")):
        result = await executor.call(call(tenant))
        assert not result.succeeded and result.refused and why in (result.error or ""), result
    undefined = await executor.call(call(not_allowed, name="nope"))
    assert undefined.refused and "not defined" in (undefined.error or "")
    assert tool_server.counts[n] == 0


@pytest.mark.parametrize(
    "args, problem",
    [({}, "'ref' is a required property"), ({"ref": ""}, "non-empty"), ({"ref": "x", "extra": 1}, "Additional"),
     ({"ref": 7}, "is not of type 'string'")],
)
async def test_schema_rejects_bad_arguments_before_sending(
    executor: ToolExecutor, tool_server: ToolServer, args: dict[str, Any], problem: str
) -> None:
    n = uid()
    result = await executor.call(call(single_tool_tenant(tid(), tool(f"{tool_server.base}/ok/{n}")), args))
    assert result.refused and problem in (result.error or ""), result
    assert tool_server.counts[n] == 0


# ------------------------------------------------------------------------------------------- bad answers


async def test_output_not_matching_schema_fails(executor: ToolExecutor, tool_server: ToolServer) -> None:
    n = uid()
    out = {"type": "object", "properties": {"caseId": {"type": "string"}}, "required": ["caseId"]}
    result = await executor.call(call(single_tool_tenant(tid(), tool(f"{tool_server.base}/bad-output/{n}", output=out))))
    assert not result.succeeded and "output schema" in (result.error or "")
    assert result.attempts[0].outcome == "invalid_response"


async def test_garbage_body_fails_and_is_not_retried(executor: ToolExecutor, tool_server: ToolServer) -> None:
    n = uid()
    out = {"type": "object"}
    tenant = single_tool_tenant(tid(), tool(f"{tool_server.base}/garbage/{n}", retries=3, output=out))
    result = await executor.call(call(tenant))
    assert not result.succeeded and "not valid JSON" in (result.error or "")
    assert tool_server.counts[n] == 1


async def test_huge_body_is_cut_off_at_the_cap(tool_server: ToolServer) -> None:
    n = uid()
    async with ToolExecutor(fast_settings(max_response_bytes=256 * 1024)) as ex:
        result = await ex.call(call(single_tool_tenant(tid(), tool(f"{tool_server.base}/huge/{n}"))))
    assert not result.succeeded and "larger than 262144 bytes" in (result.error or "")
    assert tool_server.counts[n] == 1


async def test_redirects_are_not_followed(executor: ToolExecutor, tool_server: ToolServer) -> None:
    n = uid()
    result = await executor.call(call(single_tool_tenant(tid(), tool(f"{tool_server.base}/redirect/{n}"))))
    assert not result.succeeded and "redirect" in (result.error or "") and "not followed" in (result.error or "")
    assert result.attempts[0].status_code == 302


# ------------------------------------------------------------------------------------------------ retries


async def test_timeout_of_a_non_idempotent_tool_is_not_retried(executor: ToolExecutor, tool_server: ToolServer) -> None:
    n = uid()
    spec = tool(f"{tool_server.base}/slow/{n}?s=3", idempotent=False, retries=3, timeout=0.3)
    result = await executor.call(call(single_tool_tenant(tid(), spec)))
    assert not result.succeeded and result.outcome_unknown and "within 0.3s" in (result.error or "")
    assert [a.number for a in result.attempts] == [1]
    assert await arrived(tool_server, n, 1) == 1
    await asyncio.sleep(0.3)  # a retry would have followed at once
    assert tool_server.counts[n] == 1


async def test_timeout_of_an_idempotent_tool_is_retried(executor: ToolExecutor, tool_server: ToolServer) -> None:
    n = uid()
    spec = tool(f"{tool_server.base}/slow/{n}?s=3", idempotent=True, retries=2, timeout=0.2)
    result = await executor.call(call(single_tool_tenant(tid(), spec)))
    assert not result.succeeded and [a.number for a in result.attempts] == [1, 2, 3]
    assert await arrived(tool_server, n, 3) == 3


async def test_5xx_retried_only_when_safe(executor: ToolExecutor, tool_server: ToolServer) -> None:
    unsafe, safe, capped = uid(), uid(), uid()
    r1 = await executor.call(call(single_tool_tenant(tid(), tool(f"{tool_server.base}/fail/{unsafe}",
                                                                  idempotent=False, retries=3))))
    r2 = await executor.call(call(single_tool_tenant(tid(), tool(f"{tool_server.base}/fail/{safe}", retries=5))))
    r3 = await executor.call(call(single_tool_tenant(tid(), tool(f"{tool_server.base}/fail/{capped}", retries=5),
                                                     guardrails={"maxAutoRetries": 1})))
    assert not (r1.succeeded or r2.succeeded or r3.succeeded)
    # non-idempotent: once; idempotent: 1 + min(retries 5, maxAutoRetries 3); capped by the tenant: 1 + 1
    assert (tool_server.counts[unsafe], tool_server.counts[safe], tool_server.counts[capped]) == (1, 4, 2)
    assert r1.attempts[0].error and "HTTP 500" in r1.attempts[0].error


async def test_flaky_tool_recovers_on_retry(executor: ToolExecutor, tool_server: ToolServer) -> None:
    n = uid()
    result = await executor.call(call(single_tool_tenant(tid(), tool(f"{tool_server.base}/flaky/{n}?fail=2",
                                                                      retries=2))))
    assert result.succeeded and [a.status for a in result.attempts] == ["FAILED", "FAILED", "SUCCEEDED"]


async def test_retry_requested_by_the_step_repeats_with_the_same_idempotency_key(
    executor: ToolExecutor, tool_server: ToolServer
) -> None:
    n = uid()
    tenant = single_tool_tenant(tid(), tool(f"{tool_server.base}/flaky/{n}?fail=1", idempotent=False),
                                guardrails={"maxAutoRetries": 2})
    seen: list[str] = []

    class Hooks:
        async def before_send(self, number: int, deadline: Any) -> None:
            return None

        async def after_attempt(self, attempt: Any) -> None:
            seen.append(tool_server.headers[n]["idempotency-key"])

    c = call(tenant, retry_requested=True)
    result = await executor.call(c, Hooks())
    assert result.succeeded and tool_server.counts[n] == 2
    assert seen == [c.idempotency_key, c.idempotency_key]


async def test_connection_refused_is_retried_even_for_non_idempotent_tools(executor: ToolExecutor) -> None:
    from tool_harness import free_port

    tenant = single_tool_tenant(tid(), tool(f"http://127.0.0.1:{free_port()}/x", idempotent=False, retries=2))
    result = await executor.call(call(tenant))
    assert not result.succeeded and len(result.attempts) == 3
    assert all(not a.sent and a.outcome == "connect_error" for a in result.attempts)


# ------------------------------------------------------------------------------------------------ breaker


class FakeTime:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now


@pytest.fixture
def breaker_clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """purgatory reads time.time() through its module; give it (and only it) a clock the test moves."""
    fake = FakeTime()
    monkeypatch.setattr(purgatory_model, "time", SimpleNamespace(time=fake.time))
    return fake


async def test_breaker_opens_half_opens_and_closes(tool_server: ToolServer, breaker_clock: FakeTime) -> None:
    n, other = uid(), tid()
    t = tid()
    spec = tool(f"{tool_server.base}/flaky/{n}?fail=3", retries=0)
    tenant, tenant2 = single_tool_tenant(t, spec), single_tool_tenant(other, spec)
    async with ToolExecutor(fast_settings(breaker_threshold=3, breaker_ttl=30)) as ex:
        for _ in range(3):
            assert not (await ex.call(call(tenant))).succeeded
        state = ex.breaker_states(t)["t1"]
        assert state.state == "open" and state.retry_after_s == pytest.approx(30)
        assert CIRCUIT_STATE.labels(t, "t1")._value.get() == 2
        fast = await ex.call(call(tenant))  # open: fails fast, the server is not called
        assert fast.attempts[0].outcome == "circuit_open" and not fast.attempts[0].sent
        assert tool_server.counts[n] == 3
        assert ex.breaker_states(other) == {}  # another tenant's breaker is untouched
        breaker_clock.now += 31
        assert ex.breaker_states(t)["t1"].state == "half-open"
        trial = await ex.call(call(tenant))  # the trial call goes through and succeeds: closed again
        assert trial.succeeded and tool_server.counts[n] == 4
        assert ex.breaker_states(t)["t1"].state == "closed"
        assert CIRCUIT_STATE.labels(t, "t1")._value.get() == 0
        assert (await ex.call(call(tenant2))).succeeded


async def test_failed_trial_reopens_the_breaker(tool_server: ToolServer, breaker_clock: FakeTime) -> None:
    n, t = uid(), tid()
    tenant = single_tool_tenant(t, tool(f"{tool_server.base}/fail/{n}"))
    async with ToolExecutor(fast_settings(breaker_threshold=2, breaker_ttl=10)) as ex:
        for _ in range(2):
            await ex.call(call(tenant))
        assert ex.breaker_states(t)["t1"].state == "open"
        breaker_clock.now += 11
        assert not (await ex.call(call(tenant))).succeeded
        assert tool_server.counts[n] == 3
        assert ex.breaker_states(t)["t1"].state == "open"
        assert (await ex.call(call(tenant))).attempts[0].outcome == "circuit_open"


async def test_client_errors_do_not_trip_the_breaker(tool_server: ToolServer) -> None:
    t = tid()
    tenant = single_tool_tenant(t, tool(f"{tool_server.base}/nothing-here/x"))  # 404 from the server
    async with ToolExecutor(fast_settings(breaker_threshold=2)) as ex:
        for _ in range(4):
            result = await ex.call(call(tenant))
            assert result.attempts[0].status_code == 404
        assert ex.breaker_states(t)["t1"].state == "closed"
