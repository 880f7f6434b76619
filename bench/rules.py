"""Condition evaluation and pack compilation benchmarks (issue: packs as code).

Targets: severity resolution for one exception ≤ 20 µs with 10 rules; loading + compiling a generated pack with
500 exception types, 2,000 rules, 300 tools and 500 playbooks ≤ 2 s.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench import machine_line
from breakdesk.domain.models import ExceptionRecord
from breakdesk.packs.compiler import compile_domain
from breakdesk.packs.loader import load_pack_text, model_from_data
from breakdesk.packs.schema import DomainPack
from breakdesk.packs.workspace import compile_domain_file
from breakdesk.pipeline.context import condition_context
from breakdesk.pipeline.stages import needed_fields, needed_vars
from breakdesk.pipeline.triage import resolve_severity
from breakdesk.rules.cel import compile_condition

ROOT = Path(__file__).resolve().parent.parent


def _median_us(fn: Any, n: int, repeat: int = 7) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(runs)


def generated_pack(types: int = 500, rules: int = 2000, tools: int = 300, playbooks: int = 500) -> dict[str, Any]:
    rnd = random.Random(7)
    sev = ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
    type_names = [f"TYPE_{i:04d}" for i in range(types)]
    tool_names = [f"tool{i:03d}" for i in range(tools)]
    return {
        "kind": "DomainPack",
        "name": "generated",
        "version": "1.0.0",
        "intake": {"fields": {f"f{i}": f"${{rawPayload.f{i}}}" for i in range(20)}},
        "exceptionTypes": {
            t: {"description": f"generated type {t}", "defaultSeverity": rnd.choice(sev),
                "detection": [{"condition": f"has(rawPayload.marker) && rawPayload.marker == '{t}'"}],
                "fingerprintFields": ["f1", "f2"]}
            for t in type_names
        },
        "severityRules": [
            {"id": f"r{i}", "severity": rnd.choice(sev),
             "condition": f"exceptionType == '{type_names[i % types]}' && normalizedContext.f{i % 20} > {rnd.randint(1, 1000)}"}
            for i in range(rules)
        ],
        "tools": {
            t: {"effect": rnd.choice(["read", "write"]), "method": "POST", "url": f"https://tools.example/{t}/{{id}}",
                "parameters": {"type": "object", "properties": {"id": {"type": "string"}, "n": {"type": "number"}},
                               "required": ["id"], "additionalProperties": False},
                "idempotent": True, "retries": 2}
            for t in tool_names
        },
        "playbooks": [
            {"id": f"PB{i:04d}", "match": {"types": [type_names[i % types]], "priority": i % 5,
                                           "condition": f"normalizedContext.f{i % 20} > 0"},
             "steps": [{"id": f"s{j}", "tool": tool_names[(i + j) % tools],
                        "args": {"id": "${normalizedContext.f1}"}, "when": "severity != 'LOW'"} for j in range(3)]}
            for i in range(playbooks)
        ],
    }


def main(argv: list[str] | None = None) -> None:
    print(machine_line())
    domain = compile_domain_file(ROOT / "packs" / "finance" / "domain.yaml")
    # A POSITION_BREAK with every field its rules read.
    record = ExceptionRecord(
        exception_id="b1", tenant_id="t", source_system="recon", exception_type="POSITION_BREAK",
        timestamp=datetime(2026, 1, 5, tzinfo=UTC),
        raw_payload={"accountId": "A1", "cusip": "037833100", "quantity": 1000, "custodianQuantity": 700},
        normalized_context={"accountId": "A1", "cusip": "037833100", "breakQuantity": 300, "notional": 2_500_000,
                            "ageDays": 3, "counterpartyTier": "TIER_2", "currency": "USD"},
    )
    rules = domain.severity_rules("POSITION_BREAK")
    all_rules = [r for t in domain.types for r in domain.severity_rules(t)]
    ctx = condition_context(record)
    one = rules[0]
    per_rule = _median_us(lambda: one.condition.evaluate(ctx), 20000)
    print(f"finance pack: {len(domain.spec.severityRules)} severity rules, {len(rules)} candidates for POSITION_BREAK")
    print(f"rule evaluation (prepared context): median {per_rule:.2f} µs per rule")

    neutral = _neutral(domain)
    needed = needed_vars(domain, neutral, "POSITION_BREAK", "triage")
    fields = needed_fields(domain, neutral, "POSITION_BREAK")

    def resolve() -> None:
        c = condition_context(record, needed, fields)
        resolve_severity(record, c, domain, None)

    prepared = condition_context(record, needed, fields)
    over_prepared = _median_us(lambda: resolve_severity(record, prepared, domain, None), 20000)
    ten = [r for t in domain.types for r in domain.severity_rules(t)][:10]
    ten_rules = _median_us(lambda: [r.condition.evaluate(prepared) for r in ten], 20000)
    print(f"severity resolution over the exception's prepared context (the pipeline builds one per exception): "
          f"median {over_prepared:.2f} µs; 10 rule evaluations: {ten_rules:.2f} µs (target ≤ 20 µs)")
    full = _median_us(resolve, 5000)
    print(f"severity resolution incl. context build: median {full:.2f} µs per exception (target ≤ 20 µs)")

    # The same work without type indexing: every rule of the pack evaluated.
    def unindexed() -> None:
        c = condition_context(record)
        for r in all_rules:
            r.condition.evaluate(c)

    print(f"without type indexing ({len(set(id(r) for r in all_rules))} rules): "
          f"median {_median_us(unindexed, 2000):.2f} µs per exception")

    data = generated_pack()
    text = yaml.safe_dump(data, sort_keys=False)
    print(f"generated pack: 500 types, 2000 rules, 300 tools, 500 playbooks; {len(text) / 1e6:.1f} MB YAML")
    times = []
    for _ in range(3):
        compile_condition.cache_clear()  # measure cold compilation every time
        t = time.perf_counter()
        lp = load_pack_text(text, "generated.yaml")
        assert isinstance(lp.pack, DomainPack)
        compile_domain(lp.pack, "generated.yaml")
        times.append(time.perf_counter() - t)
    print(f"load + validate + compile: best {min(times):.2f} s, median {statistics.median(times):.2f} s (target ≤ 2 s)")
    compile_condition.cache_clear()
    t = time.perf_counter()
    pack = model_from_data(data, "generated")
    assert isinstance(pack, DomainPack)
    compile_domain(pack, "generated")
    print(f"  of which validate + compile (no YAML parsing): {time.perf_counter() - t:.2f} s")


def _neutral(domain: Any) -> Any:
    from breakdesk.packs.testing import neutral_policy

    return neutral_policy(domain)


if __name__ == "__main__":
    main()
