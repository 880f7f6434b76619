"""The pure pipeline's fast paths decide exactly what the plain, fully validated paths decide.

Each shortcut (trusted model construction, a CEL context trimmed to what conditions read, `${root.key}`
arguments read from plain data, memoized per-type facts, generated dataclass initializers) is checked here
against the straightforward computation it replaces.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from breakdesk.domain.construct import decision, ev, new_record
from breakdesk.domain.models import AgentDecision, Evidence, ExceptionRecord
from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy
from breakdesk.pipeline.context import condition_context
from breakdesk.pipeline.intake import _too_deep
from breakdesk.pipeline.policy import decide_policy
from breakdesk.pipeline.resolution import plan_resolution
from breakdesk.pipeline.stages import decide, type_plan
from breakdesk.pipeline.triage import triage
from breakdesk.rules.cel import compile_condition, is_plain_scalar, make_context
from breakdesk.rules.templates import RenderError, compile_template

from .packkit import RECEIVED, submit

# ------------------------------------------------------------------------------ trusted model construction


def test_ev_builds_what_the_validating_constructor_builds() -> None:
    fast = ev("kind", "message", "ref")
    slow = Evidence(kind="kind", message="message", ref="ref")
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump(mode="json", by_alias=True) == slow.model_dump(mode="json", by_alias=True)
    assert fast.model_copy(update={"message": "other"}).message == "other"


@pytest.mark.parametrize("args", [(1, "m", None), ("k", None, None), ("k", "m", 5)])
def test_ev_still_rejects_what_validation_rejects(args: tuple[Any, Any, Any]) -> None:
    with pytest.raises(ValidationError):
        ev(*args)


def test_decision_builds_what_the_validating_constructor_builds() -> None:
    evidence = (ev("a", "b"), ev("c", "d", "e"))
    fast = decision("text", 1, evidence, "next")
    slow = AgentDecision(decision="text", confidence=1, evidence=evidence, next_step="next")
    assert fast == slow
    assert type(fast.confidence) is float
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump(mode="json", by_alias=True, exclude_none=True) == slow.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


@pytest.mark.parametrize(
    "args",
    [
        ("d", 1.5, (), "n"),  # confidence out of range
        ("d", float("nan"), (), "n"),
        ("d", True, (), "n"),  # a boolean is not a confidence
        ("d", 0.5, ("not evidence",), "n"),
        ("d", 0.5, [], "n"),  # strict: a tuple, not a list
        (None, 0.5, (), "n"),
    ],
)
def test_decision_still_rejects_what_validation_rejects(args: tuple[Any, Any, Any, Any]) -> None:
    with pytest.raises(ValidationError):
        decision(*args)


def test_new_record_builds_what_the_validating_constructor_builds() -> None:
    payload = {"a": [1, {"b": None}], "n": 2}
    normalized = {"x": "y"}
    ts = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    fast = new_record("e1", "t1", "src", "TYPE", ts, payload, normalized)
    slow = ExceptionRecord(exception_id="e1", tenant_id="t1", source_system="src", exception_type="TYPE",
                           timestamp=ts, raw_payload=payload, normalized_context=normalized)
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump(mode="json", by_alias=True) == slow.model_dump(mode="json", by_alias=True)
    assert fast.raw_payload is not payload  # copied, as validation copies it


def test_new_record_normalizes_or_rejects_like_validation() -> None:
    plus2 = datetime(2026, 1, 2, 3, 0, tzinfo=timezone(timedelta(hours=2)))
    assert new_record("e", "t", "s", "T", plus2, {}, {}).timestamp == datetime(2026, 1, 2, 1, 0, tzinfo=UTC)
    assert new_record("e", "t", "s", "T", datetime(2026, 1, 2), {}, {}).timestamp.tzinfo is UTC
    ts = datetime(2026, 1, 2, tzinfo=UTC)
    for bad in [("", "t", "s", "T"), ("e" * 201, "t", "s", "T"), ("e", "t" * 101, "s", "T")]:
        with pytest.raises(ValidationError):
            new_record(*bad, ts, {}, {})
    with pytest.raises(ValidationError):
        new_record("e", "t", "s", "T", ts, {1: "non-string key"}, {})


# ----------------------------------------------------------------------------------- plain-data reads


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ("text", True),
        ("Société Générale", True),
        ("\ud800", False),  # CEL refuses lone surrogates; the fast path must not accept them
        (1.5, True),
        (True, True),
        (None, True),
        (2**63 - 1, True),
        (2**63, False),  # CEL hands it back as an unsigned value: left to CEL
        (-(2**63) - 1, False),
        ([1], False),
        ({"a": 1}, False),
    ],
)
def test_plain_scalars(value: Any, plain: bool) -> None:
    assert is_plain_scalar(value) is plain


def test_field_reads_are_recognized() -> None:
    assert compile_condition("normalizedContext.orderId").field == ("normalizedContext", "orderId")
    assert compile_condition(" rawPayload . x ").field == ("rawPayload", "x")
    for source in ("a.b.c", "has(a.b)", "a", "a.b + 1", "a.b == 'x'"):
        assert compile_condition(source).field is None


@pytest.mark.parametrize(
    "data",
    [
        {"k": "v"},
        {"k": 3},
        {"k": 2.5},
        {"k": None},
        {"k": True},
        {},  # missing: the same error text as CEL's
        {"k": [1, 2]},  # containers are evaluated by CEL
        {"k": {"x": 1}},
        {"k": 2**64 + 5},
    ],
)
def test_value_from_plain_data_equals_cel(data: dict[str, Any]) -> None:
    cond = compile_condition("normalizedContext.k")
    ctx = make_context({"normalizedContext": data})
    assert cond.value_from({"normalizedContext": data}, ctx) == cond.value(ctx)


def test_templates_render_the_same_from_plain_data() -> None:
    tmpl = compile_template({"id": "${normalizedContext.id}", "text": "id ${normalizedContext.id}",
                             "list": ["${normalizedContext.items}"], "n": "${normalizedContext.n}"})
    values = {"id": "X-1", "items": [1, {"a": 2}], "n": 7}
    ctx = make_context({"normalizedContext": values})
    assert tmpl.render(ctx, {"normalizedContext": values}) == tmpl.render(ctx)
    missing = compile_template("${normalizedContext.absent}")
    with pytest.raises(RenderError) as cel_err:
        missing.render(ctx)
    with pytest.raises(RenderError) as plain_err:
        missing.render(ctx, {"normalizedContext": values})
    assert str(plain_err.value) == str(cel_err.value)


# --------------------------------------------------------------------------------------- trimmed context


def _reference(ir: Any, domain: CompiledDomainPack, tenant: CompiledTenantPolicy) -> tuple[Any, Any, Any]:
    """Triage, policy and plan over a context holding every variable and whole maps (no trimming)."""
    ctx = condition_context(ir.record)
    decided: dict[str, Any] = {}
    ctx.set_variable_resolver(decided.get)
    tri = triage(ir, ctx, domain, tenant)
    decided.update(severity=tri.severity.value, confidence=tri.confidence)
    pol = decide_policy(ir, tri, ctx, domain, tenant)
    return tri, pol, plan_resolution(ctx, domain, tenant, pol, True)


@pytest.mark.parametrize(
    "data",
    [
        {"exceptionType": "BREAK", "sourceSystem": "recon", "rawPayload": {"orderId": "O1", "amount": 5000}},
        {"exceptionType": "BREAK", "rawPayload": {"orderId": "O2", "amount": 50, "vip": True}},
        {"exceptionType": "BREAK", "rawPayload": {"orderId": ["not", "a", "scalar"], "amount": 500000}},
        {"exceptionType": "BREAK", "rawPayload": {"amount": 2000}},  # orderId absent: arguments invalid
        {"exceptionType": "BREAK", "rawPayload": {"orderId": {"nested": 1}, "amount": "text"}},
        {"exceptionType": "LATE", "rawPayload": {"delayMinutes": 900, "retryable": True, "channel": "ops"}},
        {"exceptionType": "LATE", "rawPayload": {"delayMinutes": 90, "channel": ["x"]}},
        {"rawPayload": {"failReason": "disk"}},
        {"rawPayload": {"x": 1}},
    ],
)
def test_decide_over_the_trimmed_context_matches_a_full_context(
    desk_domain: CompiledDomainPack, desk_tenant: CompiledTenantPolicy, data: dict[str, Any]
) -> None:
    ir = submit(desk_domain, data)
    out = decide(ir, desk_domain, desk_tenant, received_at=RECEIVED, now=RECEIVED)
    tri, pol, res = _reference(ir, desk_domain, desk_tenant)
    assert out.error is None
    assert out.triage == tri
    assert out.policy == pol
    assert out.plan == res.plan
    assert [e.decision for e in out.events if e.stage == "resolution"] == [res.decision]


def test_the_context_carries_only_what_conditions_read(
    desk_domain: CompiledDomainPack, desk_tenant: CompiledTenantPolicy
) -> None:
    tp = type_plan(desk_domain, desk_tenant, "BREAK")
    assert not tp.variables & {"steps", "severity", "confidence"}  # decided during the pass or at execution
    assert type_plan(desk_domain, desk_tenant, "BREAK") is tp  # memoized per policy and type
    ir = submit(desk_domain, {"exceptionType": "BREAK", "rawPayload": {"orderId": "O1", "amount": 5, "zz": "x"}})
    ctx = condition_context(ir.record, tp.variables, tp.fields, tp.lookups)
    nc = ctx.variables.get("normalizedContext", {})
    assert "orderId" not in nc  # read only by `${normalizedContext.orderId}` arguments: served from plain data
    ir2 = submit(desk_domain, {"exceptionType": "BREAK", "rawPayload": {"orderId": [1], "amount": 5}})
    ctx2 = condition_context(ir2.record, tp.variables, tp.fields, tp.lookups)
    assert ctx2.variables["normalizedContext"]["orderId"] == [1]  # not a plain scalar: CEL evaluates it


# ------------------------------------------------------------------------------------------- odds and ends

def _too_deep_reference(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def test_depth_check_walks_only_containers_but_decides_the_same() -> None:
    rng = random.Random(5)

    def gen(depth: int) -> Any:
        r = rng.random()
        if depth > 7 or r < 0.3:
            return rng.choice([1, "x", None])
        if r < 0.65:
            return {f"k{i}": gen(depth + 1) for i in range(rng.randint(0, 3))}
        return [gen(depth + 1) for _ in range(rng.randint(0, 3))]

    for _ in range(3000):
        value, limit = gen(0), rng.randint(0, 6)
        assert _too_deep(value, limit) is _too_deep_reference(value, limit)
