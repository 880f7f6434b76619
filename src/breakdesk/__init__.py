"""Breakdesk: a multi-tenant exception desk driven by domain and tenant policy packs."""

from breakdesk.native import check_fresh

__version__ = "0.1.0"

check_fresh()
