"""Packs as code: schema, loading, validation, compilation, SentinAI import and the pack test runner."""

from breakdesk.packs.problems import PackError, PackProblem
from breakdesk.packs.workspace import (
    compile_domain_file,
    compile_pack_data,
    compile_tenant_file,
    validate_paths,
)

__all__ = [
    "PackError",
    "PackProblem",
    "compile_domain_file",
    "compile_pack_data",
    "compile_tenant_file",
    "validate_paths",
]
