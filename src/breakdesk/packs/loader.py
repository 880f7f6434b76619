"""Read pack files (YAML or JSON) into validated models, collecting every problem with its JSON path.

Hostile input is expected: files are size-capped, nesting depth and node count are bounded, duplicate keys are
errors (YAML and JSON would otherwise silently keep the last one), and no exception escapes as a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from breakdesk.packs.problems import PackError, PackProblem, json_path
from breakdesk.packs.schema import DomainPack, TenantPolicy

MAX_PACK_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 2_000_000

Pack = DomainPack | TenantPolicy


class _DupKeyError(ValueError):
    pass


_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml parses ~10x faster when available


class _StrictLoader(_Base):
    """Safe loader that rejects duplicate mapping keys and keeps timestamps as strings (packs are JSON-shaped)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"unsupported mapping key of type {type(key).__name__}", key_node.start_mark
            )
        if key in out:
            mark = key_node.start_mark
            raise _DupKeyError(f"duplicate key {key!r} (line {mark.line + 1}, column {mark.column + 1})")
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)


def _check_shape(data: Any) -> str | None:
    """Bound depth and size without recursion (deeply nested garbage must not blow the stack).

    Shared objects (YAML aliases) are counted at every use, since later stages walk them at every use too;
    alias cycles end at the depth bound."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"document has more than {MAX_NODES:,} values"
        if depth > MAX_DEPTH:
            return f"document is nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


def parse_text(text: str, source: str, fmt: str | None = None) -> Any:
    """Parse YAML or JSON text; raise PackError with a located reason."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PACK_BYTES:
        raise PackError([PackProblem(source, "$", f"pack is larger than {MAX_PACK_BYTES // (1024 * 1024)} MB")])
    is_json = fmt == "json" or (fmt is None and (source.endswith(".json") or text.lstrip().startswith("{")))
    try:
        if is_json:
            data = json.loads(text, object_pairs_hook=_json_pairs)
        else:
            data = yaml.load(text, Loader=_StrictLoader)
    except _DupKeyError as exc:
        raise PackError([PackProblem(source, "$", str(exc))]) from None
    except json.JSONDecodeError as exc:
        raise PackError(
            [PackProblem(source, "$", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PackError([PackProblem(source, "$", f"invalid YAML{where}: {problem}")]) from None
    except RecursionError:
        raise PackError([PackProblem(source, "$", f"document is nested deeper than {MAX_DEPTH} levels")]) from None
    except (ValueError, UnicodeError) as exc:
        raise PackError([PackProblem(source, "$", f"unreadable document: {exc}")]) from None
    shape = _check_shape(data)
    if shape:
        raise PackError([PackProblem(source, "$", shape)])
    return data


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DupKeyError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read_file(path: str | Path) -> tuple[Any, str]:
    p = Path(path)
    source = str(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise PackError([PackProblem(source, "$", f"cannot read file: {exc.strerror or exc}")]) from None
    if size > MAX_PACK_BYTES:
        raise PackError(
            [PackProblem(source, "$", f"pack is {size / 1048576:.1f} MB; the limit is {MAX_PACK_BYTES // 1048576} MB")]
        )
    try:
        raw = p.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackError([PackProblem(source, "$", f"file is not UTF-8 text (byte {exc.start})")]) from None
    except OSError as exc:
        raise PackError([PackProblem(source, "$", f"cannot read file: {exc.strerror or exc}")]) from None
    return parse_text(text, source), source


def _reason(err: dict[str, Any]) -> str:
    etype = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if etype == "extra_forbidden":
        return "unknown field (extension keys must start with 'x-')"
    if etype == "missing":
        return "required field is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if etype == "literal_error" and err.get("loc", ())[-1:] == ("kind",):
        return msg
    return msg


def validation_problems(exc: ValidationError, source: str) -> list[PackProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = list(err.get("loc", ()))
        # pydantic appends the validator name for constrained dict keys: "[key]" — keep paths clean.
        loc = [p for p in loc if p != "[key]"]
        problems.append(PackProblem(source, json_path(loc), _reason(dict(err))))
    return problems


def detect_kind(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    kind = data.get("kind")
    if kind in ("DomainPack", "TenantPolicy"):
        return str(kind)
    if kind is None:
        if "tenantId" in data and "exceptionTypes" not in data:
            return "TenantPolicy"
        if "exceptionTypes" in data:
            return "DomainPack"
    return None


def model_from_data(data: Any, source: str) -> Pack:
    """Validate parsed data as a DomainPack or TenantPolicy (by `kind`)."""
    if not isinstance(data, dict):
        raise PackError([PackProblem(source, "$", f"a pack must be a mapping, got {_kind_name(data)}")])
    shape = _check_shape(data)  # data may come from an API body or the store, not only from parse_text
    if shape:
        raise PackError([PackProblem(source, "$", shape)])
    kind = detect_kind(data)
    if kind is None:
        raise PackError(
            [PackProblem(source, "$.kind", "cannot tell the pack kind: set kind to 'DomainPack' or 'TenantPolicy'")]
        )
    model: type[DomainPack] | type[TenantPolicy] = DomainPack if kind == "DomainPack" else TenantPolicy
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PackError(validation_problems(exc, source)) from None
    except RecursionError:
        raise PackError([PackProblem(source, "$", "document is nested too deeply")]) from None


def _kind_name(data: Any) -> str:
    if data is None:
        return "an empty document"
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(data), type(data).__name__
    )


@dataclass(frozen=True, slots=True)
class LoadedPack:
    source: str
    pack: Pack
    data: dict[str, Any]


def load_pack_file(path: str | Path) -> LoadedPack:
    """Read and structurally validate one pack file. Cross-references are checked by `validate`."""
    data, source = read_file(path)
    return LoadedPack(source, model_from_data(data, source), data)


def load_pack_text(text: str, source: str = "<input>", fmt: str | None = None) -> LoadedPack:
    data = parse_text(text, source, fmt)
    return LoadedPack(source, model_from_data(data, source), data)
