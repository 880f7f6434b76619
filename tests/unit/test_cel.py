"""The CEL layer: compile errors with columns, missing data as non-matches, and type indexing of conditions."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from breakdesk.rules.cel import (
    MAX_SOURCE_LENGTH,
    CelSyntaxError,
    EvalResult,
    compile_condition,
    exception_types_tested,
    make_context,
)

# ---------------------------------------------------------------------------------------------- compiling


@pytest.mark.parametrize(
    ("source", "column"),
    [
        ("a ==", 5),  # end of input, right after '=='
        ("1 +", 4),
        ("(a", 3),
        ("exceptionType == 'A' &&& x", 24),  # the stray third '&'
    ],
)
def test_syntax_error_carries_line_and_column(source: str, column: int) -> None:
    with pytest.raises(CelSyntaxError) as info:
        compile_condition(source)
    err = info.value
    assert err.line == 1
    assert err.column == column
    assert err.source == source
    assert f"at column {column}" in str(err)
    assert err.reason  # the parser's own explanation is kept


def test_syntax_error_on_a_later_line_reports_that_line() -> None:
    with pytest.raises(CelSyntaxError) as info:
        compile_condition("rawPayload.a == 1 &&\n  (b ==")
    assert info.value.line == 2


@pytest.mark.parametrize("source", ["", "   ", "\n\t"])
def test_empty_expression_is_a_syntax_error(source: str) -> None:
    with pytest.raises(CelSyntaxError, match="empty expression"):
        compile_condition(source)


def test_non_string_source_is_a_syntax_error() -> None:
    with pytest.raises(CelSyntaxError):
        compile_condition(None)  # type: ignore[arg-type]


def test_overlong_expression_is_rejected_before_parsing() -> None:
    source = "true && " * (MAX_SOURCE_LENGTH // 8) + "true"
    assert len(source) > MAX_SOURCE_LENGTH
    with pytest.raises(CelSyntaxError, match=f"longer than {MAX_SOURCE_LENGTH}"):
        compile_condition(source)


def test_syntax_error_is_a_value_error() -> None:
    # The schema layer converts ValueErrors into located pack problems.
    with pytest.raises(ValueError):
        compile_condition("a ==")


def test_compiled_condition_lists_its_root_variables() -> None:
    cond = compile_condition("rawPayload.a > 1 && normalizedContext.b == 'x' && exceptionType == 'T'")
    assert cond.variables == frozenset({"rawPayload", "normalizedContext", "exceptionType"})
    assert cond.source == "rawPayload.a > 1 && normalizedContext.b == 'x' && exceptionType == 'T'"


# --------------------------------------------------------------------------------------------- evaluating


@pytest.fixture
def ctx() -> object:
    return make_context({"rawPayload": {"a": 1, "s": "x", "nested": {"b": 2}}, "exceptionType": "T"})


def test_matching_condition(ctx: object) -> None:
    assert compile_condition("rawPayload.a == 1 && rawPayload.nested.b == 2").evaluate(ctx) == EvalResult(
        True
    )


def test_non_matching_condition_has_no_error(ctx: object) -> None:
    assert compile_condition("rawPayload.a == 2").evaluate(ctx) == EvalResult(False, None)


@pytest.mark.parametrize(
    "source",
    ["rawPayload.missing == 1", "rawPayload.nested.missing > 0", "rawPayload.missing.deeper == 'x'"],
)
def test_missing_field_is_a_non_match_that_names_the_field(ctx: object, source: str) -> None:
    res = compile_condition(source).evaluate(ctx)
    assert res.matched is False
    assert res.error is not None
    assert "missing" in res.error
    assert "'missing'" in res.error


def test_evaluate_accepts_a_plain_dict() -> None:
    cond = compile_condition("rawPayload.a == 1")
    assert cond.evaluate({"rawPayload": {"a": 1}}).matched is True
    res = cond.evaluate({"rawPayload": {}})
    assert res == EvalResult(False, "missing field 'a'")


def test_undefined_variable_is_a_non_match_with_reason(ctx: object) -> None:
    res = compile_condition("notAVariable == 1").evaluate(ctx)
    assert res.matched is False
    assert res.error is not None and "notAVariable" in res.error


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("true || rawPayload.missing", True),
        ("rawPayload.missing || true", True),
        ("false && rawPayload.missing", False),
        ("rawPayload.missing && false", False),
        ("rawPayload.a == 1 || rawPayload.missing == 2", True),
        ("rawPayload.missing == 2 || rawPayload.a == 1", True),
    ],
)
def test_cel_error_absorbing_logic_decides_first(ctx: object, source: str, expected: bool) -> None:
    res = compile_condition(source).evaluate(ctx)
    assert res.matched is expected
    assert res.error is None


def test_error_that_is_not_absorbed_is_reported(ctx: object) -> None:
    res = compile_condition("true && rawPayload.missing").evaluate(ctx)
    assert res.matched is False
    assert res.error is not None and "missing" in res.error


@pytest.mark.parametrize(
    ("source", "type_name"),
    [
        ("rawPayload.a + 1", "int"),
        ("rawPayload.s", "str"),
        ("rawPayload.nested", "dict"),
        ("[1, 2]", "list"),
        ("null", "NoneType"),
    ],
)
def test_non_boolean_result_is_a_non_match_with_reason(ctx: object, source: str, type_name: str) -> None:
    res = compile_condition(source).evaluate(ctx)
    assert res.matched is False
    assert res.error == f"condition produced {type_name}, not a boolean"


@pytest.mark.parametrize(
    "source",
    [
        "rawPayload.a / 0 == 1",  # division by zero
        "rawPayload.s > 1",  # no such overload
        "rawPayload.nested.b.c == 1",  # field of an int
        "int('abc') == 1",  # conversion error
    ],
)
def test_runtime_errors_never_raise(ctx: object, source: str) -> None:
    res = compile_condition(source).evaluate(ctx)
    assert res.matched is False
    assert res.error


def test_value_returns_typed_values_and_errors(ctx: object) -> None:
    assert compile_condition("rawPayload.a + 1").value(ctx) == (2, None)
    assert compile_condition("rawPayload.nested").value(ctx) == ({"b": 2}, None)
    val, err = compile_condition("rawPayload.missing").value(ctx)
    assert val is None
    assert err == "missing field 'missing'"


def test_macros_evaluate() -> None:
    cond = compile_condition("rawPayload.items.exists(i, i.qty > 5)")
    assert cond.evaluate({"rawPayload": {"items": [{"qty": 1}, {"qty": 9}]}}).matched is True
    assert cond.evaluate({"rawPayload": {"items": [{"qty": 1}]}}).matched is False
    assert cond.evaluate({"rawPayload": {"items": []}}).matched is False


@settings(max_examples=200, deadline=None)
@given(
    payload=st.dictionaries(
        st.sampled_from(["a", "b", "s"]),
        st.none() | st.booleans() | st.integers(-(2**62), 2**62) | st.text(max_size=5),
        max_size=3,
    ),
    source=st.sampled_from(
        [
            "rawPayload.a > 1",
            "rawPayload.a == rawPayload.b",
            "rawPayload.s.startsWith('x')",
            "size(rawPayload.s) > 2",
            "rawPayload.a + rawPayload.b > 0",
            "has(rawPayload.a) && rawPayload.a",
            "rawPayload.a / rawPayload.b == 1",
        ]
    ),
)
def test_evaluate_never_raises_and_always_returns_a_bool(payload: dict[str, object], source: str) -> None:
    res = compile_condition(source).evaluate(make_context({"rawPayload": payload}))
    assert isinstance(res.matched, bool)
    if res.error is not None:
        assert res.matched is False


# ------------------------------------------------------------------------------------------ type indexing


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("exceptionType == 'A'", {"A"}),
        ('exceptionType == "A"', {"A"}),
        ("'A' == exceptionType", {"A"}),
        ("  exceptionType=='A'  ", {"A"}),
        ("exceptionType in ['A', 'B']", {"A", "B"}),
        ("exceptionType in ['A', \"B\", 'C']", {"A", "B", "C"}),
        ("(exceptionType == 'A')", {"A"}),
        ("((exceptionType == 'A'))", {"A"}),
        ("x > 1 && exceptionType == 'A'", {"A"}),
        ("exceptionType == 'A' && rawPayload.n > 1 && rawPayload.m < 2", {"A"}),
        ("(exceptionType == 'A') && (x > 1)", {"A"}),
        ("(exceptionType == 'A' || exceptionType == 'B') && x > 1", {"A", "B"}),
        ("(exceptionType == 'A') || (exceptionType == 'B')", {"A", "B"}),
        ("exceptionType == 'A' || exceptionType in ['B', 'C']", {"A", "B", "C"}),
        ("exceptionType == 'A' && (exceptionType == 'A' || exceptionType == 'C')", {"A"}),
        ("exceptionType == 'A' && exceptionType == 'B'", set()),  # can match nothing
        ("exceptionType == 'A' && !(exceptionType == 'B')", {"A"}),
        ("exceptionType == 'A' && (x || y)", {"A"}),
        # '&&' and '||' inside string literals are not operators
        ("rawPayload.s == 'a && b' && exceptionType == 'A'", {"A"}),
        ("exceptionType == 'A' && rawPayload.s == 'x || y'", {"A"}),
        ('exceptionType == "A" && rawPayload.s == "(unbalanced && \'quote"', {"A"}),
        ("exceptionType == 'A' && rawPayload.s == 'it\\'s && ok'", {"A"}),
        ("exceptionType == 'A&&B'", {"A&&B"}),
        ("exceptionType == 'A' && rawPayload.items.exists(i, i == 'x' || i == 'y')", {"A"}),
        # each disjunct restricted by type: the union is sound
        ("(exceptionType == 'A' && x) || exceptionType == 'B'", {"A", "B"}),
        ("exceptionType == 'A' || rawPayload.flag && exceptionType == 'B'", {"A", "B"}),
    ],
)
def test_exception_types_tested_finds_the_types(source: str, expected: set[str]) -> None:
    compile_condition(source)  # every case is valid CEL
    assert exception_types_tested(source) == frozenset(expected)


@pytest.mark.parametrize(
    "source",
    [
        "!(exceptionType == 'A')",
        "exceptionType != 'A'",
        "!(exceptionType == 'A') && x",
        "exceptionType == 'A' || x > 1",
        "(x > 1) || (exceptionType == 'A')",
        "(exceptionType == 'A') || x",
        "exceptionType == 'A' ? true : false",
        "x ? exceptionType == 'A' : false",
        "exceptionType == 'A' && x ? true : false",
        "exceptionType in ['A', x]",
        "exceptionType.startsWith('A')",
        "rawPayload.exceptionType == 'A'",
        "exceptionType == rawPayload.t",
        "rawPayload.a > 1",
        "!(exceptionType == 'A' && x)",
        "exceptionType in ['A,B']",  # a comma inside a literal is not parsed: be conservative
        "true",
    ],
)
def test_exception_types_tested_is_none_when_not_restricted(source: str) -> None:
    compile_condition(source)
    assert exception_types_tested(source) is None


@pytest.mark.parametrize(
    "source",
    ["exceptionType == 'A' && (", "exceptionType == 'A' && 'unterminated", "exceptionType == 'A')"],
)
def test_exception_types_tested_gives_up_on_unbalanced_text(source: str) -> None:
    assert exception_types_tested(source) is None


def test_exception_types_tested_respects_or_and_precedence() -> None:
    source = "exceptionType == 'A' || rawPayload.flag && exceptionType == 'B'"
    # With exceptionType == 'A' the condition is true regardless of the flag ...
    ctx = make_context({"exceptionType": "A", "rawPayload": {"flag": False}})
    assert compile_condition(source).evaluate(ctx).matched is True
    # ... so an index that leaves out 'A' is unsound.
    tested = exception_types_tested(source)
    assert tested is None or "A" in tested


_TYPES = ["A", "B", "C"]
_ATOMS = st.sampled_from(
    [
        "exceptionType == 'A'",
        "'B' == exceptionType",
        "exceptionType in ['A', 'C']",
        "exceptionType != 'B'",
        "rawPayload.flag",
        "!rawPayload.flag",
        "true",
        "false",
    ]
)


def _expr(parenthesize_and: bool) -> st.SearchStrategy[str]:
    conj = "({} && {})" if parenthesize_and else "{} && {}"
    return st.recursive(
        _ATOMS,
        lambda sub: st.one_of(
            st.tuples(sub, sub).map(lambda t: conj.format(*t)),
            st.tuples(sub, sub).map(lambda t: f"({t[0]} || {t[1]})"),
            sub.map(lambda s: f"!({s})"),
        ),
        max_leaves=6,
    )


def _assert_index_is_sound(source: str, flag: bool) -> None:
    tested = exception_types_tested(source)
    if tested is None:
        return
    cond = compile_condition(source)
    for t in _TYPES:
        res = cond.evaluate(make_context({"exceptionType": t, "rawPayload": {"flag": flag}}))
        if res.matched:
            assert t in tested, f"{source!r} matches {t} but is indexed under {sorted(tested)}"


@settings(max_examples=300, deadline=None)
@given(source=_expr(parenthesize_and=True), flag=st.booleans())
def test_exception_types_tested_is_sound_for_parenthesized_expressions(source: str, flag: bool) -> None:
    """Whenever a type set is returned, the condition is false for every type outside it."""
    _assert_index_is_sound(source, flag)


@settings(max_examples=300, deadline=None)
@example(source="exceptionType == 'A' || rawPayload.flag && exceptionType == 'B'", flag=False)
@given(source=_expr(parenthesize_and=False), flag=st.booleans())
def test_exception_types_tested_is_sound_for_any_and_or_mix(source: str, flag: bool) -> None:
    _assert_index_is_sound(source, flag)
