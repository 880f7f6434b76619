"""Loading packs: YAML/JSON parsing, structural validation and the `file:$.json.path: reason` contract.

Hostile input is expected, so the loader must answer every document with a pack or a PackError — never a
traceback, a RecursionError, or a hang.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from breakdesk.packs.loader import (
    MAX_DEPTH,
    MAX_NODES,
    MAX_PACK_BYTES,
    detect_kind,
    load_pack_file,
    load_pack_text,
    model_from_data,
    parse_text,
)
from breakdesk.packs.problems import PackError, PackProblem, json_path
from breakdesk.packs.schema import DomainPack, TenantPolicy
from breakdesk.packs.workspace import compile_pack_data

from .packkit import MINI_DOMAIN, MINI_TENANT, mini_domain_data, mini_tenant_data


def problems_of(fn: Any, *args: Any, **kwargs: Any) -> list[PackProblem]:
    with pytest.raises(PackError) as info:
        fn(*args, **kwargs)
    assert info.value.problems, "a PackError must carry at least one problem"
    return info.value.problems


def rendered(problems: list[PackProblem]) -> list[str]:
    return [str(p) for p in problems]


def assert_well_formed(problems: list[PackProblem], source: str) -> None:
    for p in problems:
        assert p.file == source
        assert p.path.startswith("$")
        assert p.reason.strip()
        assert str(p) == f"{source}:{p.path}: {p.reason}"


# ------------------------------------------------------------------------------------------- happy paths


def test_mini_packs_load_from_yaml_files() -> None:
    d = load_pack_file(MINI_DOMAIN)
    t = load_pack_file(MINI_TENANT)
    assert isinstance(d.pack, DomainPack)
    assert isinstance(t.pack, TenantPolicy)
    assert d.source == str(MINI_DOMAIN)
    assert d.pack.name == "mini" and d.pack.version == "1.0.0"
    assert t.pack.tenantId == "t1"
    assert d.data["kind"] == "DomainPack"


def test_same_pack_loads_from_json_text_and_file(tmp_path: Path) -> None:
    data = mini_domain_data()
    from_yaml = load_pack_file(MINI_DOMAIN).pack
    text = json.dumps(data, indent=2)
    assert load_pack_text(text, "mini.json").pack == from_yaml
    assert load_pack_text(text, "<api>", fmt="json").pack == from_yaml
    path = tmp_path / "mini.json"
    path.write_text(text, encoding="utf-8")
    assert load_pack_file(path).pack == from_yaml


def test_json_is_recognised_by_its_opening_brace() -> None:
    text = json.dumps(mini_tenant_data())
    assert isinstance(load_pack_text(text, "no-extension").pack, TenantPolicy)


def test_yaml_dates_stay_strings() -> None:
    data = mini_domain_data()
    text = yaml.safe_dump(data).replace("description: A break.", "description: 2024-01-31")
    pack = load_pack_text(text, "d.yaml").pack
    assert isinstance(pack, DomainPack)
    assert pack.exceptionTypes["BREAK"].description == "2024-01-31"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"kind": "DomainPack"}, "DomainPack"),
        ({"kind": "TenantPolicy"}, "TenantPolicy"),
        ({"exceptionTypes": {}}, "DomainPack"),
        ({"tenantId": "t"}, "TenantPolicy"),
        ({"tenantId": "t", "exceptionTypes": {}}, "DomainPack"),
        ({"kind": "Other"}, None),
        ({}, None),
        ([], None),
    ],
)
def test_detect_kind(data: Any, kind: str | None) -> None:
    assert detect_kind(data) == kind


def test_kind_may_be_omitted() -> None:
    data = mini_tenant_data()
    del data["kind"]
    assert isinstance(model_from_data(data, "t.yaml"), TenantPolicy)


# ------------------------------------------------------------------------------------------ duplicate keys


def test_duplicate_yaml_key_is_rejected_with_key_and_position() -> None:
    text = "kind: DomainPack\nname: a\nversion: 1.0.0\nname: b\nexceptionTypes: {A: {}}\n"
    problems = problems_of(load_pack_text, text, "dup.yaml")
    assert rendered(problems) == ["dup.yaml:$: duplicate key 'name' (line 4, column 1)"]


def test_duplicate_nested_yaml_key_is_rejected() -> None:
    text = "kind: DomainPack\nname: a\nversion: 1.0.0\nexceptionTypes:\n  A: {}\n  B: {}\n  A: {description: x}\n"
    problems = problems_of(load_pack_text, text, "dup.yaml")
    assert len(problems) == 1
    assert "duplicate key 'A'" in problems[0].reason
    assert "line 7" in problems[0].reason


def test_duplicate_json_key_is_rejected_with_key_named() -> None:
    text = '{"kind": "DomainPack", "name": "a", "version": "1.0.0", "exceptionTypes": {"A": {}, "A": {}}}'
    problems = problems_of(load_pack_text, text, "dup.json")
    assert rendered(problems) == ["dup.json:$: duplicate key 'A'"]


# ------------------------------------------------------------------------------- unknown fields, extensions


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.update(bogus=1), "$.bogus"),
        (lambda d: d["exceptionTypes"]["BREAK"].update(colour="red"), "$.exceptionTypes.BREAK.colour"),
        (lambda d: d["severityRules"][1].update(weight=3), "$.severityRules[1].weight"),
        (lambda d: d["tools"]["getOrder"].update(verb="GET"), "$.tools.getOrder.verb"),
        (lambda d: d["playbooks"][0]["steps"][1].update(iff="x"), "$.playbooks[0].steps[1].iff"),
        (lambda d: d["playbooks"][0]["match"].update(kinds=[]), "$.playbooks[0].match.kinds"),
        (lambda d: d["intake"].update(mapping={}), "$.intake.mapping"),
        (lambda d: d["tests"][0]["expect"].update(sev="HIGH"), "$.tests[0].expect.sev"),
    ],
)
def test_unknown_field_is_rejected_with_its_json_path(mutate: Any, path: str) -> None:
    data = mini_domain_data()
    mutate(data)
    problems = problems_of(model_from_data, data, "d.yaml")
    assert [(p.path, p.reason) for p in problems] == [
        (path, "unknown field (extension keys must start with 'x-')")
    ]


def test_unknown_tenant_field_is_rejected() -> None:
    data = mini_tenant_data()
    data["approvalRules"][0]["minApprovers"] = 2
    problems = problems_of(model_from_data, data, "t.yaml")
    assert rendered(problems) == [
        "t.yaml:$.approvalRules[0].minApprovers: unknown field (extension keys must start with 'x-')"
    ]


def test_extension_keys_are_accepted_anywhere_in_models() -> None:
    data = mini_domain_data()
    ext = {"x-owner": "team-a", "x-meta": {"any": ["thing", 1]}}
    data.update(ext)
    data["intake"].update(ext)
    data["exceptionTypes"]["BREAK"].update(ext)
    data["exceptionTypes"]["FAIL"]["detection"][0].update(ext)
    data["severityRules"][0].update(ext)
    data["tools"]["getOrder"].update(ext)
    data["playbooks"][0].update(ext)
    data["playbooks"][0]["match"].update(ext)
    data["playbooks"][0]["steps"][0].update(ext)
    data["tests"][0].update(ext)
    data["tests"][0]["expect"].update(ext)
    pack = model_from_data(data, "d.yaml")
    assert pack == model_from_data(mini_domain_data(), "d.yaml")  # extensions are dropped

    tdata = mini_tenant_data()
    tdata.update(ext)
    tdata["domain"].update(ext)
    tdata["tools"].update(ext)
    tdata["approvalRules"][0].update(ext)
    tdata["tests"][0]["expect"].update(ext)
    assert model_from_data(tdata, "t.yaml") == model_from_data(mini_tenant_data(), "t.yaml")


# ------------------------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("mutate", "path", "reason_part"),
    [
        (lambda d: d["severityRules"][0].update(severity="URGENT"), "$.severityRules[0].severity", "'LOW'"),
        (lambda d: d["severityRules"][1].update(condition=42), "$.severityRules[1].condition", "string"),
        (
            lambda d: d["tools"]["getOrder"].update(timeoutSeconds=-1),
            "$.tools.getOrder.timeoutSeconds",
            "greater than 0",
        ),
        (lambda d: d["tools"]["getOrder"].update(retries=11), "$.tools.getOrder.retries", "10"),
        (lambda d: d["tools"]["getOrder"].update(method="FETCH"), "$.tools.getOrder.method", "'GET'"),
        (lambda d: d["tools"]["getOrder"].update(effect="delete"), "$.tools.getOrder.effect", "'read'"),
        (
            lambda d: d["exceptionTypes"]["BREAK"].update(defaultSeverity="huge"),
            "$.exceptionTypes.BREAK.defaultSeverity",
            "'MEDIUM'",
        ),
        (
            lambda d: d["exceptionTypes"]["FAIL"]["detection"][0].update(confidence=1.5),
            "$.exceptionTypes.FAIL.detection[0].confidence",
            "1",
        ),
        (lambda d: d["playbooks"][0].update(steps=[]), "$.playbooks[0].steps", "at least 1"),
        (lambda d: d["playbooks"][0]["match"].update(types="BREAK"), "$.playbooks[0].match.types", "list"),
        (
            lambda d: d["playbooks"][0]["steps"][0].update(onFailure="ignore"),
            "$.playbooks[0].steps[0].onFailure",
            "'escalate'",
        ),
        (lambda d: d.update(exceptionTypes={}), "$.exceptionTypes", "at least 1"),
        (lambda d: d.update(name="1bad name"), "$.name", "pattern"),
        (lambda d: d.pop("version"), "$.version", "required field is missing"),
        (lambda d: d["intake"].update(recurrenceThreshold=1), "$.intake.recurrenceThreshold", "2"),
        (lambda d: d.update(kind="TenantPolicy"), None, None),  # validated as the other kind: many problems
    ],
)
def test_wrong_types_are_reported_at_their_json_path(
    mutate: Any, path: str | None, reason_part: str | None
) -> None:
    data = mini_domain_data()
    mutate(data)
    problems = problems_of(model_from_data, data, "d.yaml")
    assert_well_formed(problems, "d.yaml")
    if path is None:
        assert len(problems) > 1
        return
    assert [p.path for p in problems] == [path]
    assert reason_part in problems[0].reason


def test_every_structural_problem_is_reported_at_once() -> None:
    data = mini_domain_data()
    data["severityRules"][0]["severity"] = "URGENT"
    data["tools"]["getOrder"]["retries"] = "many"
    data["exceptionTypes"]["BREAK"]["parent"] = "not a name!"
    data["bogus"] = True
    problems = problems_of(model_from_data, data, "d.yaml")
    assert {p.path for p in problems} == {
        "$.severityRules[0].severity",
        "$.tools.getOrder.retries",
        "$.exceptionTypes.BREAK.parent",
        "$.bogus",
    }


def test_tenant_wrong_types_have_json_paths() -> None:
    data = mini_tenant_data()
    data["approvalRules"][0]["approvalsNeeded"] = 0
    data["tools"]["allow"] = "getOrder"
    data["tenantId"] = "bad tenant id"
    problems = problems_of(model_from_data, data, "t.yaml")
    assert {p.path for p in problems} == {"$.approvalRules[0].approvalsNeeded", "$.tools.allow", "$.tenantId"}


def test_cel_syntax_error_is_reported_with_path_and_column() -> None:
    data = mini_domain_data()
    data["severityRules"][1]["condition"] = "normalizedContext.amount >"
    problems = problems_of(model_from_data, data, "d.yaml")
    assert len(problems) == 1
    text = str(problems[0])
    assert text.startswith("d.yaml:$.severityRules[1].condition: CEL syntax error at column 27: ")


def test_cel_syntax_errors_in_every_condition_slot() -> None:
    data = mini_domain_data()
    data["exceptionTypes"]["FAIL"]["detection"][0]["condition"] = "has(("
    data["playbooks"][0]["match"]["condition"] = "a &&"
    data["playbooks"][0]["steps"][1]["when"] = "== 1"
    problems = problems_of(model_from_data, data, "d.yaml")
    assert {p.path for p in problems} == {
        "$.exceptionTypes.FAIL.detection[0].condition",
        "$.playbooks[0].match.condition",
        "$.playbooks[0].steps[1].when",
    }
    assert all(re.search(r"CEL syntax error at column \d+", p.reason) for p in problems)


def test_template_error_is_reported_at_the_argument() -> None:
    data = mini_domain_data()
    data["playbooks"][0]["steps"][0]["args"]["orderId"] = "id-${normalizedContext.orderId"
    problems = problems_of(model_from_data, data, "d.yaml")
    assert [p.path for p in problems] == ["$.playbooks[0].steps[0].args.orderId"]
    assert "unterminated" in problems[0].reason and "column 4" in problems[0].reason


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0.0", "01.0.0", "1.0.0-", "latest", ""])
def test_bad_semver_is_rejected(version: str) -> None:
    data = mini_domain_data()
    data["version"] = version
    problems = problems_of(model_from_data, data, "d.yaml")
    assert [p.path for p in problems] == ["$.version"]


@pytest.mark.parametrize(
    "version", ["0.0.0", "1.2.3", "10.20.30", "1.0.0-rc.1", "1.0.0+build.5", "1.0.0-alpha-x"]
)
def test_good_semver_is_accepted(version: str) -> None:
    data = mini_domain_data()
    data["version"] = version
    assert model_from_data(data, "d.yaml").version == version


@pytest.mark.parametrize("rng", ["^^1", "abc", "~>1.2", ">= one", "1.x.2", "^1.2.3.4"])
def test_bad_version_range_is_rejected(rng: str) -> None:
    data = mini_tenant_data()
    data["domain"]["versionRange"] = rng
    problems = problems_of(model_from_data, data, "t.yaml")
    assert [p.path for p in problems] == ["$.domain.versionRange"]
    assert "invalid version range" in problems[0].reason


# ------------------------------------------------------------------------------------ malformed documents


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("kind: DomainPack\nname: [unclosed\n", "line 3, column 1"),
        ("a: b: c\n", "line 1, column 5"),
        ("kind: DomainPack\n\tname: x\n", "line 2, column 1"),
    ],
)
def test_invalid_yaml_reports_line_and_column(text: str, where: str) -> None:
    problems = problems_of(load_pack_text, text, "bad.yaml")
    assert len(problems) == 1
    assert problems[0].path == "$"
    assert problems[0].reason.startswith(f"invalid YAML at {where}: ")


def test_invalid_json_reports_line_and_column() -> None:
    problems = problems_of(load_pack_text, '{\n  "kind": "DomainPack",\n  "name": }', "bad.json")
    assert rendered(problems) == ["bad.json:$: invalid JSON at line 3, column 11: Expecting value"]


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "---\n"])
def test_empty_document(text: str) -> None:
    problems = problems_of(load_pack_text, text, "empty.yaml")
    assert rendered(problems) == ["empty.yaml:$: a pack must be a mapping, got an empty document"]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    problems = problems_of(load_pack_file, path)
    assert rendered(problems) == [f"{path}:$: a pack must be a mapping, got an empty document"]


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("- kind: DomainPack\n", "a list"),
        ("[1, 2]", "a list"),
        ("just text", "a string"),
        ("42", "a number"),
        ("true", "a boolean"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, what: str) -> None:
    problems = problems_of(load_pack_text, text, "x.yaml")
    assert rendered(problems) == [f"x.yaml:$: a pack must be a mapping, got {what}"]


def test_mapping_of_unknown_kind() -> None:
    problems = problems_of(load_pack_text, "kind: Playbook\nname: x\n", "x.yaml")
    assert [p.path for p in problems] == ["$.kind"]
    assert "DomainPack" in problems[0].reason and "TenantPolicy" in problems[0].reason


def test_unsafe_yaml_tags_are_not_constructed() -> None:
    problems = problems_of(load_pack_text, "!!python/object/apply:os.system ['true']\n", "evil.yaml")
    assert problems[0].reason.startswith("invalid YAML")


def test_complex_yaml_keys_are_rejected() -> None:
    problems = problems_of(load_pack_text, "? [a, b]\n: 1\n", "k.yaml")
    assert "unsupported mapping key of type list" in problems[0].reason


def test_recursive_yaml_alias_is_rejected() -> None:
    text = "kind: DomainPack\nname: x\nversion: 1.0.0\nexceptionTypes: {A: {}}\nontology: &a {x: *a}\n"
    problems = problems_of(load_pack_text, text, "r.yaml")
    assert "recursive" in problems[0].reason


def test_file_larger_than_the_limit_is_rejected_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as fh:
        fh.write(b"kind: DomainPack\n")
        fh.write(b"\xff" * (MAX_PACK_BYTES + 1))  # not UTF-8: decoding it would be the error reported
    problems = problems_of(load_pack_file, path)
    assert len(problems) == 1
    assert problems[0].path == "$"
    assert "the limit is 10 MB" in problems[0].reason


def test_text_larger_than_the_limit_is_rejected_before_parsing() -> None:
    text = "[" * (MAX_PACK_BYTES + 1)  # parsed, it would be a nesting error
    problems = problems_of(parse_text, text, "huge.yaml")
    assert rendered(problems) == ["huge.yaml:$: pack is larger than 10 MB"]


def test_limit_counts_bytes_not_characters() -> None:
    text = "# " + "é" * (MAX_PACK_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    assert len(text) < MAX_PACK_BYTES
    problems = problems_of(parse_text, text, "wide.yaml")
    assert "larger than 10 MB" in problems[0].reason


@pytest.mark.parametrize(
    ("text", "source"),
    [
        ("[" * 10_000 + "]" * 10_000, "deep.json"),
        ('{"a":' * 10_000 + "1" + "}" * 10_000, "deep.json"),
        ("[" * 10_000 + "]" * 10_000, "deep.yaml"),
        ("- " * 5_000 + "x\n", "deep.yaml"),
        ("a:\n" + "".join("  " * i + "a:\n" for i in range(1, 1_000)), "deep.yaml"),
    ],
)
def test_deeply_nested_garbage_gives_a_clear_error(text: str, source: str) -> None:
    problems = problems_of(load_pack_text, text, source)
    assert len(problems) == 1
    assert problems[0].file == source and problems[0].path == "$"
    # Either the parser's own depth guard or the loader's shape check may fire first: both must say why.
    assert re.search(r"nested deeper than \d+ levels|nesting depth", problems[0].reason), problems[0].reason


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_nesting_just_above_the_limit_is_rejected_by_the_shape_check(fmt: str) -> None:
    value: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        value = [value]
    text = json.dumps({"kind": "DomainPack", "x-deep": value})
    problems = problems_of(parse_text, text, f"d.{fmt}", fmt)
    assert rendered(problems) == [f"d.{fmt}:$: document is nested deeper than {MAX_DEPTH} levels"]


def test_nesting_just_below_the_limit_is_fine() -> None:
    value: Any = "leaf"
    for _ in range(MAX_DEPTH - 2):
        value = {"k": value}
    data = mini_domain_data()
    data["x-deep"] = value
    assert isinstance(load_pack_text(json.dumps(data), "ok.json").pack, DomainPack)


def test_non_utf8_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("kind: DomainPack\nname: caf\u00e9\n".encode("latin-1"))
    problems = problems_of(load_pack_file, path)
    assert rendered(problems) == [f"{path}:$: file is not UTF-8 text (byte 26)"]


def test_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    problems = problems_of(load_pack_file, tmp_path / "absent.yaml")
    assert problems[0].reason.startswith("cannot read file")


def test_control_characters_are_rejected() -> None:
    problems = problems_of(load_pack_text, "kind: DomainPack\x00\n", "nul.yaml")
    assert problems[0].reason.startswith("invalid YAML")


def test_yaml_alias_bomb_is_bounded_by_max_nodes() -> None:
    levels = 7  # 10**7 values once expanded, > MAX_NODES; the file itself is tiny
    lines = ["l0: &l0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    text = (
        "kind: DomainPack\nname: x\nversion: 1.0.0\nexceptionTypes: {A: {}}\n"
        "tools:\n  t:\n    parameters:\n      type: object\n      x-lol:\n"
        + "".join(f"        {line}\n" for line in lines)
    )
    assert 10**levels > MAX_NODES
    problems = problems_of(load_pack_text, text, "bomb.yaml")
    assert "more than" in problems[0].reason


def _deep_dicts(n: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(n):
        value = {"type": "object", "properties": {"a": value}}
    return value


def _deep_lists(n: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(n):
        value = [value]
    return value


@pytest.mark.parametrize("where", ["tool-parameters", "test-input"])
def test_compile_pack_data_bounds_nesting_of_parsed_data(where: str) -> None:
    data = {"kind": "DomainPack", "name": "x", "version": "1.0.0", "exceptionTypes": {"A": {}}}
    if where == "tool-parameters":
        data["tools"] = {"t": {"parameters": _deep_dicts(3_000)}}
    else:
        data["tests"] = [{"name": "n", "input": {"rawPayload": {"a": _deep_lists(5_000)}}, "expect": {}}]
    problems_of(compile_pack_data, data, "api")


def test_deep_template_data_is_a_pack_error() -> None:
    data = mini_domain_data()
    data["playbooks"][0]["steps"][0]["args"]["orderId"] = _deep_lists(5_000)
    problems = problems_of(model_from_data, data, "api")
    assert problems[0].reason == "document is nested deeper than 64 levels"


# ------------------------------------------------------------------------------------------ json paths


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), "$"),
        (("a", 3, "b"), "$.a[3].b"),
        (("tools", "get-order"), "$.tools.get-order"),
        (("ontology", "two words"), "$.ontology['two words']"),
        (("x", "a.b"), "$.x['a.b']"),
        (("x", ""), "$.x['']"),
    ],
)
def test_json_path_rendering(loc: tuple[Any, ...], path: str) -> None:
    assert json_path(loc) == path


# ------------------------------------------------------------------------------------------- properties

_KEYS = st.sampled_from(
    [
        "kind",
        "name",
        "version",
        "exceptionTypes",
        "tenantId",
        "domain",
        "severityRules",
        "tools",
        "playbooks",
        "condition",
        "severity",
        "x-ext",
        "parameters",
        "steps",
        "match",
        "types",
        "A",
        "DomainPack",
        "TenantPolicy",
        "tests",
        "expect",
        "input",
        "args",
        "url",
    ]
) | st.text(max_size=6)
_LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(
        [
            "DomainPack",
            "TenantPolicy",
            "1.0.0",
            "^1.0.0",
            "HIGH",
            "exceptionType == 'A'",
            "${rawPayload.x}",
            "${",
        ]
    )
)
_JSON = st.recursive(
    _LEAF, lambda c: st.lists(c, max_size=4) | st.dictionaries(_KEYS, c, max_size=5), max_leaves=30
)
_TEXT = st.text(max_size=80) | st.text(alphabet="{}[]:,-&*!|>'\"\n #?%@`\\xa1 \t", max_size=80)


def _pack_or_pack_error(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except PackError as exc:
        assert exc.problems
        assert_well_formed(exc.problems, "src")
        assert str(exc) == "\n".join(str(p) for p in exc.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=_JSON)
def test_any_json_value_gives_a_pack_or_pack_error(value: Any) -> None:
    _pack_or_pack_error(model_from_data, value, "src")
    try:
        text = json.dumps(value)
    except ValueError:
        return
    _pack_or_pack_error(load_pack_text, text, "src", "json")
    _pack_or_pack_error(load_pack_text, text, "src")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=_TEXT)
def test_any_text_gives_a_pack_or_pack_error(text: str) -> None:
    _pack_or_pack_error(parse_text, text, "src")
    _pack_or_pack_error(load_pack_text, text, "src")
    _pack_or_pack_error(load_pack_text, text, "src", "json")


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: dict[str, Any], ops: list[tuple[int, str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for index, op, value in ops:
        paths = _paths(doc)
        if not paths:
            break
        path = paths[index % len(paths)]
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        if op == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return doc


_BASES = {"domain": mini_domain_data(), "tenant": mini_tenant_data()}


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    base=st.sampled_from(sorted(_BASES)),
    ops=st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(["drop", "set"]), _JSON), min_size=1, max_size=4
    ),
    as_text=st.booleans(),
)
def test_mutated_valid_pack_gives_a_pack_or_pack_error(
    base: str, ops: list[tuple[int, str, Any]], as_text: bool
) -> None:
    doc = _mutate(_BASES[base], ops)
    if as_text:
        try:
            text = yaml.safe_dump(doc)
        except yaml.YAMLError:
            return
        _pack_or_pack_error(load_pack_text, text, "src")
    else:
        _pack_or_pack_error(model_from_data, doc, "src")
