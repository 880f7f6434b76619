"""Triage: severity (highest matching rule → type default → pack default → tenant override), priority,
root-cause hint, summary and confidence.

Confidence = type confidence * severity confidence, where severity decided by a rule or a tenant override
counts 1.0, by the type's default 0.9 and by the pack's default 0.7 (explicit > detected > default).
"""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

from breakdesk.domain.construct import decision, ev
from breakdesk.domain.models import UNCLASSIFIED, Evidence, ExceptionRecord, Severity
from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy
from breakdesk.pipeline.types import IntakeResult, RecurrenceInfo, SimilarCase, TriageResult

SEVERITY_CONFIDENCE = {"rule": 1.0, "override": 1.0, "type-default": 0.9, "pack-default": 0.7}
_BASE_PRIORITY = {Severity.LOW: 20, Severity.MEDIUM: 45, Severity.HIGH: 70, Severity.CRITICAL: 90}


def priority_score(severity: Severity, recurrence: int, type_source: str) -> int:
    """0..100: severity sets the band; recurrences add up to 8; an unclassified exception gets +2 for a look."""
    score = _BASE_PRIORITY[severity] + min(8, 2 * max(0, recurrence))
    if type_source == "unclassified":
        score += 2
    return min(100, score)


def resolve_severity(
    record: ExceptionRecord, ctx: Any, domain: CompiledDomainPack, tenant: CompiledTenantPolicy | None
) -> tuple[Severity, str, list[str], list[Evidence]]:
    """Pure severity resolution over a prepared CEL context."""
    evidence: list[Evidence] = []
    matched: list[str] = []
    best: Severity | None = None
    etype = record.exception_type
    for rule in domain.severity_rules(etype):
        res = rule.condition.evaluate(ctx)
        if res.matched:
            matched.append(rule.id)
            evidence.append(
                ev("severity-rule", message=f"rule {rule.id} matched → {rule.severity}", ref=rule.id)
            )
            if best is None or rule.severity.rank > best.rank:
                best = rule.severity
        elif res.error:
            evidence.append(
                ev("severity-rule", message=f"rule {rule.id} did not match: {res.error}", ref=rule.id)
            )
    if best is not None:
        severity, source = best, "rule"
    elif etype in domain.default_severity:
        severity, source = domain.default_severity[etype], "type-default"
        evidence.append(ev("severity-default", message=f"no rule matched: default of {etype} is {severity}"))
    else:
        severity, source = domain.spec.defaultSeverity, "pack-default"
        evidence.append(ev("severity-default", message=f"no rule matched: pack default {severity}"))
    if tenant is not None:
        for ov in tenant.overrides_for_type.get(etype, ()):
            if ov.condition is not None:
                res = ov.condition.evaluate(ctx)
                if not res.matched:
                    if res.error:
                        evidence.append(
                            ev("severity-override", message=f"override {ov.index} skipped: {res.error}")
                        )
                    continue
            note = f" ({ov.reason})" if ov.reason else ""
            new = ov.severity
            keeps = (ov.mode == "atLeast" and severity.rank >= new.rank) or (
                ov.mode == "atMost" and severity.rank <= new.rank
            )
            if keeps:
                new = severity
            if new == severity and ov.mode != "replace":
                evidence.append(ev("severity-override", message=f"override {ov.index} ({ov.mode} {ov.severity}) "
                                   f"leaves {severity} unchanged", ref=f"severityOverrides[{ov.index}]"))
                continue
            evidence.append(
                ev("severity-override", message=f"tenant {tenant.tenant_id} overrides {severity} → {new}{note}",
                   ref=f"severityOverrides[{ov.index}]")
            )
            severity, source = new, "override"
    return severity, source, matched, evidence


_WHY = {
    "rule": None,  # names the matched rules
    "override": "the tenant policy overrides it",
    "type-default": "it is the default for this type",
    "pack-default": "it is the pack default",
}


def _what(domain: CompiledDomainPack, exception_type: str) -> str:
    """The summary's description of a type (memoized per pack: it depends on the taxonomy only)."""
    key = ("what", exception_type)
    found = domain.type_cache.get(key)
    if found is None:
        et = domain.types.get(exception_type)
        if et is None:
            found = "An exception no rule could classify"
        else:
            found = et.description.rstrip(".") if et.description else f"A {exception_type} exception"
        domain.type_cache[key] = found
    return found


def _minute(ts: Any) -> str:
    """`f"{ts:%Y-%m-%d %H:%M}"` without strftime for the four-digit years every real timestamp has."""
    if 1000 <= ts.year <= 9999:
        return f"{ts.year}-{ts.month:02d}-{ts.day:02d} {ts.hour:02d}:{ts.minute:02d}"
    return f"{ts:%Y-%m-%d %H:%M}"


