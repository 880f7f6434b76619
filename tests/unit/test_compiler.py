"""Cross-reference validation and compilation of packs, version ranges, and pack diffs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from breakdesk.domain.models import Severity
from breakdesk.packs.compiler import CompiledDomainPack, compile_domain, compile_tenant
from breakdesk.packs.diff import diff_packs
from breakdesk.packs.loader import model_from_data
from breakdesk.packs.problems import PackError
from breakdesk.packs.schema import DomainPack, TenantPolicy
from breakdesk.packs.versions import parse_range, satisfies, sort_key
from breakdesk.packs.workspace import pick_domain, validate_paths

from .packkit import (
    MINI_DOMAIN,
    MINI_TENANT,
    desk_domain_data,
    desk_tenant_data,
    domain_from,
    mini_domain_data,
    mini_tenant_data,
    read_yaml,
    tenant_from,
)


def domain_problems(data: dict[str, Any], source: str = "d.yaml") -> list[tuple[str, str]]:
    pack = model_from_data(data, source)
    assert isinstance(pack, DomainPack)
    with pytest.raises(PackError) as info:
        compile_domain(pack, source)
    for p in info.value.problems:
        assert p.file == source
    return [(p.path, p.reason) for p in info.value.problems]


def tenant_problems(
    data: dict[str, Any], domain: CompiledDomainPack, source: str = "t.yaml"
) -> list[tuple[str, str]]:
    pack = model_from_data(data, source)
    assert isinstance(pack, TenantPolicy)
    with pytest.raises(PackError) as info:
        compile_tenant(pack, domain, source)
    for p in info.value.problems:
        assert p.file == source
    return [(p.path, p.reason) for p in info.value.problems]


def has(problems: list[tuple[str, str]], path: str, reason_part: str) -> bool:
    return any(p == path and reason_part in r for p, r in problems)


def tool(**kw: Any) -> dict[str, Any]:
    return {"parameters": {"type": "object"}, **kw}


def strict_tool(*params: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "parameters": {
            "type": "object",
            "properties": {p: {"type": "string"} for p in params},
            "required": list(required),
            "additionalProperties": False,
        }
    }


def small_domain(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": "DomainPack",
        "name": "small",
        "version": "1.0.0",
        "exceptionTypes": {"A": {}, "B": {}},
    }
    data.update(sections)
    return data


# ----------------------------------------------------------------------------------------- happy compile


def test_mini_and_desk_packs_compile(
    mini_domain: CompiledDomainPack, desk_domain: CompiledDomainPack
) -> None:
    assert mini_domain.ref == "mini@1.0.0"
    assert set(mini_domain.types) == {"BREAK", "FAIL"}
    assert set(mini_domain.tools) == {"getOrder", "fixOrder"}
    assert set(mini_domain.playbooks) == {"PB_BREAK"}
    assert mini_domain.tools["getOrder"].url_params == ("orderId",)
    assert len(mini_domain.digest) == 64
    assert desk_domain.ref == "desk@1.2.0"


def test_digest_is_stable_and_content_sensitive() -> None:
    a = domain_from(mini_domain_data())
    b = domain_from(mini_domain_data())
    assert a.digest == b.digest
    data = mini_domain_data()
    data["exceptionTypes"]["BREAK"]["description"] = "changed"
    assert domain_from(data).digest != a.digest


def test_all_problems_are_reported_at_once() -> None:
    data = small_domain(
        exceptionTypes={"A": {"parent": "B"}, "B": {"parent": "A"}, "C": {}},
        severityRules=[
            {"id": "r1", "condition": "exceptionType == 'NOPE' && true", "severity": "HIGH"},
            {"id": "r1", "condition": "mystery > 1", "severity": "LOW"},
        ],
        tools={
            "get": strict_tool("a", required=("a",)),
            "bad": {"parameters": {"type": "string"}},
            "undoer": tool(compensation="ghostUndo"),
        },
        playbooks=[
            {
                "id": "P",
                "match": {"types": ["C", "GHOST"]},
                "steps": [
                    {"id": "s1", "tool": "ghostTool"},
                    {"id": "s2", "tool": "get", "args": {"a": "1", "zz": "2"}},
                ],
            },
            {"id": "P", "match": {"types": ["C"]}, "steps": [{"description": "manual"}]},
        ],
        guardrails={"blockedTools": ["nopeTool"]},
        tests=[{"name": "t", "input": {}, "expect": {"playbook": "NOPB"}}],
    )
    problems = domain_problems(data)
    expected = [
        ("$.exceptionTypes.A.parent", "forms a cycle"),
        ("$.exceptionTypes.B.parent", "forms a cycle"),
        ("$.severityRules", "duplicate rule id 'r1'"),
        ("$.severityRules[0].condition", "unknown exception type 'NOPE'"),
        ("$.severityRules[1].condition", "unknown variable 'mystery'"),
        ("$.tools.bad.parameters.type", "must be a JSON Schema of type 'object'"),
        ("$.tools.undoer.compensation", "compensation tool 'ghostUndo' is not defined"),
        ("$.guardrails.blockedTools[0]", "unknown tool 'nopeTool'"),
        ("$.playbooks", "duplicate playbook id 'P'"),
        ("$.playbooks[0].match.types[1]", "unknown exception type 'GHOST'"),
        ("$.playbooks[0].steps[0].tool", "step calls tool 'ghostTool'"),
        ("$.playbooks[0].steps[1].args.zz", "tool 'get' has no parameter 'zz'"),
        ("$.tests[0].expect.playbook", "unknown playbook 'NOPB'"),
    ]
    for path, part in expected:
        assert has(problems, path, part), f"missing {path}: {part} in {problems}"
    assert len(problems) == len(expected)


# --------------------------------------------------------------------------------- individual checks


@pytest.mark.parametrize(
    ("sections", "path", "reason_part"),
    [
        # exception types
        ({"exceptionTypes": {"UNCLASSIFIED": {}}}, "$.exceptionTypes.UNCLASSIFIED", "reserved"),
        ({"exceptionTypes": {"A": {"parent": "A"}}}, "$.exceptionTypes.A.parent", "forms a cycle"),
        (
            {"exceptionTypes": {"A": {"parent": "Z"}}},
            "$.exceptionTypes.A.parent",
            "unknown parent exception type 'Z'",
        ),
        (
            {"exceptionTypes": {"A": {"entities": ["Ghost"]}}},
            "$.exceptionTypes.A.entities[0]",
            "unknown entity 'Ghost'",
        ),
        (
            {
                "exceptionTypes": {"A": {"fingerprintFields": ["nope"]}},
                "intake": {"fields": {"id": "${rawPayload.id}"}},
            },
            "$.exceptionTypes.A.fingerprintFields[0]",
            "'nope' is not defined in intake.fields",
        ),
        (
            {"exceptionTypes": {"A": {"detection": [{"condition": "severity == 'HIGH'"}]}}},
            "$.exceptionTypes.A.detection[0].condition",
            "unknown variable 'severity'",
        ),
        (
            {
                "exceptionTypes": {
                    "A": {"detection": [{"id": "d", "condition": "true"}]},
                    "B": {"detection": [{"id": "d", "condition": "true"}]},
                }
            },
            "$.exceptionTypes",
            "duplicate detection rule id 'd'",
        ),
        # entities
        (
            {"entities": {"Order": {"keys": ["id"], "attributes": {"no": {}}}}},
            "$.entities.Order.keys[0]",
            "key 'id' is not an attribute of Order",
        ),
        (
            {"entities": {"Order": {"relations": ["Ghost"]}}},
            "$.entities.Order.relations[0]",
            "unknown entity 'Ghost'",
        ),
        # intake
        (
            {"intake": {"fields": {"x": "${normalizedContext.y}"}}},
            "$.intake.fields.x",
            "template uses unknown variable 'normalizedContext'",
        ),
        # severity rules
        (
            {"severityRules": [{"condition": "exceptionType == 'Q'", "severity": "HIGH"}]},
            "$.severityRules[0].condition",
            "unknown exception type 'Q'",
        ),
        (
            {"severityRules": [{"condition": "exceptionType in ['A', 'Q']", "severity": "HIGH"}]},
            "$.severityRules[0].condition",
            "unknown exception type 'Q'",
        ),
        (
            {"severityRules": [{"condition": "payload.x > 1", "severity": "HIGH"}]},
            "$.severityRules[0].condition",
            "unknown variable 'payload'",
        ),
        # triage decides severity and confidence: its rules cannot read them, nor step outputs
        (
            {"severityRules": [{"condition": "severity == 'HIGH'", "severity": "HIGH"}]},
            "$.severityRules[0].condition",
            "unknown variable 'severity'",
        ),
        (
            {"severityRules": [{"condition": "confidence < 0.5", "severity": "HIGH"}]},
            "$.severityRules[0].condition",
            "unknown variable 'confidence'",
        ),
        (
            {"severityRules": [{"condition": "has(steps.a)", "severity": "HIGH"}]},
            "$.severityRules[0].condition",
            "unknown variable 'steps'",
        ),
        (
            {
                "severityRules": [
                    {"id": "x", "condition": "true", "severity": "HIGH"},
                    {"id": "x", "condition": "true", "severity": "LOW"},
                ]
            },
            "$.severityRules",
            "duplicate rule id 'x'",
        ),
        # tools
        (
            {"tools": {"t": {"parameters": {"type": "object", "properties": {"a": {"type": 12}}}}}},
            "$.tools.t.parameters.properties.a.type",
            "invalid JSON Schema",
        ),
        (
            {"tools": {"t": {"parameters": {"type": "object"}, "output": {"type": "nonsense"}}}},
            "$.tools.t.output.type",
            "invalid JSON Schema",
        ),
        ({"tools": {"t": {"parameters": {"type": "array"}}}}, "$.tools.t.parameters.type", "type 'object'"),
        (
            {
                "tools": {
                    "t": {"url": "http://h/{who}", "parameters": {"type": "object", "properties": {"id": {}}}}
                }
            },
            "$.tools.t.url",
            "url placeholder {who} is not a declared parameter",
        ),
        ({"tools": {"t": tool(url="ftp://h/x")}}, "$.tools.t.url", "must start with http"),
        ({"tools": {"t": tool(compensation="ghost")}}, "$.tools.t.compensation", "'ghost' is not defined"),
        # guardrails
        ({"guardrails": {"blockedTools": ["ghost"]}}, "$.guardrails.blockedTools[0]", "unknown tool 'ghost'"),
        (
            {"guardrails": {"requireApprovalForTypes": ["Q"]}},
            "$.guardrails.requireApprovalForTypes[0]",
            "unknown exception type 'Q'",
        ),
        # tests
        (
            {"tests": [{"name": "n", "input": {}, "expect": {"exceptionType": "Q"}}]},
            "$.tests[0].expect.exceptionType",
            "unknown exception type 'Q'",
        ),
        (
            {"tests": [{"name": "n", "input": {"exceptionType": "Q"}, "expect": {}}]},
            "$.tests[0].input.exceptionType",
            "unknown exception type 'Q'",
        ),
        (
            {"tests": [{"name": "n", "input": {}, "expect": {"playbook": "NOPB"}}]},
            "$.tests[0].expect.playbook",
            "unknown playbook 'NOPB'",
        ),
        (
            {"tests": [{"name": "n", "input": {"rawPayload": "text"}, "expect": {}}]},
            "$.tests[0].input.rawPayload",
            "rawPayload must be an object",
        ),
        (
            {"tests": [{"name": "n", "input": {}, "expect": {}}, {"name": "n", "input": {}, "expect": {}}]},
            "$.tests",
            "duplicate test name 'n'",
        ),
    ],
)
def test_domain_cross_reference_problem(sections: dict[str, Any], path: str, reason_part: str) -> None:
    data = small_domain(**sections)
    problems = domain_problems(data)
    assert has(problems, path, reason_part), problems


def test_test_expecting_unclassified_or_an_unknown_input_type_is_fine() -> None:
    data = small_domain(
        tests=[
            {"name": "n", "input": {"exceptionType": "Q"}, "expect": {"exceptionType": "UNCLASSIFIED"}},
            {"name": "m", "input": {}, "expect": {"playbook": "none"}},
        ]
    )
    assert len(domain_from(data).spec.tests) == 2


def _pb(*steps: dict[str, Any], **match: Any) -> dict[str, Any]:
    return {"id": "P", "match": {"types": ["A"], **match}, "steps": list(steps)}


@pytest.mark.parametrize(
    ("tools", "playbook", "path", "reason_part"),
    [
        ({}, _pb({"tool": "nope"}), "$.playbooks[0].steps[0].tool", "step calls tool 'nope'"),
        (
            {"t": tool()},
            _pb({"tool": "t", "compensate": "ghost"}),
            "$.playbooks[0].steps[0].compensate",
            "compensation tool 'ghost' is not defined by the pack",
        ),
        (
            {"t": tool()},
            _pb({"tool": "t", "onFailure": "compensate"}),
            "$.playbooks[0].steps[0].onFailure",
            "no compensation tool is declared",
        ),
        (
            {},
            _pb({"description": "manual", "args": {"a": 1}}),
            "$.playbooks[0].steps[0].args",
            "a manual step (no tool) cannot have args",
        ),
        (
            {"t": tool()},
            _pb({"id": "s", "tool": "t"}, {"id": "s", "tool": "t"}),
            "$.playbooks[0].steps",
            "duplicate step id 's'",
        ),
        (
            {"t": tool()},
            _pb({"tool": "t"}, types=["A", "Q"]),
            "$.playbooks[0].match.types[1]",
            "unknown exception type 'Q'",
        ),
        (
            {"t": tool()},
            _pb({"tool": "t"}, condition="has(steps.x)"),  # no step has run when a playbook is chosen
            "$.playbooks[0].match.condition",
            "unknown variable 'steps'",
        ),
        (
            {"t": tool()},
            _pb({"tool": "t"}, condition="mystery"),
            "$.playbooks[0].match.condition",
            "unknown variable 'mystery'",
        ),
        (
            {"t": tool()},
            _pb({"tool": "t", "when": "foo.bar"}),
            "$.playbooks[0].steps[0].when",
            "unknown variable 'foo'",
        ),
        (
            {"t": tool()},
            _pb({"tool": "t", "args": {"a": "${bar}"}}),
            "$.playbooks[0].steps[0].args",
            "template uses unknown variable 'bar'",
        ),
        # step references must point backwards
        (
            {"t": tool()},
            _pb(
                {"id": "one", "tool": "t", "args": {"x": "${steps.two.output.id}"}},
                {"id": "two", "tool": "t"},
            ),
            "$.playbooks[0].steps[0].args",
            "template reads steps.two, which is not an earlier step",
        ),
        (
            {"t": tool()},
            _pb({"id": "one", "tool": "t", "args": {"x": "${steps.one.output.id}"}}),
            "$.playbooks[0].steps[0].args",
            "template reads steps.one",
        ),
        (
            {"t": tool()},
            _pb({"id": "one", "tool": "t", "when": "steps.two.status == 'OK'"}, {"id": "two", "tool": "t"}),
            "$.playbooks[0].steps[0].when",
            "condition reads steps.two, which is not an earlier step",
        ),
        (
            {"t": tool()},
            _pb({"id": "one", "tool": "t", "when": "steps.ghost.output.x == 1"}),
            "$.playbooks[0].steps[0].when",
            "condition reads steps.ghost",
        ),
        # arguments against the tool's schema
        (
            {"t": strict_tool("a")},
            _pb({"tool": "t", "args": {"a": "1", "b": "2"}}),
            "$.playbooks[0].steps[0].args.b",
            "tool 't' has no parameter 'b'",
        ),
        (
            {"t": strict_tool("a", required=("a",))},
            _pb({"tool": "t", "args": {}}),
            "$.playbooks[0].steps[0].args",
            "required parameter 'a' of tool 't' is not given",
        ),
    ],
)
def test_playbook_problem(
    tools: dict[str, Any], playbook: dict[str, Any], path: str, reason_part: str
) -> None:
    problems = domain_problems(small_domain(tools=tools, playbooks=[playbook]))
    assert has(problems, path, reason_part), problems


def test_extra_args_are_fine_when_the_schema_allows_them() -> None:
    t = {"parameters": {"type": "object", "properties": {"a": {}}}}
    d = domain_from(small_domain(tools={"t": t}, playbooks=[_pb({"tool": "t", "args": {"a": 1, "b": 2}})]))
    assert d.playbooks["P"].tools == frozenset({"t"})


def test_step_may_read_earlier_steps_and_compensation_may_read_its_own_step() -> None:
    d = domain_from(
        small_domain(
            tools={"t": tool(), "undo": tool()},
            playbooks=[
                _pb(
                    {"id": "one", "tool": "t"},
                    {
                        "id": "two",
                        "tool": "t",
                        "when": "steps.one.status == 'OK'",
                        "args": {"x": "${steps.one.output.id}"},
                        "onFailure": "compensate",
                        "compensate": "undo",
                        "compensateArgs": {"x": "${steps.two.output.id}"},
                    },
                )
            ],
        )
    )
    steps = d.playbooks["P"].steps
    assert [s.id for s in steps] == ["one", "two"]
    assert steps[1].when is not None


def test_onfailure_compensate_is_fine_with_the_tools_own_compensation() -> None:
    d = domain_from(
        small_domain(
            tools={"t": tool(compensation="undo"), "undo": tool()},
            playbooks=[_pb({"tool": "t", "onFailure": "compensate"})],
        )
    )
    assert d.playbooks["P"].steps[0].id == "step1"  # default step id


def test_template_reading_normalized_context_must_be_an_intake_field() -> None:
    data = small_domain(
        intake={"fields": {"orderId": "${rawPayload.orderId}"}},
        tools={"t": tool()},
        playbooks=[
            _pb(
                {
                    "tool": "t",
                    "args": {"a": "${normalizedContext.orderId}", "b": "x-${normalizedContext.account}"},
                }
            )
        ],
    )
    problems = domain_problems(data)
    assert problems == [
        (
            "$.playbooks[0].steps[0].args",
            "template reads normalizedContext.account, which intake.fields does not define",
        ),
    ]


def test_normalized_context_is_unchecked_when_intake_defines_no_fields() -> None:
    d = domain_from(
        small_domain(
            tools={"t": tool()},
            playbooks=[_pb({"tool": "t", "args": {"a": "${normalizedContext.anything}"}})],
        )
    )
    assert "P" in d.playbooks


def test_macro_variables_are_not_unknown_variables() -> None:
    d = domain_from(
        small_domain(
            severityRules=[
                {
                    "condition": "rawPayload.items.exists(i, i.qty > 1) && rawPayload.tags.all(t, t != 'x')",
                    "severity": "HIGH",
                },
            ]
        )
    )
    assert len(d.generic_rules) == 1


def test_url_placeholders_are_recorded_in_order() -> None:
    t = {"url": "https://h/{a}/x/{b}", "parameters": {"type": "object", "properties": {"a": {}, "b": {}}}}
    d = domain_from(small_domain(tools={"t": t}))
    assert d.tools["t"].url_params == ("a", "b")


def test_tool_argument_errors_come_from_the_json_schema() -> None:
    d = domain_from(
        small_domain(
            tools={
                "t": {
                    "parameters": {
                        "type": "object",
                        "properties": {"n": {"type": "integer", "minimum": 1}, "s": {"type": "string"}},
                        "required": ["n"],
                    }
                }
            }
        )
    )
    t = d.tools["t"]
    assert t.arg_errors({"n": 3, "s": "x"}) == []
    assert t.arg_errors({"n": 0, "s": 1}) == [
        "$.n: 0 is less than the minimum of 1",
        "$.s: 1 is not of type 'string'",
    ]
    assert t.arg_errors({}) == ["$: 'n' is a required property"]


# ------------------------------------------------------------------------------------- derived structures


def test_default_severity_is_inherited_from_the_nearest_ancestor() -> None:
    d = domain_from(
        small_domain(
            defaultSeverity="LOW",
            exceptionTypes={
                "ROOT": {"defaultSeverity": "HIGH"},
                "MID": {"parent": "ROOT"},
                "LEAF": {"parent": "MID"},
                "OWN": {"parent": "ROOT", "defaultSeverity": "MEDIUM"},
                "OWN_CHILD": {"parent": "OWN"},
                "LONE": {},
            },
        )
    )
    # LONE has no default of its own or inherited: triage falls back to the pack default for it.
    assert d.default_severity == {
        "ROOT": Severity.HIGH,
        "MID": Severity.HIGH,
        "LEAF": Severity.HIGH,
        "OWN": Severity.MEDIUM,
        "OWN_CHILD": Severity.MEDIUM,
    }
    assert d.ancestors["LEAF"] == ("MID", "ROOT")
    assert d.ancestors["ROOT"] == ()


def test_similarity_key_fields_must_be_intake_fields_without_duplicates() -> None:
    data = small_domain(
        intake={"fields": {"reason": "${rawPayload.reason}", "payer": "${rawPayload.payer}"}},
        exceptionTypes={"A": {"similarity": {"keyFields": ["reason", "payerName", "reason"]}}, "B": {}},
    )
    pack = model_from_data(data, "d.yaml")
    with pytest.raises(PackError) as info:
        compile_domain(pack, "d.yaml")  # type: ignore[arg-type]
    assert sorted(str(p) for p in info.value.problems) == [
        "d.yaml:$.exceptionTypes.A.similarity.keyFields: duplicate key field 'reason'",
        "d.yaml:$.exceptionTypes.A.similarity.keyFields[1]: 'payerName' is not defined in intake.fields",
    ]


def test_similarity_key_fields_are_unchecked_when_intake_defines_no_fields() -> None:
    d = domain_from(small_domain(exceptionTypes={"A": {"similarity": {"keyFields": ["anything"]}}, "B": {}}))
    assert d.similarity_fields == {"A": ("anything",)}


@pytest.mark.parametrize(
    ("similarity", "path"),
    [
        ({"keyFields": []}, "$.exceptionTypes.A.similarity.keyFields"),
        ({}, "$.exceptionTypes.A.similarity.keyFields"),
        ({"keyFields": ["a"], "weights": {"a": 2}}, "$.exceptionTypes.A.similarity.weights"),
    ],
)
def test_similarity_shape_is_checked_by_the_schema(similarity: dict[str, Any], path: str) -> None:
    data = small_domain(exceptionTypes={"A": {"similarity": similarity}, "B": {}})
    with pytest.raises(PackError) as info:
        model_from_data(data, "d.yaml")
    assert [p.path for p in info.value.problems] == [path], info.value.problems


def test_similarity_is_inherited_from_the_nearest_ancestor_that_declares_it() -> None:
    d = domain_from(
        small_domain(
            exceptionTypes={
                "ROOT": {"similarity": {"keyFields": ["payer", "reason"]}},
                "MID": {"parent": "ROOT"},
                "LEAF": {"parent": "MID"},
                "OWN": {"parent": "ROOT", "similarity": {"keyFields": ["payer", "reason", "procedure"]}},
                "OWN_CHILD": {"parent": "OWN"},
                "LONE": {},
            },
        )
    )
    assert d.similarity_fields == {
        "ROOT": ("payer", "reason"),
        "MID": ("payer", "reason"),
        "LEAF": ("payer", "reason"),
        "OWN": ("payer", "reason", "procedure"),
        "OWN_CHILD": ("payer", "reason", "procedure"),
    }


def test_example_packs_declare_similarity_on_every_leaf_type() -> None:
    """Every type a source reports (one with detection rules) says what makes it the same problem, and
    every declared field is one intake maps (compile checks it)."""
    root = Path(__file__).resolve().parents[2]
    for name in ("finance", "healthcare"):
        d = domain_from(read_yaml(root / "packs" / name / "domain.yaml"))
        leaves = {t for t, et in d.types.items() if et.detection}
        assert leaves and leaves <= set(d.similarity_fields), (name, leaves - set(d.similarity_fields))
        for fields in d.similarity_fields.values():
            assert set(fields) <= set(d.intake_fields)


def test_rules_are_indexed_by_type_and_keep_declaration_order() -> None:
    d = domain_from(
        small_domain(
            exceptionTypes={"A": {}, "B": {}, "C": {}},
            severityRules=[
                {"id": "g1", "condition": "rawPayload.x == 1", "severity": "LOW"},
                {"id": "a1", "condition": "exceptionType == 'A' && rawPayload.y", "severity": "HIGH"},
                {"id": "ab", "condition": "exceptionType in ['A', 'B']", "severity": "MEDIUM"},
                {"id": "g2", "condition": "exceptionType != 'C'", "severity": "HIGH"},
                {"id": "b1", "condition": "'B' == exceptionType", "severity": "CRITICAL"},
                {
                    "id": "a2",
                    "condition": "(exceptionType == 'A' || exceptionType == 'C') && true",
                    "severity": "LOW",
                },
            ],
        )
    )

    def ids(t: str) -> list[str]:
        return [r.id for r in d.severity_rules(t)]

    assert ids("A") == ["g1", "a1", "ab", "g2", "a2"]
    assert ids("B") == ["g1", "ab", "g2", "b1"]
    assert ids("C") == ["g1", "g2", "a2"]
    assert ids("UNCLASSIFIED") == ["g1", "g2"]  # an unknown type only sees untyped rules
    assert [r.id for r in d.generic_rules] == ["g1", "g2"]
    assert [r.index for r in d.severity_rules("A")] == [0, 1, 2, 3, 5]


def test_rule_ids_default_to_their_position() -> None:
    d = domain_from(small_domain(severityRules=[{"condition": "true", "severity": "LOW"}]))
    assert d.generic_rules[0].id == "severityRules[0]"


def test_playbooks_for_type_follow_the_taxonomy_and_priority() -> None:
    d = domain_from(
        small_domain(
            exceptionTypes={"ROOT": {}, "CHILD": {"parent": "ROOT"}, "OTHER": {}},
            tools={"t": tool()},
            playbooks=[
                {"id": "root-low", "match": {"types": ["ROOT"]}, "steps": [{"tool": "t"}]},
                {"id": "child-high", "match": {"types": ["CHILD"], "priority": 10}, "steps": [{"tool": "t"}]},
                {"id": "root-high", "match": {"types": ["ROOT"], "priority": 10}, "steps": [{"tool": "t"}]},
                {"id": "other", "match": {"types": ["OTHER"]}, "steps": [{"tool": "t"}]},
            ],
        )
    )
    assert [p.id for p in d.playbooks_for("CHILD")] == ["child-high", "root-high", "root-low"]
    assert [p.id for p in d.playbooks_for("ROOT")] == ["root-high", "root-low"]
    assert [p.id for p in d.playbooks_for("OTHER")] == ["other"]
    assert d.playbooks_for("UNCLASSIFIED") == ()


def test_detection_rules_compile_in_order_with_default_ids() -> None:
    d = domain_from(
        small_domain(
            exceptionTypes={
                "A": {
                    "detection": [
                        {"condition": "has(rawPayload.a)"},
                        {"id": "a-two", "condition": "true", "confidence": 0.3},
                    ]
                },
                "B": {"detection": [{"condition": "has(rawPayload.b)", "confidence": 1}]},
            }
        )
    )
    assert [(x.exception_type, x.id, x.confidence) for x in d.detection] == [
        ("A", "A.detect1", 0.8),
        ("A", "a-two", 0.3),
        ("B", "B.detect1", 1.0),
    ]


# ------------------------------------------------------------------------------------------ bugs found


def test_pack_with_a_big_integer_compiles() -> None:
    # orjson refuses integers beyond 64 bits; the digest must still be computed.
    data = small_domain(
        tools={
            "t": {
                "parameters": {
                    "type": "object",
                    "properties": {"n": {"type": "integer", "maximum": 100000000000000000000}},
                }
            }
        }
    )
    d = domain_from(data)
    assert len(d.digest) == 64
    assert d.tools["t"].arg_errors({"n": 5}) == []
    assert d.tools["t"].arg_errors({"n": 10**21}) != []
    other = copy.deepcopy(data)
    other["tools"]["t"]["parameters"]["properties"]["n"]["maximum"] = 100000000000000000001
    assert domain_from(other).digest != d.digest


def test_tool_schema_with_a_remote_ref_is_a_pack_problem_and_is_not_fetched(tmp_path: Path) -> None:
    target = tmp_path / "outside.json"
    target.write_text(json.dumps({"type": "string"}), encoding="utf-8")
    data = small_domain(
        tools={"t": {"parameters": {"type": "object", "properties": {"a": {"$ref": target.as_uri()}}}}}
    )
    problems = domain_problems(data)
    assert any(p.startswith("$.tools.t.parameters") for p, _ in problems)


def test_tool_schema_with_an_unresolvable_ref_is_a_pack_problem() -> None:
    data = small_domain(
        tools={
            "t": {"parameters": {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}}
        }
    )
    problems = domain_problems(data)
    assert any(p.startswith("$.tools.t.parameters") for p, _ in problems)


def test_compensate_args_are_checked_against_the_compensation_tool() -> None:
    data = small_domain(
        tools={"t": tool(), "undo": strict_tool("id", required=("id",))},
        playbooks=[
            _pb(
                {
                    "tool": "t",
                    "onFailure": "compensate",
                    "compensate": "undo",
                    "compensateArgs": {"bogus": "x"},
                }
            )
        ],
    )
    problems = domain_problems(data)
    assert has(problems, "$.playbooks[0].steps[0].compensateArgs.bogus", "no parameter 'bogus'")
    assert has(problems, "$.playbooks[0].steps[0].compensateArgs", "required parameter 'id'")


# --------------------------------------------------------------------------------------- tenant policy


def test_mini_tenant_compiles(mini_tenant: Any) -> None:
    assert mini_tenant.ref == "t1@1.0.0"
    assert mini_tenant.domain.ref == "mini@1.0.0"
    assert mini_tenant.approved_playbooks == frozenset({"PB_BREAK"})
    assert mini_tenant.allowed_tools == frozenset({"getOrder", "fixOrder"})
    assert [r.id for r in mini_tenant.approval_rules] == ["writes-on-high"]
    assert mini_tenant.max_auto_retries == 3
    assert mini_tenant.escalate_below is None
    assert mini_tenant.allow_auto_critical is False


@pytest.mark.parametrize(
    ("mutate", "path", "reason_part"),
    [
        (
            lambda t: t["domain"].update(name="other"),
            "$.domain.name",
            "policy is for domain 'other', not 'desk'",
        ),
        (
            lambda t: t["domain"].update(versionRange="^2.0.0"),
            "$.domain.versionRange",
            "version 1.2.0 does not satisfy '^2.0.0'",
        ),
        (lambda t: t["domain"].update(versionRange="~1.1.0"), "$.domain.versionRange", "does not satisfy"),
        (
            lambda t: t["severityOverrides"][0].update(exceptionType="Q"),
            "$.severityOverrides[0].exceptionType",
            "unknown exception type 'Q'",
        ),
        (
            lambda t: t["severityOverrides"][0].update(condition="mystery"),
            "$.severityOverrides[0].condition",
            "unknown variable 'mystery'",
        ),
        (
            lambda t: t["severityOverrides"][0].update(condition="severity == 'LOW'"),
            "$.severityOverrides[0].condition",
            "unknown variable 'severity'",
        ),
        (
            lambda t: t["approvalRules"][0].update(condition="has(steps.fetch)"),
            "$.approvalRules[0].condition",
            "unknown variable 'steps'",
        ),
        (
            lambda t: t["notifications"][0].update(condition="has(steps.fetch)"),
            "$.notifications[0].condition",
            "unknown variable 'steps'",
        ),
        (
            lambda t: t["approvedPlaybooks"].append("GHOST"),
            "$.approvedPlaybooks[4]",
            "unknown playbook 'GHOST'",
        ),
        (
            lambda t: t["approvedPlaybooks"].append("PB_FAIL"),
            "$.approvedPlaybooks",
            "duplicate playbook 'PB_FAIL'",
        ),
        (lambda t: t["tools"]["allow"].append("ghost"), "$.tools.allow[5]", "unknown tool 'ghost'"),
        (lambda t: t["tools"]["allow"].append("audit"), "$.tools.allow", "duplicate tool 'audit'"),
        (
            lambda t: t["tools"].update(overrides={"ghost": {"retries": 1}}),
            "$.tools.overrides.ghost",
            "unknown tool 'ghost'",
        ),
        (
            lambda t: t["tools"].update(overrides={"notify": {"url": "file:///etc"}}),
            "$.tools.overrides.notify.url",
            "must start with http",
        ),
        (
            lambda t: t.update(guardrails={"blockedTools": ["ghost"]}),
            "$.guardrails.blockedTools[0]",
            "unknown tool 'ghost'",
        ),
        (
            lambda t: t.update(guardrails={"blockedPlaybooks": ["GHOST"]}),
            "$.guardrails.blockedPlaybooks[0]",
            "unknown playbook 'GHOST'",
        ),
        (
            lambda t: t.update(guardrails={"requireApprovalForTypes": ["Q"]}),
            "$.guardrails.requireApprovalForTypes[0]",
            "unknown exception type 'Q'",
        ),
        (
            lambda t: t["approvalRules"][0].update(exceptionTypes=["BREAK", "Q"]),
            "$.approvalRules[0].exceptionTypes[1]",
            "unknown exception type 'Q'",
        ),
        (
            lambda t: t["approvalRules"][0].update(condition="foo > 1"),
            "$.approvalRules[0].condition",
            "unknown variable 'foo'",
        ),
        (
            lambda t: t["approvalRules"].append({"id": "writes-on-high"}),
            "$.approvalRules",
            "duplicate rule id 'writes-on-high'",
        ),
        (
            lambda t: t["notifications"][0].update(exceptionTypes=["Q"]),
            "$.notifications[0].exceptionTypes[0]",
            "unknown exception type 'Q'",
        ),
        (
            lambda t: t["notifications"][2].update(condition="bar"),
            "$.notifications[2].condition",
            "unknown variable 'bar'",
        ),
        (
            lambda t: t.update(tests=[{"name": "x", "input": {}, "expect": {"playbook": "GHOST"}}]),
            "$.tests[0].expect.playbook",
            "unknown playbook 'GHOST'",
        ),
        (
            lambda t: t.update(
                tests=[{"name": "x", "input": {}, "expect": {}}, {"name": "x", "input": {}, "expect": {}}]
            ),
            "$.tests",
            "duplicate test name 'x'",
        ),
    ],
)
def test_tenant_cross_reference_problem(
    desk_domain: CompiledDomainPack, mutate: Any, path: str, reason_part: str
) -> None:
    data = desk_tenant_data()
    mutate(data)
    problems = tenant_problems(data, desk_domain)
    assert has(problems, path, reason_part), problems


def test_policy_conditions_may_read_severity_and_confidence(desk_domain: CompiledDomainPack) -> None:
    data = desk_tenant_data()
    data["approvalRules"][0]["condition"] = "severity == 'HIGH' && confidence > 0.5"
    data["notifications"][0]["condition"] = "severity != 'LOW'"
    t = tenant_from(data, desk_domain)
    assert t.approval_rules[0].condition is not None


def test_parent_overrides_apply_to_children_before_the_childs_own(desk_domain: CompiledDomainPack) -> None:
    data = desk_tenant_data()
    data["severityOverrides"] = [
        {"exceptionType": "SUB_BREAK", "severity": "LOW"},
        {"exceptionType": "BREAK", "severity": "HIGH"},
    ]
    t = tenant_from(data, desk_domain)
    assert [o.index for o in t.overrides_for_type["SUB_BREAK"]] == [1, 0]
    assert [o.index for o in t.overrides_for_type["BREAK"]] == [1]
    assert "FAIL" not in t.overrides_for_type


def test_tenant_problems_are_all_reported_at_once(desk_domain: CompiledDomainPack) -> None:
    data = desk_tenant_data()
    data["domain"]["versionRange"] = "^9.0.0"
    data["approvedPlaybooks"].append("GHOST")
    data["tools"]["allow"].append("ghost")
    data["severityOverrides"][0]["exceptionType"] = "Q"
    data["notifications"][0]["exceptionTypes"] = ["Q2"]
    data["guardrails"] = {"blockedPlaybooks": ["GHOST2"], "blockedTools": ["ghost3"]}
    problems = tenant_problems(data, desk_domain)
    assert {p for p, _ in problems} == {
        "$.domain.versionRange",
        "$.approvedPlaybooks[4]",
        "$.tools.allow[5]",
        "$.severityOverrides[0].exceptionType",
        "$.notifications[0].exceptionTypes[0]",
        "$.guardrails.blockedPlaybooks[0]",
        "$.guardrails.blockedTools[0]",
    }


def test_tenant_guardrails_inherit_the_domain_floor(desk_domain: CompiledDomainPack) -> None:
    ddata = desk_domain_data()
    ddata["guardrails"] = {
        "noAutoActionIfSeverityIn": ["HIGH"],
        "escalateIfConfidenceBelow": 0.4,
        "maxAutoRetries": 7,
        "blockedTools": ["page"],
        "requireApprovalForTypes": ["GATED"],
    }
    domain = domain_from(ddata)
    t = tenant_from(desk_tenant_data(), domain)
    assert t.no_auto_action == frozenset({Severity.HIGH})
    assert t.escalate_below == 0.4
    assert t.max_auto_retries == 7
    assert t.blocked_tools == {"page": "domain guardrails.blockedTools (desk@1.2.0)"}
    assert t.require_approval_types == frozenset({"GATED"})
    assert t.blocked_playbooks == frozenset()
    assert t.allow_auto_critical is False


def test_default_max_auto_retries_is_three(desk_tenant: Any) -> None:
    assert desk_tenant.max_auto_retries == 3
    assert desk_tenant.escalate_below is None


@pytest.mark.parametrize("tenant_side", ["looser", "tighter"])
def test_tenant_guardrails_only_tighten(tenant_side: str) -> None:
    ddata = desk_domain_data()
    ddata["guardrails"] = {
        "noAutoActionIfSeverityIn": ["HIGH"],
        "escalateIfConfidenceBelow": 0.4,
        "maxAutoRetries": 5,
        "blockedTools": ["page"],
        "requireApprovalForTypes": ["GATED"],
    }
    domain = domain_from(ddata)
    tdata = desk_tenant_data()
    if tenant_side == "looser":
        tdata["guardrails"] = {
            "noAutoActionIfSeverityIn": [],
            "escalateIfConfidenceBelow": 0.1,
            "maxAutoRetries": 9,
        }
    else:
        tdata["guardrails"] = {
            "noAutoActionIfSeverityIn": ["MEDIUM"],
            "escalateIfConfidenceBelow": 0.8,
            "maxAutoRetries": 1,
            "blockedTools": ["page", "audit"],
            "requireApprovalForTypes": ["INFO"],
            "allowAutoActionOnCritical": True,
            "blockedPlaybooks": ["PB_FAIL"],
        }
    t = tenant_from(tdata, domain)
    if tenant_side == "looser":  # the domain's floor stands
        assert t.no_auto_action == frozenset({Severity.HIGH})
        assert t.escalate_below == 0.4
        assert t.max_auto_retries == 5
        assert t.blocked_tools == {"page": "domain guardrails.blockedTools (desk@1.2.0)"}
        assert t.require_approval_types == frozenset({"GATED"})
    else:
        assert t.no_auto_action == frozenset({Severity.HIGH, Severity.MEDIUM})
        assert t.escalate_below == 0.8
        assert t.max_auto_retries == 1
        assert t.blocked_tools == {
            "page": "tenant guardrails.blockedTools (t1@2.0.0)",
            "audit": "tenant guardrails.blockedTools (t1@2.0.0)",
        }
        assert t.require_approval_types == frozenset({"GATED", "INFO"})
        assert t.allow_auto_critical is True
        assert t.blocked_playbooks == frozenset({"PB_FAIL"})


def test_overrides_are_indexed_by_type_in_order(desk_domain: CompiledDomainPack) -> None:
    data = desk_tenant_data()
    data["severityOverrides"] = [
        {"exceptionType": "BREAK", "severity": "LOW"},
        {"exceptionType": "FAIL", "severity": "HIGH"},
        {"exceptionType": "BREAK", "severity": "CRITICAL", "condition": "rawPayload.x == 1"},
    ]
    t = tenant_from(data, desk_domain)
    assert [(o.index, o.severity) for o in t.overrides_for_type["BREAK"]] == [
        (0, Severity.LOW),
        (2, Severity.CRITICAL),
    ]
    assert [o.index for o in t.overrides_for_type["FAIL"]] == [1]


# ------------------------------------------------------------------------------------------- workspace


def test_validate_paths_binds_tenants_to_the_right_domain(tmp_path: Path) -> None:
    report = validate_paths([MINI_DOMAIN, MINI_TENANT])
    assert report.ok, report.problems
    assert [d.ref for d in report.domains] == ["mini@1.0.0"]
    assert [t.ref for t in report.tenants] == ["t1@1.0.0"]

    alone = validate_paths([MINI_TENANT])
    assert alone.ok and alone.notes and "pass the domain pack 'mini'" in alone.notes[0]

    newer = mini_domain_data()
    newer["version"] = "2.0.0"
    (tmp_path / "d2.json").write_text(json.dumps(newer))
    wrong = validate_paths([tmp_path / "d2.json", MINI_TENANT])
    assert [(p.path, p.reason) for p in wrong.problems] == [
        ("$.domain.versionRange", "no domain pack 'mini' satisfies '^1.0.0' (given: 2.0.0)")
    ]


def test_pick_domain_takes_the_highest_satisfying_version() -> None:
    domains = []
    for v in ["1.0.0", "1.10.0", "1.9.0", "2.0.0"]:
        data = mini_domain_data()
        data["version"] = v
        domains.append(domain_from(data))
    policy = model_from_data(mini_tenant_data(), "t")
    assert isinstance(policy, TenantPolicy)
    picked = pick_domain(policy, domains)
    assert picked is not None and picked.version == "1.10.0"


# -------------------------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("rng", "version", "ok"),
    [
        ("^1.2.3", "1.2.3", True),
        ("^1.2.3", "1.99.0", True),
        ("^1.2.3", "2.0.0", False),
        ("^1.2.3", "1.2.2", False),
        ("^1", "1.5.0", True),
        ("^1.2", "1.9.9", True),
        ("^1.2", "1.1.0", False),
        ("^0.2.3", "0.2.9", True),
        ("^0.2.3", "0.3.0", False),
        ("^0.0.3", "0.0.3", True),
        ("^0.0.3", "0.0.4", False),
        ("~1.2.3", "1.2.9", True),
        ("~1.2.3", "1.3.0", False),
        ("~1.2", "1.2.0", True),
        ("~1.2", "1.3.0", False),
        ("1.x", "1.0.0", True),
        ("1.x", "1.99.1", True),
        ("1.x", "2.0.0", False),
        ("1.*", "1.4.0", True),
        ("1.2.x", "1.2.7", True),
        ("1.2.x", "1.3.0", False),
        ("1.x.x", "1.4.0", True),
        ("1", "1.9.0", True),
        ("*", "0.0.1", True),
        ("*", "99.0.0", True),
        ("", "5.0.0", True),
        ("x", "1.0.0", True),
        ("1.2.3", "1.2.3", True),
        ("1.2.3", "1.2.4", False),
        ("1.2.3", "1.2.3-beta.1", False),
        (">=1.0.0,<2", "1.5.0", True),
        (">=1.0.0,<2", "2.0.0", False),
        (">1.0.0", "1.0.0", False),
        ("==1.*", "1.3.0", True),
        ("!=1.2.0", "1.2.0", False),
        ("!=1.2.0", "1.2.1", True),
        (" ^1.0.0 ", "1.0.1", True),
        ("^1.0.0", "2.0.0-rc.1", False),
    ],
)
def test_version_ranges(rng: str, version: str, ok: bool) -> None:
    assert satisfies(version, rng) is ok


@pytest.mark.parametrize("rng", ["^^1", "abc", "~>1.2", ">= one", "1.x.2", "^1.2.3.4", "1.2"])
def test_invalid_ranges_raise_value_error_with_help(rng: str) -> None:
    with pytest.raises(ValueError, match="invalid version range") as info:
        parse_range(rng)
    assert "'^1.2.0'" in str(info.value)


def test_unparseable_version_never_satisfies_and_sorts_first() -> None:
    assert satisfies("not-a-version", "*") is False
    assert sort_key("not-a-version") < sort_key("0.0.1")
    assert sort_key("1.10.0") > sort_key("1.9.0")


@pytest.mark.parametrize(("rng", "version"), [("^0", "0.9.0"), ("^0.0", "0.0.5")])
def test_caret_with_partial_zero_versions(rng: str, version: str) -> None:
    assert satisfies(version, rng) is True


@pytest.mark.parametrize(
    ("version", "ok"), [("1.0.0", True), ("1.5.0", True), ("2.0.0", False), ("0.9.0", False)]
)
def test_tilde_with_major_only_means_the_major(version: str, ok: bool) -> None:
    assert satisfies(version, "~1") is ok  # npm: ~1 := >=1.0.0 <2.0.0


def test_every_valid_semver_satisfies_star() -> None:
    assert satisfies("1.0.0-alpha-x", "*") is True


# ------------------------------------------------------------------------------------------------- diff


def test_diff_of_identical_packs_is_empty() -> None:
    assert diff_packs(mini_domain_data(), mini_domain_data()) == {}


def test_domain_diff_reports_added_removed_and_changed_per_section() -> None:
    old = mini_domain_data()
    new = copy.deepcopy(old)
    new["version"] = "1.1.0"
    new["exceptionTypes"]["NEW"] = {}
    del new["exceptionTypes"]["FAIL"]
    new["exceptionTypes"]["BREAK"]["description"] = "changed"
    new["exceptionTypes"]["BREAK"]["rootCauseHint"] = "added field"
    new["severityRules"][0]["severity"] = "LOW"
    new["severityRules"].append({"id": "new-rule", "condition": "true", "severity": "LOW"})
    del new["tools"]["fixOrder"]
    new["tools"]["getOrder"]["timeoutSeconds"] = 3
    new["playbooks"].append({"id": "PB_NEW", "match": {"types": ["BREAK"]}, "steps": [{"description": "m"}]})
    new["tests"][0]["name"] = "renamed"
    assert diff_packs(old, new) == {
        "exceptionTypes": {
            "added": ["NEW"],
            "removed": ["FAIL"],
            "changed": {"BREAK": ["description", "rootCauseHint"]},
        },
        "severityRules": {"added": ["new-rule"], "removed": [], "changed": {"big-break": ["severity"]}},
        "tools": {"added": [], "removed": ["fixOrder"], "changed": {"getOrder": ["timeoutSeconds"]}},
        "playbooks": {"added": ["PB_NEW"], "removed": [], "changed": {}},
        "tests": {"added": ["renamed"], "removed": ["big break is high"], "changed": {}},
        "other": ["version"],
    }


def test_diff_labels_unnamed_list_items_by_position() -> None:
    old = {"kind": "DomainPack", "severityRules": [{"condition": "a", "severity": "LOW"}]}
    new = {
        "kind": "DomainPack",
        "severityRules": [{"condition": "b", "severity": "LOW"}, {"condition": "c", "severity": "HIGH"}],
    }
    assert diff_packs(old, new) == {
        "severityRules": {"added": ["#1"], "removed": [], "changed": {"#0": ["condition"]}}
    }


def test_diff_of_a_new_section() -> None:
    old = {"kind": "DomainPack"}
    new = {"kind": "DomainPack", "entities": {"Order": {}}}
    assert diff_packs(old, new) == {"entities": {"added": ["Order"], "removed": [], "changed": {}}}


def test_tenant_diff_uses_tenant_sections() -> None:
    old = mini_tenant_data()
    new = copy.deepcopy(old)
    new["approvalRules"][0]["severities"] = ["CRITICAL"]
    new["approvalRules"].append({"id": "r2", "toolEffects": ["write"]})
    new["severityOverrides"] = [{"exceptionType": "FAIL", "severity": "HIGH"}]
    new["notifications"] = [{"group": "ops"}]
    new["approvedPlaybooks"] = []
    assert diff_packs(old, new) == {
        "severityOverrides": {"added": ["FAIL"], "removed": [], "changed": {}},
        "approvalRules": {"added": ["r2"], "removed": [], "changed": {"writes-on-high": ["severities"]}},
        "notifications": {"added": ["ops"], "removed": [], "changed": {}},
        "other": ["approvedPlaybooks"],
    }


def test_diff_of_a_scalar_item_reports_value() -> None:
    old = {"kind": "DomainPack", "exceptionTypes": {"A": "x"}}
    new = {"kind": "DomainPack", "exceptionTypes": {"A": "y"}}
    assert diff_packs(old, new) == {
        "exceptionTypes": {"added": [], "removed": [], "changed": {"A": ["value"]}}
    }
