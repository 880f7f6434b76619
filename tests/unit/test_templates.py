"""Argument templates: `${CEL}` placeholders keep types when whole, render as text when concatenated."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from breakdesk.rules.cel import make_context
from breakdesk.rules.templates import RenderError, Template, TemplateError, compile_template

DATA: dict[str, Any] = {
    "rawPayload": {
        "n": 5,
        "f": 1.5,
        "s": "abc",
        "b": True,
        "z": None,
        "l": [1, 2, 3],
        "m": {"a": 1, "b": [True]},
        "order": {"id": "O-1", "lines": [{"sku": "X"}]},
    },
    "exceptionType": "BREAK",
}


@pytest.fixture
def ctx() -> Any:
    return make_context(DATA)


def render(value: Any, ctx: Any) -> Any:
    return compile_template(value).render(ctx)


# ------------------------------------------------------------------------------------------- whole values


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${rawPayload.n}", 5),
        ("${rawPayload.f}", 1.5),
        ("${rawPayload.s}", "abc"),
        ("${rawPayload.b}", True),
        ("${rawPayload.z}", None),
        ("${rawPayload.l}", [1, 2, 3]),
        ("${rawPayload.m}", {"a": 1, "b": [True]}),
        ("${ rawPayload.n }", 5),
        ("${rawPayload.n + 1}", 6),
        ("${rawPayload.l.size()}", 3),
        ('${{"k": rawPayload.n}}', {"k": 5}),  # braces inside the expression
        ('${"}"}', "}"),  # a closing brace inside a string literal does not end the placeholder
        ("${[rawPayload.s, rawPayload.n]}", ["abc", 5]),
    ],
)
def test_whole_placeholder_keeps_the_type(ctx: Any, template: str, expected: Any) -> None:
    t = compile_template(template)
    assert t.kind == "expr"
    out = t.render(ctx)
    assert out == expected
    assert type(out) is type(expected)


def test_whole_placeholder_bool_is_not_an_int(ctx: Any) -> None:
    assert render("${rawPayload.b}", ctx) is True


# ----------------------------------------------------------------------------------------- concatenation


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("n=${rawPayload.n}", "n=5"),
        ("${rawPayload.s}-${rawPayload.n}", "abc-5"),
        ("f=${rawPayload.f}", "f=1.5"),
        ("b=${rawPayload.b}", "b=true"),  # CEL spelling of booleans
        ("z=[${rawPayload.z}]", "z=[]"),  # null renders as nothing
        ("order ${rawPayload.order.id} of ${exceptionType}", "order O-1 of BREAK"),
        ("${rawPayload.n}${rawPayload.n}", "55"),
        ("l=${rawPayload.l}", "l=[1,2,3]"),  # structures render as compact JSON, not Python reprs
        ("s=${[rawPayload.s]}", 's=["abc"]'),
    ],
)
def test_concatenation_renders_text(ctx: Any, template: str, expected: str) -> None:
    t = compile_template(template)
    assert t.kind == "concat"
    assert t.render(ctx) == expected


def test_concatenated_map_renders_as_json(ctx: Any) -> None:
    out = render("m=${rawPayload.m}", ctx)
    assert out.startswith("m=")
    assert json.loads(out[2:]) == {"a": 1, "b": [True]}


def test_concatenated_map_renders_deterministically() -> None:
    t = compile_template("m=${rawPayload.m}")
    outs = {t.render(make_context({"rawPayload": {"m": {"a": 1, "b": 2, "c": 3}}})) for _ in range(30)}
    assert outs == {'m={"a":1,"b":2,"c":3}'}


def test_plain_string_is_a_literal(ctx: Any) -> None:
    t = compile_template("no placeholders $ { } here")
    assert t.kind == "literal"
    assert t.render(ctx) == "no placeholders $ { } here"
    assert t.expressions == []


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$${rawPayload.n}", "${rawPayload.n}"),
        ("cost: $${x} and ${rawPayload.n}", "cost: ${x} and 5"),
        ("a$${b}c$${d}", "a${b}c${d}"),
    ],
)
def test_double_dollar_escapes_a_placeholder(ctx: Any, template: str, expected: str) -> None:
    assert render(template, ctx) == expected


def test_escaped_only_template_is_a_literal() -> None:
    t = compile_template("$${not.an.expr(}")
    assert t.kind == "literal"
    assert t.value == "${not.an.expr(}"


# -------------------------------------------------------------------------------------------- structures


def test_nested_lists_and_maps_render_recursively(ctx: Any) -> None:
    t = compile_template(
        {
            "id": "${rawPayload.order.id}",
            "count": "${rawPayload.n}",
            "fixed": 7,
            "lines": ["${rawPayload.order.lines[0].sku}", "literal", {"deep": ["x-${rawPayload.n}"]}],
            "none": None,
        }
    )
    assert t.kind == "map"
    assert t.render(ctx) == {
        "id": "O-1",
        "count": 5,
        "fixed": 7,
        "lines": ["X", "literal", {"deep": ["x-5"]}],
        "none": None,
    }
    assert sorted(e.source for e in t.expressions) == [
        "rawPayload.n",
        "rawPayload.n",
        "rawPayload.order.id",
        "rawPayload.order.lines[0].sku",
    ]


def test_structures_without_placeholders_are_literals(ctx: Any) -> None:
    value = {"a": [1, "two", {"b": None}], "c": True}
    t = compile_template(value)
    assert t.kind == "literal"
    assert t.render(ctx) == value


@pytest.mark.parametrize("value", [0, 1.5, True, None])
def test_scalars_are_literals(ctx: Any, value: Any) -> None:
    t = compile_template(value)
    assert t.kind == "literal"
    assert t.render(ctx) is value or t.render(ctx) == value


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("template", "column"),
    [("${rawPayload.n", 1), ("abc ${rawPayload.n", 5), ("ok ${a} then ${b", 14), ("${'}'", 1)],
)
def test_unterminated_placeholder_reports_its_column(template: str, column: int) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(template)
    assert info.value.column == column
    assert "unterminated" in info.value.reason
    assert f"column {column}" in str(info.value)


def test_unterminated_placeholder_inside_a_structure_is_found() -> None:
    with pytest.raises(TemplateError, match="unterminated"):
        compile_template({"a": ["fine", {"b": "${oops"}]})


@pytest.mark.parametrize(
    ("template", "column"),
    [
        ("${1 +}", 6),  # end of the expression = the '}' at column 6
        ("ab${ 1 + }", 10),
        ("${rawPayload.n ==}", 18),
    ],
)
def test_bad_cel_in_placeholder_reports_the_column_in_the_whole_string(template: str, column: int) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(template)
    assert info.value.reason.startswith("invalid expression in placeholder")
    assert info.value.column == column


def test_empty_placeholder_is_an_error() -> None:
    with pytest.raises(TemplateError, match="empty expression"):
        compile_template("x ${} y")


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("${rawPayload.missing}", "missing"),
        ("id: ${rawPayload.order.nope}", "nope"),
        (["${rawPayload.absent}"], "absent"),
        ({"k": {"j": "${rawPayload.gone}"}}, "gone"),
    ],
)
def test_missing_field_raises_render_error_naming_it(ctx: Any, template: Any, field: str) -> None:
    with pytest.raises(RenderError) as info:
        compile_template(template).render(ctx)
    assert f"'{field}'" in str(info.value)
    assert "missing field" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_render_error_names_the_placeholder(ctx: Any) -> None:
    with pytest.raises(RenderError, match=r"\$\{rawPayload\.s \+ 1\}"):
        render("${rawPayload.s + 1}", ctx)


# ---------------------------------------------------------------------------------------- the fast path


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("${rawPayload.n}", ("rawPayload", "n")),
        ("${ rawPayload.order.id }", ("rawPayload", "order", "id")),
        ("${exceptionType}", ("exceptionType",)),
        ("${rawPayload.l[0]}", None),
        ("${rawPayload.n + 1}", None),
        ("x${rawPayload.n}", None),
        ("${has(rawPayload.n)}", None),
        ("literal", None),
    ],
)
def test_path_only_for_plain_field_paths(template: str, path: tuple[str, ...] | None) -> None:
    assert compile_template(template).path == path


@pytest.mark.parametrize(
    "template",
    [
        "${rawPayload.n}",
        "${rawPayload.z}",
        "${rawPayload.l}",
        "${rawPayload.m}",
        "${rawPayload.order.lines}",
        "${exceptionType}",
    ],
)
def test_path_lookup_equals_cel_render(ctx: Any, template: str) -> None:
    t = compile_template(template)
    assert t.lookup(DATA) == t.render(ctx)


@pytest.mark.parametrize(
    "template",
    ["${rawPayload.missing}", "${rawPayload.n.x}", "${rawPayload.z.x}", "${rawPayload.l.x}", "${nope}"],
)
def test_path_lookup_fails_where_cel_render_fails(ctx: Any, template: str) -> None:
    t = compile_template(template)
    with pytest.raises(RenderError):
        t.lookup(DATA)
    with pytest.raises(RenderError):
        t.render(ctx)


_KEYS = st.sampled_from(["a", "b", "c"])
_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
)
_JSON = st.recursive(
    _LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(_KEYS, c, max_size=3), max_leaves=10
)


@settings(max_examples=300, deadline=None)
@given(payload=st.dictionaries(_KEYS, _JSON, max_size=3), path=st.lists(_KEYS, min_size=1, max_size=3))
def test_path_fast_path_agrees_with_cel(payload: dict[str, Any], path: list[str]) -> None:
    data = {"rawPayload": payload}
    t: Template = compile_template("${rawPayload." + ".".join(path) + "}")
    assert t.path is not None
    try:
        fast: tuple[str, Any] = ("ok", t.lookup(data))
    except RenderError:
        fast = ("error", None)
    try:
        slow: tuple[str, Any] = ("ok", t.render(make_context(data)))
    except RenderError:
        slow = ("error", None)
    assert fast == slow
