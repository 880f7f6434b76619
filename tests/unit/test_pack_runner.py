"""The pack test runner and the `breakdesk pack` commands (validate, test, schema)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from breakdesk.cli import _register, app
from breakdesk.packs.compiler import CompiledDomainPack
from breakdesk.packs.schema import pack_json_schema
from breakdesk.packs.testing import CaseResult, neutral_policy, run_pack_tests, write_junit

from .packkit import MINI_DOMAIN, MINI_TENANT, domain_from, mini_domain_data, mini_tenant_data, tenant_from

_register()
runner = CliRunner()


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def failing_domain_data() -> dict[str, Any]:
    data = mini_domain_data()
    data["tests"] = [
        {
            "name": "passes",
            "input": {"exceptionType": "BREAK", "rawPayload": {"orderId": "O1", "amount": 5000}},
            "expect": {"severity": "HIGH", "playbook": "PB_BREAK"},
        },
        {
            "name": "wrong severity",
            "input": {"exceptionType": "BREAK", "rawPayload": {"orderId": "O1", "amount": 5000}},
            "expect": {"severity": "LOW"},
        },
        {
            "name": "wrong everything",
            "input": {"exceptionType": "BREAK", "rawPayload": {"orderId": "O1", "amount": 5}},
            "expect": {
                "exceptionType": "FAIL",
                "playbook": "none",
                "approvalRequired": True,
                "actionability": "NON_ACTIONABLE_INFO_ONLY",
                "status": "ESCALATED",
            },
        },
    ]
    return data


# --------------------------------------------------------------------------------------------- the runner


def test_mini_pack_tests_pass(mini_domain: CompiledDomainPack, mini_tenant: Any) -> None:
    results = run_pack_tests(mini_domain, [mini_tenant])
    assert [(r.suite, r.name, r.passed) for r in results] == [
        ("mini@1.0.0", "big break is high", True),
        ("t1@1.0.0", "high break needs approval", True),
        ("t1@1.0.0", "small break runs automatically", True),
    ]
    assert all(r.failures == [] for r in results)
    assert results[1].actual == {
        "exceptionType": "BREAK",
        "severity": "HIGH",
        "playbook": "PB_BREAK",
        "approvalRequired": True,
        "actionability": "ACTIONABLE_APPROVED_PROCESS",
        "status": "PENDING_APPROVAL",
    }


def test_domain_tests_run_without_tenants(mini_domain: CompiledDomainPack) -> None:
    results = run_pack_tests(mini_domain)
    assert [(r.name, r.passed) for r in results] == [("big break is high", True)]


def test_neutral_policy_approves_everything_and_adds_nothing(mini_domain: CompiledDomainPack) -> None:
    neutral = neutral_policy(mini_domain)
    assert neutral.approved_playbooks == frozenset(mini_domain.playbooks)
    assert neutral.allowed_tools == frozenset(mini_domain.tools)
    assert neutral.approval_rules == () and dict(neutral.overrides_for_type) == {}


def test_failing_expectations_say_expected_and_got() -> None:
    domain = domain_from(failing_domain_data())
    results = {r.name: r for r in run_pack_tests(domain)}
    assert results["passes"].passed is True
    wrong = results["wrong severity"]
    assert wrong.passed is False
    assert wrong.failures == ["severity: expected LOW, got HIGH"]
    everything = results["wrong everything"]
    assert everything.failures == [
        "exceptionType: expected FAIL, got BREAK",
        "playbook: expected none, got PB_BREAK",
        "approvalRequired: expected True, got False",
        "actionability: expected NON_ACTIONABLE_INFO_ONLY, got ACTIONABLE_APPROVED_PROCESS",
        "status: expected ESCALATED, got IN_PROGRESS",
    ]


def test_playbook_none_and_unclassified_expectations() -> None:
    data = mini_domain_data()
    data["tests"] = [
        {
            "name": "unclassified",
            "input": {"rawPayload": {"x": 1}},
            "expect": {"exceptionType": "UNCLASSIFIED", "playbook": "none", "status": "ESCALATED"},
        },
        {
            "name": "detected",
            "input": {"rawPayload": {"failReason": "x"}},
            "expect": {"exceptionType": "FAIL", "severity": "LOW", "playbook": "none", "status": "TRIAGED"},
        },
    ]
    results = run_pack_tests(domain_from(data))
    assert [(r.name, r.passed, r.failures) for r in results] == [
        ("unclassified", True, []),
        ("detected", True, []),
    ]


def test_rejected_input_is_a_failure() -> None:
    data = mini_domain_data()
    data["tests"] = [
        {"name": "other tenant", "input": {"tenantId": "someone-else", "rawPayload": {"a": 1}}, "expect": {}}
    ]
    [result] = run_pack_tests(domain_from(data))
    assert result.passed is False
    assert result.failures == [
        "input rejected: tenantId 'someone-else' does not match the tenant 'pack-tests' it was sent to"
    ]


def test_tenant_scoped_domain_tests(mini_domain: CompiledDomainPack) -> None:
    data = mini_domain_data()
    data["tests"].append(
        {
            "name": "only for t1",
            "tenant": "t1",
            "input": {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "amount": 5000}},
            "expect": {"approvalRequired": True},
        }
    )
    domain = domain_from(data)
    assert [r.name for r in run_pack_tests(domain)] == ["big break is high"]  # t1 not given: skipped
    tenant = tenant_from(mini_tenant_data(), domain)
    results = run_pack_tests(domain, [tenant])
    scoped = [r for r in results if r.name == "only for t1"]
    assert [(r.suite, r.passed) for r in scoped] == [("mini@1.0.0 [t1]", True)]


def test_write_junit(tmp_path: Path) -> None:
    domain = domain_from(failing_domain_data())
    tenant = tenant_from(mini_tenant_data(), domain)
    results = run_pack_tests(domain, [tenant])
    path = tmp_path / "junit.xml"
    write_junit(results, path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"mini@1.0.0", "t1@1.0.0"}
    mini = suites["mini@1.0.0"]
    assert (mini.get("tests"), mini.get("failures"), mini.get("errors")) == ("3", "2", "0")
    assert (suites["t1@1.0.0"].get("tests"), suites["t1@1.0.0"].get("failures")) == ("2", "0")
    cases = {c.get("name"): c for c in mini.findall("testcase")}
    assert cases["passes"].find("failure") is None
    failure = cases["wrong severity"].find("failure")
    assert failure is not None
    assert failure.get("message") == "severity: expected LOW, got HIGH"
    assert failure.text == "severity: expected LOW, got HIGH"
    many = cases["wrong everything"].find("failure")
    assert many is not None and many.text is not None and len(many.text.splitlines()) == 5
    assert path.read_bytes().startswith(b"<?xml")


def test_write_junit_escapes_names(tmp_path: Path) -> None:
    results = [CaseResult("suite <&>", 'a "quoted" <name>', False, ["expected <x>, got & y"])]
    path = tmp_path / "j.xml"
    write_junit(results, path)
    case = ET.parse(path).getroot().find("testsuite/testcase")
    assert case is not None and case.get("name") == 'a "quoted" <name>'
    failure = case.find("failure")
    assert failure is not None and failure.get("message") == "expected <x>, got & y"


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_pack_test_passes() -> None:
    result = runner.invoke(app, ["pack", "test", str(MINI_DOMAIN), "--tenant", str(MINI_TENANT)])
    assert result.exit_code == 0, result.output
    assert "3 passed, 0 failed" in result.output


def test_cli_pack_test_fails_with_exit_1_and_writes_junit(tmp_path: Path) -> None:
    domain = write_yaml(tmp_path / "failing.yaml", failing_domain_data())
    junit = tmp_path / "out" / "junit.xml"
    junit.parent.mkdir()
    result = runner.invoke(app, ["pack", "test", str(domain), "--junit", str(junit)])
    assert result.exit_code == 1, result.output
    assert "1 passed, 2 failed" in result.output
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "2"


def test_cli_pack_test_invalid_pack_exits_2(tmp_path: Path) -> None:
    data = mini_domain_data()
    data["playbooks"][0]["steps"][0]["tool"] = "ghostTool"
    domain = write_yaml(tmp_path / "bad.yaml", data)
    result = runner.invoke(app, ["pack", "test", str(domain)])
    assert result.exit_code == 2
    assert f"{domain}:$.playbooks[0].steps[0].tool: step calls tool 'ghostTool'" in result.output


def test_cli_pack_test_invalid_tenant_exits_2(tmp_path: Path) -> None:
    tdata = mini_tenant_data()
    tdata["approvedPlaybooks"] = ["GHOST"]
    tenant = write_yaml(tmp_path / "t.yaml", tdata)
    result = runner.invoke(app, ["pack", "test", str(MINI_DOMAIN), "-t", str(tenant)])
    assert result.exit_code == 2
    assert f"{tenant}:$.approvedPlaybooks[0]: unknown playbook 'GHOST'" in result.output


def test_cli_pack_test_unparseable_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: DomainPack\nname: [oops\n", encoding="utf-8")
    result = runner.invoke(app, ["pack", "test", str(bad)])
    assert result.exit_code == 2
    assert "invalid YAML" in result.output


def test_cli_pack_validate_ok() -> None:
    result = runner.invoke(app, ["pack", "validate", str(MINI_DOMAIN), str(MINI_TENANT)])
    assert result.exit_code == 0, result.output
    assert "domain mini@1.0.0: 2 types, 2 severity rules, 2 tools, 1 playbooks, 1 tests" in result.output
    assert "tenant policy t1@1.0.0 → mini@1.0.0: 2 tests" in result.output


def test_cli_pack_validate_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    ddata = mini_domain_data()
    ddata["severityRules"][0]["condition"] = "exceptionType == 'NOPE' && true"
    ddata["playbooks"][0]["steps"][0]["tool"] = "ghostTool"
    ddata["exceptionTypes"]["FAIL"]["parent"] = "GHOST"
    tdata = mini_tenant_data()
    tdata["tools"]["allow"].append("ghost")
    broken_yaml = tmp_path / "c.yaml"
    broken_yaml.write_text("kind: DomainPack\nname: x\nname: y\n", encoding="utf-8")
    files = [write_yaml(tmp_path / "a.yaml", ddata), write_yaml(tmp_path / "b.yaml", tdata), broken_yaml]
    result = runner.invoke(app, ["pack", "validate", *map(str, files)])
    assert result.exit_code == 2
    out = result.output
    for line in [
        f"{files[0]}:$.severityRules[0].condition: unknown exception type 'NOPE'",
        f"{files[0]}:$.playbooks[0].steps[0].tool: step calls tool 'ghostTool', which the pack does not define",
        f"{files[0]}:$.exceptionTypes.FAIL.parent: unknown parent exception type 'GHOST'",
        f"{files[2]}:$: duplicate key 'name' (line 3, column 1)",
    ]:
        assert line in out, out
    assert "3 file(s)" in out
    # the tenant cannot be checked against a broken domain: it is noted, not silently passed
    assert f"{files[1]}: structure valid" in " ".join(out.split())


def test_cli_pack_validate_tenant_against_its_domain(tmp_path: Path) -> None:
    tdata = mini_tenant_data()
    tdata["tools"]["allow"].append("ghost")
    tdata["approvalRules"][0]["exceptionTypes"] = ["NOPE"]
    tenant = write_yaml(tmp_path / "t.yaml", tdata)
    result = runner.invoke(app, ["pack", "validate", str(MINI_DOMAIN), str(tenant)])
    assert result.exit_code == 2
    assert f"{tenant}:$.tools.allow[2]: unknown tool 'ghost'" in result.output
    assert f"{tenant}:$.approvalRules[0].exceptionTypes[0]: unknown exception type 'NOPE'" in result.output
    assert "2 problem(s)" in result.output


def test_cli_pack_validate_without_files_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pack", "validate", str(tmp_path)])
    assert result.exit_code == 2
    assert "no pack files found" in result.output


def test_cli_problem_text_is_printed_verbatim(tmp_path: Path) -> None:
    data = mini_domain_data()
    data["playbooks"][0]["steps"][0]["tool"] = "ghost"
    path = write_yaml(tmp_path / "[red]pack.yaml", data)  # Rich markup in a file name must not be swallowed
    result = runner.invoke(app, ["pack", "validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:$.playbooks[0].steps[0].tool: step calls tool 'ghost'" in result.output


def test_cli_schema_validates_the_mini_packs_and_rejects_unknown_keys(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pack", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema == json.loads(json.dumps(pack_json_schema()))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    domain, tenant = mini_domain_data(), mini_tenant_data()
    assert list(validator.iter_errors(domain)) == []
    assert list(validator.iter_errors(tenant)) == []
    for doc in (domain, tenant):
        ext = copy.deepcopy(doc)
        ext["x-team"] = {"anything": [1, 2]}
        assert validator.is_valid(ext)
        bad = copy.deepcopy(doc)
        bad["bogus"] = 1
        assert not validator.is_valid(bad)
    nested = copy.deepcopy(domain)
    nested["severityRules"][0]["bogus"] = True
    assert not validator.is_valid(nested)
    nested_ext = copy.deepcopy(domain)
    nested_ext["severityRules"][0]["x-note"] = "fine"
    assert validator.is_valid(nested_ext)
    wrong = copy.deepcopy(domain)
    wrong["severityRules"][0]["severity"] = "URGENT"
    assert not validator.is_valid(wrong)

    out = tmp_path / "schema.json"
    result = runner.invoke(app, ["pack", "schema", "-o", str(out)])
    assert result.exit_code == 0
    assert json.loads(out.read_text(encoding="utf-8")) == schema


def test_cli_entry_point_exit_codes_in_a_real_process(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"kind": "DomainPack", "name": "x", "version": "1.0.0", "exceptionTypes": {"A": {"parent": "B"}}}',
        encoding="utf-8",
    )
    code = "from breakdesk.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "pack", "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{bad}:$.exceptionTypes.A.parent: unknown parent exception type 'B'" in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-c", code, "pack", "test", str(MINI_DOMAIN), "-t", str(MINI_TENANT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.parametrize("args", [["pack"], ["pack", "test"], ["pack", "validate"]])
def test_cli_usage_errors_do_not_pass(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
