"""Validate and compile sets of pack files together (a tenant policy is only fully valid next to its domain)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy, compile_domain, compile_tenant
from breakdesk.packs.loader import LoadedPack, load_pack_file, model_from_data
from breakdesk.packs.problems import PackError, PackProblem
from breakdesk.packs.schema import DomainPack, TenantPolicy
from breakdesk.packs.versions import satisfies, sort_key

PACK_SUFFIXES = (".yaml", ".yml", ".json")


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out.extend(sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in PACK_SUFFIXES))
        else:
            out.append(path)
    return out


@dataclass
class ValidationReport:
    files: list[str] = field(default_factory=list)
    problems: list[PackProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    domains: list[CompiledDomainPack] = field(default_factory=list)
    tenants: list[CompiledTenantPolicy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def pick_domain(policy: TenantPolicy, domains: Sequence[CompiledDomainPack]) -> CompiledDomainPack | None:
    """The highest domain version that satisfies the policy's binding."""
    fits = [d for d in domains if d.name == policy.domain.name and satisfies(d.version, policy.domain.versionRange)]
    return max(fits, key=lambda d: sort_key(d.version)) if fits else None


def validate_paths(paths: Iterable[str | Path]) -> ValidationReport:
    """Validate files (or directories of them): domain packs first, then tenant policies against their domain."""
    report = ValidationReport()
    loaded: list[LoadedPack] = []
    for path in expand_paths(paths):
        report.files.append(str(path))
        try:
            loaded.append(load_pack_file(path))
        except PackError as exc:
            report.problems.extend(exc.problems)
    for lp in loaded:
        if isinstance(lp.pack, DomainPack):
            try:
                report.domains.append(compile_domain(lp.pack, lp.source))
            except PackError as exc:
                report.problems.extend(exc.problems)
    for lp in loaded:
        if isinstance(lp.pack, TenantPolicy):
            domain = pick_domain(lp.pack, report.domains)
            if domain is None:
                same = [d for d in report.domains if d.name == lp.pack.domain.name]
                if same:
                    versions = ", ".join(sorted(d.version for d in same))
                    report.problems.append(
                        PackProblem(
                            lp.source,
                            "$.domain.versionRange",
                            f"no domain pack {lp.pack.domain.name!r} satisfies {lp.pack.domain.versionRange!r} "
                            f"(given: {versions})",
                        )
                    )
                else:
                    report.notes.append(
                        f"{lp.source}: structure valid; pass the domain pack {lp.pack.domain.name!r} too to check "
                        "its references"
                    )
                continue
            try:
                report.tenants.append(compile_tenant(lp.pack, domain, lp.source))
            except PackError as exc:
                report.problems.extend(exc.problems)
    return report


def compile_domain_file(path: str | Path) -> CompiledDomainPack:
    lp = load_pack_file(path)
    if not isinstance(lp.pack, DomainPack):
        raise PackError([PackProblem(lp.source, "$.kind", "expected a DomainPack")])
    return compile_domain(lp.pack, lp.source)


def compile_tenant_file(path: str | Path, domain: CompiledDomainPack) -> CompiledTenantPolicy:
    lp = load_pack_file(path)
    if not isinstance(lp.pack, TenantPolicy):
        raise PackError([PackProblem(lp.source, "$.kind", "expected a TenantPolicy")])
    return compile_tenant(lp.pack, domain, lp.source)


def compile_pack_data(
    data: Any, source: str, domain: CompiledDomainPack | None = None
) -> CompiledDomainPack | CompiledTenantPolicy | DomainPack | TenantPolicy:
    """Validate a parsed pack (e.g. from the store or an API body). Tenant policies compile only with a domain."""
    pack = model_from_data(data, source)
    if isinstance(pack, DomainPack):
        return compile_domain(pack, source)
    if domain is None:
        return pack
    return compile_tenant(pack, domain, source)
