#!/usr/bin/env python3
"""Build the labeled retrieval set for the similar-case memory (`cases.jsonl`, `queries.jsonl`).

Realistic payloads come from `scripts/gen_examples.py`. On top of them:

* *families*: one underlying problem (type + the attributes that make it "the same kind of problem", e.g.
  the same counterparty failing to deliver for the same reason, the same payer denying the same procedure)
  and a cause written as free text. Each family has 3-5 cases in the target tenant, each with its own ids,
  amounts and dates, a paraphrase of the message, its own field order, and sometimes a typo;
* *queries*: two more members of each family, not indexed: another paraphrase, typos, shuffled and missing
  fields. A query's relevant cases are its family's cases in its own tenant;
* *distractors*: ~800 filler cases per domain of every type (other causes, other counterparties/payers), and
  every family member copied into a second tenant of the same domain: those must never be returned.

Output is a pure function of the seed. Run: `.venv/bin/python tests/data/retrieval/build.py`.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SEED = 20250314
FAMILIES_PER_DOMAIN = 40
FILLER_PER_DOMAIN = 800
TENANTS = {"finance": ("acme-capital", "northwind-securities"), "healthcare": ("riverside-health", "summit-care")}


def _gen() -> Any:
    spec = importlib.util.spec_from_file_location("gen_examples", ROOT / "scripts" / "gen_examples.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# type -> (attributes a family shares, causes: each a list of paraphrases)
FINANCE: dict[str, tuple[tuple[str, ...], list[list[str]]]] = {
    "SETTLEMENT_FAIL": (("counterparty", "counterpartyTier", "counterpartyLei", "failReason", "csd"), [
        ["Counterparty did not deliver the securities; they are short at the depository",
         "Delivering party lacked inventory so the instruction stayed pending at the CSD",
         "Securities were not delivered because the counterparty had insufficient holdings",
         "Broker failed to deliver: not enough stock in their account at settlement"],
        ["Settlement instructions do not match: counterparty SSI points to an old custodian account",
         "SSI mismatch, the standing settlement instructions on file are outdated",
         "Our instruction and the counterparty's disagree on the custodian account (stale SSI)",
         "Unmatched instruction because the counterparty changed custodian and SSIs were not updated"],
        ["Trade was affirmed after the cut-off so it missed the settlement cycle",
         "Late affirmation by the investment manager caused the fail",
         "Allocation confirmed too late on trade date; settlement missed under T+1",
         "The client affirmed past the deadline and the trade could not settle"],
    ]),
    "TRADE_MISMATCH": (("counterparty", "counterpartyLei", "mismatchFields", "venue"), [
        ["Broker confirm shows a different execution price than our booking",
         "Price on the counterparty confirmation disagrees with the booked price",
         "Execution price break between OMS and the broker's confirm",
         "The confirm came back with another price than we booked"],
        ["Quantity on the confirmation differs from the order quantity",
         "Broker reports a partial fill size that does not match our booked shares",
         "Share count mismatch between execution report and OMS",
         "Confirmed quantity is off compared to what the desk booked"],
        ["Commission charged by the broker does not agree with the agreed schedule",
         "Broker fees on the confirm are higher than the commission grid",
         "Commission break: confirm commission differs from our calculation",
         "Unexpected commission amount on the confirmation"],
    ]),
    "FAILED_ALLOCATION": (("accountId", "accountType", "reason", "affirmationPlatform"), [
        ["Allocation rejected because the account has no settlement instructions on file",
         "Missing SSI for the sub-account so CTM rejected the allocation",
         "Account lacks standing instructions; block could not be allocated",
         "No SSI set up for this fund account, allocation bounced"],
        ["Allocated quantity exceeds the block size",
         "Sum of allocations is larger than the executed block",
         "Over-allocation: the allocation quantities add up to more than the block",
         "Block over-allocated across accounts"],
    ]),
    "POSITION_BREAK": (("accountId", "accountType", "custodian"), [
        ["Custodian holding is lower than our books after a corporate action was not booked",
         "Position difference caused by an unprocessed corporate action at the custodian",
         "Our position and the custodian's disagree because a stock split was not applied",
         "Break due to a corporate event booked by the custodian but not by us"],
        ["Custodian still shows shares we already delivered (pending settlement)",
         "Position break from a trade that settled on our side but not at the custodian",
         "Timing difference: delivery not yet reflected in the custodian statement",
         "Unsettled delivery makes the custodian position differ from ours"],
    ]),
    "CASH_BREAK": (("accountId", "currency", "bank", "cashType"), [
        ["Bank charged a fee that was not booked in the ledger",
         "Unbooked bank charges on the nostro statement",
         "Statement includes account maintenance fees missing from our ledger",
         "Fee debited by the bank but never recorded on our side"],
        ["Coupon income received earlier than expected and not yet booked",
         "Interest payment credited by the bank before we booked the income",
         "Income receipt on the statement without a matching ledger entry",
         "Dividend cash arrived but the ledger has no entry yet"],
    ]),
    "REG_REPORT_REJECTED": (("regime", "rejectReason"), [
        ["Report rejected because the customer identifier is missing or invalid",
         "Regulator bounced the submission for a bad customer ID",
         "Customer id on the transaction report failed validation",
         "Invalid client identifier caused the rejection"],
        ["Rejected because the legal entity identifier has lapsed",
         "LEI of the counterparty is expired so the trade repository refused the report",
         "Report refused: lapsed LEI on the buyer",
         "Entity identifier no longer valid, submission rejected"],
    ]),
    "SEC_MASTER_MISMATCH": (("attribute", "impact", "vendor"), [
        ["Vendor feed disagrees with the golden source on this reference field",
         "Reference data difference between the security master and the vendor",
         "Downstream vendor value differs from the golden copy",
         "Security master and market data vendor have conflicting values"],
    ]),
}

HEALTHCARE: dict[str, tuple[tuple[str, ...], list[list[str]]]] = {
    "CLAIM_MISSING_PRIOR_AUTH": (("payerId", "payerName", "payerType", "careSetting", "carc"), [
        ["Claim denied because no prior authorization was on file for the procedure",
         "Payer rejected the claim: authorization was never obtained before service",
         "Missing pre-certification for the imaging study led to denial",
         "Service required precertification which was not requested"],
        ["Authorization number on the claim does not match the payer's approval",
         "Prior auth exists but the number submitted was wrong",
         "Claim carries an authorization id the payer cannot find",
         "Mismatched authorization reference between claim and payer portal"],
    ]),
    "CLAIM_CODE_MISMATCH": (("payerId", "payerName", "payerType", "carc"), [
        ["Procedure code is not supported by the diagnosis codes billed",
         "Diagnosis does not justify the CPT billed; medical necessity denial",
         "Payer says the ICD-10 codes do not support the procedure",
         "CPT and diagnosis pairing rejected as inconsistent"],
        ["Modifier missing or inappropriate for the billed procedure",
         "Claim denied for an incorrect modifier on the service line",
         "Wrong modifier attached to the procedure code",
         "Payer requires a different modifier for this service"],
    ]),
    "ELIGIBILITY_COVERAGE_LAPSE": (("payerId", "payerName", "payerType", "careSetting"), [
        ["Patient's coverage terminated before the date of service",
         "Insurance was not active on the service date",
         "Member policy lapsed prior to the visit",
         "Eligibility check shows coverage ended before treatment"],
        ["Premium unpaid, member is in the grace period",
         "Coverage suspended for non-payment of premium",
         "Marketplace plan in grace period due to missed premium",
         "Member behind on premiums so claims are pended"],
    ]),
    "PROVIDER_CREDENTIAL_EXPIRED": (("credentialType", "specialty"), [
        ["Practitioner's credential expired and renewal was not submitted",
         "Renewal paperwork never filed so the credential lapsed",
         "Provider let the credential expire without sending renewal documents",
         "Credential out of date: renewal application missing"],
        ["Renewal submitted but still pending with the issuing board",
         "Credential renewal is in process at the board, not yet approved",
         "Awaiting board approval of the renewed credential",
         "Renewal filed on time but the issuing authority has not processed it"],
    ]),
    "PATIENT_DEMOGRAPHIC_CONFLICT": (("conflictFields", "facility"), [
        ["Two medical records appear to be the same person with different addresses",
         "Possible duplicate patient: records differ only in address and phone",
         "EMPI flagged likely duplicate charts with conflicting contact details",
         "Same patient registered twice with different contact information"],
        ["Date of birth differs between the two matched records",
         "Records match on name but birth dates conflict",
         "Conflicting DOB on what looks like one patient",
         "Duplicate candidate with mismatched date of birth"],
    ]),
    "PHARMACY_DUPLICATE_THERAPY": (("ndc", "drugName", "therapeuticClass", "isHighAlert", "unit"), [
        ["New order duplicates an active medication in the same class",
         "Two concurrent orders for drugs of the same therapeutic class",
         "Duplicate therapy alert: patient already on a drug of this class",
         "Same-class medication ordered while the previous one is still active"],
    ]),
}

SOURCES = {"finance": FINANCE, "healthcare": HEALTHCARE}


def signature(etype: str, cause: int, shared: dict[str, Any]) -> str:
    return json.dumps([etype, cause, sorted((k, str(v)) for k, v in shared.items())])


def typo(text: str, rng: random.Random, n: int = 1) -> str:
    words = text.split()
    for _ in range(n):
        cands = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
        if not cands:
            break
        i = rng.choice(cands)
        w = words[i]
        j = rng.randrange(1, len(w) - 1)
        op = rng.randrange(3)
        if op == 0:
            w = w[:j] + w[j + 1:]  # dropped letter
        elif op == 1:
            w = w[:j] + w[j + 1] + w[j] + w[j + 2:]  # swapped letters
        else:
            w = w[:j] + w[j] + w[j:]  # doubled letter
        words[i] = w
    return " ".join(words)


def shuffled(d: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    items = list(d.items())
    rng.shuffle(items)
    return dict(items)


def build(seed: int = SEED) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    gen_mod = _gen()
    rng = random.Random(seed)
    cases: list[dict[str, Any]] = []
    queries: list[dict[str, Any]] = []
    base = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
    counter = 0

    def submission(etype: str, source: str, payload: dict[str, Any], message: str) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        payload = dict(payload)
        payload["message"] = message
        payload.pop("eventId", None)
        ts = base - timedelta(minutes=counter)
        return {"exceptionId": f"RS-{counter:06d}", "exceptionType": etype, "sourceSystem": source,
                "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "rawPayload": shuffled(payload, rng)}

    for domain, table in SOURCES.items():
        target, other = TENANTS[domain]
        gen = gen_mod._GENS[domain](gen_mod.FastRandom(f"retrieval:{domain}:{seed}"))
        types = list(table)
        families = []
        for f in range(FAMILIES_PER_DOMAIN):
            etype = types[f % len(types)]
            shared_keys, causes = table[etype]
            cause = f // len(types) % len(causes)
            source, anchor = gen.make(etype)
            families.append((f, etype, source, {k: anchor[k] for k in shared_keys if k in anchor}, cause))
        for f, etype, source, shared, cause in families:
            paraphrases = table[etype][1][cause]
            size = rng.randrange(3, 6)
            members = []
            for m in range(size + 2):
                _, payload = gen.make(etype)
                payload.update(shared)
                if "valueDate" in payload:
                    payload["valueDate"] = (base.date() - timedelta(days=m + 1)).isoformat()
                msg = paraphrases[m % len(paraphrases)]
                if rng.random() < 0.3:
                    msg = typo(msg, rng)
                members.append((payload, msg))
            family_ids: list[str] = []
            sig = signature(etype, cause, shared)
            for payload, msg in members[:size]:
                sub = submission(etype, source, payload, msg)
                cases.append({"tenant": target, "domain": domain, "family": f"{domain}-{f}", "signature": sig,
                              "submission": sub})
                family_ids.append(sub["exceptionId"])
                twin = submission(etype, source, payload, msg)  # the same problem at another tenant
                cases.append({"tenant": other, "domain": domain, "family": f"{domain}-{f}", "signature": sig,
                              "submission": twin})
            for q, (payload, _msg) in enumerate(members[size:]):
                payload = dict(payload)
                droppable = [k for k in payload if k not in shared]
                for k in rng.sample(droppable, min(len(droppable), rng.randrange(1, 4))):
                    payload.pop(k)  # a source that sends fewer fields
                qmsg = typo(paraphrases[(size + q + 1) % len(paraphrases)], rng, n=1 + q)
                sub = submission(etype, source, payload, qmsg)
                sub["exceptionId"] = f"Q-{sub['exceptionId']}"
                queries.append({"tenant": target, "domain": domain, "family": f"{domain}-{f}", "signature": sig,
                                "query": sub, "relevant": family_ids})
        # distractors: every type, other causes and counterparties, messages from the type's cause list
        all_types = [t for t, _ in gen.weights]
        for i in range(FILLER_PER_DOMAIN):
            etype = gen.pick_type() if i % 4 else rng.choice(all_types)
            source, payload = gen.make(etype)
            keys, causes = table.get(etype, ((), [["Exception raised by the source system"]]))
            cause = rng.randrange(len(causes))
            msg = rng.choice(causes[cause])
            tenant = target if i % 8 else other
            cases.append({"tenant": tenant, "domain": domain, "family": None,
                          "signature": signature(etype, cause, {k: payload[k] for k in keys if k in payload}),
                          "submission": submission(etype, source, payload, msg)})
    # A case is relevant to a query when it is the same problem: same type, same cause, same defining
    # attributes, in the query's tenant — whether it was generated as a family member or as filler.
    by_sig: dict[tuple[str, str], list[str]] = {}
    for c in cases:
        by_sig.setdefault((c["tenant"], c["signature"]), []).append(c["submission"]["exceptionId"])
    for q in queries:
        q["relevant"] = by_sig[(q["tenant"], q["signature"])]
    return cases, queries


def main() -> int:
    cases, queries = build()
    with (HERE / "cases.jsonl").open("w") as fh:
        for c in cases:
            fh.write(json.dumps(c, sort_keys=False, ensure_ascii=False) + "\n")
    with (HERE / "queries.jsonl").open("w") as fh:
        for q in queries:
            fh.write(json.dumps(q, sort_keys=False, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases, {len(queries)} queries", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
