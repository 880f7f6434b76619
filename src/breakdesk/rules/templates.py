"""Argument templates: `${<CEL expression>}` inside strings, compiled at pack load.

A string that is exactly one `${...}` yields the expression's value with its type (a number stays a number);
otherwise each placeholder is rendered as text. `$${` writes a literal `${`. Templates nest through lists and
mappings, so a whole tool-argument object is one compiled template.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from breakdesk.rules.cel import CelSyntaxError, Condition, compile_condition


class TemplateError(ValueError):
    def __init__(self, reason: str, column: int | None = None) -> None:
        self.reason = reason
        self.column = column
        super().__init__(reason if column is None else f"{reason} (column {column})")


class RenderError(ValueError):
    """A template referenced data the exception does not have."""


def _scan(text: str) -> list[str | Condition]:
    parts: list[str | Condition] = []
    buf: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        if text.startswith("$${", i):
            buf.append("${")
            i += 3
            continue
        if text.startswith("${", i):
            start = i + 2
            j = start
            depth = 0
            quote: str | None = None
            while j < n:
                ch = text[j]
                if quote:
                    if ch == "\\":
                        j += 2
                        continue
                    if ch == quote:
                        quote = None
                elif ch in "'\"":
                    quote = ch
                elif ch == "{":
                    depth += 1
                elif ch == "}":
                    if depth == 0:
                        break
                    depth -= 1
                j += 1
            if j >= n:
                raise TemplateError("unterminated '${' placeholder", column=i + 1)
            expr = text[start:j]
            try:
                cond = compile_condition(expr)
            except CelSyntaxError as exc:
                col = None if exc.column is None else start + exc.column
                raise TemplateError(f"invalid expression in placeholder: {exc.reason}", column=col) from None
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(cond)
            i = j + 1
            continue
        buf.append(text[i])
        i += 1
    if buf:
        parts.append("".join(buf))
    return parts


_PATH = re.compile(r"^\s*[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\s*$")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template over an arbitrary JSON-like value."""

    kind: str  # "literal" | "expr" | "concat" | "list" | "map"
    value: Any
    #: For `${a.b.c}`: the field path, so callers can read plain data without building a CEL context.
    path: tuple[str, ...] | None = None

    def lookup(self, data: dict[str, Any]) -> Any:
        """Resolve a path template over plain data; raises RenderError like `render` when a field is missing."""
        path = self.path
        assert path is not None
        cur: Any = data
        for part in path:
            if not isinstance(cur, dict):
                raise RenderError(f"${{{self.value.source}}}: no such overload")
            cur = cur.get(part, _MISSING)
            if cur is _MISSING:
                raise RenderError(f"${{{self.value.source}}}: missing field {part!r}")
        return cur

    @property
    def expressions(self) -> list[Condition]:
        out: list[Condition] = []
        if self.kind == "expr":
            out.append(self.value)
        elif self.kind == "concat":
            out.extend(p for p in self.value if isinstance(p, Condition))
        elif self.kind == "list":
            for t in self.value:
                out.extend(t.expressions)
        elif self.kind == "map":
            for t in self.value.values():
                out.extend(t.expressions)
        return out

    def render(self, ctx: Any, data: dict[str, Any] | None = None) -> Any:
        """Render against a CEL context; raises RenderError naming the missing field.

        `data`, when given, holds the plain values the context was built from: `${root.key}` placeholders
        are then read from it (`Condition.value_from`), so the context need not carry what only they read."""
        if self.kind == "literal":
            return self.value
        if self.kind == "expr":
            val, err = self.value.value_from(data, ctx)
            if err:
                raise RenderError(f"${{{self.value.source}}}: {err}")
            return val
        if self.kind == "concat":
            out = []
            for part in self.value:
                if isinstance(part, str):
                    out.append(part)
                else:
                    val, err = part.value_from(data, ctx)
                    if err:
                        raise RenderError(f"${{{part.source}}}: {err}")
                    out.append(_text(val))
            return "".join(out)
        if self.kind == "list":
            return [t.render(ctx, data) for t in self.value]
        return {k: t.render(ctx, data) for k, t in self.value.items()}


def _text(val: Any) -> str:
    if val is None:
        return ""
    if isinstance(val, bool):
        return "true" if val else "false"
    if isinstance(val, list | dict):
        return json.dumps(val, default=str, separators=(",", ":"), sort_keys=True)
    return str(val)


def compile_template(value: Any) -> Template:
    """Compile a JSON-like value; raises TemplateError for malformed placeholders."""
    if isinstance(value, str):
        if "${" not in value:
            return Template("literal", value)
        parts = _scan(value)
        if len(parts) == 1 and isinstance(parts[0], Condition):
            src = parts[0].source
            path = tuple(src.strip().split(".")) if _PATH.match(src) else None
            return Template("expr", parts[0], path)
        if all(isinstance(p, str) for p in parts):
            return Template("literal", "".join(p for p in parts if isinstance(p, str)))
        return Template("concat", tuple(parts))
    if isinstance(value, list):
        items = tuple(compile_template(v) for v in value)
        if all(t.kind == "literal" for t in items):
            return Template("literal", [t.value for t in items])
        return Template("list", items)
    if isinstance(value, dict):
        entries = {str(k): compile_template(v) for k, v in value.items()}
        if all(t.kind == "literal" for t in entries.values()):
            return Template("literal", {k: t.value for k, t in entries.items()})
        return Template("map", entries)
    return Template("literal", value)
