"""Cross-reference validation and compilation into the immutable objects the pipeline runs on.

Structural problems are caught by the schema (loader); here we check what needs the whole pack: names that
must exist, duplicates, CEL variables, template references, JSON Schemas of tools, and the tenant's binding to
a domain version. All problems are collected before anything is raised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import fastjsonschema
import jsonschema

from breakdesk.domain.digest import stable_digest
from breakdesk.domain.models import UNCLASSIFIED, Severity
from breakdesk.packs.problems import PackError, PackProblem, json_path
from breakdesk.packs.schema import (
    ApprovalRule,
    DomainPack,
    Effect,
    ExceptionType,
    NotificationRoute,
    Playbook,
    PlaybookStep,
    TenantPolicy,
    Tool,
)
from breakdesk.packs.versions import satisfies
from breakdesk.rules.cel import Condition, compile_condition, exception_types_tested
from breakdesk.rules.templates import Template, compile_template

#: Variables every pipeline condition may read (documented in docs/packs.md).
CONTEXT_ROOTS = frozenset(
    {
        "exceptionType",
        "severity",
        "rawPayload",
        "normalizedContext",
        "sourceSystem",
        "tenantId",
        "exceptionId",
        "timestamp",
        "confidence",
        "recurrence",
        "steps",
    }
)
#: Triage decides severity and confidence, so its conditions cannot read them (nor step outputs).
TRIAGE_ROOTS = CONTEXT_ROOTS - {"severity", "confidence", "steps"}
#: Before planning no step has run.
POLICY_ROOTS = CONTEXT_ROOTS - {"steps"}
#: Variables available when intake maps raw payloads to normalized context.
INTAKE_ROOTS = frozenset({"rawPayload", "sourceSystem", "exceptionType", "tenantId", "timestamp"})

_MACRO_VAR = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_CTX_FIELD = re.compile(r"\bnormalizedContext\.([A-Za-z_]\w*)")
_STEP_REF = re.compile(r"\bsteps\.([A-Za-z][\w.\-]*?)\.(?:output|status)\b")
_URL_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _unknown_roots(cond: Condition, allowed: frozenset[str]) -> list[str]:
    bound = set(_MACRO_VAR.findall(cond.source))
    return sorted(v for v in cond.variables if v not in allowed and v not in bound)


def digest(data: Any) -> str:
    return stable_digest(data)


# ---------------------------------------------------------------------------------------- compiled objects


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    index: int
    condition: Condition
    severity: Severity


@dataclass(frozen=True, slots=True)
class CompiledDetection:
    exception_type: str
    id: str
    condition: Condition
    confidence: float


@dataclass(frozen=True, slots=True)
class CompiledTool:
    name: str
    spec: Tool
    validator: Any  # jsonschema validator of the arguments object (full error reports)
    output_validator: Any | None
    url_params: tuple[str, ...]
    # fastjsonschema check (~1 µs per call), compiled on first use: compiling costs ~3 ms per tool, too much
    # to pay at load for packs with hundreds of tools. Holder list: the dataclass itself stays frozen.
    _fast: list[Any] = field(default_factory=list, compare=False, repr=False)

    def _fast_check(self) -> Any:
        if not self._fast:
            try:
                self._fast.append(fastjsonschema.compile(self.spec.parameters, use_default=False))
            except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError, RecursionError):
                self._fast.append(None)  # schemas fastjsonschema cannot compile use jsonschema only
        return self._fast[0]

    def arg_errors(self, args: Any) -> list[str]:
        """JSON Schema errors of an arguments object as 'path: message' (empty when valid)."""
        fast = self._fast_check()
        if fast is not None:
            try:
                fast(args)
                return []
            except fastjsonschema.JsonSchemaException:
                pass
        errors = []
        for err in sorted(self.validator.iter_errors(args), key=lambda e: [str(p) for p in e.path]):
            errors.append(f"{json_path(err.path)}: {err.message}")
        return errors

    @property
    def effect(self) -> Effect:
        return self.spec.effect


@dataclass(frozen=True, slots=True)
class CompiledStep:
    index: int
    id: str
    spec: PlaybookStep
    args: Template
    when: Condition | None
    compensate_args: Template
    #: Whether `when` / the arguments read earlier step outputs (then they are decided at execution).
    when_reads_steps: bool = False
    args_read_steps: bool = False

    @property
    def tool(self) -> str | None:
        return self.spec.tool


@dataclass(frozen=True, slots=True)
class CompiledPlaybook:
    id: str
    spec: Playbook
    types: frozenset[str]
    condition: Condition | None
    priority: int
    steps: tuple[CompiledStep, ...]
    tools: frozenset[str]


@dataclass(frozen=True, slots=True)
class CompiledDomainPack:
    spec: DomainPack
    digest: str
    types: Mapping[str, ExceptionType]
    default_severity: Mapping[str, Severity]
    ancestors: Mapping[str, tuple[str, ...]]
    rules_for_type: Mapping[str, tuple[CompiledRule, ...]]
    generic_rules: tuple[CompiledRule, ...]
    detection: tuple[CompiledDetection, ...]
    intake_fields: Mapping[str, Template]
    #: (field, rawPayload key for plain `${rawPayload.key}` reads else None, template): intake's fast path.
    intake_plan: tuple[tuple[str, str | None, Template], ...]
    tools: Mapping[str, CompiledTool]
    playbooks: Mapping[str, CompiledPlaybook]
    playbooks_for_type: Mapping[str, tuple[CompiledPlaybook, ...]]
    #: Per type: the fields that define "the same problem" for the similar-case memory (`similarity.keyFields`,
    #: the type's own else its nearest ancestor's); types with none are absent.
    similarity_fields: Mapping[str, tuple[str, ...]]
    #: What intake and the memory derive from this pack alone (per exception type, and for detection), keyed
    #: by (stage, ...); filled on first use.
    type_cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def ref(self) -> str:
        return f"{self.spec.name}@{self.spec.version}"

    def severity_rules(self, exception_type: str) -> tuple[CompiledRule, ...]:
        """Only the rules that can match this type (type-indexed + untyped), in declaration order."""
        return self.rules_for_type.get(exception_type, self.generic_rules)

    def playbooks_for(self, exception_type: str) -> tuple[CompiledPlaybook, ...]:
        return self.playbooks_for_type.get(exception_type, ())


@dataclass(frozen=True, slots=True)
class CompiledOverride:
    index: int
    exception_type: str
    severity: Severity
    condition: Condition | None
    reason: str
    mode: str = "replace"


@dataclass(frozen=True, slots=True)
class CompiledApprovalRule:
    id: str
    spec: ApprovalRule
    condition: Condition | None


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    spec: NotificationRoute
    condition: Condition | None


@dataclass(frozen=True, slots=True)
class CompiledTenantPolicy:
    spec: TenantPolicy
    digest: str
    domain: CompiledDomainPack
    overrides_for_type: Mapping[str, tuple[CompiledOverride, ...]]
    approved_playbooks: frozenset[str]
    allowed_tools: frozenset[str]
    blocked_tools: Mapping[str, str]  # tool -> which guardrail blocked it
    blocked_playbooks: frozenset[str]
    approval_rules: tuple[CompiledApprovalRule, ...]
    no_auto_action: frozenset[Severity]
    allow_auto_critical: bool
    escalate_below: float | None
    max_auto_retries: int
    require_approval_types: frozenset[str]
    routes: tuple[CompiledRoute, ...]
    #: Memo of derived lookups (e.g. which CEL variables a phase reads per type); derived data only.
    var_cache: dict[Any, frozenset[str]] = field(default_factory=dict, compare=False, repr=False)
    field_cache: dict[Any, dict[str, frozenset[str] | None]] = field(default_factory=dict, compare=False, repr=False)
    #: Per exception type: what the pipeline's stages derive from this policy and its domain alone (which
    #: variables the shared CEL context needs, the type's lineage, ...); filled on first use, derived data only.
    type_cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def tenant_id(self) -> str:
        return self.spec.tenantId

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def ref(self) -> str:
        return f"{self.spec.tenantId}@{self.spec.version}"


# ------------------------------------------------------------------------------------------- domain pack


class _Collector:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[PackProblem] = []

    def add(self, loc: tuple[Any, ...], reason: str) -> None:
        self.problems.append(PackProblem(self.source, json_path(loc), reason))

    def cond(self, source: str | None, loc: tuple[Any, ...], roots: frozenset[str] = CONTEXT_ROOTS) -> Condition | None:
        if source is None:
            return None
        try:
            c = compile_condition(source)
        except ValueError as exc:  # the schema already compiled it; keep the error path robust anyway
            self.add(loc, str(exc))
            return None
        for name in _unknown_roots(c, roots):
            self.add(loc, f"unknown variable {name!r}; available: {', '.join(sorted(roots))}")
        return c

    def template(self, value: Any, loc: tuple[Any, ...], roots: frozenset[str] = CONTEXT_ROOTS) -> Template:
        try:
            t = compile_template(value)
        except ValueError as exc:
            self.add(loc, str(exc))
            return compile_template(None)
        for expr in t.expressions:
            for name in _unknown_roots(expr, roots):
                self.add(loc, f"template uses unknown variable {name!r}; available: {', '.join(sorted(roots))}")
        return t


def _dupes(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for i in items:
        if i in seen and i not in out:
            out.append(i)
        seen.add(i)
    return out


def _type_ancestry(pack: DomainPack, c: _Collector) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for name, et in pack.exceptionTypes.items():
        chain: list[str] = []
        cur = et.parent
        while cur is not None:
            if cur == name or cur in chain:
                c.add(("exceptionTypes", name, "parent"), f"parent chain of {name!r} forms a cycle")
                break
            parent = pack.exceptionTypes.get(cur)
            if parent is None:
                c.add(("exceptionTypes", name, "parent"), f"unknown parent exception type {cur!r}")
                break
            chain.append(cur)
            cur = parent.parent
        out[name] = tuple(chain)
    return out


_META: list[Any] = []


def _check_schema(cls: Any, schema: dict[str, Any]) -> None:
    """Metaschema check. A fastjsonschema-compiled draft-07 metaschema accepts the common case in ~30 µs;
    only schemas it rejects pay for jsonschema's full check (~3 ms), which also words the error."""
    if not _META:
        _META.append(fastjsonschema.compile(jsonschema.Draft7Validator.META_SCHEMA, use_default=False))
    try:
        _META[0](schema)
        return
    except fastjsonschema.JsonSchemaException:
        cls.check_schema(schema)


