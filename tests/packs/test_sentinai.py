"""SentinAI import: the six conformance packs import and compile, conversions are faithful, errors are clean.

The conformance files live beside the repository in ../shared (they carry no license and are never copied into
the repo). Tests that read them skip when the directory is absent — except under CI=true, where absence fails.
The synthetic packs below are written for these tests in the SentinAI shapes.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import breakdesk.cli.pack_import  # noqa: F401 - registers `pack import`
from breakdesk.cli import app
from breakdesk.packs.compiler import compile_domain, compile_tenant
from breakdesk.packs.loader import load_pack_text, model_from_data
from breakdesk.packs.schema import DomainPack, TenantPolicy
from breakdesk.packs.sentinai import SentinaiImportError, convert_sentinai, import_sentinai
from breakdesk.packs.workspace import validate_paths

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "conformance" / "sentinai"

FIN_DOMAIN = "domainpacks_finance.sample.json"
HC_DOMAIN = "domainpacks_healthcare.sample.json"
ACME_DOMAIN = "runtime_domainpacks_ACME_CAPITAL_CapitalMarketsTrading_1.0.0.json"
FIN_TENANT = "tenantpacks_tenant_finance.sample.json"
HC_TENANT = "tenantpacks_tenant_healthcare.sample.json"
ACME_TENANT = "corrected_tenant_pack.json"
HC_DOMAIN_NAME = "HealthcareClaimsAndCareOps"

# (tenant file, its domain file, domain name to bind when the tenant names none)
PAIRS = [
    (FIN_TENANT, FIN_DOMAIN, None),
    (ACME_TENANT, ACME_DOMAIN, None),
    (HC_TENANT, HC_DOMAIN, HC_DOMAIN_NAME),
]
ALL_FILES = [FIN_DOMAIN, HC_DOMAIN, ACME_DOMAIN, FIN_TENANT, HC_TENANT, ACME_TENANT]


def shared_dir() -> Path:
    if SHARED.is_dir():
        return SHARED
    if os.environ.get("CI") == "true":
        pytest.fail(f"conformance data {SHARED} is missing; under CI=true it must be present")
    pytest.skip(f"conformance data {SHARED} is absent")


def load_shared(name: str) -> dict[str, Any]:
    data = json.loads((shared_dir() / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def imported(name: str, domain_name: str | None = None) -> dict[str, Any]:
    return import_sentinai(load_shared(name), name, domain_name=domain_name)


def domain_name_for(name: str) -> str | None:
    return HC_DOMAIN_NAME if name == HC_TENANT else None


def steps_of(pack: dict[str, Any], playbook_id: str) -> list[dict[str, Any]]:
    [pb] = [p for p in pack["playbooks"] if p["id"] == playbook_id]
    return pb["steps"]


def steps_from(steps: list[dict[str, Any]], prose_start: str) -> list[dict[str, Any]]:
    found = [s for s in steps if s["description"].startswith(prose_start)]
    assert found, f"no step starting with {prose_start!r}"
    return found


# ------------------------------------------------------------------------------------- conformance packs


@pytest.mark.shared
@pytest.mark.parametrize("name", ALL_FILES)
def test_every_conformance_pack_imports_and_loads(name: str) -> None:
    result = convert_sentinai(load_shared(name), name, domain_name=domain_name_for(name))
    pack = model_from_data(result.data, name)
    if result.kind == "domain":
        assert isinstance(pack, DomainPack)
        compiled = compile_domain(pack, name)
        assert compiled.types
    else:
        assert isinstance(pack, TenantPolicy)
    # the result is plain JSON data
    assert json.loads(json.dumps(result.data)) == result.data


@pytest.mark.shared
@pytest.mark.parametrize(("tenant", "domain", "domain_name"), PAIRS)
def test_tenant_policy_compiles_against_its_domain(tenant: str, domain: str, domain_name: str | None) -> None:
    dom = compile_domain(DomainPack.model_validate(imported(domain)), domain)
    policy = TenantPolicy.model_validate(imported(tenant, domain_name))
    compiled = compile_tenant(policy, dom, tenant)
    assert compiled.domain is dom


@pytest.mark.shared
@pytest.mark.parametrize(("tenant", "domain", "domain_name"), PAIRS)
def test_cli_import_then_validate_pair(
    tmp_path: Path, tenant: str, domain: str, domain_name: str | None
) -> None:
    runner = CliRunner()
    dom_out = tmp_path / "domain.yaml"
    ten_out = tmp_path / ("tenant.json" if tenant == FIN_TENANT else "tenant.yml")
    r = runner.invoke(
        app, ["pack", "import", str(shared_dir() / domain), "--from", "sentinai", "-o", str(dom_out)]
    )
    assert r.exit_code == 0, r.stderr
    args = ["pack", "import", str(shared_dir() / tenant), "--from", "sentinai", "-o", str(ten_out)]
    if domain_name:
        args += ["--domain", domain_name]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    if ten_out.suffix == ".json":
        json.loads(ten_out.read_text())
    report = validate_paths([dom_out, ten_out])
    assert report.problems == []
    assert len(report.domains) == 1
    assert len(report.tenants) == 1
    r = runner.invoke(app, ["pack", "validate", str(dom_out), str(ten_out)])
    assert r.exit_code == 0, r.stderr


@pytest.mark.shared
def test_cli_writes_yaml_to_stdout_by_default() -> None:
    r = CliRunner().invoke(app, ["pack", "import", str(shared_dir() / HC_DOMAIN), "--from", "sentinai"])
    assert r.exit_code == 0, r.stderr
    loaded = load_pack_text(r.stdout, "<stdout>", "yaml")
    assert isinstance(loaded.pack, DomainPack)
    assert loaded.pack.name == HC_DOMAIN_NAME
    assert "note:" in r.stderr  # notes go to stderr, never into the YAML


@pytest.mark.shared
def test_finance_prose_steps_become_tool_steps_in_order() -> None:
    pack = imported(FIN_DOMAIN)
    steps = steps_of(pack, "PB_MISMATCHED_TRADE_DETAILS")
    fetch = steps_from(steps, "Fetch trade order and executions using getOrder/getExecutions")
    assert [s["tool"] for s in fetch] == ["getOrder", "getExecutions"]
    assert all(s["args"] == {"orderId": "${normalizedContext.orderId}"} for s in fetch)

    alloc = steps_of(pack, "PB_FAILED_ALLOCATION")
    [repair] = steps_from(alloc, "Retry allocations using repairAllocation(orderId)")
    assert repair["tool"] == "repairAllocation"
    assert repair["args"] == {"orderId": "${normalizedContext.orderId}"}
    assert "requiresApproval" not in repair
    # every normalizedContext field a template reads is mapped from the raw payload
    assert pack["intake"]["fields"]["orderId"] == "${rawPayload.orderId}"
    assert pack["intake"]["fields"]["accountId"] == "${rawPayload.accountId}"

    [recalc] = steps_from(steps_of(pack, "PB_POSITION_BREAK"), "Run recalculatePosition(accountId,cusip)")
    assert recalc["args"] == {
        "accountId": "${normalizedContext.accountId}",
        "cusip": "${normalizedContext.cusip}",
    }


def test_step_naming_no_tool_is_manual_and_conditions_need_a_human() -> None:
    pack = import_sentinai(copy.deepcopy(CONDITION_DOMAIN), "cond.json")
    steps = steps_of(pack, "PB_ORDER_BREAK")
    [manual] = steps_from(steps, "Compare quantities")
    assert manual == {"description": "Compare quantities between books"}
    [cond_manual] = steps_from(steps, "If the break is small")
    assert "tool" not in cond_manual
    assert cond_manual["requiresApproval"] is True
    assert "when" not in cond_manual
    [cond_tool] = steps_from(steps, "If still broken: openCase")
    assert cond_tool["tool"] == "openCase"
    assert cond_tool["args"] == {"caseType": "ORDER_BREAK"}  # positional literal; `payload` is optional
    assert cond_tool["requiresApproval"] is True
    assert "when" not in cond_tool


@pytest.mark.shared
def test_finance_conditional_and_manual_steps() -> None:
    steps = steps_of(imported(FIN_DOMAIN), "PB_FAILED_ALLOCATION")
    [manual] = steps_from(steps, "Validate all child allocations total = block quantity")
    assert "tool" not in manual and "args" not in manual
    [case] = steps_from(steps, "If still failing: openCase('ALLOCATION_FAIL')")
    assert case["tool"] == "openCase"
    assert case["args"] == {"caseType": "ALLOCATION_FAIL"}
    assert case["requiresApproval"] is True
    assert "when" not in case


@pytest.mark.shared
def test_finance_tools_tests_and_guardrails() -> None:
    pack = imported(FIN_DOMAIN)
    tool = pack["tools"]["getPositions"]
    assert tool["url"] == "https://api.example.com/positions/getPositions"
    assert tool["method"] == "POST"
    assert tool["effect"] == "write"  # the source states no effect: fail-safe
    assert tool["parameters"] == {
        "type": "object",
        "properties": {"accountId": {"type": "string"}, "cusip": {"type": "string"}},
        "required": ["accountId", "cusip"],
        "additionalProperties": False,
    }
    assert pack["tools"]["openCase"]["parameters"]["required"] == ["caseType"]
    # the sample's suites expect severities no rule produces: kept as-is for the test runner to report
    tests = {t["input"]["exceptionType"]: t for t in pack["tests"]}
    assert tests["MISMATCHED_TRADE_DETAILS"]["expect"] == {
        "exceptionType": "MISMATCHED_TRADE_DETAILS",
        "severity": "HIGH",
    }
    assert tests["FAILED_ALLOCATION"]["expect"]["severity"] == "MEDIUM"
    assert pack["guardrails"]["x-sentinai-humanApprovalThreshold"] == 0.8
    assert pack["guardrails"]["x-sentinai-allowLists"] == []
    assert pack["severityRules"][3] == {
        "condition": "exceptionType == 'SEC_MASTER_MISMATCH' && rawPayload.impact == 'ECONOMIC'",
        "severity": "MEDIUM",
    }


@pytest.mark.shared
def test_healthcare_grouped_tools_get_category_and_effect() -> None:
    tools = imported(HC_DOMAIN)["tools"]
    assert (tools["getClaim"]["category"], tools["getClaim"]["effect"]) == ("dbQueries", "read")
    assert (tools["reprocessClaim"]["category"], tools["reprocessClaim"]["effect"]) == ("apiActions", "write")
    assert (tools["openCase"]["category"], tools["openCase"]["effect"]) == ("workflowActions", "write")
    assert tools["getAuthorization"]["parameters"]["properties"]["procedureCodes"] == {
        "type": "array",
        "items": {"type": "string"},
    }
    assert tools["openCase"]["parameters"]["properties"]["payload"] == {"type": "object"}
    assert tools["getAuthorization"]["x-sentinai-returns"] == "Authorization[]"
    assert "url" not in tools["getClaim"]


@pytest.mark.shared
def test_healthcare_playbooks() -> None:
    pack = imported(HC_DOMAIN)
    [pb1] = [p for p in pack["playbooks"] if p["id"] == "PB01_VALIDATE_AUTH_AND_REPROCESS"]
    assert pb1["match"] == {"types": ["CLAIM_MISSING_AUTH"]}
    assert pb1["x-sentinai-approved"] is True
    assert pb1["successCriteria"][1] == "Audit includes auth evidence."
    [attach] = steps_from(pb1["steps"], "If valid authorization exists for serviceDate")
    assert attach["tool"] == "attachAuthorizationToClaim"
    assert attach["args"] == {
        "claimId": "${normalizedContext.claimId}",
        "authId": "${normalizedContext.authId}",
    }
    assert attach["requiresApproval"] is True
    [notify] = steps_from(pb1["steps"], "Notify BillingOps.")
    assert "tool" not in notify  # names no tool of the pack (the tool is notifyTeam)

    # "OpenCase('CODING_REVIEW')" finds openCase case-insensitively
    [open_case] = steps_from(steps_of(pack, "PB03_CODE_CORRECTION_WORKFLOW"), "OpenCase('CODING_REVIEW')")
    assert open_case["tool"] == "openCase"
    assert open_case["args"]["caseType"] == "CODING_REVIEW"
    assert "requiresApproval" not in open_case

    # the prose's own argument name is used for the new expiry date
    [update] = steps_from(steps_of(pack, "PB02_PROVIDER_REMEDIATION"), "If renewal confirmed")
    assert update["args"]["credentialExpiryDate"] == "${normalizedContext.newExpiryDate}"
    assert pack["intake"]["fields"]["newExpiryDate"] == "${rawPayload.newExpiryDate}"

    g = pack["guardrails"]
    assert g["requireApprovalForTypes"] == ["PHARMACY_DUPLICATE_THERAPY"]
    assert g["noAutoActionIfSeverityIn"] == ["CRITICAL"]
    assert g["escalateIfConfidenceBelow"] == 0.75
    assert g["maxAutoRetries"] == 1
    assert g["x-sentinai-autoActionAllowedOnlyForApprovedPlaybooks"] is True
    assert pack["exceptionTypes"]["CLAIM_MISSING_AUTH"]["defaultSeverity"] == "HIGH"
    assert pack["severityRules"][3]["condition"].endswith("rawPayload.affectsBilling == true")
    [case] = [t for t in pack["tests"] if t["name"] == "HC-CASE-002"]
    assert case["input"] == {"exceptionType": "PROVIDER_CREDENTIAL_EXPIRED", "rawPayload": {}}
    assert case["expect"] == {"playbook": "PB02_PROVIDER_REMEDIATION"}


@pytest.mark.shared
def test_finance_tenant_approval_rules_and_extensions() -> None:
    policy = imported(FIN_TENANT)
    assert policy["domain"] == {"name": "CapitalMarketsTrading", "versionRange": "^1.0.0"}
    rules = policy["approvalRules"]
    assert {"id": "humanApprovalThreshold", "confidenceBelow": 0.75} in rules
    [required] = [r for r in rules if r.get("requireApproval", True) and "severities" in r]
    assert required["severities"] == ["CRITICAL"]
    [exempt] = [r for r in rules if r.get("requireApproval") is False]
    assert exempt["severities"] == ["HIGH", "MEDIUM", "LOW"]
    assert policy["retention"] == {"days": 90}
    assert policy["severityOverrides"] == [
        {"exceptionType": "REG_REPORT_REJECTED", "severity": "HIGH"},
        {"exceptionType": "SEC_MASTER_MISMATCH", "severity": "LOW"},
    ]
    assert len(policy["tools"]["allow"]) == 13
    assert policy["x-sentinai-customPlaybooks"] == []
    assert policy["guardrails"]["x-sentinai-allowLists"] == []


@pytest.mark.shared
def test_healthcare_tenant_mapping() -> None:
    policy = imported(HC_TENANT, HC_DOMAIN_NAME)
    assert policy["name"] == "RegionalHealthNetworkB"
    assert policy["approvedPlaybooks"][0] == "PB01_VALIDATE_AUTH_AND_REPROCESS"
    assert {"exceptionType": "CLAIM_CODE_MISMATCH", "severity": "HIGH"} in policy["severityOverrides"]
    assert len(policy["tools"]["allow"]) == 14  # flattened across categories
    assert policy["guardrails"] == {
        "requireApprovalForTypes": ["PHARMACY_DUPLICATE_THERAPY"],
        "escalateIfConfidenceBelow": 0.8,
    }
    route = policy["notifications"][0]
    assert route == {
        "condition": "exceptionType == 'CLAIM_MISSING_AUTH' || exceptionType == 'ELIGIBILITY_COVERAGE_LAPSE'",
        "group": "BillingOps",
        "channels": ["email", "teamsWebhook"],
        "recipients": ["billing-ops@rhn-b.org"],
    }
    assert policy["x-sentinai-environment"] == "UAT"
    assert policy["x-sentinai-workflowPolicies"]["escalationQueue"] == "CareOpsTier2"
    assert policy["x-sentinai-workflowPolicies"]["agingThresholds"]["PHARMACY_DUPLICATE_THERAPY"] == "2h"
    # a group no route uses keeps its recipients
    assert policy["x-sentinai-notificationPolicies"] == {
        "recipientsByGroup": {"CareOpsTier2": ["careops-tier2@rhn-b.org"]}
    }


@pytest.mark.shared
def test_healthcare_tenant_needs_a_domain_name() -> None:
    with pytest.raises(SentinaiImportError) as err:
        imported(HC_TENANT)
    [problem] = err.value.problems
    assert problem.path == "$.domainName"
    assert "--domain" in problem.reason


# --------------------------------------------------------------------------------------- synthetic packs

CONDITION_DOMAIN: dict[str, Any] = {
    "domainName": "Orders",
    "entities": {
        "Order": {
            "attributes": {
                "orderId": {"type": "string", "required": True},
                "qty": {"type": "int"},
                "tags": "string[]",
            },
            "relations": [],
        },
    },
    "exceptionTypes": {
        "ORDER_BREAK": {"description": "Quantities differ.", "detectionRules": []},
        "ORDER_LATE": {"name": "ORDER_LATE", "description": "Late."},
    },
    "severityRules": [
        {"condition": "exceptionType == 'ORDER_BREAK' && rawPayload.qty > 10", "severity": "HIGH"},
        {"condition": "exceptionType == 'ORDER_LATE'", "severity": "LOW"},
    ],
    "tools": {
        "getOrder": {
            "description": "Fetch an order.",
            "parameters": {"orderId": {"type": "string", "required": True}},
            "endpoint": "https://api.example.com/orders/get",
        },
        "openCase": {
            "parameters": {"caseType": {"type": "string", "required": True}, "payload": {"type": "object"}},
            "endpoint": "https://api.example.com/cases",
        },
        "Notify": {"parameters": {}, "endpoint": "https://api.example.com/notify"},
    },
    "playbooks": [
        {
            "exceptionType": "ORDER_BREAK",
            "steps": [
                {"action": "Fetch the order using GetOrder", "parameters": {}},
                {"action": "Compare quantities between books", "parameters": {}},
                {"action": "If the break is small: adjust the booking", "parameters": {}},
                {"action": "If still broken: openCase('ORDER_BREAK') and assign to Ops", "parameters": {}},
                {"action": "notify the desk", "parameters": {}, "description": "Tell people"},
            ],
        },
        {"exceptionType": "ORDER_LATE", "steps": [{"action": "Wait", "parameters": {}}]},
    ],
    "guardrails": {"allowLists": ["getOrder"], "blockLists": [], "humanApprovalThreshold": 0.7},
    "testSuites": [
        {
            "input": {"exceptionType": "ORDER_BREAK", "rawPayload": {"qty": 20}},
            "expectedOutput": {"severity": "HIGH"},
        }
    ],
    "owner": "ops-team",
}

GROUPED_DOMAIN: dict[str, Any] = {
    "domainName": "Claims",
    "version": "2.1.0",
    "entities": {"Claim": {"keys": ["claimId"], "fields": ["claimId", "amount"]}},
    "exceptionTypes": {"CLAIM_HELD": {"defaultSeverity": "medium", "tags": ["claims"]}},
    "severityRules": [{"if": "exceptionType == 'CLAIM_HELD' && rawPayload.amount > 100", "severity": "HIGH"}],
    "tools": {
        "dbQueries": [{"name": "getClaim", "argsSchema": {"claimId": "string"}, "returns": "Claim"}],
        "apiActions": [{"name": "releaseClaim", "argsSchema": {"claimId": "string", "note?": "string"}}],
    },
    "playbooks": [
        {
            "playbookId": "PB_RELEASE",
            "approved": False,
            "appliesTo": ["CLAIM_HELD"],
            "steps": ["Fetch using getClaim(claimId).", "When cleared: releaseclaim(claimId, '${oops}')."],
            "successCriteria": ["Released."],
        }
    ],
    "guardrails": {"noAutoActionIfSeverityIn": ["CRITICAL"], "maxAutoRetries": 2},
    "testSuites": [{"suiteId": "S1", "cases": [{"caseId": "C1", "inputExceptionType": "CLAIM_HELD"}]}],
}

TENANT: dict[str, Any] = {
    "tenantId": "T1",
    "domainName": "Orders",
    "approvedTools": ["getOrder", "openCase"],
    "customGuardrails": {"blockLists": ["Notify"], "humanApprovalThreshold": 0.6},
    "humanApprovalRules": [{"severity": "CRITICAL", "requireApproval": True}],
    "customSeverityOverrides": [{"exceptionType": "ORDER_LATE", "severity": "MEDIUM"}],
    "retentionPolicies": {"dataTTL": "30d", "auditTTL": 3650},
    "routingRules": [{"if": "exceptionType == 'ORDER_BREAK'", "assignGroup": "Ops"}],
}


def test_synthetic_condition_domain() -> None:
    result = convert_sentinai(copy.deepcopy(CONDITION_DOMAIN), "cond.json", version="3.0.0")
    pack = result.data
    assert pack["version"] == "3.0.0"
    assert pack["x-sentinai-owner"] == "ops-team"
    assert pack["entities"]["Order"]["attributes"]["qty"] == {"type": "integer"}
    assert pack["entities"]["Order"]["attributes"]["tags"] == {"type": "array", "x-sentinai-type": "string[]"}
    assert "name" not in pack["exceptionTypes"]["ORDER_LATE"]  # equal to its key: redundant
    steps = steps_of(pack, "PB_ORDER_BREAK")
    # an identifier-looking word matches case-insensitively; the English word "notify" does not find "Notify"
    assert steps[0]["tool"] == "getOrder"
    [notify] = steps_from(steps, "notify the desk")
    assert "tool" not in notify
    assert notify["x-sentinai-description"] == "Tell people"
    assert pack["tests"][0]["name"] == "testSuites[0] ORDER_BREAK"
    compile_domain(DomainPack.model_validate(pack))
    assert any("imported as 'write'" in n for n in result.notes)


def test_synthetic_grouped_domain() -> None:
    pack = import_sentinai(copy.deepcopy(GROUPED_DOMAIN), "grouped.json")
    assert pack["version"] == "2.1.0"  # the source's own version wins
    assert pack["exceptionTypes"]["CLAIM_HELD"]["defaultSeverity"] == "MEDIUM"
    release = pack["tools"]["releaseClaim"]
    assert release["effect"] == "write"
    assert release["parameters"]["required"] == ["claimId"]  # `note?` is optional
    [pb] = pack["playbooks"]
    assert pb["x-sentinai-approved"] is False
    assert pb["steps"][1]["tool"] == "releaseClaim"
    assert pb["steps"][1]["requiresApproval"] is True
    assert pb["steps"][1]["args"] == {"claimId": "${normalizedContext.claimId}", "note": "$${oops}"}
    assert pack["tests"][0] == {
        "name": "C1",
        "description": "SentinAI suite S1",
        "input": {"exceptionType": "CLAIM_HELD", "rawPayload": {}},
        "expect": {},
    }


def test_synthetic_tenant() -> None:
    policy = import_sentinai(
        copy.deepcopy(TENANT), "tenant.json", version="1.2.0", domain_version_range=">=1,<2"
    )
    assert policy["version"] == "1.2.0"
    assert policy["domain"] == {"name": "Orders", "versionRange": ">=1,<2"}
    assert policy["retention"] == {"days": 30}
    assert policy["x-sentinai-retentionPolicies"] == {"auditTTL": 3650}
    assert policy["guardrails"] == {"blockedTools": ["Notify"]}
    assert policy["approvalRules"] == [
        {"id": "humanApprovalThreshold", "confidenceBelow": 0.6},
        {"id": "humanApprovalRules.requireApproval", "severities": ["CRITICAL"]},
    ]
    assert policy["notifications"] == [{"condition": "exceptionType == 'ORDER_BREAK'", "group": "Ops"}]
    domain = compile_domain(DomainPack.model_validate(import_sentinai(copy.deepcopy(CONDITION_DOMAIN), "d")))
    compile_tenant(TenantPolicy.model_validate(policy), domain)


@pytest.mark.parametrize(
    ("mutate", "path", "reason"),
    [
        (lambda d: d["severityRules"][0].update(condition="exceptionType == "), "$.severityRules[0].condition",
         "CEL syntax error"),
        (lambda d: d["severityRules"][1].update(severity="URGENT"), "$.severityRules[1].severity",
         "unknown severity 'URGENT'"),
        (lambda d: d["playbooks"][0].update(exceptionType="NOPE"), "$.playbooks[0].exceptionType",
         "unknown exception type 'NOPE'"),
        (lambda d: d["tools"]["getOrder"].update(endpoint="ftp://x"), "$.tools.getOrder.endpoint",
         "http:// or https://"),
        (lambda d: d["tools"]["getOrder"]["parameters"].update(x={"type": "blob"}),
         "$.tools.getOrder.parameters.x.type", "unsupported type 'blob'"),
        (lambda d: d.update(domainName="9 bad"), "$.domainName", "not a valid name"),
        (lambda d: d.update(version="v1"), "$.version", "not a semantic version"),
        (lambda d: d["playbooks"][1].update(steps=[]), "$.playbooks[1].steps", "at least one step"),
    ],
)  # fmt: skip
def test_source_problems_are_located_in_the_source(mutate: Any, path: str, reason: str) -> None:
    data = copy.deepcopy(CONDITION_DOMAIN)
    mutate(data)
    with pytest.raises(SentinaiImportError) as err:
        import_sentinai(data, "cond.json")
    assert any(p.file == "cond.json" and p.path == path and reason in p.reason for p in err.value.problems), [
        str(p) for p in err.value.problems
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ([1, 2], "must be a JSON object, got a list"),
        ({"foo": 1}, "not a SentinAI pack"),
        ({"kind": "DomainPack", "exceptionTypes": {}}, "already a native DomainPack"),
        ({"tenantId": "t", "exceptionTypes": {}}, "ambiguous"),
        ({"tenantId": "t", "domainName": "D", "n": 2**70}, "64-bit"),
    ],
)
def test_unimportable_documents(data: Any, reason: str) -> None:
    with pytest.raises(SentinaiImportError) as err:
        import_sentinai(data, "x.json")
    assert reason in str(err.value)


def test_cross_reference_problems_are_reported_against_the_imported_pack() -> None:
    data = copy.deepcopy(CONDITION_DOMAIN)
    data["testSuites"][0]["expectedOutput"]["playbook"] = "PB_MISSING"
    with pytest.raises(SentinaiImportError) as err:
        import_sentinai(data, "cond.json")
    [problem] = err.value.problems
    assert problem.file == "cond.json (as imported)"
    assert problem.path == "$.tests[0].expect.playbook"


# ------------------------------------------------------------------------------------------------- CLI


def run_import(path: Path, *extra: str) -> Any:
    return CliRunner().invoke(app, ["pack", "import", str(path), "--from", "sentinai", *extra])


def assert_clean_failure(result: Any, message: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_invalid_json(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{"domainName": ')
    assert_clean_failure(run_import(f), f"{f}:$: invalid JSON at line 1")


def test_cli_json_array(tmp_path: Path) -> None:
    f = tmp_path / "array.json"
    f.write_text("[1, 2]")
    assert_clean_failure(run_import(f), f"{f}:$: a SentinAI pack must be a JSON object, got a list")


def test_cli_unrecognizable_object(tmp_path: Path) -> None:
    f = tmp_path / "object.json"
    f.write_text('{"hello": "world"}')
    assert_clean_failure(run_import(f), "not a SentinAI pack: a domain pack has 'exceptionTypes'")


def test_cli_bad_cel_condition(tmp_path: Path) -> None:
    data = copy.deepcopy(CONDITION_DOMAIN)
    data["severityRules"][1]["condition"] = "exceptionType == 'ORDER_LATE' &&"
    f = tmp_path / "cel.json"
    f.write_text(json.dumps(data))
    out = tmp_path / "out.yaml"
    result = run_import(f, "-o", str(out))
    assert_clean_failure(result, f"{f}:$.severityRules[1].condition: CEL syntax error at column")
    assert not out.exists()


def test_cli_rejects_unknown_format_and_output_suffix(tmp_path: Path) -> None:
    f = tmp_path / "d.json"
    f.write_text(json.dumps(CONDITION_DOMAIN))
    r = CliRunner().invoke(app, ["pack", "import", str(f), "--from", "acme"])
    assert r.exit_code == 2
    assert_clean_failure(
        run_import(f, "-o", str(tmp_path / "out.txt")), "use a .yaml, .yml or .json file name"
    )


def test_cli_output_formats(tmp_path: Path) -> None:
    f = tmp_path / "d.json"
    f.write_text(json.dumps(GROUPED_DOMAIN))
    r = run_import(f, "-o", str(tmp_path / "out.json"))
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "out.json").read_text())["name"] == "Claims"
    r = run_import(f)
    assert r.exit_code == 0, r.stderr
    assert yaml.safe_load(r.stdout)["kind"] == "DomainPack"
    assert "&id" not in r.stdout  # no YAML anchors in files people edit


def test_cli_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text("{]")
    proc = subprocess.run(
        [sys.executable, "-m", "breakdesk", "pack", "import", str(f), "--from", "sentinai"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


# -------------------------------------------------------------------------------------------- property

_WORDS = st.sampled_from(
    [
        "exceptionType == 'ORDER_BREAK'",
        "rawPayload.x > 1 &&",
        "Fetch using getOrder(orderId)",
        "If bad: openCase('X', y)",
        "string[]",
        "object",
        "CRITICAL",
        "https://api.example.com/x/{id}",
        "${normalizedContext.in}",
        "dbQueries",
        "ORDER_LATE",
        "getOrder",
        "",
    ]
)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | _WORDS
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10) | _WORDS, children, max_size=4)
    ),
    max_leaves=25,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


SEEDS = [CONDITION_DOMAIN, GROUPED_DOMAIN, TENANT]


def _assert_contract(data: Any) -> None:
    try:
        out = import_sentinai(data, "prop.json", domain_name="Orders")
    except SentinaiImportError as exc:
        assert exc.problems
        assert all(
            p.file.startswith("prop.json") and p.path.startswith("$") and p.reason for p in exc.problems
        )
        return
    assert isinstance(out, dict)
    assert isinstance(model_from_data(out, "prop.json"), DomainPack | TenantPolicy)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_property_arbitrary_json_only_raises_the_import_error(data: Any) -> None:
    _assert_contract(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_mutated_packs_only_raise_the_import_error(draw: st.DataObject) -> None:
    seed = copy.deepcopy(draw.draw(st.sampled_from(SEEDS)))
    for _ in range(draw.draw(st.integers(1, 3))):
        path = draw.draw(st.sampled_from(_paths(seed)))
        value = draw.draw(JSON_VALUES)
        if not path:
            seed = value
            break
        parent = seed
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = value
    _assert_contract(seed)
