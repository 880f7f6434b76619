"""Thin, typed layer over `common-expression-language`.

Why a layer: packs need (1) syntax errors with a column, (2) "a condition that touches a missing field does not
match" instead of an exception, while CEL's own error-absorbing `&&`/`||` still decide first
(`true || rawPayload.missing` is true), and (3) the set of exception types a rule can match, so triage only
evaluates candidate rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cel

_ERR_POS = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")


class CelSyntaxError(ValueError):
    """A condition that does not compile; `column` is 1-based like the CEL parser's own report."""

    def __init__(self, source: str, reason: str, line: int | None = None, column: int | None = None) -> None:
        self.source = source
        self.reason = reason
        self.line = line
        self.column = column
        where = f" at column {column}" if column is not None else ""
        super().__init__(f"CEL syntax error{where}: {reason}")


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Outcome of evaluating a condition. `error` explains a non-match caused by missing data or a type error."""

    matched: bool
    error: str | None = None


_MATCHED = EvalResult(True)
_NOT_MATCHED = EvalResult(False)

MAX_SOURCE_LENGTH = 4096


def _syntax_error(source: str, exc: Exception) -> CelSyntaxError:
    text = str(exc)
    m = _ERR_POS.search(text)
    if m:
        return CelSyntaxError(source, m.group(3).strip(), int(m.group(1)), int(m.group(2)))
    return CelSyntaxError(source, text.splitlines()[0] if text else type(exc).__name__)


_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_MISSING = object()


def is_plain_scalar(value: Any) -> bool:
    """True when CEL would hand `value` back unchanged (str, bool, float, null, int64), so reading it from the
    plain data gives exactly what evaluating over a CEL context would; containers and oddities are left to CEL."""
    t = type(value)
    if t is str:
        if value.isascii():
            return True
        try:
            value.encode("utf-8")  # lone surrogates: CEL refuses them, so must the fast path
        except UnicodeEncodeError:
            return False
        return True
    if t is float or t is bool or value is None:
        return True
    return t is int and _I64_MIN <= value <= _I64_MAX


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled CEL boolean condition."""

    source: str
    program: Any
    variables: frozenset[str]
    #: For a source that is exactly `root.key`: (root, key). Such reads of plain data need no CEL context.
    field: tuple[str, str] | None = None

    def evaluate(self, ctx: Any) -> EvalResult:
        """Evaluate against a `cel.Context` (or dict). Never raises for data problems."""
        try:
            value = self.program.execute(ctx)
        except KeyError as exc:
            return EvalResult(False, f"missing field {exc.args[0]!r}" if exc.args else "missing field")
        except (TypeError, ValueError, RuntimeError, ZeroDivisionError, OverflowError) as exc:
            return EvalResult(False, _short(exc))
        if value is True:
            return _MATCHED
        if value is False:
            return _NOT_MATCHED
        return EvalResult(False, f"condition produced {type(value).__name__}, not a boolean")

    def value(self, ctx: Any) -> tuple[Any, str | None]:
        """Evaluate as an expression (templates, field mappings): (value, error)."""
        try:
            return self.program.execute(ctx), None
        except KeyError as exc:
            return None, f"missing field {exc.args[0]!r}" if exc.args else "missing field"
        except (TypeError, ValueError, RuntimeError, ZeroDivisionError, OverflowError) as exc:
            return None, _short(exc)

    def value_from(self, data: dict[str, Any] | None, ctx: Any) -> tuple[Any, str | None]:
        """`value`, except that a `root.key` read is answered from `data` (the plain values the context was
        built from) when the key is absent or holds a plain scalar: same result and error text as CEL, without
        converting that value into the context. Anything else is evaluated by CEL over `ctx`."""
        f = self.field
        if f is not None and data is not None:
            root = data.get(f[0])
            if type(root) is dict:
                v = root.get(f[1], _MISSING)
                if v is _MISSING:
                    return None, f"missing field {f[1]!r}"
                if is_plain_scalar(v):
                    return v, None
        return self.value(ctx)


def _short(exc: Exception) -> str:
    text = str(exc).split(". ")[0]
    return text[:200]