def _ref_problems(schema: Any) -> list[tuple[tuple[Any, ...], str]]:
    """`$ref`s must stay inside the schema: a remote or file reference would make validation fetch it
    (a pack could read local files or call out), and a dangling one would fail every validation later."""
    out: list[tuple[tuple[Any, ...], str]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(schema, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    if not isinstance(v, str) or not v.startswith("#"):
                        out.append(((*path, k), "only local references ('#/...') are allowed in tool schemas"))
                    elif not _resolves(schema, v):
                        out.append(((*path, k), f"reference {v!r} does not resolve within the schema"))
                else:
                    stack.append((v, (*path, k)))
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(node))
    return out


def _resolves(schema: Any, ref: str) -> bool:
    cur = schema
    for raw in ref[1:].split("/")[1:] if ref.startswith("#/") else ([] if ref == "#" else [None]):
        if raw is None:
            return False
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return False
    return True


def _compile_tool(name: str, tool: Tool, c: _Collector) -> CompiledTool | None:
    loc = ("tools", name)
    ok = True
    for section, schema in (("parameters", tool.parameters), ("output", tool.output)):
        for path, reason in _ref_problems(schema) if schema is not None else []:
            c.add((*loc, section, *path), reason)
            ok = False
    if not ok:
        return None
    validator = output_validator = None
    try:
        cls = jsonschema.validators.validator_for(tool.parameters)
        _check_schema(cls, tool.parameters)
        validator = cls(tool.parameters)
    except jsonschema.SchemaError as exc:
        c.add((*loc, "parameters", *exc.path), f"invalid JSON Schema: {exc.message}")
        ok = False
    except (TypeError, KeyError, ValueError) as exc:  # e.g. a non-string $schema
        c.add((*loc, "parameters"), f"invalid JSON Schema: {exc}")
        ok = False
    if tool.parameters.get("type", "object") != "object":
        c.add((*loc, "parameters", "type"), "tool parameters must be a JSON Schema of type 'object'")
        ok = False
    if tool.output is not None:
        try:
            cls = jsonschema.validators.validator_for(tool.output)
            _check_schema(cls, tool.output)
            output_validator = cls(tool.output)
        except jsonschema.SchemaError as exc:
            c.add((*loc, "output", *exc.path), f"invalid JSON Schema: {exc.message}")
            ok = False
        except (TypeError, KeyError, ValueError) as exc:
            c.add((*loc, "output"), f"invalid JSON Schema: {exc}")
            ok = False
    url_params: tuple[str, ...] = ()
    if tool.url is not None:
        if not re.match(r"^https?://", tool.url):
            c.add((*loc, "url"), "url must start with http:// or https://")
            ok = False
        url_params = tuple(_URL_PARAM.findall(tool.url))
        props = tool.parameters.get("properties")
        if isinstance(props, dict):
            for p in url_params:
                if p not in props:
                    c.add((*loc, "url"), f"url placeholder {{{p}}} is not a declared parameter")
                    ok = False
    if not ok:
        return None
    return CompiledTool(name, tool, validator, output_validator, url_params)


def _check_step_args(
    step: PlaybookStep, tool: CompiledTool | None, loc: tuple[Any, ...], c: _Collector, args_key: str = "args"
) -> None:
    if tool is None:
        return
    params = tool.spec.parameters
    props = params.get("properties") if isinstance(params.get("properties"), dict) else None
    args = step.args if args_key == "args" else step.compensateArgs
    if props is not None and params.get("additionalProperties") is False:
        for arg in args:
            if arg not in props:
                c.add((*loc, args_key, arg), f"tool {tool.name!r} has no parameter {arg!r}")
    for req in params.get("required", []) or []:
        if isinstance(req, str) and req not in args:
            c.add((*loc, args_key), f"required parameter {req!r} of tool {tool.name!r} is not given")


def _template_refs(
    t: Template, loc: tuple[Any, ...], c: _Collector, ctx_fields: frozenset[str] | None, earlier: set[str]
) -> None:
    for expr in t.expressions:
        if ctx_fields is not None:
            for f in _CTX_FIELD.findall(expr.source):
                if f not in ctx_fields:
                    c.add(loc, f"template reads normalizedContext.{f}, which intake.fields does not define")
        for ref in _STEP_REF.findall(expr.source):
            if ref not in earlier:
                c.add(loc, f"template reads steps.{ref}, which is not an earlier step of this playbook")


def _compile_playbook(
    i: int,
    pb: Playbook,
    pack: DomainPack,
    tools: Mapping[str, CompiledTool | None],
    ctx_fields: frozenset[str] | None,
    c: _Collector,
) -> CompiledPlaybook:
    loc: tuple[Any, ...] = ("playbooks", i)
    for j, t in enumerate(pb.match.types):
        if t not in pack.exceptionTypes:
            c.add((*loc, "match", "types", j), f"unknown exception type {t!r}")
    cond = c.cond(pb.match.condition, (*loc, "match", "condition"), POLICY_ROOTS)
    steps: list[CompiledStep] = []
    earlier: set[str] = set()
    step_ids = [s.id for s in pb.steps if s.id]
    for d in _dupes(step_ids):
        c.add((*loc, "steps"), f"duplicate step id {d!r}")
    for k, s in enumerate(pb.steps):
        sloc = (*loc, "steps", k)
        sid = s.id or f"step{k + 1}"
        if s.tool is not None and s.tool not in pack.tools:
            c.add((*sloc, "tool"), f"step calls tool {s.tool!r}, which the pack does not define")
        if s.tool is None and s.args:
            c.add((*sloc, "args"), "a manual step (no tool) cannot have args")
        if s.compensate is not None and s.compensate not in pack.tools:
            c.add((*sloc, "compensate"), f"compensation tool {s.compensate!r} is not defined by the pack")
        if s.onFailure.value == "compensate" and s.compensate is None:
            tool_spec = pack.tools.get(s.tool or "")
            if tool_spec is None or tool_spec.compensation is None:
                c.add((*sloc, "onFailure"), "onFailure is 'compensate' but no compensation tool is declared")
        args = c.template(dict(s.args), (*sloc, "args"))
        comp = c.template(dict(s.compensateArgs), (*sloc, "compensateArgs"))
        _template_refs(args, (*sloc, "args"), c, ctx_fields, earlier)
        _template_refs(comp, (*sloc, "compensateArgs"), c, ctx_fields, earlier | {sid})
        when = c.cond(s.when, (*sloc, "when"))
        if when is not None:
            for ref in _STEP_REF.findall(when.source):
                if ref not in earlier:
                    c.add((*sloc, "when"), f"condition reads steps.{ref}, which is not an earlier step")
        _check_step_args(s, tools.get(s.tool or ""), sloc, c)
        if s.compensate is not None or s.compensateArgs:
            comp_tool = s.compensate or (pack.tools[s.tool].compensation if s.tool in pack.tools else None)
            _check_step_args(s, tools.get(comp_tool or ""), sloc, c, "compensateArgs")
        steps.append(
            CompiledStep(
                k, sid, s, args, when, comp,
                when_reads_steps=when is not None and "steps" in when.variables,
                args_read_steps=any("steps" in e.variables for e in args.expressions),
            )
        )
        earlier.add(sid)
    return CompiledPlaybook(
        id=pb.id,
        spec=pb,
        types=frozenset(pb.match.types),
        condition=cond,
        priority=pb.match.priority,
        steps=tuple(steps),
        tools=frozenset(s.tool for s in pb.steps if s.tool),
    )


def compile_domain(pack: DomainPack, source: str = "<domain pack>") -> CompiledDomainPack:
    """Validate cross-references and compile. Raises PackError listing every problem."""
    c = _Collector(source)
    types = pack.exceptionTypes
    if UNCLASSIFIED in types:
        c.add(("exceptionTypes", UNCLASSIFIED), f"{UNCLASSIFIED!r} is reserved for exceptions no rule classifies")
    ancestors = _type_ancestry(pack, c)

    # A type's default severity is its own, else its nearest ancestor's; types with neither fall back to the
    # pack default in triage (and are reported as such, with lower confidence).
    default_sev: dict[str, Severity] = {}
    for name, et in types.items():
        sev = et.defaultSeverity
        for anc in ancestors.get(name, ()):
            if sev is not None:
                break
            sev = types[anc].defaultSeverity
        if sev is not None:
            default_sev[name] = sev

    # intake
    intake_fields: dict[str, Template] = {}
    for fname, value in pack.intake.fields.items():
        intake_fields[fname] = c.template(value, ("intake", "fields", fname), INTAKE_ROOTS)
    ctx_fields = frozenset(intake_fields) if intake_fields else None

    # detection
    detection: list[CompiledDetection] = []
    det_ids: list[str] = []
    for name, et in types.items():
        for j, det in enumerate(et.detection):
            cond = c.cond(det.condition, ("exceptionTypes", name, "detection", j, "condition"), INTAKE_ROOTS)
            did = det.id or f"{name}.detect{j + 1}"
            det_ids.append(did)
            if cond is not None:
                detection.append(CompiledDetection(name, did, cond, det.confidence))
        for j, f in enumerate(et.fingerprintFields):
            if ctx_fields is not None and f not in ctx_fields:
                c.add(("exceptionTypes", name, "fingerprintFields", j), f"{f!r} is not defined in intake.fields")
        for j, e in enumerate(et.entities):
            if e not in pack.entities:
                c.add(("exceptionTypes", name, "entities", j), f"unknown entity {e!r}")
        if et.similarity is not None:
            keys = et.similarity.keyFields
            for d in _dupes(keys):
                c.add(("exceptionTypes", name, "similarity", "keyFields"), f"duplicate key field {d!r}")
            for j, f in enumerate(keys):
                if ctx_fields is not None and f not in ctx_fields:
                    c.add(("exceptionTypes", name, "similarity", "keyFields", j), f"{f!r} is not defined in intake.fields")
    for d in _dupes(det_ids):
        c.add(("exceptionTypes",), f"duplicate detection rule id {d!r}")

    for ename, ent in pack.entities.items():
        for j, k in enumerate(ent.keys):
            if ent.attributes and k not in ent.attributes:
                c.add(("entities", ename, "keys", j), f"key {k!r} is not an attribute of {ename}")
        for j, r in enumerate(ent.relations):
            if r not in pack.entities:
                c.add(("entities", ename, "relations", j), f"unknown entity {r!r}")

    # severity rules, indexed by the exception-type literal they test
    indexed: dict[str, list[CompiledRule]] = {}
    generic: list[CompiledRule] = []
    rule_ids = [r.id or f"severityRules[{i}]" for i, r in enumerate(pack.severityRules)]
    for d in _dupes(rule_ids):
        c.add(("severityRules",), f"duplicate rule id {d!r}")
    for i, rule in enumerate(pack.severityRules):
        loc = ("severityRules", i, "condition")
        cond = c.cond(rule.condition, loc, TRIAGE_ROOTS)
        if cond is None:
            continue
        cr = CompiledRule(rule_ids[i], i, cond, rule.severity)
        tested = exception_types_tested(rule.condition)
        if tested is None:
            generic.append(cr)
            continue
        for t in sorted(tested):
            if t not in types:
                c.add(loc, f"unknown exception type {t!r}")
            indexed.setdefault(t, []).append(cr)
    rules_for_type = {
        t: tuple(sorted([*indexed.get(t, []), *generic], key=lambda r: r.index)) for t in {*types, *indexed}
    }

    # tools
    tools: dict[str, CompiledTool | None] = {}
    for tname, tool in pack.tools.items():
        tools[tname] = _compile_tool(tname, tool, c)
        if tool.compensation is not None and tool.compensation not in pack.tools:
            c.add(("tools", tname, "compensation"), f"compensation tool {tool.compensation!r} is not defined")
    for j, t in enumerate(pack.guardrails.blockedTools):
        if t not in pack.tools:
            c.add(("guardrails", "blockedTools", j), f"unknown tool {t!r}")
    for j, t in enumerate(pack.guardrails.requireApprovalForTypes):
        if t not in types:
            c.add(("guardrails", "requireApprovalForTypes", j), f"unknown exception type {t!r}")

    # playbooks
    for d in _dupes([p.id for p in pack.playbooks]):
        c.add(("playbooks",), f"duplicate playbook id {d!r}")
    playbooks = [
        _compile_playbook(i, pb, pack, tools, ctx_fields, c) for i, pb in enumerate(pack.playbooks)
    ]
    order = {p.id: i for i, p in reversed(list(enumerate(playbooks)))}
    by_type_raw: dict[str, list[CompiledPlaybook]] = {}
    for p in playbooks:
        for t in p.types:
            by_type_raw.setdefault(t, []).append(p)
    by_type: dict[str, list[CompiledPlaybook]] = {}
    for t in types:
        seen: dict[str, CompiledPlaybook] = {}
        for anc in (t, *ancestors.get(t, ())):
            for p in by_type_raw.get(anc, ()):
                seen.setdefault(p.id, p)
        by_type[t] = sorted(seen.values(), key=lambda p: (-p.priority, order[p.id]))

    _check_tests(pack.tests, ("tests",), c, set(types), {p.id for p in pack.playbooks})

    # Like a default severity, a similarity declaration is the type's own, else its nearest ancestor's.
    similarity: dict[str, tuple[str, ...]] = {}
    for name, et in types.items():
        spec = et.similarity
        for anc in ancestors.get(name, ()):
            if spec is not None:
                break
            spec = types[anc].similarity
        if spec is not None:
            similarity[name] = tuple(dict.fromkeys(spec.keyFields))

    if c.problems:
        raise PackError(c.problems)
    return CompiledDomainPack(
        spec=pack,
        digest=digest(pack.model_dump(mode="json")),
        types=MappingProxyType(dict(types)),
        default_severity=MappingProxyType(default_sev),
        ancestors=MappingProxyType(ancestors),
        rules_for_type=MappingProxyType(rules_for_type),
        generic_rules=tuple(generic),
        detection=tuple(detection),
        intake_fields=MappingProxyType(intake_fields),
        intake_plan=tuple(
            (name, t.path[1] if t.path and len(t.path) == 2 and t.path[0] == "rawPayload" else None, t)
            for name, t in intake_fields.items()
        ),
        tools=MappingProxyType({k: v for k, v in tools.items() if v is not None}),
        playbooks=MappingProxyType({p.id: p for p in playbooks}),
        playbooks_for_type=MappingProxyType({k: tuple(v) for k, v in by_type.items()}),
        similarity_fields=MappingProxyType(similarity),
    )


def _check_tests(tests: list[Any], loc: tuple[Any, ...], c: _Collector, types: set[str], playbooks: set[str]) -> None:
    for d in _dupes([t.name for t in tests]):
        c.add(loc, f"duplicate test name {d!r}")
    for i, t in enumerate(tests):
        exp = t.expect
        if exp.exceptionType is not None and exp.exceptionType not in types and exp.exceptionType != UNCLASSIFIED:
            c.add((*loc, i, "expect", "exceptionType"), f"unknown exception type {exp.exceptionType!r}")
        given = t.input.get("exceptionType")
        if isinstance(given, str) and given not in types and exp.exceptionType is None:
            c.add(
                (*loc, i, "input", "exceptionType"),
                f"unknown exception type {given!r} (set expect.exceptionType to state the intended outcome)",
            )
        if exp.playbook is not None and exp.playbook != "none" and exp.playbook not in playbooks:
            c.add((*loc, i, "expect", "playbook"), f"unknown playbook {exp.playbook!r}")
        if "rawPayload" in t.input and not isinstance(t.input["rawPayload"], dict):
            c.add((*loc, i, "input", "rawPayload"), "rawPayload must be an object")


# ------------------------------------------------------------------------------------------ tenant policy


def compile_tenant(
    policy: TenantPolicy, domain: CompiledDomainPack, source: str = "<tenant policy>"
) -> CompiledTenantPolicy:
    """Bind a tenant policy to a compiled domain pack. Raises PackError listing every problem."""
    c = _Collector(source)
    pack = domain.spec
    if policy.domain.name != pack.name:
        c.add(("domain", "name"), f"policy is for domain {policy.domain.name!r}, not {pack.name!r}")
    elif not satisfies(pack.version, policy.domain.versionRange):
        c.add(
            ("domain", "versionRange"),
            f"domain {pack.name} version {pack.version} does not satisfy {policy.domain.versionRange!r}",
        )
    types = set(domain.types)

    overrides: dict[str, list[CompiledOverride]] = {}
    for i, o in enumerate(policy.severityOverrides):
        if o.exceptionType not in types:
            c.add(("severityOverrides", i, "exceptionType"), f"unknown exception type {o.exceptionType!r}")
        cond = c.cond(o.condition, ("severityOverrides", i, "condition"), TRIAGE_ROOTS)
        overrides.setdefault(o.exceptionType, []).append(
            CompiledOverride(i, o.exceptionType, o.severity, cond, o.reason, o.mode.value)
        )

    for d in _dupes(policy.approvedPlaybooks):
        c.add(("approvedPlaybooks",), f"duplicate playbook {d!r}")
    for i, p in enumerate(policy.approvedPlaybooks):
        if p not in domain.playbooks:
            c.add(("approvedPlaybooks", i), f"unknown playbook {p!r}")
    for d in _dupes(policy.tools.allow):
        c.add(("tools", "allow"), f"duplicate tool {d!r}")
    for i, t in enumerate(policy.tools.allow):
        if t not in pack.tools:
            c.add(("tools", "allow", i), f"unknown tool {t!r}")
    for t, ov in policy.tools.overrides.items():
        if t not in pack.tools:
            c.add(("tools", "overrides", t), f"unknown tool {t!r}")
        if ov.url is not None and not re.match(r"^https?://", ov.url):
            c.add(("tools", "overrides", t, "url"), "url must start with http:// or https://")
    g = policy.guardrails
    for i, t in enumerate(g.blockedTools):
        if t not in pack.tools:
            c.add(("guardrails", "blockedTools", i), f"unknown tool {t!r}")
    for i, p in enumerate(g.blockedPlaybooks):
        if p not in domain.playbooks:
            c.add(("guardrails", "blockedPlaybooks", i), f"unknown playbook {p!r}")
    for i, t in enumerate(g.requireApprovalForTypes):
        if t not in types:
            c.add(("guardrails", "requireApprovalForTypes", i), f"unknown exception type {t!r}")

    rules: list[CompiledApprovalRule] = []
    rule_ids = [r.id or f"approvalRules[{i}]" for i, r in enumerate(policy.approvalRules)]
    for d in _dupes(rule_ids):
        c.add(("approvalRules",), f"duplicate rule id {d!r}")
    for i, r in enumerate(policy.approvalRules):
        for j, t in enumerate(r.exceptionTypes):
            if t not in types:
                c.add(("approvalRules", i, "exceptionTypes", j), f"unknown exception type {t!r}")
        rules.append(
            CompiledApprovalRule(rule_ids[i], r, c.cond(r.condition, ("approvalRules", i, "condition"), POLICY_ROOTS))
        )

    routes: list[CompiledRoute] = []
    for i, route in enumerate(policy.notifications):
        for j, t in enumerate(route.exceptionTypes):
            if t not in types:
                c.add(("notifications", i, "exceptionTypes", j), f"unknown exception type {t!r}")
        routes.append(
            CompiledRoute(route, c.cond(route.condition, ("notifications", i, "condition"), POLICY_ROOTS))
        )

    _check_tests(policy.tests, ("tests",), c, types, set(domain.playbooks))

    if c.problems:
        raise PackError(c.problems)

    # An override, like a playbook, set on a parent type applies to its children; the child's own come last.
    by_type: dict[str, tuple[CompiledOverride, ...]] = {}
    for t in domain.types:
        lineage = [*reversed(domain.ancestors.get(t, ())), t]
        merged = [o for name in lineage for o in overrides.get(name, [])]
        if merged:
            by_type[t] = tuple(merged)

    blocked: dict[str, str] = {}
    for t in pack.guardrails.blockedTools:
        blocked[t] = f"domain guardrails.blockedTools ({pack.name}@{pack.version})"
    for t in g.blockedTools:
        blocked[t] = f"tenant guardrails.blockedTools ({policy.tenantId}@{policy.version})"
    # Guardrails only tighten: a tenant can add to the domain's safety floor, never lower it.
    dg = pack.guardrails
    no_auto = {*dg.noAutoActionIfSeverityIn, *(g.noAutoActionIfSeverityIn or [])}
    floors = [v for v in (dg.escalateIfConfidenceBelow, g.escalateIfConfidenceBelow) if v is not None]
    escalate = max(floors) if floors else None
    caps = [v for v in (dg.maxAutoRetries, g.maxAutoRetries) if v is not None]
    max_retries = min(caps) if caps else 3
    return CompiledTenantPolicy(
        spec=policy,
        digest=digest(policy.model_dump(mode="json")),
        domain=domain,
        overrides_for_type=MappingProxyType(by_type),
        approved_playbooks=frozenset(policy.approvedPlaybooks),
        allowed_tools=frozenset(policy.tools.allow),
        blocked_tools=MappingProxyType(blocked),
        blocked_playbooks=frozenset(g.blockedPlaybooks),
        approval_rules=tuple(rules),
        no_auto_action=frozenset(no_auto),
        allow_auto_critical=g.allowAutoActionOnCritical,
        escalate_below=escalate,
        max_auto_retries=max_retries,
        require_approval_types=frozenset([*pack.guardrails.requireApprovalForTypes, *g.requireApprovalForTypes]),
        routes=tuple(routes),
    )