def _summary(
    record: ExceptionRecord, domain: CompiledDomainPack, severity: Severity, source: str, matched: list[str], hint: str
) -> str:
    what = _what(domain, record.exception_type)
    why = _WHY[source] or f"rule(s) {', '.join(matched)} matched"
    facts = ", ".join(f"{k}={_short(v)}" for k, v in islice(record.normalized_context.items(), 6))
    text = (
        f"{record.exception_type} from {record.source_system} at {_minute(record.timestamp)} UTC: {what}. "
        f"Severity {severity} because {why}."
    )
    if facts:
        text += f" Key facts: {facts}."
    if hint:
        text += f" Likely cause: {hint}"
    return text


def _short(v: Any) -> str:
    s = v if type(v) is str else str(v)
    return s if len(s) <= 40 else s[:37] + "..."


def root_cause_hint(domain: CompiledDomainPack, exception_type: str) -> str:
    key = ("hint", exception_type)
    found = domain.type_cache.get(key)
    if found is None:
        found = domain.type_cache[key] = _root_cause_hint(domain, exception_type)
    return found


def _root_cause_hint(domain: CompiledDomainPack, exception_type: str) -> str:
    et = domain.types.get(exception_type)
    if et is None:
        return ""
    if et.rootCauseHint:
        return et.rootCauseHint
    for anc in domain.ancestors.get(exception_type, ()):
        hint = domain.types[anc].rootCauseHint
        if hint:
            return hint
    return ""


#: a similar case's score → its text in triage evidence (`0.83`): k per exception, and scores recur (cases
#: matching the same fields score alike); a look-up costs a fifth of formatting.
_SCORE_TEXT: dict[float, str] = {}


def _score_text(score: float) -> str:
    text = _SCORE_TEXT.get(score) if score else None  # (0.0 and -0.0 are one key but two texts)
    if text is None:
        text = f"{score:.2f}"
        if score:
            if len(_SCORE_TEXT) > 4096:
                _SCORE_TEXT.clear()
            _SCORE_TEXT[score] = text
    return text


def shown_id(exception_id: str) -> str:
    """An exception id as evidence text shows it: as it is when plain, else as a JSON string literal, so the
    text stays one line and says where the id ends (intake accepts any id). Plain: printable (no control,
    format or separator character: no line break, zero-width or bidirectional mark), without a space, the
    text's separators `;` `(` `)` or its quote `"`. Checks rather than a regex: k ids per exception, and
    compiled they cost about half as much."""
    eid = exception_id
    plain = eid.isprintable() and " " not in eid and ";" not in eid and "(" not in eid and ")" not in eid
    return eid if plain and '"' not in eid else json.dumps(eid)


def similar_evidence(similar: tuple[SimilarCase, ...]) -> Evidence:
    """The similar cases, best first, as one piece of evidence (`similar-cases`): each one's id, score and,
    once resolved, how (its headline: "closed, playbook X, ..."), in words for people and as `data.cases`
    for programs; `ref` names the best.

    One item rather than one per case: every evidence item is built, encoded for its event and again for
    the audit entry, and hashed, and five of them per exception cost the pipeline ~1.5 points of throughput
    (bench/RESULTS.md) for what one item says as well."""
    words: list[str] = []
    cases: list[dict[str, Any]] = []
    for case in similar:
        shown = f"{shown_id(case.exception_id)} ({_score_text(case.score)})"
        if case.resolution:
            words.append(f"{shown}: {case.resolution}")
            cases.append({"exceptionId": case.exception_id, "score": case.score, "resolution": case.resolution})
        else:
            words.append(shown)
            cases.append({"exceptionId": case.exception_id, "score": case.score})
    return ev("similar-cases", "similar to " + "; ".join(words), similar[0].exception_id, {"cases": cases})


def triage(
    intake_result: IntakeResult,
    ctx: Any,
    domain: CompiledDomainPack,
    tenant: CompiledTenantPolicy | None,
    recurrence: RecurrenceInfo | None = None,
    similar: tuple[SimilarCase, ...] = (),
) -> TriageResult:
    record = intake_result.record
    severity, source, matched, evidence = resolve_severity(record, ctx, domain, tenant)
    seen_before = recurrence.count if recurrence else 0
    if recurrence and recurrence.count > 0:
        threshold = domain.spec.intake.recurrenceThreshold
        occurrences = recurrence.count + 1
        flag = "recurring" if occurrences >= threshold else "seen before"
        last = f"; last resolution: {recurrence.last_resolution}" if recurrence.last_resolution else ""
        evidence.append(
            ev("recurrence", f"{flag}: occurrence {occurrences} of this fingerprint (threshold {threshold}){last}",
               recurrence.last_exception_id)
        )
    if similar:
        evidence.append(similar_evidence(similar))
    confidence = round(intake_result.type_confidence * SEVERITY_CONFIDENCE[source], 4)
    hint = root_cause_hint(domain, record.exception_type)
    summary = _summary(record, domain, severity, source, matched, hint)
    priority = priority_score(severity, seen_before, intake_result.type_source)
    evidence.append(ev("summary", summary))
    made = decision(f"severity {severity}, priority {priority}", confidence, tuple(evidence),
                    "escalate" if record.exception_type == UNCLASSIFIED else "policy")
    return TriageResult(severity, source, tuple(matched), priority, confidence, hint, summary, made)
