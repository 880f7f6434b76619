"""Breakdesk: a multi-tenant exception desk driven by domain and tenant policy packs."""

__version__ = "0.1.0"
