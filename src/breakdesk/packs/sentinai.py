"""Import SentinAI domain packs and tenant packs into the native pack format.

`import_sentinai(data, source)` is a pure function: parsed SentinAI JSON in, native pack data (a dict ready to dump
as YAML or JSON) out. It accepts both SentinAI dialects — the "condition" dialect (severity rules with `condition`,
tools as a mapping with `endpoint`, playbooks keyed by `exceptionType` with `action` steps, `testSuites` of
input/expectedOutput) and the alternative dialect (severity rules with `if`, tools grouped by category with
`argsSchema`, playbooks with `playbookId`/`appliesTo` and prose steps, suites of cases) — and tells a domain pack
(it has `exceptionTypes`) from a tenant pack (it has `tenantId`).

Every problem is reported with the source file and the JSON path *in the SentinAI file*; the result is then
checked by the native schema and, for a domain pack, by the full compiler (`compile_domain`), so a returned domain
pack always compiles (what is left is reported against `<file> (as imported)` with the native path). A tenant
policy's references are checked against its domain later (`breakdesk pack validate DOMAIN TENANT`). The only
exception raised is `SentinaiImportError` (a `PackError`).

Mapping decisions
-----------------
* Nothing is dropped silently. A SentinAI key with a native home is mapped; any other key is kept verbatim as an
  `x-sentinai-<key>` extension next to where it was (the native loader ignores `x-` keys). Keys already starting
  with `x-` are kept as they are. Inconsistent source data (e.g. test expectations no rule can produce) is kept
  as-is for the native test runner to report.
* CEL: SentinAI conditions (`condition` / `if`) are CEL already; they are kept and must compile.
  `normalizedContext.<f>` read by a condition or a step argument gets an intake mapping `f: ${rawPayload.f}`.
* Entities: `attributes {type, required}` map 1:1 (type aliases such as `int`, `float`, `list` are translated);
  the alternative dialect's `fields` list becomes attributes with the native default type (the source has none).
* Tools: `endpoint` → `url` with method POST; `parameters {p: {type, required}}` and `argsSchema {p: 'string'}`
  → a JSON Schema `{type: object, properties, required, additionalProperties: false}` (`'T[]'` → array of T,
  `date`/`datetime` → string with a format). `argsSchema` reads like a TypeScript signature, so every argument is
  required unless marked optional with `?`. Grouped tools get `category` = the group and `effect` = `read` for
  `dbQueries`, `write` otherwise. A tool whose effect the source does not state imports as `write` (fail-safe:
  approval rules keyed on write effects still apply to it). `returns` has no exact native home
  (`x-sentinai-returns`).
* Playbooks: ids are kept (`playbookId`) or generated as `PB_<EXCEPTION_TYPE>`; `match.types` come from
  `exceptionType` / `appliesTo`. The SentinAI `approved` flag has no native home (approval lives in tenant
  policies) and is kept as `x-sentinai-approved`. A prose step that names tools of the pack becomes one tool step
  per tool named, in order (case-insensitive when unambiguous and the word is written as a call or looks like an
  identifier, so "OpenCase('X')" finds `openCase` but the English word "notify" never finds a tool `Notify`).
  Arguments: a call written in the prose, `tool('LIT', field)`, binds its arguments by position — a quoted literal
  as is, a name as `${normalizedContext.<name>}`; every other required parameter gets
  `${normalizedContext.<param>}`. A step naming no tool becomes a manual step (description only).
* Conditional prose ("If …: …", "When …", "Unless …"): no CEL is invented for a prose condition. The prose is kept
  in `description`, `when` stays unset and the step is marked `requiresApproval: true`, so a human decides whether
  the condition holds before the step runs.
* Domain guardrails: `blockLists` → `blockedTools`, `requireHumanApprovalFor` → `requireApprovalForTypes`,
  `noAutoActionIfSeverityIn` / `escalateIfConfidenceBelow` / `maxAutoRetries` 1:1; `allowLists`,
  `humanApprovalThreshold` (approval lives in tenant policies) and `autoActionAllowedOnlyForApprovedPlaybooks`
  have no native domain home and are kept as `x-sentinai-*` keys.
* Tenant packs: `domainName` → `domain.name` (or the `domain_name` argument when the source names none) with the
  given version range (default `^1.0.0`); `approvedTools` and `toolsAllowList` (flattened) → `tools.allow`;
  `humanApprovalThreshold` → approval rule `{confidenceBelow: X}`; `humanApprovalRules` → approval rules by
  severity (those with `requireApproval: false` are kept as inert native rules); `requireHumanApprovalFor` →
  `guardrails.requireApprovalForTypes`; `approvedBusinessProcesses` → `approvedPlaybooks`; severity overrides
  (list or map) → `severityOverrides`; `routingRules` → notification routes (`if` → `condition`,
  `assignGroup` → `group`, channels and recipients from `notificationPolicies`); `retentionPolicies.dataTTL`
  (days) → `retention.days`. `environment`, `escalationQueue`, `agingThresholds`, `customPlaybooks`… → `x-` keys.
  SentinAI condition-dialect tenants approve no playbooks explicitly; the imported policy then approves none
  (a person handles every case until `approvedPlaybooks` is filled in) — the import notes say so.
* Test suites → native `tests`: names from `caseId` (or `testSuites[i]`), expectations (`exceptionType`,
  `severity`, playbook) mapped; a case with only an input type gets an empty `rawPayload`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import jsonschema

from breakdesk.domain.models import Severity
from breakdesk.packs.compiler import compile_domain
from breakdesk.packs.loader import model_from_data
from breakdesk.packs.problems import PackError, PackProblem, json_path
from breakdesk.packs.schema import NAME, SEMVER, TYPE_NAME, DomainPack, Effect, HttpMethod
from breakdesk.packs.versions import parse_range
from breakdesk.rules.cel import CelSyntaxError, compile_condition

__all__ = [
    "SentinaiImport",
    "SentinaiImportError",
    "convert_sentinai",
    "detect_sentinai_kind",
    "import_sentinai",
]

Kind = Literal["domain", "tenant"]
Loc = tuple[Any, ...]

MAX_DEPTH = 64
_NAME = re.compile(NAME)
_TYPE_NAME = re.compile(TYPE_NAME)
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CTX_REF = re.compile(r"\bnormalizedContext\.([A-Za-z_][A-Za-z0-9_]*)")
_CONDITIONAL = re.compile(r"^\s*(?:if|when|unless|only\s+if|in\s+case)\b", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_WORD = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]*")
_IDENT_LIKE = re.compile(r"[a-z][A-Z]|_|\d")
_TTL_DAYS = re.compile(r"^\s*(\d+)\s*(?:d|days?)?\s*$", re.IGNORECASE)
_SENTINAI_PLACEHOLDER = re.compile(r"\$\{\s*exception\.")
_SEVERITY_NAMES = ", ".join(s.value for s in Severity)

#: Type names in SentinAI parameter/argument declarations → JSON Schema.
_JSON_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "str": {"type": "string"},
    "text": {"type": "string"},
    "number": {"type": "number"},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "decimal": {"type": "number"},
    "integer": {"type": "integer"},
    "int": {"type": "integer"},
    "long": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "bool": {"type": "boolean"},
    "object": {"type": "object"},
    "dict": {"type": "object"},
    "map": {"type": "object"},
    "json": {"type": "object"},
    "array": {"type": "array"},
    "list": {"type": "array"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "date-time": {"type": "string", "format": "date-time"},
    "timestamp": {"type": "string", "format": "date-time"},
    "null": {"type": "null"},
    "any": {},
}
#: Entity attribute type names → native AttributeType values.
_ATTR_TYPES: dict[str, str] = {
    "string": "string", "str": "string", "text": "string",
    "number": "number", "float": "number", "double": "number", "decimal": "number",
    "integer": "integer", "int": "integer", "long": "integer",
    "boolean": "boolean", "bool": "boolean",
    "array": "array", "list": "array",
    "object": "object", "dict": "object", "map": "object", "json": "object",
    "date": "date",
    "datetime": "datetime", "date-time": "datetime", "timestamp": "datetime",
}  # fmt: skip
#: JSON Schema keywords a SentinAI parameter declaration may carry through unchanged.
_SCHEMA_KEYWORDS = frozenset(
    {
        "description", "enum", "const", "default", "format", "items", "properties", "additionalProperties",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
        "minItems", "maxItems", "uniqueItems", "title", "examples",
    }
)  # fmt: skip


class SentinaiImportError(PackError):
    """The SentinAI input cannot be imported; `problems` name the file, JSON path and reason of each issue."""


@dataclass(frozen=True)
class SentinaiImport:
    """The result of an import: the native pack data and notes worth telling the person importing it."""

    kind: Kind
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------- helpers


def _kind_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shape_problems(data: Any, source: str) -> list[PackProblem]:
    """Bound nesting (without recursion) and reject non-string keys (YAML allows them; packs are JSON-shaped)."""
    problems: list[PackProblem] = []
    stack: list[tuple[Any, int, Loc]] = [(data, 0, ())]
    while stack and len(problems) < 20:
        item, depth, loc = stack.pop()
        if depth > MAX_DEPTH:
            return [PackProblem(source, "$", f"document is nested deeper than {MAX_DEPTH} levels")]
        if isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str):
                    stack.append((v, depth + 1, (*loc, k)))
                else:
                    problems.append(PackProblem(source, json_path(loc), f"key {k!r} is not a string"))
        elif isinstance(item, list):
            stack.extend((v, depth + 1, (*loc, i)) for i, v in enumerate(item))
        elif isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**64:
            problems.append(
                PackProblem(source, json_path(loc), "integer is out of the 64-bit range packs support")
            )
    return problems


@lru_cache(maxsize=4096)
def _field_ok(name: str) -> bool:
    """Can `name` be a normalizedContext field (an intake.fields key usable as `normalizedContext.<name>`)?"""
    if not (_FIELD.match(name) and len(name) <= 128):
        return False
    try:
        compile_condition(f"normalizedContext.{name}")
        compile_condition(f"rawPayload.{name}")
    except CelSyntaxError:
        return False  # a CEL reserved word such as `in`
    return True


def _escape_template(text: str) -> str:
    return text.replace("${", "$${")


def _translate_placeholders(value: Any) -> Any:
    """SentinAI writes `${exception.normalizedContext.x}`; natively the exception is the root: `${normalizedContext.x}`."""
    if isinstance(value, str):
        return _SENTINAI_PLACEHOLDER.sub("${", value)
    if isinstance(value, list):
        return [_translate_placeholders(v) for v in value]
    if isinstance(value, dict):
        return {k: _translate_placeholders(v) for k, v in value.items()}
    return value


def _strings(value: Any) -> list[str]:
    out: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return out


class _Conv:
    """Collects problems (with SentinAI-side JSON paths) and notes while converting."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[PackProblem] = []
        self.notes: list[str] = []
        self.implicit_write: list[str] = []

    def add(self, loc: Loc, reason: str) -> None:
        self.problems.append(PackProblem(self.source, json_path(loc), reason))

    def obj(self, value: Any, loc: Loc, what: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            bad = [k for k in value if not isinstance(k, str)]
            for k in bad:
                self.add(loc, f"{what} has a non-string key {k!r}")
            return None if bad else value
        self.add(loc, f"{what} must be an object, got {_kind_name(value)}")
        return None

    def lst(self, value: Any, loc: Loc, what: str) -> list[Any] | None:
        if isinstance(value, list):
            return value
        self.add(loc, f"{what} must be a list, got {_kind_name(value)}")
        return None

    def text(self, value: Any, loc: Loc, what: str) -> str | None:
        if isinstance(value, str):
            return value
        self.add(loc, f"{what} must be a string, got {_kind_name(value)}")
        return None

    def texts(self, value: Any, loc: Loc, what: str) -> list[str]:
        items = self.lst(value, loc, what)
        if items is None:
            return []
        out = []
        for i, v in enumerate(items):
            t = self.text(v, (*loc, i), f"each entry of {what}")
            if t is not None:
                out.append(t)
        return out

    def flag(self, value: Any, loc: Loc, what: str) -> bool | None:
        if isinstance(value, bool):
            return value
        self.add(loc, f"{what} must be true or false, got {_kind_name(value)}")
        return None

    def ratio(self, value: Any, loc: Loc, what: str) -> float | None:
        if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
            return float(value)
        self.add(loc, f"{what} must be a number between 0 and 1, got {value!r}"[:300])
        return None

    def count(self, value: Any, loc: Loc, what: str, high: int) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high:
            return value
        self.add(loc, f"{what} must be a whole number from 0 to {high}, got {value!r}"[:300])
        return None

    def name(self, value: Any, loc: Loc, what: str, pattern: re.Pattern[str] = _NAME) -> str | None:
        if not isinstance(value, str):
            self.add(loc, f"{what} must be a string, got {_kind_name(value)}")
            return None
        if not pattern.match(value):
            self.add(
                loc,
                f"{what} {value[:80]!r} is not a valid name (a letter, then up to 127 letters, digits, '_', '.', '-')",
            )
            return None
        return value

    def severity(self, value: Any, loc: Loc) -> str | None:
        if isinstance(value, str) and value.strip().upper() in Severity.__members__:
            return value.strip().upper()
        self.add(loc, f"unknown severity {value!r} (expected one of {_SEVERITY_NAMES})"[:300])
        return None

    def severities(self, value: Any, loc: Loc, what: str) -> list[str]:
        items = self.lst(value, loc, what)
        out: list[str] = []
        for i, v in enumerate(items or []):
            s = self.severity(v, (*loc, i))
            if s is not None:
                out.append(s)
        return out

    def cel(self, value: Any, loc: Loc) -> str | None:
        if not isinstance(value, str):
            self.add(loc, f"a condition must be a CEL expression string, got {_kind_name(value)}")
            return None
        try:
            compile_condition(value)
        except CelSyntaxError as exc:
            self.add(loc, str(exc))
            return None
        return value

    def keep(self, src: dict[str, Any], handled: set[str] | frozenset[str], target: dict[str, Any]) -> None:
        """Carry every key of `src` not in `handled` into `target` as an `x-sentinai-<key>` extension."""
        for k, v in src.items():
            if k in handled or not isinstance(k, str):
                continue
            target[k if k.startswith("x-") else f"x-sentinai-{k}"] = v


# ------------------------------------------------------------------------------------------------ kinds


def detect_sentinai_kind(data: Any, source: str = "<sentinai>") -> Kind:
    """'domain' (has exceptionTypes) or 'tenant' (has tenantId); raises SentinaiImportError otherwise."""
    c = _Conv(source)
    if not isinstance(data, dict):
        c.add((), f"a SentinAI pack must be a JSON object, got {_kind_name(data)}")
    elif data.get("kind") in ("DomainPack", "TenantPolicy"):
        c.add(("kind",), f"this is already a native {data['kind']}; there is nothing to import")
    elif "exceptionTypes" in data and "tenantId" in data:
        c.add(
            (),
            "ambiguous: the object has both 'exceptionTypes' (a domain pack) and 'tenantId' (a tenant pack)",
        )
    elif "exceptionTypes" in data:
        return "domain"
    elif "tenantId" in data:
        return "tenant"
    else:
        keys = ", ".join(repr(k) for k in list(data)[:8]) or "none"
        c.add(
            (),
            "not a SentinAI pack: a domain pack has 'exceptionTypes', a tenant pack has 'tenantId' "
            f"(keys found: {keys})"[:400],
        )
    raise SentinaiImportError(c.problems)


# ------------------------------------------------------------------------------------------- domain pack


@dataclass
class _ToolInfo:
    props: list[str]
    required: list[str]


class _ToolIndex:
    def __init__(self, tools: dict[str, _ToolInfo]) -> None:
        self.tools = tools
        self.lower: dict[str, list[str]] = {}
        for name in tools:
            self.lower.setdefault(name.lower(), []).append(name)

    def resolve(self, word: str, is_call: bool) -> str | None:
        if word in self.tools:
            return word
        candidates = self.lower.get(word.lower(), [])
        if len(candidates) == 1 and (is_call or _IDENT_LIKE.search(word)):
            return candidates[0]
        return None


@dataclass
class _CallArg:
    literal: str | None = None
    ident: str | None = None


def _call_args(text: str, start: int) -> list[_CallArg] | None:
    """Arguments of a call written in prose, `name(...)`, when `text[start:]` begins (after spaces) with '('."""
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "(":
        return None
    depth = 0
    quote: str | None = None
    parts: list[str] = []
    buf: list[str] = []
    j = i + 1
    while j < len(text):
        ch = text[j]
        if quote:
            buf.append(ch)
            if ch == "\\" and j + 1 < len(text):
                buf.append(text[j + 1])
                j += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            buf.append(ch)
        elif ch in "([{":
            depth += 1
            buf.append(ch)
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
            buf.append(ch)
        elif ch == "," and depth == 0:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        j += 1
    else:
        return None  # no closing parenthesis: not a call
    parts.append("".join(buf))
    args: list[_CallArg] = []
    for raw in parts:
        p = raw.strip()
        if not p and len(parts) == 1:
            return []
        if len(p) >= 2 and p[0] == p[-1] and p[0] in "'\"" and _QUOTED.fullmatch(p):
            args.append(_CallArg(literal=re.sub(r"\\(.)", r"\1", p[1:-1])))
        elif _FIELD.fullmatch(p):
            args.append(_CallArg(ident=p))
        else:
            args.append(_CallArg())
    return args


def _mentions(text: str, index: _ToolIndex) -> list[tuple[str, list[_CallArg] | None]]:
    """Tools named in a prose step, in order of first mention, each with the call arguments written next to it."""
    masked = _QUOTED.sub(lambda m: " " * len(m.group()), text)
    out: list[tuple[str, list[_CallArg] | None]] = []
    seen: set[str] = set()
    for m in _WORD.finditer(masked):
        word = m.group()
        args = _call_args(text, m.end())
        tool = index.resolve(word, args is not None)
        if tool is None or tool in seen:
            continue
        seen.add(tool)
        out.append((tool, args))
    return out


def _schema_of(c: _Conv, spec: Any, loc: Loc, entities: set[str]) -> dict[str, Any] | None:
    if not isinstance(spec, str):
        c.add(loc, f"a type must be a string, got {_kind_name(spec)}")
        return None
    t = spec.strip()
    if t.endswith("[]"):
        inner = _schema_of(c, t[:-2], loc, entities)
        return None if inner is None else {"type": "array", "items": inner}
    known = _JSON_TYPES.get(t.lower())
    if known is not None:
        return dict(known)
    if t in entities:
        return {"type": "object", "x-sentinai-type": t}
    c.add(
        loc,
        f"unsupported type {spec[:60]!r} (expected string, number, integer, boolean, object, array, date, "
        "datetime, an entity name or T[])",
    )
    return None


def _checked_schema(c: _Conv, schema: dict[str, Any], loc: Loc) -> dict[str, Any] | None:
    """Check a JSON Schema given verbatim; the validator library can raise more than SchemaError on garbage."""
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        c.add((*loc, *exc.path), f"invalid JSON Schema: {exc.message}"[:300])
        return None
    except Exception as exc:  # e.g. TypeError for an unhashable $schema
        c.add(loc, f"invalid JSON Schema: {exc}"[:300])
        return None
    return schema


def _parameters(
    c: _Conv, value: Any, loc: Loc, entities: set[str], typescript: bool
) -> dict[str, Any] | None:
    """SentinAI parameter declarations → a JSON Schema of the arguments object."""
    params = c.obj(value, loc, "parameters")
    if params is None:
        return None
    if params.get("type") == "object" and isinstance(params.get("properties"), dict):
        return _checked_schema(c, dict(params), loc)  # already a JSON Schema
    props: dict[str, Any] = {}
    required: list[str] = []
    for raw_name, spec in params.items():
        ploc = (*loc, raw_name)
        pname = raw_name[:-1] if raw_name.endswith("?") else raw_name
        optional = raw_name.endswith("?")
        if not pname:
            c.add(ploc, "empty parameter name")
            continue
        if pname in props:
            c.add(ploc, f"parameter {pname!r} is declared twice")
            continue
        if isinstance(spec, str):
            if spec.strip().endswith("?"):
                optional, spec = True, spec.strip()[:-1]
            schema = _schema_of(c, spec, ploc, entities)
            if schema is None:
                continue
            props[pname] = schema
            if typescript and not optional:
                required.append(pname)
            continue
        pspec = c.obj(spec, ploc, f"parameter {pname!r}")
        if pspec is None:
            continue
        schema = {}
        if "type" in pspec:
            typed = _schema_of(c, pspec["type"], (*ploc, "type"), entities)
            if typed is None:
                continue
            schema.update(typed)
        for k, v in pspec.items():
            if k in ("type", "required"):
                continue
            schema[k if k in _SCHEMA_KEYWORDS or k.startswith("x-") else f"x-sentinai-{k}"] = v
        props[pname] = schema
        req = pspec.get("required", False)
        if c.flag(req, (*ploc, "required"), "required") and not optional:
            required.append(pname)
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    return out


_TOOL_KEYS = frozenset(
    {"name", "description", "parameters", "argsSchema", "endpoint", "url", "method", "effect", "category",
     "idempotent", "timeoutSeconds", "retries", "output"}
)  # fmt: skip


def _tool(
    c: _Conv, spec: dict[str, Any], loc: Loc, category: str | None, entities: set[str]
) -> tuple[dict[str, Any], _ToolInfo] | None:
    before = len(c.problems)
    out: dict[str, Any] = {}
    if "description" in spec:
        d = c.text(spec["description"], (*loc, "description"), "description")
        if d is not None:
            out["description"] = d
    effect = spec.get("effect")
    if effect is not None:
        if effect not in (e.value for e in Effect):
            c.add((*loc, "effect"), f"effect must be 'read' or 'write', got {effect!r}"[:200])
        out["effect"] = effect
    elif category is not None:
        out["effect"] = "read" if category == "dbQueries" else "write"
    else:
        out["effect"] = "write"
        c.implicit_write.append(str(loc[-1]))
    url = spec.get("endpoint", spec.get("url"))
    url_key = "endpoint" if "endpoint" in spec else "url"
    if "endpoint" in spec and "url" in spec and spec["endpoint"] != spec["url"]:
        c.add((*loc, "url"), "both 'endpoint' and 'url' are given and differ")
    if url is not None:
        u = c.text(url, (*loc, url_key), url_key)
        if u is not None:
            if not re.match(r"^https?://", u):
                c.add((*loc, url_key), f"{url_key} must be an http:// or https:// URL, got {u[:80]!r}")
            out["url"] = u
    method = spec.get("method")
    if method is not None:
        m = method.upper() if isinstance(method, str) else method
        if m not in (h.value for h in HttpMethod):
            c.add((*loc, "method"), f"unsupported HTTP method {method!r}"[:200])
        out["method"] = m
    elif "url" in out:
        out["method"] = "POST"
    schema: dict[str, Any] | None = {"type": "object", "properties": {}, "additionalProperties": False}
    if "parameters" in spec and "argsSchema" in spec:
        c.add(loc, "both 'parameters' and 'argsSchema' are given")
    elif "parameters" in spec:
        schema = _parameters(c, spec["parameters"], (*loc, "parameters"), entities, typescript=False)
    elif "argsSchema" in spec:
        schema = _parameters(c, spec["argsSchema"], (*loc, "argsSchema"), entities, typescript=True)
    if schema is not None:
        out["parameters"] = schema
    for k in ("idempotent", "timeoutSeconds", "retries"):
        if k in spec:
            out[k] = spec[k]
    if "output" in spec:
        o = c.obj(spec["output"], (*loc, "output"), "output")
        if o is not None and _checked_schema(c, o, (*loc, "output")) is not None:
            out["output"] = o
    cat = spec.get("category", category)
    if cat is not None:
        out["category"] = cat
    c.keep(spec, _TOOL_KEYS, out)
    if len(c.problems) > before or schema is None:
        return None
    props = schema.get("properties")
    req = schema.get("required")
    info = _ToolInfo(
        props=[p for p in props if isinstance(p, str)] if isinstance(props, dict) else [],
        required=[r for r in req if isinstance(r, str)] if isinstance(req, list) else [],
    )
    return out, info


def _tools(c: _Conv, value: Any, entities: set[str]) -> tuple[dict[str, Any], dict[str, _ToolInfo]]:
    tools: dict[str, Any] = {}
    infos: dict[str, _ToolInfo] = {}
    origin: dict[str, Loc] = {}

    def add(tname: Any, spec: Any, loc: Loc, category: str | None) -> None:
        s = c.obj(spec, loc, "a tool")
        if s is None:
            return
        name = c.name(tname, loc if category is None else (*loc, "name"), "tool name")
        if name is None:
            return
        if name in origin:
            c.add(loc, f"tool {name!r} is already defined at {json_path(origin[name])}")
            return
        origin[name] = loc
        made = _tool(c, s, loc, category, entities)
        if made is not None:
            tools[name], infos[name] = made

    if isinstance(value, list):  # a flat list of {name, ...}
        for i, spec in enumerate(value):
            add(spec.get("name") if isinstance(spec, dict) else None, spec, ("tools", i), None)
        return tools, infos
    groups = c.obj(value, ("tools",), "tools")
    for key, spec in (groups or {}).items():
        if isinstance(spec, list):  # grouped by category: {dbQueries: [{name, ...}], apiActions: [...]}
            for i, item in enumerate(spec):
                add(item.get("name") if isinstance(item, dict) else None, item, ("tools", key, i), key)
        else:
            add(key, spec, ("tools", key), None)
    return tools, infos


_ENTITY_KEYS = frozenset({"description", "keys", "attributes", "fields", "relations"})


def _entities(c: _Conv, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    src = c.obj(value, ("entities",), "entities") or {}
    for ename, spec in src.items():
        loc: Loc = ("entities", ename)
        if c.name(ename, loc, "entity name") is None:
            continue
        e = c.obj(spec, loc, f"entity {ename!r}")
        if e is None:
            continue
        ent: dict[str, Any] = {}
        if "description" in e:
            d = c.text(e["description"], (*loc, "description"), "description")
            if d is not None:
                ent["description"] = d
        attrs: dict[str, Any] = {}
        if "attributes" in e:
            for aname, aspec in (c.obj(e["attributes"], (*loc, "attributes"), "attributes") or {}).items():
                aloc = (*loc, "attributes", aname)
                if isinstance(aspec, str):
                    aspec = {"type": aspec}
                a = c.obj(aspec, aloc, f"attribute {aname!r}")
                if a is None:
                    continue
                attr: dict[str, Any] = {}
                if "type" in a:
                    t = a["type"]
                    key = t.strip().lower() if isinstance(t, str) else None
                    if key is not None and key.endswith("[]"):
                        key = "array"
                    if key not in _ATTR_TYPES:
                        c.add((*aloc, "type"), f"unsupported attribute type {t!r}"[:200])
                        continue
                    attr["type"] = _ATTR_TYPES[key]
                    if isinstance(t, str) and t.strip().endswith("[]"):
                        attr["x-sentinai-type"] = t  # the item type has no native home
                if "required" in a:
                    r = c.flag(a["required"], (*aloc, "required"), "required")
                    if r is not None:
                        attr["required"] = r
                if "description" in a:
                    attr["description"] = a["description"]
                c.keep(a, {"type", "required", "description"}, attr)
                attrs[aname] = attr
        if "fields" in e:
            for i, f in enumerate(c.texts(e["fields"], (*loc, "fields"), "fields")):
                if f in attrs:
                    c.add((*loc, "fields", i), f"field {f!r} is declared twice")
                attrs.setdefault(f, {})
        keys = c.texts(e["keys"], (*loc, "keys"), "keys") if "keys" in e else []
        for i, k in enumerate(keys):
            if attrs and k not in attrs:
                c.add((*loc, "keys", i), f"key {k!r} is not a field of {ename}")
        if keys:
            ent["keys"] = keys
        if attrs:
            ent["attributes"] = attrs
        if "relations" in e:
            rels = c.texts(e["relations"], (*loc, "relations"), "relations")
            for i, rel in enumerate(rels):
                if rel not in src:
                    c.add((*loc, "relations", i), f"unknown entity {rel!r}")
            ent["relations"] = rels
        c.keep(e, _ENTITY_KEYS, ent)
        out[ename] = ent
    return out


_TYPE_KEYS = frozenset(
    {"name", "description", "detectionRules", "defaultSeverity", "tags", "parent", "fingerprintFields",
     "rootCauseHint", "entities"}
)  # fmt: skip


def _exception_types(c: _Conv, value: Any, entities: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    src = c.obj(value, ("exceptionTypes",), "exceptionTypes")
    if src is None:
        return out
    if not src:
        c.add(("exceptionTypes",), "a domain pack needs at least one exception type")
    for tname, spec in src.items():
        loc: Loc = ("exceptionTypes", tname)
        if c.name(tname, loc, "exception type", _TYPE_NAME) is None:
            continue
        t = c.obj(spec, loc, f"exception type {tname!r}")
        if t is None:
            continue
        et: dict[str, Any] = {}
        if "description" in t:
            d = c.text(t["description"], (*loc, "description"), "description")
            if d is not None:
                et["description"] = d
        if "parent" in t:
            p = c.name(t["parent"], (*loc, "parent"), "parent", _TYPE_NAME)
            if p is not None and p not in src:
                c.add((*loc, "parent"), f"unknown parent exception type {p!r}")
            et["parent"] = p
        if "defaultSeverity" in t:
            et["defaultSeverity"] = c.severity(t["defaultSeverity"], (*loc, "defaultSeverity"))
        if "detectionRules" in t:
            det = []
            for j, rule in enumerate(
                c.lst(t["detectionRules"], (*loc, "detectionRules"), "detectionRules") or []
            ):
                rloc = (*loc, "detectionRules", j)
                if isinstance(rule, str):
                    rule = {"condition": rule}
                r = c.obj(rule, rloc, "a detection rule")
                if r is None:
                    continue
                key = "condition" if "condition" in r else "if"
                cond = c.cel(r.get(key), (*rloc, key))
                d_out: dict[str, Any] = {"condition": cond}
                if "id" in r:
                    d_out["id"] = r["id"]
                if "confidence" in r:
                    d_out["confidence"] = c.ratio(r["confidence"], (*rloc, "confidence"), "confidence")
                c.keep(r, {"condition", "if", "id", "confidence"}, d_out)
                det.append(d_out)
            if det:
                et["detection"] = det
        for k in ("tags", "fingerprintFields", "entities"):
            if k in t:
                et[k] = c.texts(t[k], (*loc, k), k)
        for j, e in enumerate(et.get("entities", [])):
            if e not in entities:
                c.add((*loc, "entities", j), f"unknown entity {e!r}")
        if "rootCauseHint" in t:
            et["rootCauseHint"] = c.text(t["rootCauseHint"], (*loc, "rootCauseHint"), "rootCauseHint")
        if "name" in t and t["name"] != tname:
            et["x-sentinai-name"] = t["name"]  # equal to the key it is redundant; different, it is kept
        c.keep(t, _TYPE_KEYS, et)
        out[tname] = et
    return out


def _severity_rules(c: _Conv, value: Any, types: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, spec in enumerate(c.lst(value, ("severityRules",), "severityRules") or []):
        loc: Loc = ("severityRules", i)
        r = c.obj(spec, loc, "a severity rule")
        if r is None:
            continue
        if "condition" in r and "if" in r:
            c.add(loc, "both 'condition' and 'if' are given")
            continue
        key = "if" if "if" in r else "condition"
        if key not in r:
            c.add(loc, "a severity rule needs a 'condition' (or 'if')")
            continue
        rule: dict[str, Any] = {}
        if "id" in r:
            rule["id"] = c.name(r["id"], (*loc, "id"), "rule id")
        rule["condition"] = c.cel(r[key], (*loc, key))
        rule["severity"] = c.severity(r.get("severity"), (*loc, "severity"))
        if "description" in r:
            rule["description"] = c.text(r["description"], (*loc, "description"), "description")
        c.keep(r, {"id", "condition", "if", "severity", "description"}, rule)
        out.append(rule)
    return out


def _prose_steps(
    c: _Conv,
    prose: str,
    explicit: dict[str, Any] | None,
    extra: dict[str, Any],
    index: _ToolIndex,
    infos: dict[str, _ToolInfo],
) -> list[dict[str, Any]]:
    """One SentinAI step (prose + optional explicit parameters) → native steps."""
    conditional = bool(_CONDITIONAL.match(prose))
    steps: list[dict[str, Any]] = []
    unused = dict(explicit or {})
    for tool, call in _mentions(prose, index):
        info = infos[tool]
        args: dict[str, Any] = {}
        for pos, arg in enumerate(call or []):
            if pos >= len(info.props):
                break
            param = info.props[pos]
            if arg.literal is not None:
                args[param] = _escape_template(arg.literal)
            elif arg.ident is not None and _field_ok(arg.ident):
                args[param] = f"${{normalizedContext.{arg.ident}}}"
        for k in list(unused):
            if k in info.props:
                args[k] = _translate_placeholders(unused.pop(k))
        missing = [p for p in info.required if p not in args and not _field_ok(p)]
        if missing:
            c.notes.append(
                f"step {prose[:60]!r}: tool {tool} needs parameter(s) {', '.join(map(repr, missing))} that cannot "
                "be a normalizedContext field; kept as a manual step"
            )
            continue
        for p in info.required:
            args.setdefault(p, f"${{normalizedContext.{p}}}")
        step: dict[str, Any] = {"description": prose, "tool": tool}
        if args:
            step["args"] = args
        if conditional:
            step["requiresApproval"] = True
        steps.append(step)
    if not steps:
        step = {"description": prose}
        if conditional:
            step["requiresApproval"] = True
        steps.append(step)
    if unused:
        steps[0]["x-sentinai-parameters"] = unused
    for k, v in extra.items():
        steps[0][k] = v
    return steps


_PLAYBOOK_KEYS = frozenset(
    {"playbookId", "id", "name", "description", "exceptionType", "exceptionTypes", "appliesTo", "approved",
     "steps", "successCriteria", "condition", "if", "priority"}
)  # fmt: skip


def _playbooks(
    c: _Conv, value: Any, types: dict[str, Any], index: _ToolIndex, infos: dict[str, _ToolInfo]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ids: dict[str, int] = {}
    for i, spec in enumerate(c.lst(value, ("playbooks",), "playbooks") or []):
        loc: Loc = ("playbooks", i)
        p = c.obj(spec, loc, "a playbook")
        if p is None:
            continue
        match_types: list[str] = []
        for key in ("exceptionType", "exceptionTypes", "appliesTo"):
            if key not in p:
                continue
            raw = p[key]
            listed = [raw] if isinstance(raw, str) else c.texts(raw, (*loc, key), key)
            for j, t in enumerate(listed):
                tloc = (*loc, key) if isinstance(raw, str) else (*loc, key, j)
                if t not in types:
                    c.add(tloc, f"unknown exception type {t!r}"[:200])
                elif t not in match_types:
                    match_types.append(t)
        if not any(k in p for k in ("exceptionType", "exceptionTypes", "appliesTo")):
            c.add(loc, "a playbook needs 'exceptionType' (or 'appliesTo')")
        elif not match_types and not any(pr.path.startswith(json_path(loc)) for pr in c.problems):
            c.add(loc, "a playbook needs at least one exception type")
        id_key = "playbookId" if "playbookId" in p else "id" if "id" in p else None
        if id_key is not None:
            pid = c.name(p[id_key], (*loc, id_key), "playbook id")
        elif match_types:
            pid = f"PB_{match_types[0]}"
            ids[pid] = ids.get(pid, 0) + 1
            if ids[pid] > 1:
                pid = f"{pid}_{ids[pid]}"
        else:
            pid = None
        pb: dict[str, Any] = {"id": pid}
        if "description" in p:
            pb["description"] = c.text(p["description"], (*loc, "description"), "description")
        elif "name" in p:
            pb["description"] = c.text(p["name"], (*loc, "name"), "name")
        match: dict[str, Any] = {"types": match_types}
        if "condition" in p or "if" in p:
            key = "if" if "if" in p else "condition"
            match["condition"] = c.cel(p[key], (*loc, key))
        if "priority" in p:
            if isinstance(p["priority"], int) and not isinstance(p["priority"], bool):
                match["priority"] = p["priority"]
            else:
                c.add((*loc, "priority"), f"priority must be a whole number, got {_kind_name(p['priority'])}")
        pb["match"] = match
        steps: list[dict[str, Any]] = []
        raw_steps = c.lst(p.get("steps"), (*loc, "steps"), "steps")
        if raw_steps is not None and not raw_steps:
            c.add((*loc, "steps"), "a playbook needs at least one step")
        for k, st in enumerate(raw_steps or []):
            sloc = (*loc, "steps", k)
            if isinstance(st, str):
                steps.extend(_prose_steps(c, st, None, {}, index, infos))
                continue
            s = c.obj(st, sloc, "a step")
            if s is None:
                continue
            key = "action" if "action" in s else "description"
            prose = c.text(s.get(key), (*sloc, key), "a step's action")
            if prose is None:
                continue
            explicit = c.obj(s.get("parameters", {}), (*sloc, "parameters"), "parameters")
            extra: dict[str, Any] = {}
            if key == "action" and "description" in s and s["description"] != prose:
                extra["x-sentinai-description"] = s["description"]
            c.keep(s, {"action", "description", "parameters"}, extra)
            steps.extend(_prose_steps(c, prose, explicit, extra, index, infos))
        pb["steps"] = steps
        if "successCriteria" in p:
            pb["successCriteria"] = c.texts(
                p["successCriteria"], (*loc, "successCriteria"), "successCriteria"
            )
        if "approved" in p:
            pb["x-sentinai-approved"] = p["approved"]
        if "name" in p and "description" in p:
            pb["x-sentinai-name"] = p["name"]
        c.keep(p, _PLAYBOOK_KEYS, pb)
        out.append(pb)
    return out


def _domain_guardrails(c: _Conv, value: Any, types: dict[str, Any], tools: dict[str, Any]) -> dict[str, Any]:
    g = c.obj(value, ("guardrails",), "guardrails")
    out: dict[str, Any] = {}
    if g is None:
        return out
    loc: Loc = ("guardrails",)
    if "blockLists" in g:
        out["blockedTools"] = c.texts(g["blockLists"], (*loc, "blockLists"), "blockLists")
        for i, t in enumerate(out["blockedTools"]):
            if t not in tools:
                c.add((*loc, "blockLists", i), f"unknown tool {t!r}")
    if "requireHumanApprovalFor" in g:
        out["requireApprovalForTypes"] = c.texts(
            g["requireHumanApprovalFor"], (*loc, "requireHumanApprovalFor"), "requireHumanApprovalFor"
        )
        for i, t in enumerate(out["requireApprovalForTypes"]):
            if t not in types:
                c.add((*loc, "requireHumanApprovalFor", i), f"unknown exception type {t!r}")
    if "noAutoActionIfSeverityIn" in g:
        out["noAutoActionIfSeverityIn"] = c.severities(
            g["noAutoActionIfSeverityIn"], (*loc, "noAutoActionIfSeverityIn"), "noAutoActionIfSeverityIn"
        )
    if "escalateIfConfidenceBelow" in g:
        out["escalateIfConfidenceBelow"] = c.ratio(
            g["escalateIfConfidenceBelow"], (*loc, "escalateIfConfidenceBelow"), "escalateIfConfidenceBelow"
        )
    if "maxAutoRetries" in g:
        out["maxAutoRetries"] = c.count(g["maxAutoRetries"], (*loc, "maxAutoRetries"), "maxAutoRetries", 20)
    handled = {"blockLists", "requireHumanApprovalFor", "noAutoActionIfSeverityIn", "escalateIfConfidenceBelow",
               "maxAutoRetries"}  # fmt: skip
    c.keep(g, handled, out)
    return out


_EXPECT_KEYS = {
    "exceptionType": "exceptionType",
    "severity": "severity",
    "playbook": "playbook",
    "playbookId": "playbook",
    "approvalRequired": "approvalRequired",
    "requiresApproval": "approvalRequired",
    "actionability": "actionability",
    "status": "status",
}
_CASE_EXPECT_KEYS = {
    "expectedExceptionType": "exceptionType",
    "expectedSeverity": "severity",
    "expectedPlaybookId": "playbook",
    "expectedPlaybook": "playbook",
    "expectedApprovalRequired": "approvalRequired",
    "expectedActionability": "actionability",
    "expectedStatus": "status",
}


def _expect(
    c: _Conv, src: dict[str, Any], keys: dict[str, str], loc: Loc, target: dict[str, Any]
) -> set[str]:
    used: set[str] = set()
    for k, native in keys.items():
        if k not in src:
            continue
        used.add(k)
        v = src[k]
        if native in target:
            c.add((*loc, k), f"the expected {native} is given twice")
        elif native == "severity":
            target[native] = c.severity(v, (*loc, k))
        elif native == "approvalRequired":
            target[native] = c.flag(v, (*loc, k), k)
        else:
            target[native] = c.text(v, (*loc, k), k)
    return used


def _tests(c: _Conv, value: Any, base: Loc = ()) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, spec in enumerate(c.lst(value, (*base, "testSuites"), "testSuites") or []):
        loc: Loc = (*base, "testSuites", i)
        s = c.obj(spec, loc, "a test suite")
        if s is None:
            continue
        if "cases" in s:  # {suiteId, cases: [{caseId, inputExceptionType, expectedPlaybookId}]}
            suite_extra = {k: v for k, v in s.items() if k not in ("suiteId", "cases")}
            suite = s.get("suiteId")
            for j, case in enumerate(c.lst(s["cases"], (*loc, "cases"), "cases") or []):
                cloc = (*loc, "cases", j)
                cs = c.obj(case, cloc, "a test case")
                if cs is None:
                    continue
                name = cs.get("caseId", f"{suite or f'testSuites[{i}]'} case {j + 1}")
                test: dict[str, Any] = {"name": c.text(name, (*cloc, "caseId"), "caseId")}
                if suite is not None:
                    test["description"] = f"SentinAI suite {suite}"
                if "description" in cs:
                    test["description"] = cs["description"]
                inp: dict[str, Any] = {}
                if "input" in cs:
                    inp = dict(c.obj(cs["input"], (*cloc, "input"), "input") or {})
                if "inputExceptionType" in cs:
                    inp["exceptionType"] = c.text(
                        cs["inputExceptionType"], (*cloc, "inputExceptionType"), "type"
                    )
                for pk in ("inputPayload", "rawPayload"):
                    if pk in cs:
                        inp["rawPayload"] = c.obj(cs[pk], (*cloc, pk), pk)
                inp.setdefault("rawPayload", {})
                test["input"] = inp
                expect: dict[str, Any] = {}
                used = _expect(c, cs, _CASE_EXPECT_KEYS, cloc, expect)
                if "expectedOutput" in cs:
                    eo = c.obj(cs["expectedOutput"], (*cloc, "expectedOutput"), "expectedOutput") or {}
                    eused = _expect(c, eo, _EXPECT_KEYS, (*cloc, "expectedOutput"), expect)
                    c.keep(eo, eused, expect)
                test["expect"] = expect
                c.keep(cs, {"caseId", "description", "input", "inputExceptionType", "inputPayload", "rawPayload",
                            "expectedOutput", *used}, test)  # fmt: skip
                if suite_extra:
                    test["x-sentinai-suite"] = suite_extra
                out.append(test)
            continue
        # {input, expectedOutput}
        inp_val = c.obj(s.get("input"), (*loc, "input"), "input")
        etype = inp_val.get("exceptionType") if inp_val else None
        default_name = f"testSuites[{i}]" + (f" {etype}" if isinstance(etype, str) else "")
        test = {"name": c.text(s.get("name", default_name), (*loc, "name"), "name")}
        if "description" in s:
            test["description"] = c.text(s["description"], (*loc, "description"), "description")
        test["input"] = inp_val
        expect = {}
        if "expectedOutput" in s:
            eo = c.obj(s["expectedOutput"], (*loc, "expectedOutput"), "expectedOutput") or {}
            used = _expect(c, eo, _EXPECT_KEYS, (*loc, "expectedOutput"), expect)
            c.keep(eo, used, expect)
        test["expect"] = expect
        c.keep(s, {"name", "description", "input", "expectedOutput"}, test)
        out.append(test)
    return out


def _semver(c: _Conv, value: Any, loc: Loc, what: str) -> str | None:
    if isinstance(value, str) and SEMVER.match(value):
        return value
    c.add(loc, f"{what} {value!r} is not a semantic version (MAJOR.MINOR.PATCH)"[:200])
    return None


def _context_refs(cels: list[str | None], steps: list[dict[str, Any]]) -> list[str]:
    refs: list[str] = []
    texts = [t for t in cels if t]
    for st in steps:
        texts.extend(_strings(st.get("args", {})))
        if isinstance(st.get("when"), str):
            texts.append(st["when"])
    for text in texts:
        for f in _CTX_REF.findall(text):
            if f not in refs and _field_ok(f):
                refs.append(f)
    return refs


_DOMAIN_KEYS = frozenset(
    {"domainName", "version", "description", "defaultSeverity", "ontology", "entities", "exceptionTypes",
     "severityRules", "tools", "playbooks", "guardrails", "testSuites"}
)  # fmt: skip


def _domain(c: _Conv, data: dict[str, Any], version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "DomainPack"}
    if "domainName" not in data:
        c.add((), "a SentinAI domain pack needs 'domainName'")
    out["name"] = (
        c.name(data.get("domainName"), ("domainName",), "domainName") if "domainName" in data else None
    )
    out["version"] = _semver(c, data["version"], ("version",), "version") if "version" in data else version
    if "description" in data:
        out["description"] = c.text(data["description"], ("description",), "description")
    if "defaultSeverity" in data:
        out["defaultSeverity"] = c.severity(data["defaultSeverity"], ("defaultSeverity",))
    if "ontology" in data:
        out["ontology"] = data["ontology"]
    entities = _entities(c, data["entities"]) if "entities" in data else {}
    if entities:
        out["entities"] = entities
    types = _exception_types(c, data.get("exceptionTypes"), entities)
    rules = _severity_rules(c, data["severityRules"], types) if "severityRules" in data else []
    entity_names = set(entities)
    tools, infos = _tools(c, data["tools"], entity_names) if "tools" in data else ({}, {})
    playbooks = (
        _playbooks(c, data["playbooks"], types, _ToolIndex(infos), infos) if "playbooks" in data else []
    )
    guardrails = _domain_guardrails(c, data["guardrails"], types, tools) if "guardrails" in data else {}
    tests = _tests(c, data["testSuites"]) if "testSuites" in data else []

    steps = [s for pb in playbooks for s in pb["steps"]]
    cels = [r.get("condition") for r in rules] + [pb["match"].get("condition") for pb in playbooks]
    fields = _context_refs(cels, steps)
    for et in types.values():
        for f in et.get("fingerprintFields", []):
            if f not in fields and _field_ok(f):
                fields.append(f)
    if fields:
        out["intake"] = {"fields": {f: f"${{rawPayload.{f}}}" for f in fields}}
    out["exceptionTypes"] = types
    if rules:
        out["severityRules"] = rules
    if tools:
        out["tools"] = tools
    if playbooks:
        out["playbooks"] = playbooks
    if guardrails:
        out["guardrails"] = guardrails
    if tests:
        out["tests"] = tests
    c.keep(data, _DOMAIN_KEYS, out)

    if c.implicit_write:
        c.notes.append(
            f"{len(c.implicit_write)} tool(s) declare no effect and were imported as 'write' (review): "
            + ", ".join(c.implicit_write[:8])
            + (", …" if len(c.implicit_write) > 8 else "")
        )
    manual = sum(1 for s in steps if "tool" not in s)
    gated = sum(1 for s in steps if s.get("requiresApproval"))
    if steps:
        c.notes.append(
            f"{len(steps)} playbook step(s): {len(steps) - manual} tool step(s), {manual} manual step(s); "
            f"{gated} conditional step(s) require approval (their prose conditions were not turned into CEL)"
        )
    return out


# ------------------------------------------------------------------------------------------ tenant policy


_GUARD_MAP = {
    "blockLists": "blockedTools",
    "requireHumanApprovalFor": "requireApprovalForTypes",
    "noAutoActionIfSeverityIn": "noAutoActionIfSeverityIn",
    "escalateIfConfidenceBelow": "escalateIfConfidenceBelow",
    "maxAutoRetries": "maxAutoRetries",
    "allowAutoActionOnCritical": "allowAutoActionOnCritical",
    "blockedPlaybooks": "blockedPlaybooks",
}


def _tenant_guardrails(c: _Conv, data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    guard: dict[str, Any] = {}
    rules: list[dict[str, Any]] = []
    origin: dict[str, Loc] = {}

    def put(key: str, value: Any, loc: Loc) -> None:
        if key in guard and guard[key] != value:
            c.add(loc, f"conflicts with {json_path(origin[key])}")
            return
        guard[key] = value
        origin[key] = loc

    threshold: tuple[float, Loc] | None = None
    for container in ("customGuardrails", "guardrailOverrides", "guardrails"):
        if container not in data:
            continue
        g = c.obj(data[container], (container,), container)
        if g is None:
            continue
        for k, v in g.items():
            loc: Loc = (container, k)
            native = _GUARD_MAP.get(k)
            if native in ("blockedTools", "blockedPlaybooks") or native == "requireApprovalForTypes":
                put(native, c.texts(v, loc, k), loc)
            elif native == "noAutoActionIfSeverityIn":
                put(native, c.severities(v, loc, k), loc)
            elif native == "escalateIfConfidenceBelow":
                put(native, c.ratio(v, loc, k), loc)
            elif native == "maxAutoRetries":
                put(native, c.count(v, loc, k, 20), loc)
            elif native == "allowAutoActionOnCritical":
                put(native, c.flag(v, loc, k), loc)
            elif k == "humanApprovalThreshold":
                r = c.ratio(v, loc, k)
                if r is not None:
                    if threshold is not None and threshold[0] != r:
                        c.add(loc, f"conflicts with {json_path(threshold[1])}")
                    threshold = (r, loc)
            else:
                put(k if k.startswith("x-") else f"x-sentinai-{k}", v, loc)
    if threshold is not None:
        rules.append({"id": "humanApprovalThreshold", "confidenceBelow": threshold[0]})
    return guard, rules


def _approval_rules(c: _Conv, value: Any) -> list[dict[str, Any]]:
    """humanApprovalRules [{severity, requireApproval}] → approval rules grouped by requireApproval."""
    require: list[str] = []
    exempt: list[str] = []
    singles: list[dict[str, Any]] = []
    for i, spec in enumerate(c.lst(value, ("humanApprovalRules",), "humanApprovalRules") or []):
        loc: Loc = ("humanApprovalRules", i)
        r = c.obj(spec, loc, "an approval rule")
        if r is None:
            continue
        need = c.flag(r.get("requireApproval", True), (*loc, "requireApproval"), "requireApproval")
        if need is None:
            continue
        sevs: list[str] = []
        if "severity" in r:
            s = c.severity(r["severity"], (*loc, "severity"))
            sevs = [s] if s else []
        if "severities" in r:
            sevs += c.severities(r["severities"], (*loc, "severities"), "severities")
        rest = {k: v for k, v in r.items() if k not in ("severity", "severities", "requireApproval")}
        if not rest and sevs:
            (require if need else exempt).extend(s for s in sevs if s not in (require if need else exempt))
            continue
        rule: dict[str, Any] = {"id": f"humanApprovalRules.{i}"}
        if sevs:
            rule["severities"] = sevs
        for k in ("exceptionTypes", "approverRoles"):
            if k in rest:
                rule[k] = c.texts(rest.pop(k), (*loc, k), k)
        if "exceptionType" in rest:
            t = c.text(rest.pop("exceptionType"), (*loc, "exceptionType"), "exceptionType")
            rule["exceptionTypes"] = [*rule.get("exceptionTypes", []), t]
        if "condition" in rest or "if" in rest:
            key = "if" if "if" in rest else "condition"
            rule["condition"] = c.cel(rest.pop(key), (*loc, key))
        if "confidenceBelow" in rest:
            rule["confidenceBelow"] = c.ratio(
                rest.pop("confidenceBelow"), (*loc, "confidenceBelow"), "confidenceBelow"
            )
        if "approvalsNeeded" in rest:
            rule["approvalsNeeded"] = c.count(
                rest.pop("approvalsNeeded"), (*loc, "approvalsNeeded"), "approvals", 10
            )
        if not need:
            rule["requireApproval"] = False
        c.keep(rest, set(), rule)
        singles.append(rule)
    out: list[dict[str, Any]] = []
    if require:
        out.append({"id": "humanApprovalRules.requireApproval", "severities": require})
    if exempt:
        out.append({"id": "humanApprovalRules.noApproval", "severities": exempt, "requireApproval": False})
    return out + singles


def _severity_overrides(
    c: _Conv, data: dict[str, Any], workflow: dict[str, Any] | None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if "customSeverityOverrides" in data:
        items = c.lst(
            data["customSeverityOverrides"], ("customSeverityOverrides",), "customSeverityOverrides"
        )
        for i, spec in enumerate(items or []):
            loc: Loc = ("customSeverityOverrides", i)
            o = c.obj(spec, loc, "a severity override")
            if o is None:
                continue
            ov: dict[str, Any] = {
                "exceptionType": c.name(
                    o.get("exceptionType"), (*loc, "exceptionType"), "exceptionType", _TYPE_NAME
                ),
                "severity": c.severity(o.get("severity"), (*loc, "severity")),
            }
            if "condition" in o or "if" in o:
                key = "if" if "if" in o else "condition"
                ov["condition"] = c.cel(o[key], (*loc, key))
            if "reason" in o:
                ov["reason"] = c.text(o["reason"], (*loc, "reason"), "reason")
            c.keep(o, {"exceptionType", "severity", "condition", "if", "reason"}, ov)
            out.append(ov)
    if workflow is not None and "severityOverrides" in workflow:
        loc = ("workflowPolicies", "severityOverrides")
        for t, sev in (c.obj(workflow["severityOverrides"], loc, "severityOverrides") or {}).items():
            if c.name(t, (*loc, t), "exception type", _TYPE_NAME) is None:
                continue
            if isinstance(sev, dict):
                ov = {"exceptionType": t, "severity": c.severity(sev.get("severity"), (*loc, t, "severity"))}
                if "condition" in sev or "if" in sev:
                    key = "if" if "if" in sev else "condition"
                    ov["condition"] = c.cel(sev[key], (*loc, t, key))
                c.keep(sev, {"severity", "condition", "if"}, ov)
            else:
                ov = {"exceptionType": t, "severity": c.severity(sev, (*loc, t))}
            out.append(ov)
    return out


def _routes(c: _Conv, data: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    policies: dict[str, Any] = {}
    if "notificationPolicies" in data:
        policies = dict(
            c.obj(data["notificationPolicies"], ("notificationPolicies",), "notificationPolicies") or {}
        )
    channels: list[str] = []
    if "channels" in policies:
        channels = c.texts(policies["channels"], ("notificationPolicies", "channels"), "channels")
    recipients: dict[str, Any] = {}
    if "recipientsByGroup" in policies:
        rloc = ("notificationPolicies", "recipientsByGroup")
        recipients = dict(c.obj(policies["recipientsByGroup"], rloc, "recipientsByGroup") or {})
    used_groups: set[str] = set()
    routes: list[dict[str, Any]] = []
    rules = c.lst(data["routingRules"], ("routingRules",), "routingRules") if "routingRules" in data else []
    for i, spec in enumerate(rules or []):
        loc: Loc = ("routingRules", i)
        r = c.obj(spec, loc, "a routing rule")
        if r is None:
            continue
        route: dict[str, Any] = {}
        for k in ("exceptionTypes",):
            if k in r:
                route[k] = c.texts(r[k], (*loc, k), k)
        if "severities" in r:
            route["severities"] = c.severities(r["severities"], (*loc, "severities"), "severities")
        if "if" in r or "condition" in r:
            key = "if" if "if" in r else "condition"
            route["condition"] = c.cel(r[key], (*loc, key))
        gkey = "assignGroup" if "assignGroup" in r else "group"
        group = c.text(r.get(gkey), (*loc, gkey), "assignGroup")
        if group is not None and not group:
            c.add((*loc, gkey), "assignGroup is empty")
        route["group"] = group
        if channels:
            route["channels"] = list(channels)
        if isinstance(group, str) and group in recipients:
            used_groups.add(group)
            gloc: Loc = ("notificationPolicies", "recipientsByGroup", group)
            route["recipients"] = c.texts(recipients[group], gloc, "recipients")
        c.keep(r, {"exceptionTypes", "severities", "if", "condition", "assignGroup", "group"}, route)
        routes.append(route)
    rest: dict[str, Any] = {}
    if policies:
        if not routes and "channels" in policies:
            rest["channels"] = policies["channels"]
        unused = {g: v for g, v in recipients.items() if g not in used_groups}
        if unused:
            rest["recipientsByGroup"] = unused
        rest.update({k: v for k, v in policies.items() if k not in ("channels", "recipientsByGroup")})
    return routes, rest


_TENANT_KEYS = frozenset(
    {"tenantId", "tenantName", "domainName", "version", "customSeverityOverrides", "workflowPolicies",
     "approvedTools", "toolsAllowList", "customGuardrails", "guardrailOverrides", "guardrails",
     "humanApprovalRules", "retentionPolicies", "routingRules", "notificationPolicies", "testSuites",
     "approvedPlaybooks"}
)  # fmt: skip


def _tenant(
    c: _Conv, data: dict[str, Any], version: str, domain_name: str | None, version_range: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "TenantPolicy"}
    out["tenantId"] = c.name(data.get("tenantId"), ("tenantId",), "tenantId", _TENANT_ID)
    if "tenantName" in data:
        out["name"] = c.text(data["tenantName"], ("tenantName",), "tenantName")
    out["version"] = _semver(c, data["version"], ("version",), "version") if "version" in data else version
    dname: str | None = None
    if "domainName" in data:
        dname = c.name(data["domainName"], ("domainName",), "domainName")
        if dname is not None and domain_name is not None and domain_name != dname:
            c.add(("domainName",), f"the pack names domain {dname!r}, but {domain_name!r} was requested")
    elif domain_name is not None:
        dname = domain_name
        if not _NAME.match(domain_name):
            c.add((), f"domain name {domain_name!r} is not a valid name"[:200])
        c.notes.append(f"the tenant pack names no domain; bound to {domain_name!r} as requested")
    else:
        c.add(
            ("domainName",),
            "the tenant pack names no domain (domainName); pass the domain pack name (CLI: --domain NAME)",
        )
    try:
        parse_range(version_range)
    except ValueError as exc:
        c.add((), f"domain version range: {exc}")
    out["domain"] = {"name": dname, "versionRange": version_range}

    workflow: dict[str, Any] | None = None
    if "workflowPolicies" in data:
        workflow = c.obj(data["workflowPolicies"], ("workflowPolicies",), "workflowPolicies")
    overrides = _severity_overrides(c, data, workflow)
    if overrides:
        out["severityOverrides"] = overrides

    approved: list[str] = []
    if "approvedPlaybooks" in data:
        approved += c.texts(data["approvedPlaybooks"], ("approvedPlaybooks",), "approvedPlaybooks")
    if workflow is not None and "approvedBusinessProcesses" in workflow:
        loc: Loc = ("workflowPolicies", "approvedBusinessProcesses")
        approved += c.texts(workflow["approvedBusinessProcesses"], loc, "approvedBusinessProcesses")
    approved = list(dict.fromkeys(approved))
    if approved:
        out["approvedPlaybooks"] = approved
    else:
        c.notes.append(
            "the tenant pack approves no playbooks: every actionable exception will wait for a person until "
            "approvedPlaybooks is filled in"
        )

    allow: list[str] = []
    if "approvedTools" in data:
        allow += c.texts(data["approvedTools"], ("approvedTools",), "approvedTools")
    if "toolsAllowList" in data:
        tal = data["toolsAllowList"]
        if isinstance(tal, list):
            allow += c.texts(tal, ("toolsAllowList",), "toolsAllowList")
        else:
            for cat, names in (c.obj(tal, ("toolsAllowList",), "toolsAllowList") or {}).items():
                allow += c.texts(names, ("toolsAllowList", cat), cat)
    if allow:
        out["tools"] = {"allow": list(dict.fromkeys(allow))}

    guard, rules = _tenant_guardrails(c, data)
    rules += _approval_rules(c, data["humanApprovalRules"]) if "humanApprovalRules" in data else []
    if rules:
        out["approvalRules"] = rules
    if guard:
        out["guardrails"] = guard

    routes, notify_rest = _routes(c, data)
    if routes:
        out["notifications"] = routes

    if "retentionPolicies" in data:
        rp = c.obj(data["retentionPolicies"], ("retentionPolicies",), "retentionPolicies") or {}
        if "dataTTL" in rp:
            ttl = rp["dataTTL"]
            m = _TTL_DAYS.match(ttl) if isinstance(ttl, str) else None
            days = (
                ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else int(m.group(1)) if m else None
            )
            if days is None or not 1 <= days <= 36500:
                c.add(
                    ("retentionPolicies", "dataTTL"),
                    f"dataTTL must be a number of days (1-36500), got {ttl!r}"[:200],
                )
            out["retention"] = {"days": days}
        rp_rest = {k: v for k, v in rp.items() if k != "dataTTL"}
        if rp_rest:
            out["x-sentinai-retentionPolicies"] = rp_rest
    if "testSuites" in data:
        tests = _tests(c, data["testSuites"])
        if tests:
            out["tests"] = tests
    if workflow is not None:
        wf_rest = {
            k: v for k, v in workflow.items() if k not in ("severityOverrides", "approvedBusinessProcesses")
        }
        if wf_rest:
            out["x-sentinai-workflowPolicies"] = wf_rest
    if notify_rest:
        out["x-sentinai-notificationPolicies"] = notify_rest
    c.keep(data, _TENANT_KEYS, out)
    return out


# --------------------------------------------------------------------------------------------- entry points


def convert_sentinai(
    data: Any,
    source: str = "<sentinai>",
    *,
    version: str = "1.0.0",
    domain_name: str | None = None,
    domain_version_range: str = "^1.0.0",
) -> SentinaiImport:
    """Convert and check; returns the native data with notes. Raises SentinaiImportError only."""
    kind = detect_sentinai_kind(data, source)
    c = _Conv(source)
    shape = _shape_problems(data, source)
    if shape:
        raise SentinaiImportError(shape)
    if not SEMVER.match(version):
        c.add((), f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH)"[:200])
        raise SentinaiImportError(c.problems)
    try:
        if kind == "domain":
            out = _domain(c, data, version)
        else:
            out = _tenant(c, data, version, domain_name, domain_version_range)
    except RecursionError:
        c.add((), "document is nested too deeply")
    if c.problems:
        raise SentinaiImportError(c.problems)
    # What we produce must load natively; report the rest against the converted document.
    native_source = f"{source} (as imported)"
    try:
        pack = model_from_data(out, native_source)
        if isinstance(pack, DomainPack):
            compile_domain(pack, native_source)
    except PackError as exc:
        raise SentinaiImportError(exc.problems) from None
    return SentinaiImport(kind, out, c.notes)


def import_sentinai(
    data: Any,
    source: str = "<sentinai>",
    *,
    version: str = "1.0.0",
    domain_name: str | None = None,
    domain_version_range: str = "^1.0.0",
) -> dict[str, Any]:
    """Convert a parsed SentinAI domain or tenant pack into native pack data (see the module docstring).

    `version` is used when the source has none; `domain_name` binds a tenant pack that names no domain;
    `domain_version_range` is the tenant's binding range. Raises SentinaiImportError (and nothing else).
    """
    return convert_sentinai(
        data, source, version=version, domain_name=domain_name, domain_version_range=domain_version_range
    ).data
