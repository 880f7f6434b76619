"""Breakdesk: a multi-tenant exception desk driven by domain and tenant policy packs."""

from breakdesk.native import setup_imports

__version__ = "0.1.0"

setup_imports()