@lru_cache(maxsize=65536)
def compile_condition(source: object) -> Condition:
    """Compile CEL once. Raises CelSyntaxError with the column of the first problem.

    Memoized: a Condition is immutable, and the same source is compiled by schema validation and again by
    the compiler, and often repeated across rules and packs."""
    if not isinstance(source, str) or not source.strip():
        raise CelSyntaxError(str(source), "empty expression")
    if len(source) > MAX_SOURCE_LENGTH:
        raise CelSyntaxError(source[:80], f"expression longer than {MAX_SOURCE_LENGTH} characters")
    try:
        program = cel.compile(source)
        variables = frozenset(program.variables())
    except Exception as exc:  # the parser raises ValueError; be defensive about anything else it may raise
        raise _syntax_error(source, exc) from None
    m = _FIELD_READ.match(source)
    field = (m.group(1), m.group(2)) if m and len(variables) == 1 and m.group(1) in variables else None
    return Condition(source=source, program=program, variables=variables, field=field)


_FIELD_READ = re.compile(r"^\s*([A-Za-z_]\w*)\s*\.\s*([A-Za-z_]\w*)\s*$")


def make_context(variables: dict[str, Any]) -> Any:
    """Build a reusable CEL context: converting data once and evaluating many programs is ~10x faster."""
    return cel.Context(variables)


# --- type indexing -------------------------------------------------------------------------------------

_EQ = re.compile(r"""^\s*exceptionType\s*==\s*(['"])([^'"\\]+)\1\s*$""")
_EQ_REV = re.compile(r"""^\s*(['"])([^'"\\]+)\1\s*==\s*exceptionType\s*$""")
_IN = re.compile(r"""^\s*exceptionType\s+in\s*\[([^\]]*)\]\s*$""")
_LIT = re.compile(r"""^\s*(['"])([^'"\\]+)\1\s*$""")


def _split_top(source: str, op: str) -> list[str] | None:
    """Split on a top-level binary operator, respecting parentheses, brackets and string literals."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif depth == 0 and source.startswith(op, i):
            parts.append(source[start:i])
            i += len(op)
            start = i
            continue
        elif depth == 0 and ch == "?":  # a ternary at top level: do not reason about it
            return None
        i += 1
    if quote or depth:
        return None
    parts.append(source[start:])
    return parts


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        inner = text[1:-1]
        if _split_top(inner, "&&") is None:  # the parens do not enclose the whole expression
            break
        text = inner.strip()
    return text


def _types_of_atom(atom: str) -> frozenset[str] | None:
    atom = _strip_parens(atom)
    m = _EQ.match(atom) or _EQ_REV.match(atom)
    if m:
        return frozenset({m.group(2)})
    m = _IN.match(atom)
    if m:
        items = [x for x in m.group(1).split(",") if x.strip()]
        names = []
        for item in items:
            lm = _LIT.match(item)
            if not lm:
                return None
            names.append(lm.group(2))
        return frozenset(names)
    disj = _split_top(atom, "||")
    if disj is not None and len(disj) > 1:
        acc: set[str] = set()
        for d in disj:
            t = _types_of_atom(d)
            if t is None:
                return None
            acc |= t
        return frozenset(acc)
    return None


def exception_types_tested(source: str) -> frozenset[str] | None:
    """The exception types a condition can possibly match, or None when it is not restricted by type.

    Sound by construction: a type set is returned only when a top-level `&&` conjunct is an equality /
    membership test on `exceptionType` (or a disjunction of such), so the rule is false for every other type.
    """
    text = _strip_parens(source)
    disj = _split_top(text, "||")  # `||` binds looser than `&&`: each disjunct must be type-restricted
    if disj is None:
        return None
    if len(disj) > 1:
        acc: set[str] = set()
        for d in disj:
            t = exception_types_tested(d)
            if t is None:
                return None
            acc |= t
        return frozenset(acc)
    conj = _split_top(text, "&&")
    if conj is None:
        return None
    best: frozenset[str] | None = None
    for part in conj:
        t = _types_of_atom(part)
        if t is not None:
            best = t if best is None else best & t
    return best
