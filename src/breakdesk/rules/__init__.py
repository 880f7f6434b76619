"""CEL conditions and argument templates: compiled once at pack load, evaluated many times."""

from breakdesk.rules.cel import CelSyntaxError, Condition, EvalResult, compile_condition, make_context
from breakdesk.rules.templates import Template, TemplateError, compile_template

__all__ = [
    "CelSyntaxError",
    "Condition",
    "EvalResult",
    "Template",
    "TemplateError",
    "compile_condition",
    "compile_template",
    "make_context",
]
